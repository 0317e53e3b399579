import Testing
import KVCache
@testable import KVCacheABI

/// `kvc_config.event_capacity` (offset 164, reserved_164 before): the queue holds exactly that
/// many events between two drains and drops the oldest beyond, counting them in
/// `events_dropped`; 0, or a struct that ends before the field, keeps 65536; out of range is
/// refused by name with nothing created.
@Suite struct EventCapacityABITests {
    /// Drains every pending event (at most 1024); returns how many.
    private func drainCount(_ f: ABIFixture) throws -> Int {
        var buffer = [UInt8](repeating: 0, count: 1024 * 24)
        var n = -1
        let rc = buffer.withUnsafeMutableBytes { kvc_drain_events(f.handle, $0.baseAddress, 1024, &n) }
        try #require(rc == KVC_OK && n < 1024)
        return n
    }

    /// A queue of 16: 16 blocks stored between two drains all arrive; 17 deliver the last 16
    /// and count 1 dropped. Before, the creation's room stayed after the first drain: 17 held.
    @Test func aQueueOfNHoldsExactlyNBetweenDrainsAndDropsTheRest() throws {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.eventCapacity = 16
        let f = try ABIFixture(c)
        #expect(try drainCount(f) == 1, "the creation's ALL_CLEARED")
        try f.create(1, tokens: f.uniqueTokens(1, count: 16 * 4))  // 16 full blocks
        #expect(try drainCount(f) == 16)
        #expect(try f.stats().eventsDropped == 0)
        try f.create(2, tokens: f.uniqueTokens(2, count: 17 * 4))  // 17 full blocks
        #expect(try drainCount(f) == 16)
        #expect(try f.stats().eventsDropped == 1)
    }

    /// 0 and a struct that ends before offset 164 (whatever its byte 164 holds) keep 65536;
    /// the field is read at 164.
    @Test func zeroOrAnOlderStructKeepsTheDefaultAndTheFieldIsReadAt164() throws {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        let zero = try c.decoded()
        #expect(zero.eventCapacity == 65536)
        c.eventCapacity = 1024
        c.structSize = 164
        let old = try c.decoded()
        #expect(old.eventCapacity == 65536, "a 164-byte struct ends before event_capacity")
        c.structSize = 168
        let new = try c.decoded()
        #expect(new.eventCapacity == 1024)
    }

    /// Above 16777216: KVC_ERR_INVALID_ARGUMENT naming the field, *out NULL. Before, any
    /// non-zero byte at 164 was KVC_ERR_UNSUPPORTED (a reserved field).
    @Test(arguments: [UInt32(1 << 24) + 1, .max])
    func anEventCapacityOutOfRangeIsInvalid(value: UInt32) {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.eventCapacity = value
        var engine: OpaquePointer? = OpaquePointer(bitPattern: 0x1234)
        let rc = c.create(&engine)
        #expect(engine == nil, "nothing created")
        kvc_engine_destroy(engine)
        expectStatus(rc, KVC_ERR_INVALID_ARGUMENT, mentioning: ["event_capacity \(value)", "1...16777216"])
    }
}
