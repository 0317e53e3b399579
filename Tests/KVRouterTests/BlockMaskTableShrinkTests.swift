import KVCache
import Testing
@testable import KVRouter

/// The router's block table gives memory back as hashes leave, without a whole-table stall
/// (revchurn): it halved never, so a view that once held 4,000,000 blocks kept 264 MB after
/// evicting to 32, and forgetting an instance holding 16 blocks after a 4,000,000-block peak
/// walked its whole set (22-50 ms against 0.02 ms); and the end of a doubling's drain freed
/// the outgrown array in one call (glibc munmaps 256-512 MiB: one observe batch 356-476 ms).
@Suite struct BlockMaskTableShrinkTests {
    static func hash(_ i: Int) -> UInt64 { UInt64(i) &* 0x9E37_79B9_7F4A_7C15 }

    /// 200,000 hashes take a 16-entry table to 2^19 entries; clearing all but 100 brings it
    /// back within 8 times the hashes held, and clearing those to its first 16 entries; while
    /// it shrinks, `forEachHash` never examines more than 24 entries per hash held (plus 3
    /// arrays at the first capacity), no call moves more than 4 entries, and every hash stays
    /// found.
    @Test func capacityFollowsTheHashesHeld() {
        let t = BlockMaskTable(maxEntries: 1 << 20, firstCapacity: 16)
        for i in 1...200_000 { t.set(Self.hash(i), 1) }
        let peak = t.capacity
        var worstScan = 0
        for i in stride(from: 200_000, to: 100, by: -1) {
            t.clear(Self.hash(i), 1)
            if t.scanLength > 24 * t.count + 48 { worstScan = max(worstScan, t.scanLength) }
        }
        while t.isMigrating { t.advanceDrain() }
        #expect(peak == 1 << 19 && t.count == 100)
        #expect(t.capacity <= 8 * t.count, "capacity \(t.capacity) for 100 hashes after \(peak)")
        #expect(worstScan == 0, "forEachHash examined \(worstScan) entries")
        #expect(t.mostMoved <= BlockMaskTable.migrationSteps)
        #expect((1...200_000).allSatisfy { t.slots(Self.hash($0)) == ($0 <= 100 ? 1 : 0) })
        for i in 1...100 { t.clear(Self.hash(i), 1) }
        while t.isMigrating { t.advanceDrain() }
        #expect(t.count == 0 && t.capacity == 16)
    }

    /// An instance that stored 200,000 blocks and then removed all but 16 leaves a set whose
    /// `forget` examines at most 3 times the set's first 4,096 entries (it examined 2^19), and
    /// the shared table shrinks likewise.
    @Test func forgetExaminesAboutTheHashesHeld() {
        let view = CacheView(mode: .exact, trackedBlocks: 1 << 20, approximateBlocksPerInstance: 16)
        for i in 1...200_000 { view.apply(KVEvent(kind: .blockStored, blockHash: Self.hash(i), parentHash: 0), slot: 0) }
        for i in 17...200_000 { view.apply(KVEvent(kind: .blockRemoved, blockHash: Self.hash(i), parentHash: 0), slot: 0) }
        for i in 1...16 { view.apply(KVEvent(kind: .blockStored, blockHash: Self.hash(1_000_000 + i), parentHash: 0), slot: 1) }
        #expect(view.listedHashes(slot: 0) == 16 && view.table.count == 32)
        #expect(view.heldScanLength(slot: 0) <= 3 * 4096, "forget would examine \(view.heldScanLength(slot: 0))")
        #expect(view.table.scanLength <= 3 * 4096, "the shared table spans \(view.table.scanLength)")
        view.forget(slot: 0)
        #expect(view.table.count == 16 && view.heldBlocks(slot: 1) == 16)
    }

    /// Doublings to 2^20 entries (16 MiB) release each outgrown array a chunk or two at a
    /// time, never more than 4 MiB in one call (it was the whole array: 8 MiB here).
    @Test func noCallReleasesAWholeOutgrownArray() {
        let t = BlockMaskTable(maxEntries: 1 << 20)
        for i in 1...300_000 { t.set(Self.hash(i), 1) }
        while t.isMigrating { t.advanceDrain() }
        #expect(t.capacity == 1 << 20)
        #expect(t.mostReleased <= 4 << 20, "one call released \(t.mostReleased) bytes")
    }

