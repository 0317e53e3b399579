import Testing
@testable import KVCache

@Suite("Engine sequences and prefix cache, both layouts")
struct EngineTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    /// A request cancelled mid-prefill: its create indexed blocks the server never computed.
    /// `free(_:computedTokens:)` takes them out of the index; a plain free would leave them
    /// cached, and the next prompt would be served bytes nobody wrote.
    @Test(arguments: layouts)
    func anAbortedSequencesUncomputedBlocksLeaveTheIndex(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))  // 4-token blocks
        let prompt = tokens(40, seed: 31)
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: Array(prompt.prefix(18)), from: 0)  // 18 of 40 computed, then cancelled
        _ = drain(e)
        #expect(thrown { () throws(KVError) in try e.free(1, computedTokens: 41) }?.code == .invalidArgument)
        #expect(try e.length(1) == 40, "a rejected abort frees nothing")
        try e.free(1, computedTokens: 18)
        #expect(drain(e).filter { $0.kind == .blockRemoved }.count == 6, "blocks 4...9 (block 4 only half computed)")
        #expect(try e.createSequence(2, tokens: prompt) == 16)
        #expect(try kvMismatches(e, 2, tokens: Array(prompt.prefix(16)), from: 0) == 0)
    }

    @Test(arguments: layouts)
    func createReportsNoCachedTokensOnAnEmptyCache(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        #expect(try e.createSequence(1, tokens: tokens(10, seed: 1)) == 0)
        #expect(try e.length(1) == 10)
    }

    @Test(arguments: layouts)
    func samePromptHitsFullBlocksAndReadsTheSameBytes(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let prompt = tokens(203, seed: 2)
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        let cached = try e.createSequence(2, tokens: prompt)
        #expect(cached == 200)
        #expect(try kvMismatches(e, 2, tokens: Array(prompt.prefix(cached)), from: 0) == 0)
        let s = e.stats()
        #expect(s.prefixQueryTokens == 406)
        #expect(s.prefixHitTokens == 200)
    }

    @Test(arguments: layouts)
    func hitIsServedAfterTheFirstSequenceIsFreed(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let prompt = tokens(300, seed: 3)
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        try e.free(1)
        #expect(e.stats().blocksCached == 75)
        #expect(try e.createSequence(2, tokens: prompt) == 296)
        #expect(try kvMismatches(e, 2, tokens: Array(prompt.prefix(296)), from: 0) == 0)
    }

    @Test(arguments: layouts)
    func cachedTokensLeaveAtLeastOneTokenToCompute(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let prompt = tokens(16, seed: 4)
        try e.createSequence(1, tokens: prompt)
        #expect(try e.createSequence(2, tokens: prompt) == 12)
        #expect(e.cachedPrefixTokens(prompt) == 12)
        #expect(e.cachedPrefixTokens(Array(prompt.prefix(9))) == 8)
    }

    @Test(arguments: layouts)
    func blocksFilledByAppendsAreHitByALaterTurn(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let prompt = tokens(6, seed: 5)
        let reply = tokens(10, seed: 6)
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        for (j, t) in reply.enumerated() {
            try e.append(1, tokens: [t])
            try writeKV(e, 1, tokens: [t], from: 6 + j)
        }
        try e.free(1)
        let nextTurn = prompt + reply + tokens(5, seed: 7)
        #expect(try e.createSequence(2, tokens: nextTurn) == 16)
        #expect(try kvMismatches(e, 2, tokens: prompt + reply, from: 0) == 0)
    }

    @Test(arguments: layouts)
    func forkReadsParentBytesAndWritesStayApart(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let prompt = tokens(150, seed: 8)  // ends inside a block and inside a page
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        try e.fork(parent: 1, child: 2)
        #expect(try e.length(2) == 150)
        #expect(try kvMismatches(e, 2, tokens: prompt, from: 0) == 0)
        let childTokens = tokens(20, seed: 9), parentTokens = tokens(20, seed: 10)
        try e.append(2, tokens: childTokens)
        try writeKV(e, 2, tokens: childTokens, from: 150, salt: 1)
        try e.append(1, tokens: parentTokens)
        try writeKV(e, 1, tokens: parentTokens, from: 150, salt: 2)
        #expect(try kvMismatches(e, 1, tokens: prompt, from: 0) == 0)
        #expect(try kvMismatches(e, 2, tokens: prompt, from: 0) == 0)
        #expect(try kvMismatches(e, 2, tokens: childTokens, from: 150, salt: 1) == 0)
        #expect(try kvMismatches(e, 1, tokens: parentTokens, from: 150, salt: 2) == 0)
    }

    @Test(arguments: layouts)
    func childWritesAfterForkNeverShowInTheParentsPartialBlock(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let prompt = tokens(6, seed: 11)  // block 1 holds 2 of 4 tokens
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        try e.fork(parent: 1, child: 2)
        try e.append(2, tokens: [77])
        try writeKV(e, 2, tokens: [77], from: 6, salt: 3)
        try writeKV(e, 2, tokens: Array(prompt.suffix(2)), from: 4, salt: 4)  // the child rewrites its copy
        #expect(try kvMismatches(e, 1, tokens: prompt, from: 0) == 0)
        #expect(try kvMismatches(e, 2, tokens: Array(prompt.suffix(2)), from: 4, salt: 4) == 0)
    }

    @Test(arguments: layouts)
    func forkedSequencesIndexTheirOwnDivergingBlocks(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        try e.createSequence(1, tokens: tokens(6, seed: 12))
        try e.fork(parent: 1, child: 2)
        try e.append(1, tokens: [1, 2])
        try e.append(2, tokens: [3, 4])
        let a = tokens(6, seed: 12) + [1, 2], b = tokens(6, seed: 12) + [3, 4]
        #expect(e.cachedPrefixTokens(a + [0]) == 8)
        #expect(e.cachedPrefixTokens(b + [0]) == 8)
    }

    @Test(arguments: layouts)
    func blockStoredEventsCarryTheChainHashes(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        #expect(drain(e) == [memoryTierCleared], "the engine's creation")
        let prompt = tokens(13, seed: 13)
        try e.createSequence(1, tokens: prompt)
        let hashes = BlockHash.chain(prompt, blockTokens: 4)
        let events = drain(e)
        #expect(events.map(\.kind) == [.blockStored, .blockStored, .blockStored])
        #expect(events.map(\.blockHash) == hashes)
        #expect(events.map(\.parentHash) == [0] + hashes.dropLast())
    }

    @Test(arguments: layouts)
    func trimDropsCachedBlocksWithOneAllClearedEvent(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        try e.createSequence(1, tokens: tokens(40, seed: 14))
        try e.free(1)
        _ = drain(e)
        try e.trim()
        #expect(drain(e).map(\.kind) == [.allCleared])
        let s = e.stats()
        #expect(s.blocksCached == 0)
        #expect(s.committedBytes == 0)
    }

    @Test(arguments: layouts)
    func trimKeepsLiveSequencesAndEmitsRemovedForDroppedBlocks(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let live = tokens(40, seed: 15)
        try e.createSequence(1, tokens: live)
        try writeKV(e, 1, tokens: live, from: 0)
        try e.createSequence(2, tokens: tokens(8, seed: 16))
        try e.free(2)
        _ = drain(e)
        try e.trim()
        let events = drain(e)
        #expect(events.map(\.kind) == [.blockRemoved, .blockRemoved])
        #expect(try kvMismatches(e, 1, tokens: live, from: 0) == 0)
        #expect(e.stats().committedBytes > 0)
    }

    @Test(arguments: layouts)
    func evictionUnderPressureFreesTheOldestCachedBlocksFirst(layout: Layout) throws {
        // 512 KiB: 4 tensors x 128 KiB = 4096 tokens of 32 bytes = 1024 blocks.
        let e = try Engine(smallConfig(layout, memoryBytes: 512 << 10))
        let old = tokens(2000, seed: 17), recent = tokens(1000, seed: 18)
        try e.createSequence(1, tokens: old)
        try e.free(1)
        try e.createSequence(2, tokens: recent)
        try e.free(2)
        _ = drain(e)
        try e.createSequence(3, tokens: tokens(3000, seed: 19))
        let removed = Set(drain(e).filter { $0.kind == .blockRemoved }.map(\.blockHash))
        #expect(!removed.isEmpty)
        #expect(removed.isSubset(of: Set(BlockHash.chain(old, blockTokens: 4))))
        #expect(e.cachedPrefixTokens(recent) == 996)
        #expect(e.stats().blocksEvicted == UInt64(removed.count))
    }

    /// The create guard admits a prompt that needs exactly every block left (it once needed
    /// one more), and refuses one token more.
    @Test func aPromptExactlyFillingThePoolIsCreated() throws {
        let e = try Engine(smallConfig(.paged, memoryBytes: 64 << 10))
        let blocks = Int(e.stats().blocksTotal), bt = 4
        #expect(thrown { () throws(KVError) in _ = try e.createSequence(1, tokens: tokens(blocks * bt + 1, seed: 40)) }?.code == .outOfMemory)
        let prompt = tokens(blocks * bt, seed: 41)
        #expect(try e.createSequence(2, tokens: prompt) == 0)
        #expect(e.stats().blocksUsed == UInt64(blocks))
        try writeKV(e, 2, tokens: prompt, from: 0)
        #expect(try kvMismatches(e, 2, tokens: prompt, from: 0) == 0)
    }

    @Test(arguments: layouts)
    func outOfMemoryChangesNothing(layout: Layout) throws {
        let e = try Engine(smallConfig(layout, memoryBytes: 512 << 10))
        let a = tokens(1000, seed: 20)
        try e.createSequence(1, tokens: a)
        try writeKV(e, 1, tokens: a, from: 0)
        try e.createSequence(2, tokens: tokens(500, seed: 21))
        try e.free(2)
        try e.createSequence(4, tokens: tokens(2000, seed: 30))
        _ = drain(e)
        let before = e.stats()  // 1024 blocks: 750 live, 125 cached, 149 free
        let create = thrown { () throws(KVError) in _ = try e.createSequence(3, tokens: tokens(3000, seed: 22)) }
        #expect(create?.code == .outOfMemory)
        #expect(create?.message.hasPrefix("prompt needs") == true)
        let append = thrown { () throws(KVError) in try e.append(1, tokens: tokens(1200, seed: 23)) }
        #expect(append?.code == .outOfMemory)
        #expect(append?.message.hasPrefix("appending 1200 tokens needs") == true)
        #expect(e.stats() == before)
        #expect(drain(e).isEmpty)
        #expect(try kvMismatches(e, 1, tokens: a, from: 0) == 0)
        #expect(e.cachedPrefixTokens(tokens(500, seed: 21)) == 496)
    }

    @Test(arguments: layouts)
    func errorsNameTheirCause(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        try e.createSequence(1, tokens: [1, 2, 3])
        #expect(throws: KVError(.exists, "sequence 1 already exists")) { try e.createSequence(1, tokens: [1]) }
        #expect(throws: KVError(.notFound, "sequence 9 does not exist")) { try e.append(9, tokens: [1]) }
        #expect(throws: KVError(.invalidArgument, "a sequence needs at least one prompt token")) { try e.createSequence(2, tokens: []) }
        try e.free(1)
        #expect(throws: KVError(.notFound, "sequence 1 does not exist")) { try e.free(1) }
        #expect(e.stats().sequences == 0)
    }

    @Test(arguments: layouts)
    func appendPastMaxSeqTokensIsRejected(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        try e.createSequence(1, tokens: tokens(4090, seed: 24))
        #expect(throws: KVError.self) { try e.append(1, tokens: tokens(7, seed: 25)) }
        try e.append(1, tokens: tokens(6, seed: 25))
        #expect(try e.length(1) == 4096)
    }

    @Test(arguments: layouts)
    func slotsAreLimitedByMaxSeqs(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        for i in 0..<16 { try e.createSequence(UInt64(i), tokens: [Int32(i)]) }
        #expect(throws: KVError.self) { try e.createSequence(99, tokens: [1]) }
        #expect(throws: KVError.self) { try e.fork(parent: 0, child: 99) }
        try e.free(3)
        try e.createSequence(99, tokens: [1])
    }

    @Test(arguments: layouts)
    func freedSlotIsReusedWithoutCorruptingCachedBlocks(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let first = tokens(300, seed: 26)
        try e.createSequence(1, tokens: first)
        try writeKV(e, 1, tokens: first, from: 0)
        try e.free(1)
        let other = tokens(300, seed: 27)
        try e.createSequence(2, tokens: other)  // takes the freed slot
        try writeKV(e, 2, tokens: other, from: 0)
        try e.append(2, tokens: tokens(100, seed: 28))
        try writeKV(e, 2, tokens: tokens(100, seed: 28), from: 300)
        #expect(try e.createSequence(3, tokens: first) == 296)
        #expect(try kvMismatches(e, 3, tokens: Array(first.prefix(296)), from: 0) == 0)
    }

    @Test(arguments: layouts)
    func statsCountUsedAndCachedBlocks(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        try e.createSequence(1, tokens: tokens(10, seed: 29))
        try e.fork(parent: 1, child: 2)
        var s = e.stats()
        #expect(s.sequences == 2)
        #expect(s.blocksUsed == 3)
        #expect(s.blocksCached == 0)
        try e.free(1)
        try e.free(2)
        s = e.stats()
        #expect(s.blocksUsed == 0)
        #expect(s.blocksCached == 2)
        #expect(s.committedBytes <= s.budgetBytes)
    }
}

