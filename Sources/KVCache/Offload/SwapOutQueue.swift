/// Swap-outs whose writes were started and whose outcome is not settled yet.
///
/// From its start a swap-out's sequence is swapped out for every caller (`swapped` is set), but
/// its block table still holds its memory blocks and, contiguous, its ranges stay open: memory
/// is released only once every write is on disk, so that a failed write loses nothing. A
/// swap-out's blocks are copied into staging buffers and submitted in order, as far as free
/// buffers go beyond those bulk transfers (swap-outs, trims and allocations' spills) leave to
/// other traffic (`DiskTier.reservedStages`), less the share of a trim spilling meanwhile
/// (`DiskTier.swapOutStages`): `start` reserves as many as that allows for its call to copy
/// without the engine's lock (a batch, see below; the first block is copied under the lock
/// instead when only the reserve has a buffer free); as completions free buffers, a
/// synchronous swap-out's own call reserves its next batch (`reserveBatch`) and copies it
/// without the lock too, while an asynchronous one's blocks are copied and submitted under the
/// lock by every `settle` (run by the calls that process completions; `settle` leaves a
/// synchronous swap-out to its call, helper-177: else it took every later block under the
/// lock), so no call waits for the device to make room for a large sequence, other traffic issued meanwhile (a prompt's prefix read from
/// disk, episodic records, swap-ins) finds a buffer without waiting for the swap-out's writes,
/// and a trim gets half the bulk buffers instead of waiting until every swap-out block is
/// submitted. The blocks not submitted yet stay untouched in memory
/// meanwhile (the sequence is swapped out: nobody writes, appends to, forks or frees them
/// without ending the swap-out first).
///
/// A batch (`start`, `reserveBatch`) takes its blocks' disk slots and staging buffers under the
/// lock (a block the tier holds already is pinned, nothing to copy), so no other call reuses
/// them, and marks the entry `copying`; its call then copies and checksums the blocks with the
/// lock released and submits them under it again (`submitBatch`). Meanwhile the blocks' bytes
/// stay put: the sequence is swapped out (no append, fork, compaction or write of it), its
/// blocks are referenced (never evicted, spilled or trimmed; a shared full block is immutable
/// while indexed, and a partial one is copied before another holder appends to it), and its
/// contiguous pages are pinned (`ContiguousMemory.unmapAllUnpinned` and reclaim leave them).
/// A copying entry is not finished, cancelled, failed or given more blocks (`settle` passes
/// it over): a `free` or `swapIn` of its sequence waits until the batch is submitted
/// (`isBusy`), and an earlier write that failed meanwhile fails it once the batch is
/// submitted (its blocks are written for nothing, then let go with the rest).
///
/// When all of an entry's writes were submitted and ended it is finished: all on disk, the
/// memory is released and the table takes the disk slots, and the kept blocks' entries
/// (`SwapHolds`); a write failed, or the tier refused
/// a later block (disk full, tier full of pinned slots), the disk slots are let go and the
/// sequence is resident again, unchanged. A failed entry submits nothing more and is finished
/// once its submitted writes ended. The kept blocks are reserved when the entry starts
/// (`SwapHolds.reserve`: contiguous, their page records held while it is pending) and given
/// back when it is cancelled or fails (`SwapHolds.unreserve`).
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
/// checksum per block submitted and O(1) per write that ended. A swap-out's positions to
/// write, disk slots, hashes and batch copies are one `Buffers` set, sized for the longest
/// sequence (`SequenceTable.maxBlocks`, 72 bytes each) and given back for the next swap-out
/// when it ends: one set is allocated at init, and a swap-out allocates another only when
/// every set is taken by pending ones (more pending at once than ever before), kept until
/// deinit. Blocks resident sequences share are kept, not written (`SwapHolds`). When it
/// completes with unscheduled prompt blocks (`EngineConfig.indexOnSchedule`) it allocates one
/// array of 24 bytes per such block (their prepared hashes), freed at the swap-in or free.
/// Not thread-safe: used under the engine's lock.
final class SwapOutQueue {
    /// One pending swap-out: sequence slot `slot`, whose `count` blocks to write (those it does
    /// not keep, `SwapHolds.keeps`) lie at `positions`, ascending; the `i`th is written to
    /// `diskSlots[i]` for `i < submitted`; `0..<durable` are known to be on disk; `failure`,
    /// once set, says why it cannot complete (nothing more is submitted).
    private struct Entry {
        let slot: Int
        let buffers: Buffers
        var positions: UnsafeMutablePointer<Int32> { buffers.positions }
        var diskSlots: UnsafeMutablePointer<Int32> { buffers.diskSlots }
        /// The hash each block was written or found under (0: a block outside the prefix index,
        /// whose slot no other request reads).
        var hashes: UnsafeMutablePointer<UInt64> { buffers.hashes }
        let count: Int
        let waited: Bool
        var submitted = 0
        /// Blocks from `submitted` on reserved for a batch being copied without the engine's
        /// lock (0: none).
        var copying = 0
        var durable = 0
        var failure: String? = nil
    }

