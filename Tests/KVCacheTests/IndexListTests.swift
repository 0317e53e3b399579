import Testing
@testable import KVCache

/// The bare index list that `BlockPool`'s LRU and `SlotLRU` share, on its own: order, removal
/// at every position, walks, and the empty list's ends.
@Suite struct IndexListTests {
    /// The ids from `first` to `last`, by the walk `BlockPool.forEachOldestCached` makes.
    private func order(_ list: borrowing IndexList) -> [Int32] {
        var ids: [Int32] = []
        var id = list.first
        while id >= 0 {
            ids.append(id)
            id = list.next(after: id)
        }
        return ids
    }

    /// The ids from `last` back to `first`, emptying the list: each removal at the back makes the
    /// removed id's predecessor (its back link) the new `last`, so this checks the back links.
    private func drainFromBack(_ list: inout IndexList) -> [Int32] {
        var ids: [Int32] = []
        while list.last >= 0 {
            ids.append(list.last)
            list.remove(list.last)
        }
        return ids
    }

    @Test func anEmptyListHasNoEnds() throws {
        let list = try IndexList(capacity: 4, "test")
        #expect(list.first == -1 && list.last == -1 && list.isEmpty)
        #expect(order(list).isEmpty)
    }

    @Test func appendsKeepTheirOrder() throws {
        var list = try IndexList(capacity: 8, "test")
        for id: Int32 in [3, 0, 7, 5] { list.append(id) }
        #expect(order(list) == [3, 0, 7, 5])
        #expect(list.first == 3 && list.last == 5 && !list.isEmpty)
        #expect(list.next(after: 3) == 0 && list.next(after: 7) == 5 && list.next(after: 5) == -1)
        #expect(drainFromBack(&list) == [5, 7, 0, 3], "the back links mirror the front ones")
        #expect(list.isEmpty && list.first == -1 && list.last == -1)
    }

    @Test func aSingleIdIsBothEnds() throws {
        var list = try IndexList(capacity: 2, "test")
        list.append(1)
        #expect(list.first == 1 && list.last == 1 && order(list) == [1])
        list.remove(1)
        #expect(list.isEmpty && list.first == -1 && list.last == -1 && order(list).isEmpty)
    }

    @Test func removalAtTheFrontMiddleAndBack() throws {
        var list = try IndexList(capacity: 8, "test")
        for id: Int32 in 0..<6 { list.append(id) }
        list.remove(0)  // the front
        #expect(order(list) == [1, 2, 3, 4, 5] && list.first == 1)
        list.remove(3)  // the middle
        #expect(order(list) == [1, 2, 4, 5] && list.next(after: 2) == 4)
        list.remove(5)  // the back
        #expect(order(list) == [1, 2, 4] && list.last == 4 && list.next(after: 4) == -1)
        #expect(drainFromBack(&list) == [4, 2, 1])
    }

    @Test func aRemovedIdCanComeBackAtTheBack() throws {
        var list = try IndexList(capacity: 8, "test")
        for id: Int32 in [4, 6, 2] { list.append(id) }
        list.remove(4)
        list.append(4)  // a use, as `SlotLRU.touch` makes it: to the back
        #expect(order(list) == [6, 2, 4] && list.first == 6 && list.last == 4)
        list.remove(2)
        list.append(2)
        list.remove(6)
        #expect(order(list) == [4, 2], "stale links of removed ids are not read again")
        list.remove(4)
        list.remove(2)
        list.append(7)
        list.append(0)
        #expect(order(list) == [7, 0] && list.first == 7 && list.last == 0)
    }

    @Test func aWalkCanStopPartWayAndRemoveBehindItself() throws {
        // `DiskTier.dropOldest` and `BlockPool.dropCached` read the next id before removing the
        // current one.
        var list = try IndexList(capacity: 16, "test")
        for id: Int32 in [9, 1, 12, 4, 15] { list.append(id) }
        var id = list.first
        var removed: [Int32] = []
        while id >= 0 && removed.count < 3 {
            let following = list.next(after: id)
            list.remove(id)
            removed.append(id)
            id = following
        }
        #expect(removed == [9, 1, 12])
        #expect(order(list) == [4, 15] && list.first == 4 && list.last == 15)
    }
}
