/// Swap-outs whose writes were started and whose outcome is not settled yet.
///
/// From its start a swap-out's sequence is swapped out for every caller (`swapped` is set), but
/// its block table still holds its memory blocks and, contiguous, its ranges stay open: memory
/// is released only once every write is on disk, so that a failed write loses nothing. A
/// swap-out's blocks are copied into staging buffers and submitted in order, as far as free
/// buffers go beyond those bulk transfers (swap-outs, trims and allocations' spills) leave to
/// other traffic (`DiskTier.reservedStages`), less the share of a trim spilling meanwhile
/// (`DiskTier.swapOutStages`): `start` submits the first (from the reserve when nothing else
/// is free) and as many more as that allows, and every `settle` (run by the calls that process
/// completions) submits more as completions free buffers, so no call waits for the device to
/// make room for a large sequence, other traffic issued meanwhile (a prompt's prefix read from
/// disk, episodic records, swap-ins) finds a buffer without waiting for the swap-out's writes,
/// and a trim gets half the bulk buffers instead of waiting until every swap-out block is
/// submitted. The blocks not submitted yet stay untouched in memory
/// meanwhile (the sequence is swapped out: nobody writes, appends to, forks or frees them
/// without ending the swap-out first).
///
/// When all of an entry's writes were submitted and ended it is finished: all on disk, the
/// memory is released and the table takes the disk slots; a write failed, or the tier refused
/// a later block (disk full, tier full of pinned slots), the disk slots are let go and the
/// sequence is resident again, unchanged. A failed entry submits nothing more and is finished
/// once its submitted writes ended.
///
/// An entry is `waited` when its own call (the synchronous `Engine.swapOut`) waits for it: only
/// that call finishes it and reports the outcome. Any other entry (`Engine.swapOutAsync`) is
/// finished by `settle`; its failure is kept for the sequence (`takeFailure`, reported once),
/// and `cancel` ends it early (a swap-in or free of the sequence before its writes ended).
///
/// Invariants: a sequence slot has at most one entry; each of an entry's submitted blocks'
/// disk slots is pinned once by it; while a slot has an entry its `swapped` flag is set and its
/// memory blocks are referenced by it (memory is never counted free before its write completed
/// and was released). Every swap-out started ends exactly once, completed, cancelled or failed:
/// `started == completed + cancelled + failed + pendingCount`.
/// Cost: O(pending swap-outs) per lookup; per `settle` O(pending swap-outs) plus one copy and
/// checksum per block submitted and O(1) per write that ended; one allocation of 4 bytes per
/// block per swap-out (its disk slots), freed when it ends, and, when it completes with
/// unscheduled prompt blocks (`EngineConfig.indexOnSchedule`), one of 16 bytes per such block
/// (their prepared hashes), freed at the swap-in or free.
/// Not thread-safe: used under the engine's lock.
final class SwapOutQueue {
    /// One pending swap-out: sequence slot `slot`, whose block `i` is written to `diskSlots[i]`
    /// for `i < submitted`; blocks `0..<durable` are known to be on disk; `failure`, once set,
    /// says why it cannot complete (nothing more is submitted).
    private struct Entry {
        let slot: Int
        let diskSlots: UnsafeMutablePointer<Int32>
        /// The hash each block was written or found under (0: a block outside the prefix index,
        /// whose slot no other request reads).
        let hashes: UnsafeMutablePointer<UInt64>
        let count: Int
        let waited: Bool
        var submitted = 0
        var durable = 0
        var failure: String? = nil
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
    /// Per sequence slot, while it is swapped out: the (hash, parent) pairs its unscheduled
    /// prompt blocks (`SequenceTable.unscheduled`, which the swap-out keeps) were prepared
    /// with, in range order, two entries per block, for the swap-in to prepare the blocks it
    /// reads them into (`takePrepared`); empty otherwise.
    private var preparedHashes: [[UInt64]]
    /// Swap-outs started (their first write submitted), ever.
    private(set) var started: UInt64 = 0
    /// Swap-outs whose writes all completed and whose memory was released, ever.
    private(set) var completed: UInt64 = 0
    /// Swap-outs cancelled by a swap-in or free of their sequence before their writes ended, ever.
    private(set) var cancelled: UInt64 = 0
    /// Swap-outs that failed (a write failed, or the tier refused a block after the start), ever.
    private(set) var failed: UInt64 = 0
    /// Tests: runs on the swapping-out call's thread just before it copies a batch of blocks
    /// into staging buffers.
    var beforeCopy: (() -> Void)?

    init(tier: DiskTier, blocks: BlockPool, sequences: SequenceTable, contiguous: ContiguousMemory?,
         swapped: UnsafeMutablePointer<Bool>) {
        self.tier = tier
        self.blocks = blocks
        self.sequences = sequences
        self.contiguous = contiguous
        self.swapped = swapped
        failures = [String?](repeating: nil, count: sequences.maxSeqs)
        preparedHashes = [[UInt64]](repeating: [], count: sequences.maxSeqs)
        entries.reserveCapacity(sequences.maxSeqs)
    }

