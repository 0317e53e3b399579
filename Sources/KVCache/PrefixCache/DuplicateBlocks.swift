/// Used blocks holding the same bytes as an indexed block, kept out of the index, recorded so
/// that one takes the indexed block's place when it leaves memory (`BlockPool.unindex`).
///
/// Two live sequences that produce the same tokens (greedy duplicates, a retried request)
/// fill blocks of one hash and fingerprint; the index takes the first, the other's stays out
/// (`BlockPool.insert` refuses it) while its next distinct block is indexed under the first as
/// parent. Without a record, the first block's eviction left that chain unreachable although
/// the second sequence still held identical bytes (a lookup hit 48 of 96 tokens: the revradix
/// review's `c/dupchain.c`). vLLM keeps every copy findable (`cached_block_hash_to_block`:
/// hash -> {block id: block}); here the index keeps one and the others wait behind it.
///
/// Per block: for an indexed block, its first waiting duplicate; for a duplicate, the next one
/// behind the same indexed block (`link`), and which block that is (`behind`, -1 for a block
/// that is no duplicate), and where its bytes lie (`slot`, `position` in that sequence's
/// table: the contiguous layout's page record is taken from there on promotion).
///
/// Invariant: a duplicate is used, unindexed, and its bytes are its hash's since it was
/// recorded: the record ends at the block's first `release` (any sequence's: one that held
/// it may be gone, or swapped out), or when its bytes are to change in place or turned out
/// wrong (`BlockPool.unindexUsed`, `forget`), and before a compaction or truncation that will
/// rewrite it takes a block or page (`BlockPool.endDuplicate`: that may evict the indexed
/// block, and the page record must not come from pages mid-change). So promotion never needs
/// to check anything.
/// Cost: 16 bytes per block, allocated once; `record` O(1), `drop` and `promote` O(duplicates
/// of the block, 1 but for many identical sequences). No allocation after `init`.
/// Not thread-safe: the pool's owner serialises calls.
final class DuplicateBlocks {
    private let link: UnsafeMutablePointer<Int32>
    private let behindBlock: UnsafeMutablePointer<Int32>
    private let slots: UnsafeMutablePointer<Int32>
    private let positions: UnsafeMutablePointer<Int32>
    /// Duplicates recorded.
    private(set) var count = 0

    /// Records for blocks `0..<ids`. Throws `outOfMemory` (`CheckedAllocations`).
    init(ids: Int, _ what: @autoclosure () -> String) throws(KVError) {
        let a = CheckedAllocations()
        link = try a.allocate(repeating: -1, count: ids, what())
        behindBlock = try a.allocate(repeating: -1, count: ids, what())
        slots = try a.allocate(repeating: 0, count: ids, what())
        positions = try a.allocate(repeating: 0, count: ids, what())
        a.keep()
    }

    deinit {
        link.deallocate()
        behindBlock.deallocate()
        slots.deallocate()
        positions.deallocate()
    }

    /// True when `block` is a recorded duplicate. O(1).
    @inline(__always) func isRecorded(_ block: Int32) -> Bool { behindBlock[Int(block)] >= 0 }

    /// True when indexed `block` has duplicates waiting behind it. O(1).
    @inline(__always) func hasDuplicates(_ block: Int32) -> Bool { link[Int(block)] >= 0 }

    /// Records unrecorded `duplicate` (at `position` of `slot`'s table) behind indexed `block`.
    func record(_ duplicate: Int32, behind block: Int32, slot: Int, position: Int) {
        let d = Int(duplicate)
        precondition(behindBlock[d] < 0 && duplicate != block)
        behindBlock[d] = block
        slots[d] = Int32(slot)
        positions[d] = Int32(position)
        link[d] = link[Int(block)]
        link[Int(block)] = duplicate
        count += 1
    }

    /// Ends recorded `duplicate`'s record.
    func drop(_ duplicate: Int32) {
        let d = Int(duplicate)
        var p = behindBlock[d]  // walks from the indexed block: its link is the list's head
        while link[Int(p)] != duplicate { p = link[Int(p)] }
        link[Int(p)] = link[d]
        link[d] = -1
        behindBlock[d] = -1
        count -= 1
    }

    /// Takes the first duplicate behind `block` (which is leaving the index) out of the
    /// records, and hangs the others behind it; returns it with where its bytes lie.
    /// Precondition: `hasDuplicates(block)`.
    func promote(from block: Int32) -> (block: Int32, slot: Int, position: Int) {
        let first = link[Int(block)]
        link[Int(block)] = -1
        var d = link[Int(first)]
        while d >= 0 {
            behindBlock[Int(d)] = first
            d = link[Int(d)]
        }
        behindBlock[Int(first)] = -1
        count -= 1
        return (first, Int(slots[Int(first)]), Int(positions[Int(first)]))
    }
}
