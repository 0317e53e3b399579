import Foundation
import TestSupport
import Testing
@testable import KVCache

/// `Engine.prefixSources`: the split of a create's cached tokens by where they came from
/// (memory, the own disk tier, peers' tiers), kept for the sequence's life.
@Suite("Prefix sources: a create's cached tokens by memory, own disk tier and peers", .serialized)
struct PrefixSourcesTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    /// Without a disk tier every cached token is a memory hit; the first create of a prompt
    /// has none; an unknown or freed sequence has no split (`notFound`).
    @Test(arguments: layouts)
    func withoutATierEveryCachedTokenIsAMemoryHit(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let prompt = tokens(203, seed: 3)
        #expect(try e.createSequence(1, tokens: prompt) == 0)
        #expect(try e.prefixSources(of: 1) == .zero)
        #expect(try e.createSequence(2, tokens: prompt) == 200)
        let sources = try e.prefixSources(of: 2)
        #expect(sources == PrefixSources(memoryTokens: 200, diskTokens: 0, peerTokens: 0))
        #expect(sources.cachedTokens == 200 && sources.readTokens == 0)
        #expect(thrown { () throws(KVError) in _ = try e.prefixSources(of: 99) }?.code == .notFound)
        try e.free(2)
        #expect(thrown { () throws(KVError) in _ = try e.prefixSources(of: 2) }?.code == .notFound, "the split lasts while the sequence does")
        #expect(try e.prefixSources(of: 1) == .zero, "another sequence's is untouched")
    }

    /// One create finds block 0 in memory, block 1 in its own tier and block 2 only in a
    /// peer's: one block each, summing to the returned count. The split describes the create:
    /// a fork's child reports its parent's, and a truncation, a swap-out and a swap-in leave it;
    /// a free or an abort ends it.
    @Test(arguments: layouts)
    func oneCreateSplitsItsPrefixAcrossMemoryOwnTierAndPeer(layout: Layout) throws {
        let dirA = ScratchDir("srcA"), dirB = ScratchDir("srcB")
        defer { dirA.remove(); dirB.remove() }
        let prompt = tokens(13, seed: 11)  // 3 blocks of 4 may hit, 1 token to compute
        let a = try Engine(offloadConfig(layout, dir: dirA.path))
        try spillPrompt(a, 1, prompt)  // the peer holds all 3 blocks
        let b = try Engine(peerConfig(layout, dir: dirB.path, peers: [dirA.path]))
        try spillPrompt(b, 1, Array(prompt[0..<9]))  // the own tier holds blocks 0 and 1
        #expect(try b.createSequence(2, tokens: Array(prompt[0..<5])) == 4)  // block 0 read back to memory
        #expect(try b.prefixSources(of: 2) == PrefixSources(memoryTokens: 0, diskTokens: 4, peerTokens: 0))
        try waitReady(b, 2)

        let before = b.stats().disk
        #expect(try b.createSequence(3, tokens: prompt) == 12)
        let split = PrefixSources(memoryTokens: 4, diskTokens: 4, peerTokens: 4)
        #expect(try b.prefixSources(of: 3) == split)
        #expect(b.stats().disk.prefixHitTokens - before.prefixHitTokens == 4, "the engine counts the own tier's block alike")
        try waitReady(b, 3)
        #expect(try kvDifferences(b, 3, count: 12) { prompt[$0] } == 0)

        try b.fork(parent: 3, child: 4)
        #expect(try b.prefixSources(of: 4) == split, "a fork's child reports its parent's create")
        try b.truncate(3, to: 2)
        #expect(try b.prefixSources(of: 3) == split, "a truncation below the prefix leaves the create's split")
        try b.swapOut(4)
        #expect(try b.prefixSources(of: 4) == split, "swapped out")
        try b.swapIn(4)
        try waitReady(b, 4)
        #expect(try b.prefixSources(of: 4) == split, "swapped back in")
        try b.free(4, computedTokens: 1)
        #expect(thrown { () throws(KVError) in _ = try b.prefixSources(of: 4) }?.code == .notFound, "aborted")
        try b.free(3)
        #expect(thrown { () throws(KVError) in _ = try b.prefixSources(of: 3) }?.code == .notFound)
    }
}