    deinit {
        for e in entries {
            e.diskSlots.deallocate()
            e.hashes.deallocate()
        }
    }

    /// Swap-outs that ended (completed, cancelled or failed), ever: waiters compare it before and after.
    var ended: UInt64 { completed + cancelled + failed }

    /// Swap-outs pending now.
    var pendingCount: Int { entries.count }

    /// True while any swap-out is pending.
    var hasPending: Bool { !entries.isEmpty }

    /// True while a pending swap-out has blocks left to submit (and has not failed).
    var hasUnsubmitted: Bool { entries.contains { $0.failure == nil && $0.submitted < $0.count } }

    /// True while `slot` has a pending swap-out; `waited`: one its own call waits for.
    func isPending(_ slot: Int, waited: Bool? = nil) -> Bool {
        entries.contains { $0.slot == slot && (waited == nil || $0.waited == waited) }
    }

    /// Starts swapping out live, resident `slot`: submits the write of its first block (its
    /// caller, `Engine.submitSwapOut`, waits for a free staging buffer without the engine's lock
    /// first, so this takes one without waiting) and of as many more as staging buffers are free
    /// beyond `DiskTier.reservedStages` and a spilling trim's share (`DiskTier.swapOutStages`),
    /// marks it swapped out and
    /// queues it (`waited`: its own call waits for it and finishes it).
    /// Throws `io` (disk full, tier full of pinned slots, submission failed) with nothing
    /// changed: a tier that cannot hold every block is found so before any cached block is
    /// dropped for them (`DiskTier.checkRoom`). Cost: one copy and checksum per block
    /// submitted; one index probe per block; one allocation.
    func start(slot: Int, waited: Bool) throws(KVError) {
        precondition(!isPending(slot), "a second swap-out of slot \(slot)")
        let count = sequences.blockCount(slot)
        let table = sequences.table(slot)
        try tier.checkRoom(forSwapOut: count) { blocks.hash(of: table[$0]) }
        var e = Entry(slot: slot, diskSlots: .allocate(capacity: max(1, count)), hashes: .allocate(capacity: max(1, count)), count: count, waited: waited)
        do throws(KVError) {
            beforeCopy?()
            if count > 0 { try submitNext(&e) }
            while e.submitted < count && tier.swapOutStages > 0 { try submitNext(&e) }
        } catch {
            tier.drain()
            for i in 0..<e.submitted { tier.unpin(e.diskSlots[i]) }
            e.diskSlots.deallocate()
            e.hashes.deallocate()
            throw error
        }
        swapped[slot] = true
        entries.append(e)
        started += 1
        // Submitted now: a request the ring refuses fails here, not during a wait (a wait with
        // nothing in flight would last until some other call woke it).
        tier.flush()
    }

    /// Copies `e`'s next block into a staging buffer and submits its write (see `DiskTier.writeSwap`).
    private func submitNext(_ e: inout Entry) throws(KVError) {
        let i = e.submitted, b = sequences.table(e.slot)[i], bt = sequences.blockTokens
        e.hashes[i] = blocks.hash(of: b)
        e.diskSlots[i] = try tier.writeSwap(b, hash: e.hashes[i], parent: blocks.parent(of: b), slot: e.slot, position: i,
                                            tokens: min(bt, sequences.lengths[e.slot] - i * bt))
        e.submitted += 1
    }

    /// Submits more blocks of every pending swap-out as far as staging buffers are free beyond
    /// `DiskTier.reservedStages` and a spilling trim's share (`DiskTier.swapOutStages`); a block
    /// the tier refuses fails its swap-out (nothing more of
    /// it is submitted). Returns true when one failed so. Never waits.
    private func submitMore() -> Bool {
        var refused = false
        for i in entries.indices where entries[i].failure == nil {
            while entries[i].submitted < entries[i].count && tier.swapOutStages > 0 {
                do throws(KVError) {
                    try submitNext(&entries[i])
                } catch {
                    entries[i].failure = failureMessage(entries[i].slot, error.message)
                    refused = true
                    break
                }
            }
        }
        tier.flush()
        return refused
    }

