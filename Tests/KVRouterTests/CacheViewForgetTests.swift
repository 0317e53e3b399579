import KVCache
import Testing
@testable import KVRouter

/// `CacheView.forget(slot:)` visits only what the slot holds (approximate: its FIFO ring;
/// exact: the table up to its last holder, `blocksPerSlot` long), and must leave exactly what
/// the full scan of every entry (`BlockMaskTable.clearEverywhere` without `holders`) leaves.
/// Each case builds two views (or tables) by the same random operations, small enough that
/// probes collide, wrap around the table's end, overflow FIFO rings and get refused, then
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

    @Test func clearingUpToTheHoldersLeavesWhatTheFullScanLeaves() {
        for seed in 1...300 {
            var rng = SplitMix64(seed: UInt64(seed))
            // 40 entries in 128 positions: clusters, and some wrap past the end.
            let a = BlockMaskTable(maxEntries: 40), b = BlockMaskTable(maxEntries: 40)
            var model: [UInt64: UInt64] = [:]
            for _ in 0..<200 {
                let h = Self.hash(1 + Int(rng.next() % UInt64(Self.universe)))
                let bits = UInt64(1) << (rng.next() % 4)
                if rng.next() % 3 == 0 {
                    a.clear(h, bits)
                    b.clear(h, bits)
                    model[h] = (model[h] ?? 0) & ~bits
                } else if a.set(h, bits) {
                    #expect(b.set(h, bits))
                    model[h] = (model[h] ?? 0) | bits
                } else {
                    #expect(!b.set(h, bits))
                }
            }
            let bit = UInt64(1) << (rng.next() % 4)
            let n = holders(a, bit)
            a.clearEverywhere(bit, holders: n)
            b.clearEverywhere(bit)
            expectSame(a, b, "seed \(seed), \(n) holders")
            for (h, m) in model { #expect(a.slots(h) == m & ~bit, "seed \(seed): the model's mask") }
        }
    }

    @Test func noHoldersScansNothing() {
        let t = BlockMaskTable(maxEntries: 8)
        t.set(Self.hash(1), 1)
        t.clearEverywhere(1, holders: 0)
        #expect(t.slots(Self.hash(1)) == 1 && t.count == 1)
    }

    /// Random operations on two views of `mode`: stores and removes (exact; some refused by a
    /// 40-entry table) or routes (approximate; 6-hash rings that overflow, some hashes refused
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
            #expect(a.blocksPerSlot[slot] == holders(a.table, bit), "seed \(seed): blocksPerSlot counts exactly the slot's entries")
            a.forget(slot: slot)
            b.table.clearEverywhere(bit)
            expectSame(a.table, b.table, "\(mode) seed \(seed)")
            #expect(a.blocksPerSlot[slot] == 0)
            for s in 0..<4 where s != slot { #expect(a.blocksPerSlot[s] == b.blocksPerSlot[s]) }
        }
        #expect(refusedSomewhere, "some inserts were refused, so the count's exactness under refusal is exercised")
    }

    /// After `forget`, an approximate slot starts an empty ring: routing it 6 new hashes keeps
    /// them all (none pushed out by the forgotten ones), and a 7th pushes out the first.
    @Test func anApproximateSlotRefillsFromAnEmptyRing() {
        let v = CacheView(mode: .approximate, trackedBlocks: 64, approximateBlocksPerInstance: 6)
        let old = (1...6).map(Self.hash), new = (11...17).map(Self.hash)
        old.withUnsafeBufferPointer { v.recordRoute($0, slot: 2) }
        v.forget(slot: 2)
        #expect(v.table.count == 0)
        new.withUnsafeBufferPointer { v.recordRoute(UnsafeBufferPointer(rebasing: $0[0..<6]), slot: 2) }
        #expect(new[0..<6].allSatisfy { v.table.slots($0) == 1 << 2 } && v.blocksPerSlot[2] == 6)
        new.withUnsafeBufferPointer { v.recordRoute(UnsafeBufferPointer(rebasing: $0[6...]), slot: 2) }
        #expect(v.table.slots(new[0]) == 0 && v.table.slots(new[6]) == 1 << 2 && v.table.count == 6)
    }
}
