import Foundation
import TestSupport
import Testing
@testable import KVCache

/// `EngineConfig.prefillTokensPerSecond`: a create reads its prefix's disk blocks only when the
/// disk is expected to return them sooner than the server's prefill computes them
/// (`DiskTier.readIsFaster`, from the read rate `ReadRate` measures).
@Suite("Disk tier: read a prefix back or leave it to the prefill", .serialized)
struct ReadOrRecomputeTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    /// An engine with a disk tier in `dir` and a prefill far faster than any disk (1e15
    /// tokens/s), `prompt` spilled to its tier as sequence 1 (`spillPrompt`).
    static func fastPrefillEngine(_ layout: Layout, dir: String, memoryBytes: UInt64 = 64 << 20, spilling prompt: [Int32]) throws -> Engine {
        var config = offloadConfig(layout, dir: dir, memoryBytes: memoryBytes)
        config.prefillTokensPerSecond = 1e15
        let e = try Engine(config)
        try spillPrompt(e, 1, prompt)
        return e
    }

    // MARK: the estimate, on chosen times

    @Test func theRateIsBytesOverTheTimeReadsWereInFlight() throws {
        var rate = ReadRate()
        #expect(rate.bytesPerSecond == nil && rate.idleNanoseconds(now: 5) == nil, "nothing measured yet")
        rate.submitted(now: 1_000_000)
        rate.submitted(now: 1_500_000)
        #expect(rate.idleNanoseconds(now: 2_000_000) == 0, "a read is in flight")
        rate.completed(1 << 20, now: 2_000_000)
        #expect(rate.bytesPerSecond == nil, "the busy span has not ended")
        rate.completed(1 << 20, now: 3_000_000)  // 2 MiB in the 2 ms from the first submission
        let first = try #require(rate.bytesPerSecond)
        #expect(abs(first - Double(2 << 20) / 0.002) < 1)
        #expect(rate.idleNanoseconds(now: 4_000_000) == 1_000_000)

        // Idle time between spans does not count; older spans weigh 7/8 at each new one.
        rate.submitted(now: 10_000_000)
        rate.completed(1 << 20, now: 14_000_000)
        let expected = (Double(2 << 20) * 0.875 + Double(1 << 20)) / ((2e6 * 0.875 + 4e6) / 1e9)
        #expect(abs(try #require(rate.bytesPerSecond) - expected) < 1)
    }

    @Test func continuousReadsAreFoldedInEveryWindow() throws {
        var rate = ReadRate()
        let window = ReadRate.windowNanoseconds
        rate.submitted(now: 0)
        rate.submitted(now: 0)
        rate.completed(4096, now: window / 2)
        #expect(rate.bytesPerSecond == nil, "within the first window, a read still in flight")
        rate.submitted(now: window / 2)
        rate.completed(4096, now: window)  // one window of continuous reads: folded, still busy
        let folded = try #require(rate.bytesPerSecond)
        #expect(abs(folded - 8192 / (Double(window) / 1e9)) < 1e-6)
        #expect(rate.inFlight == 1 && rate.idleNanoseconds(now: window + 1) == 0)
    }

    // MARK: the engine, on the real disk tier

    /// A 203-token prompt spilled (50 blocks of 4 tokens): the first create reads it (no rate
    /// known yet) byte for byte; with a prefill far faster than any disk the next ones leave
    /// what is only on disk to the server: a 43-token prompt of its first 10 blocks gets 0
    /// cached, and the whole prompt then keeps those 10 blocks (now in memory) and ends its
    /// prefix there, ready at once, the rest counted as declined; after a second without block
    /// reads a create reads again (a probe); a slow prefill always reads.
    @Test(arguments: layouts)
    func aFastPrefillIsLeftTheBlocksADiskWouldReturnLater(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(203, seed: 7)
        let e = try Self.fastPrefillEngine(layout, dir: dir.path, spilling: prompt)

        #expect(try e.createSequence(2, tokens: prompt) == 200, "no read timed yet: it reads")
        #expect(try e.prefixSources(of: 2) == PrefixSources(memoryTokens: 0, diskTokens: 200, peerTokens: 0))
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 200) { prompt[$0] } == 0)
        try e.free(2)
        try e.trim()
        let before = e.stats()
        #expect(before.disk.declinedHitTokens == 0 && before.disk.prefixHitTokens == 200)

        let head = Array(prompt[0..<43])
        #expect(try e.createSequence(5, tokens: head) == 0, "computing 40 tokens takes 0.04 ps: no read")
        #expect(try e.prefixSources(of: 5) == .zero, "declined hits are in no part of the split")
        #expect(try e.ready(5), "nothing to wait for")
        try fillKV(e, 5, count: 43) { head[$0] }
        #expect(try e.createSequence(3, tokens: prompt) == 40, "the memory blocks stay; the prefix ends at the first disk block")
        #expect(try e.prefixSources(of: 3) == PrefixSources(memoryTokens: 40, diskTokens: 0, peerTokens: 0))
        #expect(try e.ready(3))
        #expect(try kvDifferences(e, 3, count: 40) { prompt[$0] } == 0)
        let declined = e.stats()
        #expect(declined.disk.declinedHitTokens == 40 + 160)
        #expect(declined.disk.prefixHitTokens == 200, "no disk hit since")
        #expect(declined.prefixHitTokens == before.prefixHitTokens + 40, "only the memory hit")
        #expect(declined.disk.blocksLoaded == before.disk.blocksLoaded, "no block read")
        // The server computes the rest; appends go on.
        try fillKV(e, 3, count: 163, from: 40) { prompt[$0] }
        try e.append(3, tokens: [9, 9])
        #expect(try e.length(3) == 205)
        try e.free(3)
        try e.free(5)
        try e.trim()

        Thread.sleep(forTimeInterval: Double(DiskTier.readProbeNanoseconds) / 1e9 + 0.05)
        #expect(try e.createSequence(4, tokens: prompt) == 200, "no block read for a second: a probe reads")
        #expect(try e.prefixSources(of: 4) == PrefixSources(memoryTokens: 0, diskTokens: 200, peerTokens: 0))
        try waitReady(e, 4)
        #expect(try kvDifferences(e, 4, count: 200) { prompt[$0] } == 0)
        #expect(e.stats().disk.blocksLoaded == before.disk.blocksLoaded + 50, "the blocks stayed on disk")
        #expect(e.stats().disk.declinedHitTokens == 200)
    }

    /// `cachedPrefixTokens` and `cachedPrefixBlocks` predict what a create reports, declined
    /// disk blocks included: they counted the blocks a create then left to the prefill (a
    /// second copy of the lookup rule, without the decline).
    @Test(arguments: layouts)
    func theLookupWithoutCreatingCountsNoDeclinedBlock(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(203, seed: 7)
        let e = try Self.fastPrefillEngine(layout, dir: dir.path, spilling: prompt)
        #expect(e.cachedPrefixTokens(prompt) == 200, "no read timed yet: a create would read")
        #expect(try e.createSequence(2, tokens: prompt) == 200)
        try waitReady(e, 2)
        try e.free(2)
        try e.trim()

        let predicted = e.cachedPrefixTokens(prompt)
        let hashes = BlockHash.chain(prompt, blockTokens: e.config.blockTokens)
        let predictedBlocks = hashes.withUnsafeBufferPointer { e.cachedPrefixBlocks(UnsafeBufferPointer(rebasing: $0[0..<50])) }
        let reported = try e.createSequence(3, tokens: prompt)
        #expect(reported == 0, "the disk is slower than a 1e15 tokens/s prefill: declined")
        #expect(predicted == reported, "cachedPrefixTokens said \(predicted); createSequence then reported \(reported)")
        #expect(predictedBlocks * e.config.blockTokens == reported, "cachedPrefixBlocks said \(predictedBlocks) blocks")
    }

    /// A create refused for memory after declining its disk blocks counts none of them (it
    /// counted them, so a server retrying creates reported more declined tokens than prompt
    /// tokens); the accepted retry counts them once.
    @Test(arguments: layouts)
    func aRefusedCreateCountsNoDeclinedTokens(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(203, seed: 11)
        let e = try Self.fastPrefillEngine(layout, dir: dir.path, memoryBytes: 256 << 10, spilling: prompt)
        #expect(try e.createSequence(2, tokens: prompt) == 200, "no read timed yet: it reads")
        try waitReady(e, 2)
        try e.free(2)
        try e.trim()
        var filler = Int(e.stats().blocksTotal - e.stats().blocksUsed) * e.config.blockTokens
        while (try? e.createSequence(9, tokens: tokens(filler, seed: 12))) == nil { filler -= 32 }  // leaves < 32 tokens' room
        for _ in 0..<3 {
            do throws(KVError) {
                try e.createSequence(3, tokens: prompt)
                Issue.record("a 203-token prompt created in the room a filler left")
            } catch {
                #expect(error.code == .outOfMemory, "\(error.message)")
            }
        }
        #expect(e.stats().disk.declinedHitTokens == 0)
        try e.free(9)
        #expect(try e.createSequence(3, tokens: prompt) == 0)
        #expect(e.stats().disk.declinedHitTokens == 200)
    }

    @Test(arguments: layouts)
    func aSlowPrefillReadsEveryBlockItFindsOnDisk(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var config = offloadConfig(layout, dir: dir.path)
        config.prefillTokensPerSecond = 1e-3  // 200 tokens take two days to compute
        let e = try Engine(config)
        let prompt = tokens(203, seed: 8)
        try spillPrompt(e, 1, prompt)
        for seq: UInt64 in 2...3 {
            #expect(try e.createSequence(seq, tokens: prompt) == 200)
            try waitReady(e, seq)
            #expect(try kvDifferences(e, seq, count: 200) { prompt[$0] } == 0)
            try e.free(seq)
            try e.trim()
        }
        #expect(e.stats().disk.declinedHitTokens == 0 && e.stats().disk.prefixHitTokens == 400)
    }

    @Test(arguments: [-1.0, .nan, .infinity])
    func aBadPrefillSpeedIsRefusedByName(speed: Double) {
        var config = smallConfig(.paged)
        config.prefillTokensPerSecond = speed
        let error = refusal(config)
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("prefill_tokens_per_s") == true, "\(String(describing: error))")
    }
}
