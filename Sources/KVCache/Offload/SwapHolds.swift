/// The memory blocks swapped-out sequences keep instead of writing them to the disk tier.
///
/// A swap-out writes only the blocks no resident sequence but its own holds (`keeps` false):
/// a block another resident sequence also holds stays in memory for that one anyway, so the
/// swap-out keeps its reference to it instead of writing it (nothing written, nothing freed,
/// nothing read back at the swap-in). Before, it wrote every block and freed only those it
/// held alone; its swap-in needed a fresh block for each shared one unless indexing on
/// schedule, and a tier without room for the whole sequence refused it (helper-revlong: 900K
/// tokens shared with a live sequence, 100K own: 2,304 MiB written, 205 MiB freed).
///
/// A swapped-out table's entry for a kept block is `entry(keeping:)`, negative, where the other
/// entries are disk slots (>= 0). The swap-in takes the blocks back as they are
/// (`takeBack`), a free of the sequence releases them (`release`). A kept block stays in
/// memory while the sequence is swapped out, also when every resident sharer goes: freed, its
/// memory stays used until the swap-in or free (the price of writing nothing); swapped out,
/// that swap-out finds no resident holder but its own, writes the block and hands the disk
/// slot to the sequences keeping it (`handOver`), so swapping out every sequence frees all
/// their memory.
/// Contiguous: only an indexed block lying at the position it was indexed from is kept (its
/// page references keep its pages, and the swap-in maps them as a create maps a prefix hit);
/// the swapped-out slot's own mapping is released as before, and each kept block adds a
/// reference to its groups in its place (`ContiguousMemory.holdPages`), so a resident sharer
/// writing such a page (a compaction, a truncation's appends) copies it first, as it did while
/// the sequence was resident (without it, the random operation model found 3,072 wrong bytes).
///
/// The contiguous hold is taken when the swap-out starts (`reserve`), not when it completes:
/// while it is pending a sharer may take the block out of the index (its abort, a failed read,
/// `Engine.free(_:computedTokens:)`), which drops the index's page record unless a hold keeps
/// it, and the completion then released the slot's mapping with nothing left naming the
/// block's pages, whose groups other sequences took; the swap-in copied their bytes (the ABI
/// soak, `abi_model 1 10000 219016`, contiguous; `SharedSwapOutTests.
/// aKeptBlockForgottenWhileItsSwapOutIsPendingKeepsItsBytes`).
///
/// Invariant: `counts[b]` is the number of swapped-out tables holding `entry(keeping: b)`;
/// each such entry holds one reference to `b`, so `b` is used, never cached, spilled or
/// evicted. A pending swap-out's table still holds memory blocks: its kept ones are counted
/// when it completes (`SwapOutQueue.finish`). Contiguous, every kept block of a pending or
/// completed swap-out holds its page record and groups once (`ContiguousMemory.holdPages`).
/// Cost: 4 bytes per memory block (the counts, allocated by `OffloadCoordinator`); O(1) per
/// block but `handOver`. Not thread-safe: used under the engine's lock.
final class SwapHolds {
    private let counts: UnsafeMutablePointer<UInt32>
    private let blocks: BlockPool
    private let sequences: SequenceTable
    private let contiguous: ContiguousMemory?
    /// The coordinator's per-slot swapped-out flags.
    private let swapped: UnsafeMutablePointer<Bool>

    init(counts: UnsafeMutablePointer<UInt32>, blocks: BlockPool, sequences: SequenceTable, contiguous: ContiguousMemory?,
         swapped: UnsafeMutablePointer<Bool>) {
        self.counts = counts
        self.blocks = blocks
        self.sequences = sequences
        self.contiguous = contiguous
        self.swapped = swapped
    }

    /// A swapped-out table's entry keeping memory block `block`.
    @inline(__always) static func entry(keeping block: Int32) -> Int32 { ~block }

    /// The memory block swapped-out table entry `entry` keeps, or -1 for a disk slot.
    @inline(__always) static func kept(_ entry: Int32) -> Int32 { entry < 0 ? ~entry : -1 }

