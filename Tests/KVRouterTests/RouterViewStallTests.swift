import KVCache
import Testing
@testable import KVRouter

/// No observe or route of the exact view pays a pass over a whole table or log under the
/// router's mutex (the 2026-11-25 scale review: a doubling's rehash took 100-260 ms at 1-4
/// million blocks, a full log's compaction 100-150 ms at 2 million entries, while a routing
/// decision's target is p99 < 2 us), and a doubled table stops probing two arrays once
/// routes alone keep coming.
@Suite struct RouterViewStallTests {
    static func hash(_ i: Int) -> UInt64 { UInt64(i) &* 0x9E37_79B9_7F4A_7C15 }

    /// Stored events take the shared table past half full (4,096 -> 8,192 entries) and then
    /// stop; routes alone, 1,600 of them (4 steps each through the outgrown 4,096 entries and
    /// its at most 2,049 moves), finish the drain, so steady-state lookups probe one array.
    @Test func routesFinishADrainWhenEventsStop() throws {
        let r = try makeRouter(.dualMap, instances: 2) { $0.view = .exact }
        var stored = 0
        while !r.view.table.isMigrating {
            stored += 1
            try r.store([Self.hash(stored)], at: 0)
        }
        let prompt = chain(7, count: 4)
        for _ in 0..<1600 { _ = try r.routeSlot(prompt, tokens: 64) }
        #expect(!r.view.table.isMigrating, "still draining after 1,600 routes (\(stored) blocks stored)")
        #expect((1...stored).allSatisfy { r.view.table.slots(Self.hash($0)) == 1 })
    }

    /// One slot stores 300,000 distinct hashes, removing every third and storing every
    /// ninth again, so its record of hashes grows past 2^18 entries with stale ones and
    /// repeats; no call moves or compacts more than `BlockMaskTable.migrationSteps` of its
    /// entries, and `forget` still clears exactly what the slot holds.
    @Test func noEventCompactsAWholeLog() {
        let v = CacheView(mode: .exact, trackedBlocks: 1 << 20, approximateBlocksPerInstance: 16)
        func event(_ kind: KVEvent.Kind, _ i: Int) -> KVEvent { KVEvent(kind: kind, blockHash: Self.hash(i), parentHash: 0) }
        for i in 1...300_000 {
            v.apply(event(.blockStored, i), slot: 3)
            if i % 3 == 0 { v.apply(event(.blockRemoved, i), slot: 3) }
            if i % 9 == 0 { v.apply(event(.blockStored, i), slot: 3) }
            v.apply(event(.blockStored, i), slot: 5)
        }
        let held = (1...300_000).filter { $0 % 3 != 0 || $0 % 9 == 0 }.count
        #expect(v.mostHeldWork <= BlockMaskTable.migrationSteps, "one call moved or compacted \(v.mostHeldWork) entries")
        #expect(v.heldBlocks(slot: 3) == held && v.heldBlocks(slot: 5) == 300_000)
        v.forget(slot: 3)
        #expect(v.heldBlocks(slot: 3) == 0 && v.heldBlocks(slot: 5) == 300_000 && v.table.count == 300_000)
    }
}