@Suite("Engine created from block hashes")
struct HashedPromptTests {
    /// Blocks indexed from hashes alone are hit by hashes, not by tokens: they carry no
    /// fingerprint, which a prompt given by tokens must match (include/kvcache.h, BLOCK HASH);
    /// the token prompt's blocks of those hashes stay unindexed (the first block stays).
    @Test func hashesHitTheBlocksOfHashesButATokenPromptComputesItsOwn() throws {
        var c = smallConfig(.paged)
        c.metadataOnly = true
        let e = try Engine(c)
        let prompt = tokens(18, seed: 60)
        let hashes = BlockHash.chain(prompt, blockTokens: 4)
        let cached = try hashes.withUnsafeBufferPointer { try e.createSequence(1, blockHashes: $0, tokens: 18) }
        #expect(cached == 0)
        #expect(try e.createSequence(2, tokens: prompt) == 0)
        #expect(try hashes.withUnsafeBufferPointer { try e.createSequence(3, blockHashes: $0, tokens: 18) } == 16)
        #expect(drain(e).filter { $0.kind == .blockStored }.map(\.blockHash) == hashes)
    }

    /// `cachedPrefixBlocks` counts every cached leading block of a chain (no token kept to
    /// compute), from any block of it, and leaves the LRU order alone: after looking A up, the
    /// blocks a new sequence needs still come from A, freed before B.
    @Test func cachedPrefixBlocksCountsAChainsHeadWithoutTouchingTheLRU() throws {
        var c = smallConfig(.paged, memoryBytes: 6 * 512)  // 6 blocks of 4 tokens x 32 B x 4 tensors
        c.metadataOnly = true
        let e = try Engine(c)
        #expect(e.stats().blocksTotal == 6)
        let a = BlockHash.chain(tokens(8, seed: 70), blockTokens: 4), b = BlockHash.chain(tokens(8, seed: 71), blockTokens: 4)
        for (seq, h) in [(UInt64(1), a), (2, b)] {
            _ = try h.withUnsafeBufferPointer { (p) throws(KVError) in try e.createSequence(seq, blockHashes: p, tokens: 8) }
            try e.free(seq)
        }
        #expect(a.withUnsafeBufferPointer { e.cachedPrefixBlocks($0) } == 2)
        #expect((a + [12345]).withUnsafeBufferPointer { e.cachedPrefixBlocks($0) } == 2)
        #expect([a[1]].withUnsafeBufferPointer { e.cachedPrefixBlocks($0) } == 1)
        #expect([UInt64]().withUnsafeBufferPointer { e.cachedPrefixBlocks($0) } == 0)
        _ = try [UInt64]().withUnsafeBufferPointer { (p) throws(KVError) in try e.createSequence(3, blockHashes: p, tokens: 16) }
        #expect(a.withUnsafeBufferPointer { e.cachedPrefixBlocks($0) } == 0, "A was the least recently used")
        #expect(b.withUnsafeBufferPointer { e.cachedPrefixBlocks($0) } == 2)
    }