    /// True when entry `i` can be finished: every block on disk, or it failed and none of its
    /// submitted writes is still in flight. Advances `durable` past the writes that ended well;
    /// a write that ended badly fails the entry, and so does, once every block is durable, a
    /// slot that no longer holds the block's hash (another read found it corrupt since: a
    /// slot the swap-out found already written counted at once). O(blocks) at the end.
    private func canFinish(_ i: Int) -> Bool {
        while entries[i].failure == nil && entries[i].durable < entries[i].submitted {
            let d = entries[i].diskSlots[entries[i].durable]
            if tier.isWriting(d) { return false }
            if !tier.isDurable(d) {
                entries[i].failure = failureMessage(entries[i].slot, tier.lastFailure)
                break
            }
            entries[i].durable += 1
        }
        if entries[i].failure == nil {
            guard entries[i].durable == entries[i].count else { return false }
            // A slot found bad since it was counted durable (a read of it failed verification:
            // `DiskTier.markBroken` cleared its hash) must not take the place of memory.
            let e = entries[i]
            if let bad = (0..<e.count).first(where: { e.hashes[$0] != 0 && tier.hash(of: e.diskSlots[$0]) != e.hashes[$0] }) {
                entries[i].failure = failureMessage(e.slot, "disk slot \(e.diskSlots[bad]) of block \(bad) was found corrupt before the swap-out completed")
            }
            return true
        }
        return !(entries[i].durable..<entries[i].submitted).contains { tier.isWriting(entries[i].diskSlots[$0]) }
    }

    /// True when `slot`'s swap-out can be finished (`finish`), or it has none.
    func writesEnded(_ slot: Int) -> Bool {
        guard let i = entries.firstIndex(where: { $0.slot == slot }) else { return true }
        return canFinish(i)
    }

    /// Submits what staging buffers have room for, then finishes every entry not `waited` for
    /// that can be (see the type); a failure is kept for `takeFailure`. Returns true when
    /// anything ended or failed (callers waiting for a swap-out to end look again).
    @discardableResult
    func settle() -> Bool {
        var changed = submitMore()
        var i = 0
        while i < entries.count {
            if !entries[i].waited && canFinish(i) {
                let slot = entries[i].slot
                if let failure = finish(slot) { failures[slot] = failure }
                changed = true
            } else {
                i += 1
            }
        }
        return changed
    }

    /// Ends `slot`'s pending swap-out once `writesEnded`: returns nil when every block is on
    /// disk (memory released, the table holds the disk slots, the sequence swapped out), or the
    /// failure's message (disk slots let go, the sequence resident and unchanged).
    func finish(_ slot: Int) -> String? {
        let e = remove(slot)
        defer {
            e.diskSlots.deallocate()
            e.hashes.deallocate()
        }
        precondition(e.failure != nil || e.durable == e.count, "finishing swap-out of slot \(slot) before its writes ended")
        if let failure = e.failure {
            for i in 0..<e.submitted { tier.unpin(e.diskSlots[i]) }
            swapped[slot] = false
            failed += 1
            return failure
        }
        let table = sequences.table(slot)
        // Unscheduled prompt blocks are written as private slots (their hashes are only
        // prepared, so nobody finds their uncomputed bytes on disk); their hashes are kept with
        // the range for the swap-in, which prepares the blocks it reads them into.
        let pending = sequences.unscheduled[slot]
        if !pending.isEmpty {
            var kept = [UInt64]()
            kept.reserveCapacity(2 * pending.count)
            for i in pending {
                let (hash, parent) = blocks.prepared(table[i])
                kept.append(hash)
                kept.append(parent)
            }
            preparedHashes[slot] = kept
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

    /// Ends `slot`'s pending swap-out (not `waited` for) before it was finished: its disk slots
    /// are let go (a sequence's own slot is freed when its write completes), its blocks not yet
    /// submitted are never written, and the sequence is resident again, its memory never
    /// released. False when `slot` has no such swap-out.
    func cancel(_ slot: Int) -> Bool {
        guard isPending(slot, waited: false) else { return false }
        let e = remove(slot)
        for i in 0..<e.submitted { tier.unpin(e.diskSlots[i]) }
        e.diskSlots.deallocate()
        e.hashes.deallocate()
        swapped[slot] = false
        cancelled += 1
        return true
    }

    /// The prepared (hash, parent) pairs of swapped-out `slot`'s unscheduled blocks that its
    /// swap-out kept (see `preparedHashes`), cleared: empty when its range is. O(1).
    func takePrepared(_ slot: Int) -> [UInt64] {
        defer { preparedHashes[slot] = [] }
        return preparedHashes[slot]
    }

    /// True when `slot`'s last asynchronous swap-out failed and `takeFailure` has not reported
    /// it yet. O(1).
    func hasFailure(_ slot: Int) -> Bool { failures[slot] != nil }

    /// The failure of `slot`'s last asynchronous swap-out not reported yet, cleared: nil when none.
    func takeFailure(_ slot: Int) -> String? {
        defer { failures[slot] = nil }
        return failures[slot]
    }

    /// What a failed swap-out of `slot` reports, `reason` being the tier's.
    private func failureMessage(_ slot: Int, _ reason: String) -> String {
        "swapping out sequence \(sequences.ids[slot]) failed: \(reason); it was not swapped out, its K/V stayed in memory unchanged"
    }

    private func remove(_ slot: Int) -> Entry {
        entries.remove(at: entries.firstIndex { $0.slot == slot }!)
    }
}
