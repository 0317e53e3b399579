import KVCache
import Testing
@testable import KVRouter

/// Forgetting an instance does O(hashes it held) work, the shared table's shrink left to later
/// calls (routerscale): each of a forget's clears also drove the shared table's halving (up to
/// 32 passes, 4 moves and a 2 MiB `munmap` every 131,072 passes), so `remove_instance` while
/// scaling 64 -> 4 instances of 60,000 blocks went from 5.3 to 10.1 ms mean, 14 to 47.7 ms max;
/// and forgetting an instance that held 16 blocks unmapped its 64 KiB set (0.02 -> 0.075 ms).
@Suite struct ForgetDefersShrinkTests {
    static func hash(_ i: Int) -> UInt64 { UInt64(i) &* 0x9E37_79B9_7F4A_7C15 }

    func stored(_ h: UInt64) -> KVEvent { KVEvent(kind: .blockStored, blockHash: h, parentHash: 0) }

    /// 8 slots of 25,000 blocks take the shared table to 2^19 entries; forgetting 7 of them
    /// leaves it sparse: the halving starts, but no forget moves or passes an entry of the
    /// outgrown array (its cursor stays at 0, so `scanLength` is the new array plus the whole
    /// old one). Later calls then drain it, at most 4 moves a call, to 2^17 entries (within 8
    /// times the 25,000 hashes held), every hash still found.
    @Test func forgetMovesAndPassesNothing() {
        let view = CacheView(mode: .exact, trackedBlocks: 1 << 22, approximateBlocksPerInstance: 16)
        for s in 0..<8 { for i in 1...25_000 { view.apply(stored(Self.hash(s * 100_000 + i)), slot: s) } }
        let t = view.table
        while t.isMigrating { t.advanceDrain() }
        #expect(t.capacity == 1 << 19 && t.count == 200_000)
        for s in 1..<8 {
            view.forget(slot: s)
            if t.isMigrating {
                #expect(t.scanLength == 3 * t.capacity, "the forget of slot \(s) drove the drain: \(t.scanLength) left")
            }
        }
        #expect(t.isMigrating && t.count == 25_000)
        var calls = 0
        while t.isMigrating {
            t.advanceDrain()
            calls += 1
        }
        #expect(t.capacity == 1 << 17 && t.mostMoved <= BlockMaskTable.migrationSteps)
        #expect(calls <= (3 << 19) / BlockMaskTable.passSteps, "\(calls) calls to drain")
        #expect((1...25_000).allSatisfy { t.slots(Self.hash($0)) == 1 })
        #expect(view.heldBlocks(slot: 0) == 25_000 && (1..<8).allSatisfy { view.heldBlocks(slot: $0) == 0 })
    }

    /// A slot whose set never grew keeps it, emptied, across `forget` (no 64 KiB `munmap`, and
    /// none mapped again by its next stored block); a set that grew is released.
    @Test func aSmallSetIsKeptAndALargeOneReleased() {
        let view = CacheView(mode: .exact, trackedBlocks: 1 << 20, approximateBlocksPerInstance: 16)
        for i in 1...16 { view.apply(stored(Self.hash(i)), slot: 0) }
        for i in 1...10_000 { view.apply(stored(Self.hash(100 + i)), slot: 1) }
        #expect(view.heldScanLength(slot: 0) == 4096 && view.heldScanLength(slot: 1) > 4096)
        view.forget(slot: 0)
        view.forget(slot: 1)
        #expect(view.heldScanLength(slot: 0) == 4096, "the 16-block slot's set was released")
        #expect(view.heldScanLength(slot: 1) == 0 && view.listedHashes(slot: 0) == 0)
        #expect(view.table.count == 0 && view.heldBlocks(slot: 0) == 0)
        view.apply(stored(Self.hash(7)), slot: 0)
        view.apply(KVEvent(kind: .allCleared, blockHash: 0, parentHash: 0), slot: 0)
        view.apply(stored(Self.hash(8)), slot: 0)
        #expect(view.listedHashes(slot: 0) == 1 && view.table.slots(Self.hash(8)) == 1 && view.table.slots(Self.hash(7)) == 0)
    }
}
