import Testing
@testable import KVCache

/// The disk tier's two small index structures on their own: the slot LRU's order and
/// membership, and which staging buffer a request takes.
@Suite struct SlotListTests {
    /// The slots from the oldest to the youngest, by the walk `DiskTier.dropOldest` makes.
    private func order(_ lru: SlotLRU) -> [Int32] {
        var slots: [Int32] = []
        var s = lru.oldest
        while s >= 0 {
            slots.append(s)
            s = lru.next(after: s)
        }
        return slots
    }

    @Test func theLRUKeepsOrderAndMembership() throws {
        let lru = try SlotLRU(capacity: 8)
        #expect(lru.oldest == -1 && lru.count == 0)
        for s: Int32 in [3, 0, 7, 5] { lru.append(s) }
        lru.append(0)  // already a member: keeps its place
        #expect(order(lru) == [3, 0, 7, 5] && lru.count == 4)
        lru.touch(3)  // a use: to the young end
        lru.touch(6)  // not a member: nothing
        #expect(order(lru) == [0, 7, 5, 3] && !lru.contains(6))
        lru.remove(7)  // from the middle
        lru.remove(7)  // twice: nothing
        lru.remove(0)  // the oldest
        lru.remove(3)  // the youngest
        #expect(order(lru) == [5] && lru.count == 1 && lru.contains(5) && !lru.contains(7))
        lru.remove(5)
        #expect(lru.oldest == -1 && lru.count == 0 && order(lru).isEmpty)
        lru.append(2)
        lru.append(7)
        #expect(order(lru) == [2, 7], "links of removed slots are not read again")
    }

    @Test func aFollowingSlotTakesTheNextBufferElseTheLowestFree() {
        let buffers = StagingBuffers(count: 70)  // two words of free bits
        #expect(buffers.take(for: 10) == 0)
        #expect(buffers.take(for: 11) == 1, "slot 11 follows 10: the next buffer, so they merge")
        #expect(buffers.take(for: 40) == 2, "not a follower: the lowest free")
        buffers.release(0)
        #expect(buffers.take(for: 41) == 3, "a follower takes the next even when a lower one is free")
        #expect(buffers.take(for: 90) == 0, "else the lowest free")
        #expect(buffers.freeCount == 66)
        var taken: [Int32] = []
        while let b = buffers.take(for: 500) { taken.append(b) }
        #expect(taken == Array(4...69).map(Int32.init), "the lowest free each time, across the word boundary")
        #expect(buffers.freeCount == 0 && buffers.take(for: 1) == nil)
        buffers.release(64)
        #expect(buffers.take(for: 7) == 64 && buffers.freeCount == 0)
    }
}