    @Test func appendsAfterAnUnknownPartialBlockAreNotIndexed() throws {
        var c = smallConfig(.paged)
        c.metadataOnly = true
        let e = try Engine(c)
        let hashes = BlockHash.chain(tokens(8, seed: 61), blockTokens: 4)
        _ = try hashes.withUnsafeBufferPointer { try e.createSequence(1, blockHashes: $0, tokens: 10) }
        _ = drain(e)
        try e.append(1, tokens: tokens(20, seed: 62))
        #expect(drain(e).isEmpty)
        #expect(try e.length(1) == 30)
    }

    @Test func aWrongNumberOfHashesIsRejected() throws {
        let e = try Engine(smallConfig(.paged))
        let hashes: [UInt64] = [1, 2, 3]
        #expect(throws: KVError.self) { _ = try hashes.withUnsafeBufferPointer { try e.createSequence(1, blockHashes: $0, tokens: 8) } }
        #expect(e.stats().sequences == 0)
    }

    /// Hashes of only the first full blocks (a request re-created after a recompute
    /// preemption: its prompt's hashes for prompt and output tokens): only those blocks are
    /// looked up and indexed (at creation, or as scheduled), not the full blocks after them,
    /// nor the blocks appends fill.
    @Test(arguments: [false, true])
    func hashesOfTheFirstBlocksIndexOnlyThoseBlocks(indexOnSchedule: Bool) throws {
        var c = smallConfig(.paged)
        c.metadataOnly = true
        c.indexOnSchedule = indexOnSchedule
        let e = try Engine(c)
        let prompt = tokens(10, seed: 65), output = tokens(12, seed: 66)  // 2 full blocks + 2 tokens, then 12 more
        let hashes = BlockHash.chain(prompt, blockTokens: 4)
        #expect(try hashes.withUnsafeBufferPointer { (h) throws(KVError) in try e.createSequence(1, blockHashes: h, tokens: 22) } == 0)
        try e.schedule(1, tokens: 22)
        #expect(drain(e).filter { $0.kind == .blockStored }.map(\.blockHash) == hashes, "blocks 0 and 1; blocks 2...4 are unknown")
        try e.append(1, tokens: tokens(6, seed: 67))
        #expect(drain(e).isEmpty, "blocks 5 and 6 follow unknown tokens")
        #expect(try e.length(1) == 28)
        #expect(try e.createSequence(2, tokens: prompt + output) == 0, "blocks of hashes alone have no fingerprint to match")
        let again = try hashes.withUnsafeBufferPointer { (h) throws(KVError) in try e.createSequence(3, blockHashes: h, tokens: 8) }
        #expect(again == 4, "all hashes given for 8 tokens: one token must remain to compute")
        #expect(try hashes.withUnsafeBufferPointer { (h) throws(KVError) in try e.createSequence(4, blockHashes: h, tokens: 9) } == 8)
    }

