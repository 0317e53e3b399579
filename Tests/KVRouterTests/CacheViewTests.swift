import Foundation
import KVCache
import Testing
@testable import KVRouter

@Suite struct CacheViewTests {
    /// A small engine shape: 16-token blocks, 64 of them.
    func smallConfig() -> EngineConfig {
        var c = EngineConfig()
        c.blockTokens = 16
        c.numLayers = 1
        c.numKVHeads = 1
        c.headDim = 8
        c.maxSeqs = 16
        c.maxSeqTokens = 1024
        c.memoryBytes = UInt64(64 * 16 * 8 * 2 * 2)  // 64 blocks of 16 tokens, 2 tensors
        return c
    }

    /// A small real engine (`smallConfig`, metadata only) whose events feed the router.
    func smallEngine() throws -> Engine {
        var c = smallConfig()
        c.metadataOnly = true
        return try Engine(c)
    }

    /// Applies every pending event of `e` to instance `id` of `r`; returns them.
    @discardableResult
    func drain(_ e: Engine, into r: Router, id: UInt32) throws -> [KVEvent] {
        var all: [KVEvent] = []
        var buffer = [KVEvent](repeating: KVEvent(kind: .allCleared, blockHash: 0, parentHash: 0), count: 256)
        while true {
            let n = buffer.withUnsafeMutableBufferPointer { e.drainEvents(into: $0) }
            try buffer.withUnsafeBufferPointer { (b) throws(KVError) in try r.observe(id, events: UnsafeBufferPointer(rebasing: b[0..<n])) }
            all += buffer[0..<n]
            if n < buffer.count { return all }
        }
    }

    /// An engine of `smallConfig` with K/V memory (4 KiB pages) and a disk tier of 128 slots
    /// in `dir`.
    func diskEngine(_ dir: String) throws -> Engine {
        var c = smallConfig()
        c.pageBytes = 4096
        c.offloadDir = dir
        c.offloadBytes = 128 * 8192
        return try Engine(c)
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
        #expect(r.view.heldBlocks(slot: 1) == Int(engine.stats().blocksCached + engine.stats().blocksUsed))
        // Trim drops everything: one allCleared empties the instance's view.
        try engine.trim()
        try drain(engine, into: r, id: 1)
        #expect(r.view.heldBlocks(slot: 1) == 0)
        for tokens in prompts { #expect(r.cached(BlockHash.chain(tokens, blockTokens: 16), slot: 1) == 0) }
    }

    /// A router that never hears of an instance's restart (no remove and add) still ends
    /// exact: the new engine's first event empties the instance's memory view, and its disk
    /// tier announces what its journal holds. Instance 1 runs engine A, then A's successor B
    /// on the same disk tier; the router just keeps observing instance 1.
    @Test func aRestartTheRouterMissedLeavesItsViewExact() throws {
        var template = Array("/tmp/kvcache-router-restart-XXXXXX".utf8CString)
        let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try makeRouter(.overlapCost, instances: 2)
        var disk = Set<UInt64>()  // instance 1's disk tier, from the same events
        func applyDisk(_ events: [KVEvent]) {
            for event in events where event.tier == KVEvent.diskTier {
                switch event.kind {
                case .allCleared: disk.removeAll()
                case .blockStored: disk.insert(event.blockHash)
                case .blockRemoved: disk.remove(event.blockHash)
                }
            }
        }
        // 6 prompts of 3 full blocks + 5 tokens.
        let prompts = (0..<6).map { p in (0..<53).map { Int32(p * 1000 + 500 + $0) } }
        let chains = prompts.map { BlockHash.chain($0, blockTokens: 16) }
        do {
            let a = try diskEngine(dir)
            for (p, tokens) in prompts.enumerated() {
                try a.createSequence(UInt64(p), tokens: tokens)
                try a.free(UInt64(p))
                if p == 2 {  // prompts 0-2 go to disk, 3-5 stay in memory
                    try a.trim()
                    try a.syncOffload()
                }
            }
            applyDisk(try drain(a, into: r, id: 1))
            #expect(r.view.heldBlocks(slot: 1) == 9 && a.stats().blocksCached == 9)
            for p in 3..<6 { #expect(r.cached(chains[p], slot: 1) == 3, "prompt \(p) in A's memory") }
            #expect(disk == Set(chains[0..<3].joined()))
        }  // A stops: its memory is gone, its disk tier stays
        let b = try diskEngine(dir)
        let events = try drain(b, into: r, id: 1)
        applyDisk(events)
        #expect(Array(events.prefix(2)) == [KVEvent(kind: .allCleared, tier: KVEvent.memoryTier, blockHash: 0, parentHash: 0),
                                            KVEvent(kind: .allCleared, tier: KVEvent.diskTier, blockHash: 0, parentHash: 0)])
        #expect(b.stats().blocksCached == 0 && b.stats().blocksUsed == 0 && b.stats().disk.recoveredSlots == 9)
        #expect(r.view.heldBlocks(slot: 1) == 0, "B's memory is empty, and so is the view")
        for p in 0..<6 {
            #expect(r.cached(chains[p], slot: 1) == 0, "prompt \(p): nothing of A's memory is left in the view")
            // B's memory is empty, so every block it finds is on its disk tier.
            var held = 0
            while held < 3 && disk.contains(chains[p][held]) { held += 1 }
            #expect(b.cachedPrefixTokens(prompts[p]) == 16 * held, "prompt \(p): the disk view predicts B's lookup")
        }
        #expect(disk == Set(chains[0..<3].joined()), "what A's journal lists")
        // B serves on; the view follows its memory: prompt 0 read back from disk, prompt 4 computed.
        for p in [0, 4] { try b.createSequence(UInt64(p), tokens: prompts[p]) }
        try b.syncOffload()
        for p in [0, 4] { try b.free(UInt64(p)) }
        try drain(b, into: r, id: 1)
        #expect(r.view.heldBlocks(slot: 1) == Int(b.stats().blocksCached) && b.stats().blocksCached == 6)
        for p in 0..<6 { #expect(r.cached(chains[p], slot: 1) == (p == 0 || p == 4 ? 3 : 0), "prompt \(p)") }
        #expect(r.cached(chains[0], slot: 0) == 0, "instance 0 untouched")
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
        #expect(r.view.heldBlocks(slot: 0) == 8)
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
        for i in 1...1000 { t.clear(UInt64(i) &* 0x9E37_79B9_7F4A_7C15, 1) }  // i % 3 == 0 entries go
        #expect(t.count == 1000 - 333)
        for i in 1...1000 {
            let expected: UInt64 = i % 3 == 0 ? 0 : UInt64(1) << UInt64(i % 3)
            #expect(t.slots(UInt64(i) &* 0x9E37_79B9_7F4A_7C15) == expected)
        }
    }
}
