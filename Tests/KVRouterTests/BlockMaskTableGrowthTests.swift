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
}
