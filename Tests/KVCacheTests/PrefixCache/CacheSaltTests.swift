import TestSupport
import Testing
@testable import KVCache

/// Salted sequences (`createSequence(_:tokens:salt:)`, `kvc_seq_create_salted`): equal tokens
/// under different salts (LoRA adapters, tenants) share no block; under one salt they share as
/// unsalted sequences do, in memory and on disk, and appends index under the salt's chain.
@Suite("Cache salt")
struct CacheSaltTests {
    @Test(arguments: [Layout.paged, .contiguous])
    func equalTokensShareBlocksOnlyUnderOneSalt(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let prompt = tokens(13, seed: 3)  // 3 full blocks of 4
        #expect(try e.createSequence(1, tokens: prompt) == 0)
        try writeKV(e, 1, tokens: prompt, from: 0)
        #expect(try e.createSequence(2, tokens: prompt, salt: 5) == 0, "another salt: nothing shared")
        try writeKV(e, 2, tokens: prompt, from: 0, salt: 5)
        #expect(try e.createSequence(3, tokens: prompt, salt: 5) == 12)
        #expect(try kvMismatches(e, 3, tokens: Array(prompt[0..<12]), from: 0, salt: 5) == 0, "salt 5's K/V")
        #expect(try e.createSequence(4, tokens: prompt, salt: 0) == 12)
        #expect(try kvMismatches(e, 4, tokens: Array(prompt[0..<12]), from: 0) == 0, "the unsalted K/V")
        #expect(try e.createSequence(5, tokens: prompt, salt: 6) == 0)
        prompt.withUnsafeBufferPointer { p in
            #expect(e.cachedPrefixTokens(p, salt: 5) == 12)
            #expect(e.cachedPrefixTokens(p, salt: 7) == 0)
        }
        // The events carry the salted chain; a chain's first block records parent 0.
        let stored = drain(e).filter { $0.kind == .blockStored }
        let chain5 = BlockHash.chain(prompt, blockTokens: 4, salt: 5)
        let salted = stored.filter { chain5.contains($0.blockHash) }
        #expect(salted.map(\.blockHash) == chain5)
        #expect(salted.map(\.parentHash) == [0, chain5[0], chain5[1]])
        #expect(stored.count == 9, "three chains of 3 blocks: unsalted, salt 5, salt 6")
    }

    /// A prompt shorter than a block has no salted hash yet: its appends must still chain from
    /// the salt's root, or its blocks would pass for the unsalted prompt's.
    @Test(arguments: [Layout.paged, .contiguous])
    func appendsIndexUnderTheSaltAndForksKeepIt(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let all = tokens(13, seed: 4)
        #expect(try e.createSequence(1, tokens: Array(all[0..<2]), salt: 9) == 0)
        try e.append(1, tokens: Array(all[2..<8]))
        try e.fork(parent: 1, child: 2)
        try e.append(2, tokens: Array(all[8..<12]))
        let chain9 = BlockHash.chain(Array(all[0..<12]), blockTokens: 4, salt: 9)
        let stored = drain(e).filter { $0.kind == .blockStored }
        #expect(stored.map(\.blockHash) == chain9)
        #expect(stored.map(\.parentHash) == [0, chain9[0], chain9[1]])
        #expect(try e.createSequence(3, tokens: all, salt: 9) == 12)
        #expect(try e.createSequence(4, tokens: all) == 0, "unsalted: none of salt 9's blocks")
    }

    @Test(arguments: [Layout.paged, .contiguous])
    func saltedBlocksOnDiskAreFoundOnlyUnderTheirSalt(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        let prompt = tokens(17, seed: 5)  // 4 full blocks
        #expect(try e.createSequence(1, tokens: prompt, salt: 11) == 0)
        try writeKV(e, 1, tokens: prompt, from: 0, salt: 11)
        try e.free(1)
        try e.trim()  // the cached blocks go to disk and leave memory
        #expect(e.stats().blocksCached == 0)
        #expect(try e.createSequence(2, tokens: prompt) == 0)
        #expect(try e.createSequence(3, tokens: prompt, salt: 12) == 0)
        #expect(try e.createSequence(4, tokens: prompt, salt: 11) == 16, "read back from the disk tier")
        try waitReady(e, 4)
        #expect(try kvMismatches(e, 4, tokens: Array(prompt[0..<16]), from: 0, salt: 11) == 0)
    }
}