    /// One swap-out's arrays, `SequenceTable.maxBlocks` entries each, indexed by the rank of a
    /// block among those it writes: the block's position in the sequence, its disk slot, the
    /// hash it was written or found under, and its batch's `Copy` (a batch is a run of them
    /// from the entry's `submitted` on, see `reserve`): 72 bytes per block (4 + 4 + 8 +
    /// `Copy`'s stride of 56).
    private struct Buffers {
        let positions: UnsafeMutablePointer<Int32>
        let diskSlots: UnsafeMutablePointer<Int32>
        let hashes: UnsafeMutablePointer<UInt64>
        let copies: UnsafeMutablePointer<Copy>

        /// A set for `maxBlocks` blocks, or `outOfMemory` naming it. Cost: four mallocs.
        init(maxBlocks: Int) throws(KVError) {
            let a = CheckedAllocations()
            let what = "a swap-out's positions, disk slots, hashes and copies (max_seq_tokens / block_tokens: \(maxBlocks) entries)"
            positions = try a.allocate(count: maxBlocks, what)
            diskSlots = try a.allocate(count: maxBlocks, what)
            hashes = try a.allocate(count: maxBlocks, what)
            copies = try a.allocate(count: maxBlocks, what)
            a.keep()
        }

        func deallocate() {
            positions.deallocate()
            diskSlots.deallocate()
            hashes.deallocate()
            copies.deallocate()
        }
    }

    private unowned let tier: DiskTier
    private let blocks: BlockPool
    private let sequences: SequenceTable
    private let contiguous: ContiguousMemory?
    /// The coordinator's per-slot swapped-out flags.
    private let swapped: UnsafeMutablePointer<Bool>
    /// The blocks completed swap-outs kept in memory rather than wrote.
    let holds: SwapHolds
    private var entries: [Entry] = []
    /// Buffer sets no pending swap-out holds, for the next ones (capacity for `maxSeqs`: a
    /// slot has at most one swap-out pending, so no more sets are ever made).
    private var spare: [Buffers] = []
    /// Per sequence slot: why its swap-out failed after `swapOutAsync` returned, until reported.
    private var failures: [String?]
    /// Per sequence slot, while it is swapped out: the (hash, parent, fingerprint) triples its
    /// unscheduled prompt blocks (`SequenceTable.unscheduled`, which the swap-out keeps) were
    /// prepared with, in range order, three entries per block, for the swap-in to prepare the blocks it
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
    /// Tests: runs on the swapping-out call's thread, without the engine's lock, just before it
    /// copies a batch (`Engine.copySwapOutBatch`).
    var beforeCopy: (() -> Void)?

    /// A block of a batch: `block` at position `position` of the sequence, its first
    /// `tokens` tokens copied into staging buffer `stage` (-1: the tier held the block already,
    /// its slot pinned: nothing to copy) for its reserved disk slot, written under parent
    /// `parent`; `checksum` is the copy's (nil: the seal computes it).
    struct Copy {
        let position: Int
        let block: Int32
        let stage: Int32
        let tokens: Int
        let parent: UInt64
        let fingerprint: UInt64
        var checksum: UInt64? = nil
    }

    /// Throws `outOfMemory` when the first buffer set cannot be allocated (`Buffers`).
    init(tier: DiskTier, blocks: BlockPool, sequences: SequenceTable, contiguous: ContiguousMemory?,
         swapped: UnsafeMutablePointer<Bool>, holds: SwapHolds) throws(KVError) {
        self.tier = tier
        self.holds = holds
        self.blocks = blocks
        self.sequences = sequences
        self.contiguous = contiguous
        self.swapped = swapped
        failures = [String?](repeating: nil, count: sequences.maxSeqs)
        preparedHashes = [[UInt64]](repeating: [], count: sequences.maxSeqs)
        entries.reserveCapacity(sequences.maxSeqs)
        spare.reserveCapacity(sequences.maxSeqs)
        spare.append(try Buffers(maxBlocks: sequences.maxBlocks))
    }