    /// A table that starts at 16 entries and unmaps outgrown arrays a page (256 entries) at a
    /// time, under random inserts, clears and forgets (a slot's bit cleared from each hash
    /// holding it, as `CacheView.forget` does) of 4,000 hashes over 4 slots, against a
    /// `Dictionary`: phases of 5,000 calls alternate between mostly inserts (no forgets; up to
    /// its limit of 2,200 hashes, refusing past it) and frequent forgets (down to a few dozen
    /// hashes), so it doubles to 8,192 entries and halves back to a few hundred or less four
    /// times, with lookups, clears and forgets landing in both arrays (and probes running off
    /// a partly unmapped array's end) while one drains. After every call the count and the
    /// call's result agree with the model, the capacity is within 8 times the count (or 16)
    /// when no array drains, and `forEachHash` examines at most 24 entries per hash (plus 48);
    /// every 500 calls every hash's mask, each slot's holders and the hashes listed agree.
    @Test(arguments: 1...4) func aGrowingAndShrinkingTableMatchesADictionary(seed: Int) {
        var rng = SplitMix64(seed: UInt64(seed))
        let t = BlockMaskTable(maxEntries: 2200, firstCapacity: 16, releaseChunk: 256)
        var model: [UInt64: UInt64] = [:]
        var wrong = 0, sparse = 0, wideScans = 0, refusals = 0, halvings = 0, largest = 0, smallest = 1 << 20
        var capacity = t.capacity
        func check() {
            if t.count != model.count { wrong += 1 }
            if !t.isMigrating && t.capacity > 16 && 8 * t.count < t.capacity { sparse += 1 }
            if t.scanLength > 24 * t.count + 48 { wideScans += 1 }
            if t.capacity < capacity { halvings += 1 }
            capacity = t.capacity
            largest = max(largest, capacity)
            if capacity > 16 { smallest = min(smallest, capacity) }
        }
        func checkAll() {
            wrong += (1...4000).filter { t.slots(Self.hash($0)) != model[Self.hash($0)] ?? 0 }.count
            for s in 0..<4 where t.holders(of: 1 << UInt64(s)) != model.values.filter({ $0 & 1 << UInt64(s) != 0 }).count {
                wrong += 1
            }
            var listed: [UInt64] = []
            t.forEachHash { listed.append($0) }
            if listed.count != model.count || Set(listed) != Set(model.keys) { wrong += 1 }
        }
        for step in 1...40_000 {
            let key = Self.hash(1 + Int(rng.next() % 4000)), bit = UInt64(1) << (rng.next() % 4)
            let r = rng.next() % 1000, filling = (step / 5000) % 2 == 0
            if r < (filling ? 850 : 150) {
                let fits = model[key] != nil || model.count < 2200
                if t.set(key, bit) != fits { wrong += 1 }
                if fits { model[key, default: 0] |= bit } else { refusals += 1 }
                check()
            } else if filling || r < 990 {
                t.clear(key, bit)
                if let m = model[key] { model[key] = m & ~bit == 0 ? nil : m & ~bit }
                check()
            } else {
                for (k, m) in model where m & bit != 0 {
                    t.clear(k, bit)
                    model[k] = m & ~bit == 0 ? nil : m & ~bit
                    check()
                }
            }
            if step % 500 == 0 { checkAll() }
        }
        #expect(wrong == 0 && sparse == 0 && wideScans == 0, "seed \(seed)")
        #expect(largest == 8192 && smallest <= 512 && halvings >= 16 && refusals > 0,
                "seed \(seed): up to \(largest), \(halvings) halvings, down to \(smallest), \(refusals) refusals")
        #expect(t.mostMoved <= BlockMaskTable.migrationSteps && t.mostReleased <= 2 * 256 * 16)
    }
}