    /// True when a swap-out of the sequence holding `block` at `position` keeps it rather than
    /// writing it: a resident sequence besides it holds it too (its references beyond the
    /// swapping-out sequence's one and swapped-out sequences' are resident ones) and,
    /// contiguous, it is indexed from `position` (its page references keep its bytes). O(1).
    func keeps(_ block: Int32, at position: Int) -> Bool {
        guard blocks.references(block) > 1 + counts[Int(block)] else { return false }
        guard let contiguous else { return true }
        return blocks.isIndexed(block) && contiguous.holds(block, at: position)
    }

    /// True when a swapped-out table keeps `block`. O(1).
    func isKept(_ block: Int32) -> Bool { counts[Int(block)] > 0 }

    /// A starting swap-out keeps `block` (`keeps` was true): contiguous, the block's page record
    /// and groups are held from now on (`ContiguousMemory.holdPages`), so its bytes stay named
    /// whatever the index does before the swap-out ends. O(pages of the block).
    func reserve(_ block: Int32) { contiguous?.holdPages(of: block, true, indexed: true) }

    /// The swap-out that reserved `block` ended without completing (cancelled or failed): the
    /// sequence is resident and holds it as before. O(pages of the block).
    func unreserve(_ block: Int32) { contiguous?.holdPages(of: block, false, indexed: blocks.isIndexed(block)) }

    /// Counts a completing swap-out's kept `block` (reserved at its start), whose reference its
    /// table keeps. O(1).
    func keep(_ block: Int32) { counts[Int(block)] += 1 }

    /// A swap-in takes kept `block` back: the reference is its resident table's again (and,
    /// contiguous, the slot maps its pages again, so the hold `reserve` took goes).
    func takeBack(_ block: Int32) { drop(block) }

    /// Uncounts kept `block` (its reference stays with the caller).
    private func drop(_ block: Int32) {
        counts[Int(block)] -= 1
        contiguous?.holdPages(of: block, false, indexed: blocks.isIndexed(block))
    }

    /// Lets go of swapped-out table entry `entry` at a free of its sequence: a kept block's
    /// reference is released (cached when indexed and held by no one else), a disk slot
    /// unpinned through `tier` (its own slot freed).
    func release(_ entry: Int32, tier: DiskTier) {
        let b = Self.kept(entry)
        guard b >= 0 else { return tier.unpin(entry) }
        drop(b)
        blocks.release(b)
    }

    /// The swap-out of `writer`, the last resident holder of blocks other swapped-out tables
    /// keep, wrote them: its `count` written blocks lie at `positions` (ascending) of its table
    /// (still holding memory blocks), on `diskSlots`. Every other swapped-out table keeping one
    /// at the same position (a shared block lies at one position in every table holding it:
    /// prefix hits, forks and the swap-in's shared blocks all share by position) takes the disk
    /// slot instead, pinned, and releases its reference, so the block's memory is freed with
    /// the writer's. Tables of pending swap-outs hold no kept entries (only completed ones do).
    /// No allocation. Cost: O(max_seqs + blocks of the swapped-out sequences x log(count)),
    /// only when a swap-out wrote a kept block.
    func handOver(from writer: Int, positions: UnsafeMutablePointer<Int32>, diskSlots: UnsafeMutablePointer<Int32>, count: Int,
                  tier: DiskTier) {
        let writerTable = sequences.table(writer)
        for s in 0..<sequences.maxSeqs where s != writer && swapped[s] && sequences.lengths[s] > 0 {
            let table = sequences.table(s)
            for i in 0..<sequences.blockCount(s) {
                let b = Self.kept(table[i])
                guard b >= 0 && i < sequences.blockCount(writer) && writerTable[i] == b else { continue }
                var k = 0, end = count  // the rank of position i among the written ones
                while k < end {
                    let m = (k + end) / 2
                    if Int(positions[m]) < i { k = m + 1 } else { end = m }
                }
                guard k < count && Int(positions[k]) == i else { continue }
                let d = diskSlots[k]
                tier.pin(d)
                table[i] = d
                drop(b)
                blocks.release(b)
            }
        }
    }
}