    deinit {
        for e in entries { e.buffers.deallocate() }
        for b in spare { b.deallocate() }
    }

    /// Swap-outs that ended (completed, cancelled or failed), ever: waiters compare it before and after.
    var ended: UInt64 { completed + cancelled + failed }

    /// Swap-outs pending now.
    var pendingCount: Int { entries.count }

    /// True while any swap-out is pending.
    var hasPending: Bool { !entries.isEmpty }

    /// True while a pending swap-out has blocks left to submit (and has not failed).
    var hasUnsubmitted: Bool { entries.contains { $0.failure == nil && $0.submitted < $0.count } }

    /// True while a batch is being copied without the engine's lock.
    var isCopying: Bool { entries.contains { $0.copying > 0 } }

    /// True while `slot` has a pending swap-out; `waited`: one its own call waits for.
    func isPending(_ slot: Int, waited: Bool? = nil) -> Bool {
        entries.contains { $0.slot == slot && (waited == nil || $0.waited == waited) }
    }

    /// True while a call works on `slot`'s pending swap-out: its own synchronous call waits
    /// for it, or a batch of it is being copied without the lock. A `free` or `swapIn` of the
    /// sequence waits until it is not (`Engine.slotAfterSwapOut`).
    func isBusy(_ slot: Int) -> Bool { entries.contains { $0.slot == slot && ($0.waited || $0.copying > 0) } }

    /// Starts swapping out live, resident `slot`: reserves its first batch (`reserve`: as many
    /// blocks as staging buffers are free beyond `DiskTier.reservedStages` and a spilling
    /// trim's share, `DiskTier.swapOutStages`), for its call to copy without the engine's lock
    /// and submit (`submitBatch`); when none is free beyond the reserve, copies and submits its
    /// first block under the lock instead, from the reserve (its caller, `Engine.submitSwapOut`,
    /// waits for a free staging buffer without the lock first, so this takes one without
    /// waiting). Marks it swapped out and queues it (`waited`: its own call waits for it and
    /// finishes it). Returns the batch (maybe empty).
    /// Throws `io` (disk full, tier full of pinned slots, submission failed) with nothing
    /// changed: a tier that cannot hold every block is found so before any cached block is
    /// dropped for them (`DiskTier.checkRoom`). Cost: one index probe per block; one copy and
    /// checksum for a first block from the reserve; no allocation unless every buffer set is
    /// taken (see the type).
    func start(slot: Int, waited: Bool) throws(KVError) -> UnsafeMutableBufferPointer<Copy> {
        precondition(!isPending(slot), "a second swap-out of slot \(slot)")
        let blockCount = sequences.blockCount(slot)
        let table = sequences.table(slot)
        let buffers: Buffers
        if let b = spare.popLast() { buffers = b } else { buffers = try Buffers(maxBlocks: sequences.maxBlocks) }
        var count = 0
        for i in 0..<blockCount where !holds.keeps(table[i], at: i) {
            buffers.positions[count] = Int32(i)
            count += 1
        }
        do throws(KVError) {
            try tier.checkRoom(forSwapOut: count) { (blocks.hash(of: table[Int(buffers.positions[$0])]), blocks.fingerprint(of: table[Int(buffers.positions[$0])])) }
        } catch {
            spare.append(buffers)
            throw error
        }
        var e = Entry(slot: slot, buffers: buffers, count: count, waited: waited)
        let batch: UnsafeMutableBufferPointer<Copy>
        do throws(KVError) {
            if count > 0 && tier.swapOutStages <= 0 { try submitNext(&e) }
            batch = try reserve(&e)
        } catch {
            tier.drain()
            for i in 0..<e.submitted { tier.unpin(e.diskSlots[i]) }
            spare.append(e.buffers)
            throw error
        }
        e.copying = batch.count
        forEachKept(e) { holds.reserve(table[$0]) }
        swapped[slot] = true
        entries.append(e)
        started += 1
        // Submitted now: a request the ring refuses fails here, not during a wait (a wait with
        // nothing in flight would last until some other call woke it).
        tier.flush()
        return batch
    }

