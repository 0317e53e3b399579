import Testing
@testable import KVCache

/// Which slot `SequenceTable.open` takes: the lowest at first, then the most recently freed
/// (a stack), never a detached one; the order `open(_:slot:)` with `nextSlot` gave before
/// `open` took the top of the free stack itself.
@Suite("SequenceTable slots")
struct SequenceTableSlotTests {
    @Test func openTakesTheMostRecentlyFreedSlotAndNeverADetachedOne() throws {
        let table = try SequenceTable(maxSeqs: 4, maxBlocks: 2, blockTokens: 16)
        #expect([10, 11, 12].map { table.open($0) } == [0, 1, 2], "an empty table hands out its slots lowest first")
        #expect(table.count == 3)
        table.close(1)
        table.close(0)
        #expect(table.slot(of: 11) == -1 && table.slot(of: 10) == -1 && table.slot(of: 12) == 2)
        #expect(table.open(20) == 0, "the slot freed last is taken first")
        #expect(table.open(21) == 1)
        #expect(table.open(22) == 3, "then the one never used")
        #expect(table.isFull && table.count == 4)
        #expect((table.slot(of: 20), table.slot(of: 21), table.slot(of: 22)) == (0, 1, 3))
        #expect(table.ids[3] == 22 && table.lengths[3] == 0 && table.indexesAppends[3] && !table.previousKnown[3])

        table.detach(2)
        #expect(table.isFull && table.count == 3, "a detached slot is neither live nor free")
        table.close(3)
        #expect(table.open(30) == 3, "the detached slot stays out of reach")
        table.close(2)
        #expect(table.open(31) == 2, "until it is closed")
        #expect(table.isFull && table.count == 4 && table.detachedCount == 0)
    }
}