    /// A 0 among the hashes (a zeroed buffer) is refused: left in, the blocks appended after
    /// it would chain from 0, pass for a prompt's first block, and be hit by another prompt.
    @Test(arguments: [false, true])
    func aZeroHashIsRejectedAndChangesNothing(indexOnSchedule: Bool) throws {
        var c = smallConfig(.paged)
        c.metadataOnly = true
        c.indexOnSchedule = indexOnSchedule
        let e = try Engine(c)
        #expect(drain(e) == [memoryTierCleared], "the engine's creation")
        let hashes: [UInt64] = [BlockHash.chain(tokens(4, seed: 63), blockTokens: 4)[0], 0]
        let refused = thrown { () throws(KVError) in
            _ = try hashes.withUnsafeBufferPointer { (h) throws(KVError) in try e.createSequence(1, blockHashes: h, tokens: 8) }
        }
        #expect(refused?.code == .invalidArgument)
        #expect(refused?.message.contains("block hash 1") == true)
        #expect(e.stats().sequences == 0 && e.stats().blocksUsed == 0)
        #expect(drain(e).isEmpty)
        let appended = tokens(4, seed: 64)
        #expect(thrown { () throws(KVError) in try e.append(1, tokens: appended) }?.code == .notFound)
        #expect(try e.createSequence(2, tokens: appended + [1]) == 0, "no block chained from a 0 hash")
    }

    @Test func metadataOnlyEnginesHoldNoMemory() throws {
        var c = smallConfig(.paged, memoryBytes: 1 << 30)
        c.metadataOnly = true
        let e = try Engine(c)
        try e.createSequence(1, tokens: tokens(4000, seed: 63))
        #expect(e.stats().committedBytes == 0)
        #expect(e.stats().blocksUsed == 1000)
        #expect(throws: KVError.self) { _ = try e.blockKV(0, layer: 0) }
    }
}

@Suite("Engine configuration limits")
struct ConfigurationLimitTests {
    /// A budget of more blocks than the engine indexes is refused with a status, before any
    /// metadata is allocated (it would take gigabytes), in every layout.
    @Test(arguments: [(Layout.paged, false), (.contiguous, false), (.paged, true)])
    func aBudgetOfTooManyBlocksIsRefused(layout: Layout, metadataOnly: Bool) {
        var c = smallConfig(layout, memoryBytes: 1 << 40)
        c.metadataOnly = metadataOnly
        let error = thrown { () throws(KVError) in _ = try Engine(c) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("raise block_tokens or lower memory_bytes") == true)
    }
}