    /// Reserves `e`'s next blocks from `submitted` on for a batch, while `DiskTier.swapOutStages`
    /// leaves buffers (never the reserve, so that a call taking a buffer under the lock,
    /// `DiskTier.takeStage`, finds one free or in flight rather than held by a copy waiting for
    /// the lock): each block's disk slot in `diskSlots`, its hash in `hashes`. Throws `io` when
    /// the tier refuses a block, having given back what it reserved. The batch is `e`'s copies
    /// from `submitted` on (`Buffers`), valid until `submitBatch`. O(1) per block.
    private func reserve(_ e: inout Entry) throws(KVError) -> UnsafeMutableBufferPointer<Copy> {
        let table = sequences.table(e.slot), bt = sequences.blockTokens
        var n = 0
        while e.submitted + n < e.count && tier.swapOutStages > 0 {
            let i = e.submitted + n, p = Int(e.positions[i]), b = table[p]
            e.hashes[i] = blocks.hash(of: b)
            do throws(KVError) {
                let (slot, stage) = try tier.reserveSwap(hash: e.hashes[i], fingerprint: blocks.fingerprint(of: b))
                e.diskSlots[i] = slot
                (e.buffers.copies + i).initialize(to: Copy(position: p, block: b, stage: stage, tokens: min(bt, sequences.lengths[e.slot] - p * bt),
                                                           parent: blocks.parent(of: b), fingerprint: blocks.fingerprint(of: b)))
                n += 1
            } catch {
                giveBack(e, UnsafeMutableBufferPointer(start: e.buffers.copies + e.submitted, count: n))
                throw error
            }
        }
        return UnsafeMutableBufferPointer(start: e.buffers.copies + e.submitted, count: n)
    }

    /// Reserves the next batch of `slot`'s pending swap-out (not failed, no batch being
    /// copied) for its call to copy without the lock (`Engine.swapOut`'s loop): see `reserve`.
    /// Empty when nothing can be reserved now. A block the tier refuses fails the swap-out.
    func reserveBatch(_ slot: Int) -> UnsafeMutableBufferPointer<Copy> {
        guard let i = entries.firstIndex(where: { $0.slot == slot }), entries[i].failure == nil && entries[i].copying == 0 else { return .init(start: nil, count: 0) }
        do throws(KVError) {
            let batch = try reserve(&entries[i])
            entries[i].copying = batch.count
            return batch
        } catch {
            entries[i].failure = failureMessage(slot, error.message)
            return .init(start: nil, count: 0)
        }
    }

    /// Submits `slot`'s batch, copied without the lock (`start`, `reserveBatch`), in order: a
    /// block the tier got meanwhile under its hash takes that slot (`DiskTier.submitSwap`).
    /// Cost: O(1) plus a seal per block.
    func submitBatch(_ slot: Int, _ batch: UnsafeMutableBufferPointer<Copy>) {
        let i = entries.firstIndex { $0.slot == slot }!
        precondition(entries[i].copying == batch.count, "submitting a batch of slot \(slot) that is not being copied")
        entries[i].copying = 0
        let e = entries[i]
        for (j, c) in batch.enumerated() where c.stage >= 0 {
            let k = e.submitted + j  // the batch is the copies from `submitted` on (`reserve`)
            e.diskSlots[k] = tier.submitSwap(slot: e.diskSlots[k], stage: c.stage, hash: e.hashes[k],
                                             parent: c.parent, fingerprint: c.fingerprint, checksum: c.checksum)
            e.hashes[k] = tier.hash(of: e.diskSlots[k])  // 0: written as its own slot (`DiskTier.submitSwap`)
        }
        entries[i].submitted += batch.count
        tier.flush()
    }

    /// Gives back `batch`'s reservations (`reserve`, refused part way): slots and buffers of
    /// the blocks to copy, pins of those the tier held.
    private func giveBack(_ e: Entry, _ batch: UnsafeMutableBufferPointer<Copy>) {
        for (j, c) in batch.enumerated() {
            let k = e.submitted + j  // the batch is the copies from `submitted` on (`reserve`)
            if c.stage >= 0 { tier.cancel(slot: e.diskSlots[k], stage: c.stage) } else { tier.unpin(e.diskSlots[k]) }
        }
    }

    /// Copies `e`'s next block into a staging buffer and submits its write (see `DiskTier.writeSwap`).
    private func submitNext(_ e: inout Entry) throws(KVError) {
        let i = e.submitted, p = Int(e.positions[i]), b = sequences.table(e.slot)[p], bt = sequences.blockTokens
        e.hashes[i] = blocks.hash(of: b)
        e.diskSlots[i] = try tier.writeSwap(b, hash: e.hashes[i], parent: blocks.parent(of: b), fingerprint: blocks.fingerprint(of: b),
                                            slot: e.slot, position: p, tokens: min(bt, sequences.lengths[e.slot] - p * bt))
        e.hashes[i] = tier.hash(of: e.diskSlots[i])  // 0: written as its own slot (`DiskTier.submitSwap`)
        e.submitted += 1
    }

