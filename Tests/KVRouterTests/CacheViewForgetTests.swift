import KVCache
import Testing
@testable import KVRouter

/// `CacheView.forget(slot:)` visits only what the slot was credited with (approximate: its
/// recency list; exact: its set of hashes), and must leave exactly what clearing the
/// slot's bit from every entry leaves.
/// Each case builds two views (or tables) by the same random operations, small enough that
/// probes collide, wrap around the table's end, overflow recency lists and get refused, then
/// forgets a slot in one and scans the other, and compares every hash ever used.
@Suite struct CacheViewForgetTests {
    /// Hashes 1...universe, spread by a multiplier so that homes fall anywhere (never 0).
    static let universe = 96
    static func hash(_ i: Int) -> UInt64 { UInt64(i) &* 0x9E37_79B9_7F4A_7C15 }

    /// Every hash's mask, the entry count and the refusals of `a` equal those of `b`.
    func expectSame(_ a: BlockMaskTable, _ b: BlockMaskTable, _ what: String) {
        for i in 1...Self.universe {
            #expect(a.slots(Self.hash(i)) == b.slots(Self.hash(i)), "\(what): hash \(i)")
        }
        #expect(a.count == b.count, "\(what): count")
        #expect(a.refused == b.refused, "\(what): refused")
    }

    /// Entries of `t` holding `bit`, counted over the universe.
    func holders(_ t: BlockMaskTable, _ bit: UInt64) -> Int {
        (1...Self.universe).filter { t.slots(Self.hash($0)) & bit != 0 }.count
    }

    /// What a scan of every entry leaves when it clears `bit`: `bit` cleared from every hash
    /// of the universe (the only keys the tests use).
    func clearEverywhere(_ t: BlockMaskTable, _ bit: UInt64) {
        for i in 1...Self.universe { t.clear(Self.hash(i), bit) }
    }

    /// Random operations on two views of `mode`: stores and removes (exact; some refused by a
    /// 40-entry table) or routes (approximate; 6-hash lists that overflow, some hashes refused
    /// by a 16-entry table), over 4 slots.
    func randomViews(_ mode: CacheViewMode, seed: UInt64) -> (CacheView, CacheView) {
        var rng = SplitMix64(seed: seed)
        let tracked = mode == .exact ? 40 : 16
        let a = CacheView(mode: mode, trackedBlocks: tracked, approximateBlocksPerInstance: 6)
        let b = CacheView(mode: mode, trackedBlocks: tracked, approximateBlocksPerInstance: 6)
        var route = [UInt64](repeating: 0, count: 4)
        for _ in 0..<150 {
            let slot = Int(rng.next() % 4)
            if mode == .exact {
                let kind: KVEvent.Kind = rng.next() % 3 == 0 ? .blockRemoved : .blockStored
                let e = KVEvent(kind: kind, blockHash: Self.hash(1 + Int(rng.next() % UInt64(Self.universe))), parentHash: 0)
                a.apply(e, slot: slot)
                b.apply(e, slot: slot)
            } else {
                let n = 1 + Int(rng.next() % 4)
                for k in 0..<n { route[k] = Self.hash(1 + Int(rng.next() % UInt64(Self.universe))) }
                route.withUnsafeBufferPointer { r in
                    a.recordRoute(UnsafeBufferPointer(rebasing: r[0..<n]), slot: slot)
                    b.recordRoute(UnsafeBufferPointer(rebasing: r[0..<n]), slot: slot)
                }
            }
        }
        return (a, b)
    }

