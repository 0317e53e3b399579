import KVCache
import Testing
@testable import KVRouter

@Suite struct CacheViewTests {
    /// A small real engine (16-token blocks, 64 blocks) whose events feed the router.
    func smallEngine() throws -> Engine {
        var c = EngineConfig()
        c.blockTokens = 16
        c.numLayers = 1
        c.numKVHeads = 1
        c.headDim = 8
        c.maxSeqs = 16
        c.maxSeqTokens = 1024
        c.memoryBytes = UInt64(64 * 16 * 8 * 2 * 2)  // 64 blocks of 16 tokens, 2 tensors
        c.metadataOnly = true
        return try Engine(c)
    }

    func drain(_ e: Engine, into r: Router, id: UInt32) throws {
        var buffer = [KVEvent](repeating: KVEvent(kind: .allCleared, blockHash: 0, parentHash: 0), count: 256)
        let n = buffer.withUnsafeMutableBufferPointer { e.drainEvents(into: $0) }
        try buffer.withUnsafeBufferPointer { (b) throws(KVError) in try r.observe(id, events: UnsafeBufferPointer(rebasing: b[0..<n])) }
    }

    @Test func eventsMakeTheViewExact() throws {
        let engine = try smallEngine()
        #expect(engine.stats().blocksTotal == 64)
        let r = try makeRouter(.overlapCost, instances: 2)
        var prompts: [[Int32]] = []
        // 40 prompts of 3 full blocks + 5 tokens: 4 blocks each, so the 64-block engine evicts.
        for p in 0..<40 {
            let tokens = (0..<53).map { Int32(p * 1000 + $0) }
            prompts.append(tokens)
            try engine.createSequence(UInt64(p), tokens: tokens)
            try engine.free(UInt64(p))
            try drain(engine, into: r, id: 1)
        }
        #expect(engine.stats().blocksEvicted > 0, "the test must exercise removals")
        // For every prompt the router's match equals what the engine would report cached.
        for tokens in prompts {
            let hashes = BlockHash.chain(tokens, blockTokens: 16)
            let engineCached = engine.cachedPrefixTokens(tokens) / 16
            #expect(r.cached(hashes, slot: 1) == engineCached)
            #expect(r.cached(hashes, slot: 0) == 0)
        }
        #expect(r.view.blocksPerSlot[1] == Int(engine.stats().blocksCached + engine.stats().blocksUsed))
        // Trim drops everything: one allCleared empties the instance's view.
        try engine.trim()
        try drain(engine, into: r, id: 1)
        #expect(r.view.blocksPerSlot[1] == 0)
        for tokens in prompts { #expect(r.cached(BlockHash.chain(tokens, blockTokens: 16), slot: 1) == 0) }
    }

    @Test func theApproximateViewCreditsRoutedBlocksAndForgetsTheOldestBeyondCapacity() throws {
        let r = try makeRouter(.prefixTree, instances: 1) { $0.approximateBlocksPerInstance = 8 }
        #expect(r.view.mode == .approximate)
        let first = chain(1, count: 4), second = chain(2, count: 4), third = chain(3, count: 4)
        _ = try r.routeSlot(first, tokens: 64)
        _ = try r.routeSlot(second, tokens: 64)
        #expect(r.cached(first, slot: 0) == 4 && r.cached(second, slot: 0) == 4)
        _ = try r.routeSlot(third, tokens: 64)  // pushes out the 4 oldest blocks: all of `first`
        #expect(r.cached(first, slot: 0) == 0)
        #expect(r.cached(second, slot: 0) == 4 && r.cached(third, slot: 0) == 4)
        #expect(r.view.blocksPerSlot[0] == 8)
    }

    @Test func removingAnInstanceForgetsItsCache() throws {
        let r = try makeRouter(.dualMap, instances: 2)
        let h = chain(1, count: 3)
        try r.store(h, at: 1)
        #expect(r.cached(h, slot: 1) == 3)
        try r.removeInstance(1)
        try r.addInstance(1)
        #expect(r.cached(h, slot: r.slot(of: 1)) == 0)
    }

    @Test func theMaskTableSurvivesChurn() {
        let t = BlockMaskTable(maxEntries: 1000)
        for i in 1...1000 { t.set(UInt64(i) &* 0x9E37_79B9_7F4A_7C15, UInt64(1) << UInt64(i % 3)) }
        #expect(t.count == 1000)
        #expect(!t.set(0xDEAD_BEEF, 1) && t.refused == 1)
        t.clearEverywhere(1)  // i % 3 == 0 entries go
        #expect(t.count == 1000 - 333)
        for i in 1...1000 {
            let expected: UInt64 = i % 3 == 0 ? 0 : UInt64(1) << UInt64(i % 3)
            #expect(t.slots(UInt64(i) &* 0x9E37_79B9_7F4A_7C15) == expected)
        }
    }
}