    /// Submits more blocks of every pending asynchronous swap-out (a synchronous one's call
    /// copies its own batches without the lock) as far as staging buffers are free beyond
    /// `DiskTier.reservedStages` and a spilling trim's share (`DiskTier.swapOutStages`); a block
    /// the tier refuses fails its swap-out (nothing more of
    /// it is submitted). Returns true when one failed so. Never waits.
    private func submitMore() -> Bool {
        var refused = false
        for i in entries.indices where entries[i].failure == nil && entries[i].copying == 0 && !entries[i].waited {
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
    /// slot the swap-out found already written counted at once). Never while a batch is being
    /// copied (`submitBatch` comes first). O(blocks) at the end.
    private func canFinish(_ i: Int) -> Bool {
        guard entries[i].copying == 0 else { return false }
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
        defer { spare.append(e.buffers) }
        precondition(e.failure != nil || e.durable == e.count, "finishing swap-out of slot \(slot) before its writes ended")
        let table = sequences.table(slot)
        if let failure = e.failure {
            for i in 0..<e.submitted { tier.unpin(e.diskSlots[i]) }
            forEachKept(e) { holds.unreserve(table[$0]) }
            swapped[slot] = false
            failed += 1
            return failure
        }
        // Unscheduled prompt blocks are written as private slots (their hashes are only
        // prepared, so nobody finds their uncomputed bytes on disk); their hashes are kept with
        // the range for the swap-in, which prepares the blocks it reads them into.
        let pending = sequences.unscheduled[slot]
        if !pending.isEmpty {
            var kept = [UInt64]()
            kept.reserveCapacity(3 * pending.count)
            for i in pending {
                let (hash, parent, fingerprint) = blocks.prepared(table[i])
                kept.append(hash)
                kept.append(parent)
                kept.append(fingerprint)
            }
            preparedHashes[slot] = kept
        }
        // Written blocks another swapped-out sequence kept: it takes their disk slots.
        if (0..<e.count).contains(where: { holds.isKept(table[Int(e.positions[$0])]) }) {
            holds.handOver(from: slot, positions: e.positions, diskSlots: e.diskSlots, count: e.count, tier: tier)
        }
        forEachKept(e) { p in
            holds.keep(table[p])
            table[p] = SwapHolds.entry(keeping: table[p])
        }
        for k in 0..<e.count {
            let p = Int(e.positions[k]), b = table[p]
            blocks.release(b)
            // A block only this sequence held is now cached and on disk: free its memory.
            if blocks.references(b) == 0 && blocks.hash(of: b) != 0 { blocks.evict(b) }
            table[p] = e.diskSlots[k]
        }
        contiguous?.close(slot: slot)
        contiguous?.releaseUnpinned(slot: slot)
        completed += 1
        return nil
    }

    /// Ends `slot`'s pending swap-out (not `waited` for) before it was finished: its disk slots
    /// are let go (a sequence's own slot is freed when its write completes), its blocks not yet
    /// submitted are never written, and the sequence is resident again, its memory never
    /// released. False when `slot` has no such swap-out. Precondition: no batch of it is being
    /// copied (callers wait while `isBusy`).
    func cancel(_ slot: Int) -> Bool {
        guard isPending(slot, waited: false) else { return false }
        let e = remove(slot)
        precondition(e.copying == 0, "cancelling the swap-out of slot \(slot) while a batch of it is copied")
        for i in 0..<e.submitted { tier.unpin(e.diskSlots[i]) }
        let table = sequences.table(slot)
        forEachKept(e) { holds.unreserve(table[$0]) }
        spare.append(e.buffers)
        swapped[slot] = false
        cancelled += 1
        return true
    }

    /// The prepared (hash, parent, fingerprint) triples of swapped-out `slot`'s unscheduled blocks that its
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

    /// Calls `body` with each position of `e`'s sequence whose block it keeps rather than writes
    /// (those not in `positions`), ascending. O(blocks of the sequence).
    private func forEachKept(_ e: Entry, _ body: (Int) -> Void) {
        var next = 0  // the next written block
        for p in 0..<sequences.blockCount(e.slot) {
            if next < e.count && Int(e.positions[next]) == p { next += 1 } else { body(p) }
        }
    }

    private func remove(_ slot: Int) -> Entry {
        entries.remove(at: entries.firstIndex { $0.slot == slot }!)
    }
}
