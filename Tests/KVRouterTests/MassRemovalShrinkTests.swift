import KVCache
import Testing
@testable import KVRouter

/// After a mass removal the shared table gives its memory back within a bounded number of
/// later calls, not over hundreds of thousands (routerscale, note52: scaling 64 -> 4 instances
/// of 60,000 blocks left 145 MB mapped right after the removals, given back over the ~700,000
/// routes that drove three halvings of 2^23 -> 2^20 entries at 32 passes and 4 moves a call).
/// Counts calls, not time.
@Suite struct MassRemovalShrinkTests {
    static func hash(_ i: Int) -> UInt64 { UInt64(i) &* 0x9E37_79B9_7F4A_7C15 }

    func stored(_ h: UInt64) -> KVEvent { KVEvent(kind: .blockStored, blockHash: h, parentHash: 0) }

    /// A view of 8 slots of 100,000 blocks (the table at 2^21 entries, drained).
    func fullView() -> CacheView {
        let view = CacheView(mode: .exact, trackedBlocks: 1 << 22, approximateBlocksPerInstance: 16)
        for s in 0..<8 { for i in 1...100_000 { view.apply(stored(Self.hash(s * 1_000_000 + i)), slot: s) } }
        while view.table.isMigrating { view.table.advanceDrain() }
        return view
    }

    /// Calls of `advanceDrain` (as routes make them) until `t` is one array again.
    func callsToSettle(_ t: BlockMaskTable) -> Int {
        var calls = 0
        while t.isMigrating {
            t.advanceDrain()
            calls += 1
        }
        return calls
    }

    /// Forgetting 7 of the 8 slots leaves 100,000 hashes in 2^21 entries: within 2 drains of
    /// at most `2 * BlockMaskTable.drainCalls` calls each (the old code: 103,734 calls, a
    /// halving at a time at 32 passes and 4 moves a call) the table is at 2^19 entries
    /// (within 8 times the hashes held), one array, every remaining hash found, no call having
    /// moved more than a large halving's share.
    @Test func memoryComesBackWithinABoundedNumberOfCalls() {
        let view = fullView(), t = view.table
        #expect(t.capacity == 1 << 21 && t.count == 800_000)
        for s in 1..<8 { view.forget(slot: s) }
        #expect(t.count == 100_000)
        let calls = callsToSettle(t)
        #expect(t.capacity == 1 << 19, "capacity \(t.capacity) for 100,000 hashes")
        #expect(calls <= 4 * BlockMaskTable.drainCalls, "\(calls) calls to give the memory back")
        #expect(t.mostMoved <= (1 << 21) / (8 * BlockMaskTable.drainCalls))
        #expect((1...100_000).allSatisfy { t.slots(Self.hash($0)) == 1 })
        #expect(view.heldBlocks(slot: 0) == 100_000 && (1..<8).allSatisfy { view.heldBlocks(slot: $0) == 0 })
    }

    /// Forgetting all 8 slots empties the table: the outgrown arrays hold nothing left to move,
    /// so later calls only unmap them, two 2 MiB chunks a call, and the table is back at its
    /// first 4,096 entries within 16 calls (the old code: 130,816, reading every entry).
    @Test func anEmptiedTableIsReleasedInAFewCalls() {
        let view = fullView(), t = view.table
        for s in 0..<8 { view.forget(slot: s) }
        #expect(t.count == 0)
        let calls = callsToSettle(t)
        #expect(t.capacity == 4096 && t.scanLength == 4096)
        #expect(calls <= 16, "\(calls) calls to give the memory back")
        #expect(t.mostReleased <= 4 << 20)
    }
}
