/// Swap-outs whose writes were submitted and whose outcome is not settled yet.
///
/// From its submission a swap-out's sequence is swapped out for every caller (`swapped` is
/// set), but its block table still holds its memory blocks and, contiguous, its ranges stay
/// open: the bytes went to staging buffers, yet memory is released only once every write is
/// on disk, so that a failed write loses nothing. When all of an entry's writes ended it is
/// finished: all on disk, the memory is released and the table takes the disk slots; a write
/// failed, the disk slots are let go and the sequence is resident again, unchanged.
///
/// An entry is `waited` when its own call (the synchronous `Engine.swapOut`) waits for it: only
/// that call finishes it and reports the outcome. Any other entry (`Engine.swapOutAsync`) is
/// finished by `settle`, which the calls that process completions run; its failure is kept for
/// the sequence (`takeFailure`, reported once), and `cancel` ends it early (a swap-in or free of
/// the sequence before its writes ended).
///
/// Invariants: a sequence slot has at most one entry; each of an entry's disk slots is pinned
/// once by it; while a slot has an entry its `swapped` flag is set and its memory blocks are
/// referenced by it (memory is never counted free before its write completed and was released).
/// Cost: O(pending swap-outs) per lookup, O(pending swap-outs + blocks finished) per `settle`;
/// one allocation of 4 bytes per block per swap-out (its disk slots), freed when it ends.
/// Not thread-safe: used under the engine's lock.
final class SwapOutQueue {
    /// One pending swap-out: sequence slot `slot`, whose block `i` is written to `diskSlots[i]`.
    private struct Entry {
        let slot: Int
        let diskSlots: UnsafeMutablePointer<Int32>
        let count: Int
        let waited: Bool
    }

    private unowned let tier: DiskTier
    private let blocks: BlockPool
    private let sequences: SequenceTable
    private let contiguous: ContiguousMemory?
    /// The coordinator's per-slot swapped-out flags.
    private let swapped: UnsafeMutablePointer<Bool>
    private var entries: [Entry] = []
    /// Per sequence slot: why its swap-out failed after `swapOutAsync` returned, until reported.
    private var failures: [String?]
    /// Swap-outs that ended (finished or cancelled), ever: waiters compare it before and after.
    private(set) var ended: UInt64 = 0
    /// Swap-outs whose writes all completed and whose memory was released, ever.
    private(set) var completed: UInt64 = 0

    init(tier: DiskTier, blocks: BlockPool, sequences: SequenceTable, contiguous: ContiguousMemory?,
         swapped: UnsafeMutablePointer<Bool>) {
        self.tier = tier
        self.blocks = blocks
        self.sequences = sequences
        self.contiguous = contiguous
        self.swapped = swapped
        failures = [String?](repeating: nil, count: sequences.maxSeqs)
        entries.reserveCapacity(sequences.maxSeqs)
    }

    deinit {
        for e in entries { e.diskSlots.deallocate() }
    }

    /// True while any swap-out is pending.
    var hasPending: Bool { !entries.isEmpty }

    /// True while `slot` has a pending swap-out; `waited`: one its own call waits for.
    func isPending(_ slot: Int, waited: Bool? = nil) -> Bool {
        entries.contains { $0.slot == slot && (waited == nil || $0.waited == waited) }
    }

    /// Records submitted swap-out of `slot` (whose `swapped` flag the caller set) writing its
    /// blocks to `diskSlots` (`count`, each pinned once; the queue owns the allocation now).
    func add(slot: Int, diskSlots: UnsafeMutablePointer<Int32>, count: Int, waited: Bool) {
        precondition(!isPending(slot), "a second swap-out of slot \(slot)")
        entries.append(Entry(slot: slot, diskSlots: diskSlots, count: count, waited: waited))
    }

    /// True when none of `slot`'s pending writes is still in flight (a slot's write, once
    /// ended, stays ended: the slot is pinned).
    func writesEnded(_ slot: Int) -> Bool {
        guard let e = entries.first(where: { $0.slot == slot }) else { return true }
        return !(0..<e.count).contains { tier.isWriting(e.diskSlots[$0]) }
    }

    /// Finishes every entry not `waited` for whose writes all ended (see the type); a failure is
    /// kept for `takeFailure`. Returns how many ended.
    @discardableResult
    func settle() -> Int {
        var n = 0
        var i = 0
        while i < entries.count {
            let slot = entries[i].slot
            if !entries[i].waited && writesEnded(slot) {
                if let failure = finish(slot) { failures[slot] = failure }
                n += 1
            } else {
                i += 1
            }
        }
        return n
    }

    /// Ends `slot`'s pending swap-out whose writes all ended: returns nil when every block is
    /// on disk (memory released, the table holds the disk slots, the sequence swapped out), or
    /// the failure's message (disk slots let go, the sequence resident and unchanged).
    func finish(_ slot: Int) -> String? {
        let e = remove(slot)
        defer { e.diskSlots.deallocate() }
        let table = sequences.table(slot)
        for i in 0..<e.count where !tier.isDurable(e.diskSlots[i]) {
            for j in 0..<e.count { tier.unpin(e.diskSlots[j]) }
            swapped[slot] = false
            return "swapping out sequence \(sequences.ids[slot]) failed: \(tier.lastFailure); it was not swapped out, its K/V stayed in memory unchanged"
        }
        for i in 0..<e.count {
            let b = table[i]
            blocks.release(b)
            // A block only this sequence held is now cached and on disk: free its memory.
            if blocks.references(b) == 0 && blocks.hash(of: b) != 0 { blocks.evict(b) }
            table[i] = e.diskSlots[i]
        }
        contiguous?.close(slot: slot)
        contiguous?.releaseUnpinned(slot: slot)
        completed += 1
        return nil
    }

    /// Ends `slot`'s pending swap-out (not `waited` for) before its writes ended: its disk slots
    /// are let go (a sequence's own slot is freed when its write completes) and the sequence is
    /// resident again, its memory never released. False when `slot` has no such swap-out.
    func cancel(_ slot: Int) -> Bool {
        guard isPending(slot, waited: false) else { return false }
        let e = remove(slot)
        for i in 0..<e.count { tier.unpin(e.diskSlots[i]) }
        e.diskSlots.deallocate()
        swapped[slot] = false
        return true
    }

    /// The failure of `slot`'s last asynchronous swap-out not reported yet, cleared: nil when none.
    func takeFailure(_ slot: Int) -> String? {
        defer { failures[slot] = nil }
        return failures[slot]
    }

    private func remove(_ slot: Int) -> Entry {
        let i = entries.firstIndex { $0.slot == slot }!
        ended += 1
        return entries.remove(at: i)
    }
}
