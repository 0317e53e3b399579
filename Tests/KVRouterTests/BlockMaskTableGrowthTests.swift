import KVCache
import Testing
@testable import KVRouter

/// The router's block table grows without a whole-table stall: when it doubles, its entries
/// move to the new array a few per later call, so no observe or route pays a rehash of every
/// entry under the router's mutex (helper-212: a batch of 4,096 stored events took 213 ms
/// when the view reached 1,048,576 blocks and 1.2 s at 8,388,608, while a routing decision's
/// target is p99 < 2 us).
@Suite struct BlockMaskTableGrowthTests {
    static func hash(_ i: Int) -> UInt64 { UInt64(i) &* 0x9E37_79B9_7F4A_7C15 }

    /// 300,000 inserts double the table from 4,096 to 2^20 entries, yet no call moves more
    /// than 4 entries to a grown array, and every entry stays found.
    @Test func noCallMovesMoreThanAFewEntries() {
        let t = BlockMaskTable(maxEntries: 1 << 20)
        for i in 1...300_000 { t.set(Self.hash(i), 1 << UInt64(i % 64)) }
        #expect(t.capacity == 1 << 20 && t.count == 300_000)
        #expect(t.mostMoved <= 4, "one call moved \(t.mostMoved) entries")
        #expect((1...300_000).allSatisfy { t.slots(Self.hash($0)) == 1 << UInt64($0 % 64) })
    }

    /// A table that starts at 16 entries, under random inserts, clears and forgets (a slot's
    /// bit cleared from each hash holding it, as `CacheView.forget` does) of 4,000 hashes over
    /// 4 slots, against a `Dictionary` of the same: mostly inserts (and no forgets) for the
    /// first 12,000 calls, so it doubles up to 8,192 entries and meets its limit of 2,200
    /// hashes (refusing inserts), then mostly clears (halving it), with clears and lookups in both
    /// arrays while one drains. After every call the count and the call's result agree with the model, and
    /// every 500 calls every hash's mask and each slot's holders.
    @Test(arguments: 1...4) func aGrowingTableMatchesADictionary(seed: Int) {
        var rng = SplitMix64(seed: UInt64(seed))
        let t = BlockMaskTable(maxEntries: 2200, firstCapacity: 16)
        var model: [UInt64: UInt64] = [:]
        var migrated = 0, refusals = 0, largest = 0, wrongResults = 0, wrongCounts = 0, wrongMasks = 0, wrongHolders = 0
        for step in 1...20_000 {
            let key = Self.hash(1 + Int(rng.next() % 4000)), bit = UInt64(1) << (rng.next() % 4)
            let r = rng.next() % 1000
            if r < (step <= 12_000 ? 800 : 300) {
                let fits = model[key] != nil || model.count < 2200
                if t.set(key, bit) != fits { wrongResults += 1 }
                if fits { model[key, default: 0] |= bit } else { refusals += 1 }
            } else if r < 999 || step <= 12_000 {
                t.clear(key, bit)
                if let m = model[key] { model[key] = m & ~bit == 0 ? nil : m & ~bit }
            } else {
                for (k, m) in model where m & bit != 0 {
                    t.clear(k, bit)
                    model[k] = m & ~bit == 0 ? nil : m & ~bit
                }
            }
            if t.isMigrating { migrated += 1 }
            largest = max(largest, t.capacity)
            if t.count != model.count { wrongCounts += 1 }
            if step % 500 == 0 {
                wrongMasks += (1...4000).filter { t.slots(Self.hash($0)) != model[Self.hash($0)] ?? 0 }.count
                for s in 0..<4 where t.holders(of: 1 << UInt64(s)) != model.values.filter({ $0 & 1 << UInt64(s) != 0 }).count {
                    wrongHolders += 1
                }
            }
        }
        #expect(wrongResults == 0 && wrongCounts == 0 && wrongMasks == 0 && wrongHolders == 0, "seed \(seed)")
        #expect(largest == 8192 && migrated > 0 && refusals > 0, "seed \(seed): grew, drained and refused")
        #expect(t.mostMoved <= BlockMaskTable.migrationSteps)
    }
}
