import KVCache
import Testing
@testable import KVRouter

/// The cache view's table grows with the blocks the instances cache, up to `trackedBlocks`
/// distinct hashes; past that an exact view refuses a whole batch of events rather than drop
/// a stored block in silence (helper-70: a fixed 2^18-entry table stopped recording blocks,
/// every instance's, once one instance had cached 262,144, and never recovered).
@Suite struct CacheViewCapacityTests {
    /// A DualMap router tracking 8 blocks, instances 1 and 2, instance 1 holding hashes 1...6.
    static func sixOfEight() throws -> Router {
        var c = RouterConfig(policy: .dualMap)
        c.trackedBlocks = 8
        let r = try Router(c)
        try r.addInstance(1)
        try r.addInstance(2)
        try stored(1..<7).withUnsafeBufferPointer { (b) throws(KVError) in try r.observe(1, events: b) }
        return r
    }

    /// Stored memory-tier events of `hashes`, chained.
    static func stored(_ hashes: Range<UInt64>) -> [KVEvent] {
        hashes.map { KVEvent(kind: .blockStored, blockHash: $0, parentHash: $0 == hashes.lowerBound ? 0 : $0 - 1) }
    }

    @Test func aTableGrowsFromItsFirstCapacityAndKeepsEveryEntry() {
        let t = BlockMaskTable(maxEntries: 1 << 20)
        #expect(t.capacity == 4096)
        var taken = 0
        for h in UInt64(1)...300_000 where t.set(h &* 0x9E37_79B9_7F4A_7C15, 1 << (h % 64)) { taken += 1 }
        #expect(taken == 300_000 && t.count == 300_000 && t.refused == 0)
        #expect(t.capacity == 1 << 20, "doubled while more than half full: 2 x 300,000 rounded up")
        var wrong = 0
        for h in UInt64(1)...300_000 where t.slots(h &* 0x9E37_79B9_7F4A_7C15) != 1 << (h % 64) { wrong += 1 }
        #expect(wrong == 0)
        for h in UInt64(1)...150_000 { t.clear(h &* 0x9E37_79B9_7F4A_7C15, 1 << (h % 64)) }
        #expect(t.count == 150_000)
        for h in UInt64(150_001)...300_000 where t.slots(h &* 0x9E37_79B9_7F4A_7C15) != 1 << (h % 64) { wrong += 1 }
        #expect(wrong == 0, "backward-shift deletion in the grown table keeps the rest reachable")
        let small = BlockMaskTable(maxEntries: 24)
        #expect(small.capacity == 64, "a small limit allocates its whole table at once")
    }

    /// One instance caching more than the old fixed table held (262,144 blocks) leaves room for
    /// every other instance's blocks, at the default `trackedBlocks`.
    @Test func anInstanceCachingManyBlocksDoesNotBlindTheView() throws {
        let r = try Router(RouterConfig(policy: .dualMap))
        try r.addInstance(7)
        try r.addInstance(9)
        try Self.stored(1..<300_001).withUnsafeBufferPointer { (b) throws(KVError) in try r.observe(7, events: b) }
        try Self.stored(1_000_000..<1_000_004).withUnsafeBufferPointer { (b) throws(KVError) in try r.observe(9, events: b) }
        #expect(r.view.table.count == 300_004 && r.view.table.refused == 0)
        let last: [UInt64] = Array(1...300_000)
        #expect(last.withUnsafeBufferPointer { r.view.matchedBlocks($0, slot: r.slot(of: 7)) } == 300_000)
        let other: [UInt64] = Array(1_000_000..<1_000_004)
        #expect(other.withUnsafeBufferPointer { r.view.matchedBlocks($0, slot: r.slot(of: 9)) } == 4)
    }

    /// At the bound, a batch that could add a hash is refused whole (`outOfMemory`, naming the
    /// counts) and changes nothing; one that adds none (a repeat, another instance's hash,
    /// removals, another tier) is applied; after removals free room, stores are taken again.
    @Test func aBatchThatCouldPassTheBoundIsRefusedWhole() throws {
        let r = try Self.sixOfEight()
        var refusal: KVError?
        do throws(KVError) {
            try Self.stored(6..<10).withUnsafeBufferPointer { (b) throws(KVError) in try r.observe(2, events: b) }
        } catch { refusal = error }
        #expect(refusal?.code == .outOfMemory)
        #expect(refusal?.message == "the cache view holds 6 distinct blocks of the 8 it can track, and these events could add 3: the instances' caches hold too many blocks together")
        #expect(r.view.table.count == 6 && r.view.heldBlocks(slot: r.slot(of: 2)) == 0, "nothing of the batch applied")
        var fits = Self.stored(5..<9)  // 5 and 6 are held by instance 1: two new hashes
        fits.append(KVEvent(kind: .blockStored, tier: 1, blockHash: 77, parentHash: 0))
        try fits.withUnsafeBufferPointer { (b) throws(KVError) in try r.observe(2, events: b) }
        #expect(r.view.table.count == 8 && r.view.heldBlocks(slot: r.slot(of: 2)) == 4 && r.view.table.refused == 0)
        let removals = (1..<5).map { KVEvent(kind: .blockRemoved, blockHash: UInt64($0), parentHash: 0) }
        try removals.withUnsafeBufferPointer { (b) throws(KVError) in try r.observe(1, events: b) }
        try Self.stored(20..<24).withUnsafeBufferPointer { (b) throws(KVError) in try r.observe(1, events: b) }
        #expect(r.view.table.count == 8 && r.view.table.refused == 0)
    }
    /// A restarted engine's first batch (its `allCleared`, then stores) is judged with the
    /// room the clear frees: near the bound it was refused because its stores were counted
    /// against blocks the clear drops (revchurn). Still refused whole when even the cleared
    /// view cannot hold it; a block another instance holds stays counted as held.
    @Test func aRestartBatchIsJudgedAfterItsLeadingClear() throws {
        let r = try Self.sixOfEight()
        try Self.stored(6..<8).withUnsafeBufferPointer { (b) throws(KVError) in try r.observe(2, events: b) }
        let clear = KVEvent(kind: .allCleared, blockHash: 0, parentHash: 0)
        // Instance 1 holds 1...6, 6 shared with 2: the clear frees 5 entries, 2 are left, room
        // for 6 more.
        var tooMany = [clear] + Self.stored(10..<17)
        var refusal: KVError?
        do throws(KVError) {
            try tooMany.withUnsafeBufferPointer { (b) throws(KVError) in try r.observe(1, events: b) }
        } catch { refusal = error }
        #expect(refusal?.code == .outOfMemory)
        #expect(refusal?.message == "the cache view holds 7 distinct blocks of the 8 it can track, 5 of them held by this instance "
                + "alone, which the batch's leading all-cleared frees, and these events could add 7: the instances' caches hold "
                + "too many blocks together")
        #expect(r.view.table.count == 7 && r.view.heldBlocks(slot: r.slot(of: 1)) == 6, "nothing of the batch applied")
        tooMany.removeLast()
        try tooMany.withUnsafeBufferPointer { (b) throws(KVError) in try r.observe(1, events: b) }
        #expect(r.view.table.count == 8 && r.view.heldBlocks(slot: r.slot(of: 1)) == 6 && r.view.table.refused == 0)
    }
}