    @Test(arguments: [CacheViewMode.exact, .approximate])
    func forgetLeavesWhatTheFullScanLeaves(_ mode: CacheViewMode) {
        var refusedSomewhere = false
        for seed in 1...200 {
            let (a, b) = randomViews(mode, seed: UInt64(seed))
            refusedSomewhere = refusedSomewhere || a.table.refused > 0
            let slot = seed % 4
            let bit = UInt64(1) << UInt64(slot)
            #expect(a.heldBlocks(slot: slot) == holders(a.table, bit), "seed \(seed): the slot holds no hash outside the universe")
            a.forget(slot: slot)
            clearEverywhere(b.table, bit)
            expectSame(a.table, b.table, "\(mode) seed \(seed)")
            #expect(a.heldBlocks(slot: slot) == 0)
            for s in 0..<4 where s != slot { #expect(a.heldBlocks(slot: s) == b.heldBlocks(slot: s)) }
        }
        #expect(refusedSomewhere, "some inserts were refused, so forget after a refusal is exercised")
    }

    /// Exact mode under churn: 20,000 stores and removes of 96 hashes over 2 slots (a table
    /// with room for all, so none is refused). Each slot's set holds exactly the hashes whose
    /// bit the slot holds (checked every 100 events; kept repeats or removed hashes would
    /// grow it without bound), and `forget` then leaves what clearing every entry leaves.
    @Test func anExactSlotsLogStaysBoundedUnderChurnAndForgetsExactly() {
        for seed in 1...20 {
            var rng = SplitMix64(seed: UInt64(seed))
            let a = CacheView(mode: .exact, trackedBlocks: 400, approximateBlocksPerInstance: 6)
            let b = CacheView(mode: .exact, trackedBlocks: 400, approximateBlocksPerInstance: 6)
            var most = 0, wrongSets = 0
            for step in 1...20_000 {
                let slot = Int(rng.next() % 2)
                let kind: KVEvent.Kind = rng.next() % 2 == 0 ? .blockRemoved : .blockStored
                let e = KVEvent(kind: kind, blockHash: Self.hash(1 + Int(rng.next() % UInt64(Self.universe))), parentHash: 0)
                a.apply(e, slot: slot)
                b.apply(e, slot: slot)
                most = max(most, a.listedHashes(slot: slot))
                if step % 100 == 0 && a.listedHashes(slot: slot) != a.heldBlocks(slot: slot) { wrongSets += 1 }
            }
            #expect(most <= Self.universe && wrongSets == 0, "seed \(seed): a set reached \(most) entries")
            let slot = seed % 2, bit = UInt64(1) << UInt64(slot)
            #expect(a.heldBlocks(slot: slot) == holders(a.table, bit))
            a.forget(slot: slot)
            clearEverywhere(b.table, bit)
            expectSame(a.table, b.table, "seed \(seed)")
            #expect(a.heldBlocks(slot: slot) == 0 && a.listedHashes(slot: slot) == 0)
        }
    }

    /// After `forget`, an approximate slot starts an empty list: routing it 6 new hashes keeps
    /// them all (none pushed out by the forgotten ones), and a 7th pushes out the least recent:
    /// the route's last (its first is the most recent).
    @Test func anApproximateSlotRefillsFromAnEmptyList() {
        let v = CacheView(mode: .approximate, trackedBlocks: 64, approximateBlocksPerInstance: 6)
        let old = (1...6).map(Self.hash), new = (11...17).map(Self.hash)
        old.withUnsafeBufferPointer { v.recordRoute($0, slot: 2) }
        v.forget(slot: 2)
        #expect(v.table.count == 0)
        new.withUnsafeBufferPointer { v.recordRoute(UnsafeBufferPointer(rebasing: $0[0..<6]), slot: 2) }
        #expect(new[0..<6].allSatisfy { v.table.slots($0) == 1 << 2 } && v.heldBlocks(slot: 2) == 6)
        new.withUnsafeBufferPointer { v.recordRoute(UnsafeBufferPointer(rebasing: $0[6...]), slot: 2) }
        #expect(v.table.slots(new[5]) == 0 && v.table.slots(new[6]) == 1 << 2 && v.table.count == 6)
        #expect(new[0..<5].allSatisfy { v.table.slots($0) == 1 << 2 } && v.heldBlocks(slot: 2) == 6)
    }
}
