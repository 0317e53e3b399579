import Testing
@testable import KVCache

/// `EngineConfig.eventCapacity` (`event_capacity`): after the first drain the queue holds
/// exactly that many events between two drains and drops the oldest beyond it, counting them
/// in `eventsDropped`; out of 1...16777216 the engine is refused by name.
@Suite struct EventCapacityTests {
    /// A queue of 16: the creation's `allCleared` takes none of it; 16 blocks stored between
    /// two drains all arrive, 17 deliver the last 16 and count 1 dropped. Before, the room
    /// for the creation's event stayed for the engine's life: 17 held, none dropped.
    @Test func aQueueOfNHoldsExactlyNBetweenDrainsAndDropsTheRest() throws {
        var c = smallConfig(.paged)
        c.eventCapacity = 16
        let e = try Engine(c)
        #expect(drainAll(e).count == 1, "the creation's allCleared")
        try e.createSequence(1, tokens: tokens(16 * 4, seed: 61))
        #expect(drainAll(e).count == 16 && e.stats().eventsDropped == 0)
        let second = tokens(17 * 4, seed: 62)
        try e.createSequence(2, tokens: second)
        let delivered = drainAll(e)
        #expect(delivered.map(\.blockHash) == Array(BlockHash.chain(second, blockTokens: 4).dropFirst()))
        #expect(e.stats().eventsDropped == 1)
    }

    /// 0 and 16777217 are refused, naming the field and its range; 1 and 16777216 pass.
    @Test func anEventCapacityOutsideItsRangeIsInvalid() throws {
        var c = smallConfig(.paged)
        for bad in [0, (1 << 24) + 1] {
            c.eventCapacity = bad
            #expect(throws: KVError(.invalidArgument, "event_capacity \(bad) is outside 1...16777216")) { try Engine(c) }
        }
        for good in [1, 1 << 24] {
            c.eventCapacity = good
            try c.validate()
        }
    }
}
