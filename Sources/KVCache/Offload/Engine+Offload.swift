import CKVMemory

#if canImport(Glibc)
import Glibc
#endif

/// The disk tier's side of the engine: readiness of disk reads, completion polling, and
/// whole-sequence swap out and in (preemption).
///
/// Completions: the engine has no I/O thread. Completed requests are processed (verified,
/// copied into memory, journaled) by `ready`, `poll`, `createSequence`, `cachedPrefixTokens`
/// and `cachedPrefixBlocks`, `swapOut`, `swapOutAsync`, `swapIn` and `free`, under the
/// engine's lock, which also submit pending
/// swap-outs' blocks as staging buffers free up, settle the asynchronous swap-outs whose
/// writes all completed (`SwapOutQueue`) and lose the tokens of offloaded-token records whose
/// write failed (`loseFailedRecordWrites`); a server that only wants progress calls `poll`.
/// `poll`, `swapOut`, `swapOutAsync` (for the sequence's reads and a staging buffer for its
/// first block), a `trim` with more blocks to spill than staging buffers are free for it, and
/// an allocation out of memory while swap-outs are pending or freed sequences' reads are in
/// flight wait for the device without the lock (`awaitProgress`, which processes
/// completions), so other threads' calls proceed meanwhile. Prefix and swap-in reads never
/// wait: those that find no staging buffer free are queued (`DiskTier.load`) and submitted by
/// the calls above as completions free buffers, before pending swap-outs' blocks; nor does
/// `free` (a slot with reads in flight is released once they landed, `Engine.free`).
extension Engine {
    /// The slot of live `seq` whose K/V the server may reach or change: resident (not swapped
    /// out) and not spoiled by a failed disk read (as processed so far). Throws `notFound`,
    /// `invalidArgument` for a swapped-out sequence, `io` for a spoiled one (`failedReadError`).
    /// Cost: O(1).
    func usableSlot(_ seq: UInt64) throws(KVError) -> Int {
        let s = try slot(seq)
        if let offload {
            if offload.swapped[s] { throw .invalid("sequence \(seq) is swapped out; swap it in (and wait until it is ready) first") }
            if offload.failed[s] { throw failedReadError(seq, slot: s, offload: offload) }
        }
        return s
    }

    /// Waits, under the lock, until live slot `s`'s pending disk reads landed
    /// (`OffloadCoordinator.waitResident`), as a copy of its blocks or pages must (before, they
    /// are not all there); throws `io` as `usableSlot` when one of them failed: the wait
    /// spoiled the sequence, and the caller, having changed nothing yet, must change nothing.
    /// Without a tier: nothing. Cost: completions processed until the reads landed.
    func awaitUsable(_ s: Int) throws(KVError) {
        guard let offload else { return }
        offload.waitResident(s)
        if offload.failed[s] { throw failedReadError(sequences.ids[s], slot: s, offload: offload) }
    }

    /// The error of every call on a sequence a failed disk read spoiled, naming the read's
    /// failure; only `free` (and `length`, `ready`, the eviction state's queries) still work.
    private func failedReadError(_ seq: UInt64, slot: Int, offload: OffloadCoordinator) -> KVError {
        KVError(.io, "a disk read for sequence \(seq) failed (\(offload.failureReasons[slot])): its K/V is not all there; "
                + "free it and create it again")
    }

    /// True when every token of `seq` is resident: no disk read (prefix hit, swap-in or episodic
    /// restore after `focus`) is still filling its blocks. The server must not read K/V below
    /// `cached_tokens`, nor restored tokens' K/V, before. A swapped-out sequence is not ready.
    /// Processes completions first (never waits).
    /// Throws `notFound`; `io` once when its `swapOutAsync` failed after returning (it is
    /// resident and unchanged; the next call says ready); or `io` when a read of one of its blocks failed or was torn or
    /// corrupt: its bytes were not served; free the sequence and create it again (the bad blocks
    /// left the cache, so the new one reports fewer cached tokens). From then on every call
    /// that reaches or changes its K/V throws that `io` too (`usableSlot`). Episodic offload: once
    /// resident, throws `io` once when offloaded tokens were lost since the last call (a record
    /// could not be written or read back); they were dropped, never served, and the sequence
    /// stays usable (re-read the positions). Cost: O(blocks of seq).
    public func ready(_ seq: UInt64) throws(KVError) -> Bool {
        try locked { () throws(KVError) -> Bool in
            let s = try slot(seq)
            guard let offload else { return true }
            offload.processCompletions()
            if let failure = offload.swapOutQueue.takeFailure(s) { throw KVError(.io, failure) }
            if offload.swapped[s] { return false }
            if offload.failed[s] { throw failedReadError(seq, slot: s, offload: offload) }
            guard offload.resident(s) else { return false }
            try reportLostTokens(s, seq: seq)
            return true
        }
    }

    /// Processes disk-tier completions (and settles asynchronous swap-outs), waiting up to `timeoutMicroseconds` for the first when
    /// requests are in flight and none has completed yet (never when none are in flight).
    /// Returns how many requests completed during the call (processed by it, or by other calls
    /// while it waited). The wait does not hold the engine's lock: other threads' calls proceed
    /// meanwhile (and may process the completions themselves). No-op without a disk tier.
    @discardableResult
    public func poll(timeoutMicroseconds: UInt32) -> Int {
        kvm_lock_acquire(mutex)
        defer { kvm_lock_release(mutex) }
        guard let offload else { return 0 }
        let tier = offload.tier!
        let before = offload.completionsProcessed
        offload.processCompletions()
        if timeoutMicroseconds > 0 && offload.completionsProcessed == before && tier.inflight > 0 {
            let deadline = monotonicNanoseconds() + UInt64(timeoutMicroseconds) * 1000
            while offload.completionsProcessed == before && tier.inflight > 0 && monotonicNanoseconds() < deadline {
                offload.awaitProgress(mutex: mutex, deadlineNanoseconds: deadline)
            }
        }
        return Int(offload.completionsProcessed - before)
    }

    /// The slot of `seq` once no synchronous `swapOut` of it is in flight and no batch of its
    /// swap-out is being copied without the lock (`SwapOutQueue.isBusy`; waiting without the
    /// lock; a pending `swapOutAsync` is not waited for otherwise). Under the lock. Throws
    /// `notFound`.
    func slotAfterSwapOut(_ seq: UInt64) throws(KVError) -> Int {
        var s = try slot(seq)
        while let offload, offload.swapOutQueue.isBusy(s) {
            offload.awaitProgress(mutex: mutex, deadlineNanoseconds: nil)
            s = try slot(seq)
        }
        return s
    }

    /// The slot of live, resident `seq` once no disk read fills it any more and, with
    /// `stagingBuffer`, a staging buffer is free (behind the reads queued for one, which
    /// completions serve first), waiting for both without the lock (`awaitProgress`; the
    /// sequence is looked up again after each wait): a swap-out, and `compact` and `focus` of
    /// an offloading sequence, whose first write (block or record) then takes a buffer without
    /// waiting for the device under the lock. Throws as `usableSlot`. Cost: O(blocks of seq)
    /// per check.
    func awaitOffloadReady(_ seq: UInt64, stagingBuffer: Bool) throws(KVError) -> Int {
        var s = try usableSlot(seq)
        guard let offload else { return s }
        while !offload.resident(s) || (stagingBuffer && !offload.tier.hasFreeStage) {
            offload.awaitProgress(mutex: mutex, deadlineNanoseconds: nil)
            s = try usableSlot(seq)
        }
        return s
    }

    /// Runs `body` under the engine's lock (`locked`); when it throws `outOfMemory` while
    /// swap-outs are pending or freed sequences wait for their reads (`Engine.free`), waits
    /// without the lock until one of them ended (its memory released, or the swap-out failed
    /// or was cancelled) and runs `body` again. So an allocation reports out of memory only
    /// once neither is pending, and memory is never counted free before its write completed or
    /// the reads into it landed. `body` must change nothing when it throws (`KVError`'s invariant)
    /// and look everything up afresh: other calls run during the wait. Cost: nothing unless
    /// memory runs out while swap-outs or freed sequences' reads are pending.
    @inline(__always) func lockedAllocating<T>(_ body: () throws(KVError) -> T) throws(KVError) -> T {
        try locked { () throws(KVError) -> T in
            while true {
                do throws(KVError) {
                    return try body()
                } catch {
                    guard error.code == .outOfMemory, let offload, offload.awaitMemoryReleased(mutex: mutex) else { throw error }
                }
            }
        }
    }

    /// Tests: holds every disk-tier request in flight (the thread backend only; false on
    /// io_uring), or releases them. Without the engine's lock (the backend has its own), so
    /// that a test can release requests a call waits for under the lock.
    func pauseOffloadIO(_ paused: Bool) -> Bool { offload?.tier.pauseIO(paused) ?? false }

    /// Tests: the disk tier's next `count` hand-overs of requests to the kernel fail as an
    /// io_uring_enter short of memory does (`DiskTier.failSubmits`; false on the thread backend
    /// or without a disk tier). Under the lock.
    func failOffloadSubmits(_ count: UInt32) -> Bool {
        kvm_lock_acquire(mutex)
        defer { kvm_lock_release(mutex) }
        return offload?.tier.failSubmits(count) ?? false
    }

    /// Tests: sets the hook a swap-out runs just before it copies a batch of blocks
    /// (`SwapOutQueue.beforeCopy`). Under the lock.
    func setSwapOutCopyHook(_ hook: (() -> Void)?) {
        kvm_lock_acquire(mutex)
        defer { kvm_lock_release(mutex) }
        offload?.swapOutQueue.beforeCopy = hook
    }

    /// Tests: sets the hook a `syncOffload` runs just before its fdatasyncs
    /// (`DiskTier.beforeSync`). Under the lock.
    func setSyncHook(_ hook: (() -> Void)?) {
        kvm_lock_acquire(mutex)
        defer { kvm_lock_release(mutex) }
        offload?.tier.beforeSync = hook
    }

    /// Tests: calls waiting for the device without the lock now (`poll`, `swapOut`).
    var offloadWaitingCalls: Int {
        kvm_lock_acquire(mutex)
        defer { kvm_lock_release(mutex) }
        return offload?.waitingCalls ?? 0
    }

    /// Tests: the disk tier's journal length as of its last durable point
    /// (`TierJournal.durableBytes`), or 0 without a tier.
    var offloadDurableJournalBytes: UInt64 {
        kvm_lock_acquire(mutex)
        defer { kvm_lock_release(mutex) }
        return offload?.tier.journal.durableBytes ?? 0
    }

    /// Tests: the disk tier's pinned slots and unhashed stored slots (`DiskTier.pinnedAndUnhashedSlots`).
    var offloadSlotAudit: (pinned: Int, unhashed: Int) {
        kvm_lock_acquire(mutex)
        defer { kvm_lock_release(mutex) }
        offload?.tier.drain()
        return offload?.tier.pinnedAndUnhashedSlots ?? (0, 0)
    }

    /// Writes `seq`'s K/V to the disk tier and releases its memory: when it returns, every block
    /// it held alone is on disk and its memory is free (cached prefix blocks already on disk
    /// are not written again); blocks resident sequences also hold are kept, neither written
    /// nor freed (`SwapHolds`: the swap-in takes them back). The sequence stays live (its id, length and
    /// chain state) but cannot be read, appended to or forked until `swapIn`. Waits for the
    /// sequence's pending reads first (queued ones go out behind older queued reads), without
    /// the lock.
    /// While its writes are in flight the engine's lock is released (`awaitProgress`, which hands
    /// it to blocked calls also when it found completions and did not wait): other calls proceed; for
    /// them the sequence is already swapped out (not ready, not readable), and a `free` or
    /// `swapIn` of it waits until the swap-out ended.
    /// Throws `notFound`, `unsupported` (no disk tier), `invalidArgument` (already swapped out),
    /// `io` (disk full, tier full of pinned slots, write error; or an earlier `swapOutAsync` of
    /// it failed and was not reported yet; or a failed disk read spoiled it, `usableSlot`):
    /// then the sequence is resident and unchanged.
    /// Cost: one memcpy and checksum per block written, writes at full queue depth; no
    /// allocation unless more swap-outs are pending at once than ever before (`SwapOutQueue`'s
    /// buffer sets, 72 bytes per block of the longest sequence). The copies run without the lock
    /// (`copySwapOutBatch`): a batch of as many blocks as staging buffers are free beyond an
    /// eighth of them at the start (the whole sequence up to seven eighths of the staging
    /// area), then, for a larger sequence, a batch as completions free buffers, between the
    /// waits (other calls' completion processing leaves them to this call: `settle` submits only
    /// asynchronous swap-outs' blocks). Only a first block taken from that eighth (no other
    /// buffer free) is copied under the lock.
    public func swapOut(_ seq: UInt64) throws(KVError) {
        try locked { () throws(KVError) in
            let (offload, s) = try submitSwapOut(seq, waited: true)
            let queue = offload.swapOutQueue!
            // Wait for the writes without the lock, copying later batches without it too. Its
            // blocks stay held by the sequence (never spilled or evicted meanwhile), and
            // `swapped` keeps every other call off its memory.
            while !queue.writesEnded(s) {
                let batch = queue.reserveBatch(s)
                if batch.isEmpty { offload.awaitProgress(mutex: mutex, deadlineNanoseconds: nil) } else { copySwapOutBatch(offload, slot: s, batch) }
            }
            defer { offload.notifyWaiters() }  // a free or swapIn waiting for this swap-out, or an allocation
            if let failure = queue.finish(s) { throw KVError(.io, failure) }
        }
    }

    /// Like `swapOut`, but returns once the first writes are submitted: as many blocks as
    /// staging buffers are free beyond an eighth of them kept for other traffic
    /// (`DiskTier.reservedStages`) are copied and checksummed into them, without
    /// the engine's lock (`copySwapOutBatch`; only a first block taken from that eighth, when
    /// no other buffer is free, is copied under it), and
    /// the sequence is swapped out for every caller from then on (not ready, not readable). The
    /// rest of a sequence larger than the staging area (`DiskTier.stagingBuffers`) is copied and
    /// submitted by later calls that process completions (`poll`, `ready`, `createSequence`,
    /// `swapOut`, `swapOutAsync`, `swapIn`, `free`, `syncOffload`, or an allocation that would
    /// otherwise run out of memory), as completions free staging buffers, under the lock (as
    /// many blocks per call as buffers were freed since the last); its bytes stay
    /// untouched in memory meanwhile. Its memory stays committed until such a call finds every
    /// write completed; then it is released exactly as `swapOut` releases it.
    /// Before that, `swapIn` cancels the swap-out (the sequence is resident again at once, its
    /// bytes never left memory; nothing is read) and `free` releases the memory at once and
    /// the disk slots when their writes complete.
    /// A write that fails after the call returned, or a later block the tier refuses (disk
    /// full, tier full of pinned slots), loses nothing: the sequence becomes resident again,
    /// unchanged, and its next `ready`, `swapIn` or `swapOut`/`swapOutAsync` throws `io` once,
    /// naming the failure (then it is usable as any resident sequence).
    /// Throws as `swapOut` for what fails before the call returns (then the sequence is
    /// resident and unchanged). Cost: one copy and checksum per block submitted by the call, at
    /// most seven eighths of the staging buffers' worth, without the lock (waits for the
    /// sequence's pending reads, and for a staging buffer when none is free at all, without the
    /// lock too); the other blocks' copies fall to the later calls.
    public func swapOutAsync(_ seq: UInt64) throws(KVError) {
        try locked { () throws(KVError) in _ = try submitSwapOut(seq, waited: false) }
    }

    /// The common start of `swapOut` and `swapOutAsync`, under the lock: processes completions,
    /// waits for the sequence's pending reads (those still queued for a staging buffer too),
    /// and then for a free staging buffer for its first block when every one is in flight
    /// (behind the reads queued for one, which completions serve first), both without the lock
    /// (`awaitProgress`: other calls proceed, and the sequence is looked up again after each
    /// wait), and starts its swap-out (`SwapOutQueue.start`: marked swapped out, its first
    /// batch reserved, with the lock held since; `waited`: its own call waits for it and
    /// finishes it), whose batch it then copies without the lock and submits
    /// (`copySwapOutBatch`). Returns the coordinator and the sequence's slot. Throws as
    /// `swapOut` before anything changed.
    private func submitSwapOut(_ seq: UInt64, waited: Bool) throws(KVError) -> (OffloadCoordinator, Int) {
        // An unknown or swapped-out sequence (a pending swap-out counts) changes nothing, not
        // even by processing completions.
        _ = try usableSlot(seq)
        guard let offload else { throw KVError(.unsupported, "swap needs a disk tier: set offload_dir and offload_bytes") }
        offload.processCompletions()
        let s = try awaitOffloadReady(seq, stagingBuffer: true)
        if let failure = offload.swapOutQueue.takeFailure(s) { throw KVError(.io, failure) }
        let batch = try offload.swapOutQueue.start(slot: s, waited: waited)
        copySwapOutBatch(offload, slot: s, batch)
        return (offload, s)
    }

    /// Copies `batch` of slot `s`'s swap-out (reserved by `SwapOutQueue.start` or
    /// `reserveBatch`) into its staging buffers with the engine's lock released, then, under it
    /// again, submits the writes (`SwapOutQueue.submitBatch`) and wakes the calls waiting (a
    /// `free` or `swapIn` of the sequence waits while the batch is copied, `slotAfterSwapOut`;
    /// `syncOffload` too). Other calls proceed meanwhile and cannot change the blocks' bytes
    /// or take their buffers and slots (see `SwapOutQueue`). Called and returns with the lock
    /// held; no-op for an empty batch. Cost: one copy and checksum per block, two lock handoffs.
    private func copySwapOutBatch(_ offload: OffloadCoordinator, slot s: Int, _ batch: UnsafeMutableBufferPointer<SwapOutQueue.Copy>) {
        guard !batch.isEmpty else { return }
        let hook = offload.swapOutQueue.beforeCopy
        kvm_lock_release(mutex)
        hook?()
        offload.copySwapOutBatch(slot: s, batch)
        kvm_lock_acquire(mutex)
        offload.swapOutQueue.submitBatch(s, batch)
        offload.notifyWaiters()
    }

    /// The memory block indexed under `hash` whose K/V a swap-in may share instead of reading
    /// its own, or -1: any indexed block when indexing on schedule (an indexed block is
    /// scheduled, computed no later than the returning sequence's next pass); otherwise only
    /// a cached one (no sequence holds it: its last holder freed it computed). Indexed at
    /// allocation, a block a live sequence holds may be one its create just took, whose K/V
    /// its server has not computed: shared, the returning sequence (whose own bytes are on
    /// disk, verified) served them (helper-125). O(1).
    private func computedMemoryBlock(hash h: UInt64, fingerprint: UInt64) -> Int32 {
        guard h != 0 else { return -1 }
        let b = blocks.lookup(h, fingerprint: fingerprint)
        return b >= 0 && (config.indexOnSchedule || blocks.references(b) == 0) ? b : -1
    }

    /// Brings swapped-out `seq` back: takes back the blocks its swap-out kept (`SwapHolds`;
    /// contiguous: their pages mapped as a create maps a prefix hit), commits memory for the
    /// others and starts reading them (paged: blocks still cached in memory are shared
    /// instead, `computedMemoryBlock`). Returns at
    /// once; `ready` says when the bytes are there. A `swapOutAsync` of it whose writes have not
    /// all completed is cancelled instead: its memory was never released, so it is resident and
    /// ready at once, nothing read.
    /// Indexing on schedule, prompt blocks it had not scheduled come back prepared, not indexed,
    /// for `schedule` to index as the server resumes their prefill (Engine+Schedule.swift).
    /// Out of memory while swap-outs are pending, it waits for them first (`lockedAllocating`).
    /// Throws `notFound`, `unsupported` (no disk tier), `invalidArgument` (not swapped out),
    /// `io` (its `swapOutAsync` failed after returning: it is resident and unchanged, reported
    /// once), `outOfMemory` (nothing changed; the sequence stays swapped out).
    /// Cost: one read of one slot per block, at full queue depth; never waits for the device:
    /// reads beyond the free staging buffers are queued (`DiskTier.load`); a cancel O(blocks).
    public func swapIn(_ seq: UInt64) throws(KVError) {
        try lockedAllocating { () throws(KVError) in
            let s = try slotAfterSwapOut(seq)
            guard let offload else { throw KVError(.unsupported, "swap needs a disk tier: set offload_dir and offload_bytes") }
            // A sequence neither swapped out (a pending swap-out counts) nor holding a failed one
            // to report changes nothing, not even by processing completions: they cannot make
            // it swapped out.
            guard offload.swapped[s] || offload.swapOutQueue.hasFailure(s) else { throw .invalid("sequence \(seq) is not swapped out") }
            offload.processCompletions()
            if let failure = offload.swapOutQueue.takeFailure(s) { throw KVError(.io, failure) }
            guard offload.swapped[s] else { throw .invalid("sequence \(seq) is not swapped out") }
            if offload.swapOutQueue.cancel(s) {
                offload.notifyWaiters()  // allocations waiting for a swap-out to end look again
                return
            }
            let tier = offload.tier!
            let table = sequences.table(s)
            let count = sequences.blockCount(s)
            let length = sequences.lengths[s]
            let diskSlots = offload.scratchSlots
            diskSlots.update(from: table, count: count)
            // The blocks its swap-out kept (`SwapHolds`) go back as they are; the table holds
            // them, -1 elsewhere until filled (contiguous: mapped as a create maps a prefix hit).
            var kept = 0
            for i in 0..<count {
                table[i] = SwapHolds.kept(diskSlots[i])
                if table[i] >= 0 { kept += 1 }
            }
            // Paged: a block whose hash is still indexed in memory is shared, not read, when its
            // bytes are known computed (`computedMemoryBlock`).
            var shared = 0, revived = 0
            if paged != nil {
                for i in 0..<count where diskSlots[i] >= 0 {
                    let b = computedMemoryBlock(hash: tier.hash(of: diskSlots[i]), fingerprint: tier.fingerprint(of: diskSlots[i]))
                    if b >= 0 {
                        shared += 1
                        if blocks.references(b) == 0 { revived += 1 }
                    }
                }
            }
            let hit = UnsafeBufferPointer(start: table, count: count)
            let need = contiguous?.groupsNeeded(hit: hit, hitTokens: length, tokens: length) ?? 0
            guard blocks.available - revived >= count - kept - shared, contiguous?.fits(need) ?? true else {
                table.update(from: diskSlots, count: count)
                throw .outOfMemory("swapping in sequence \(seq) needs \(count - kept - shared) blocks, \(blocks.available - revived) are available"
                                   + (contiguous == nil ? "" : ", and \(need) pages the budget may not have free"))
            }
            var filled = 0
            let committed = committedBytes
            do throws(KVError) {
                try contiguous?.open(slot: s, hit: hit, hitTokens: length, tokens: length)
                while filled < count {
                    let d = diskSlots[filled]
                    if d >= 0 {
                        let b = paged != nil ? computedMemoryBlock(hash: tier.hash(of: d), fingerprint: tier.fingerprint(of: d)) : -1
                        if b >= 0 { blocks.retain(b); table[filled] = b } else { table[filled] = try blocks.allocate() }
                    }
                    filled += 1
                }
            } catch {
                // Only a failing system call gets here (capacity was checked): undo.
                for i in 0..<filled where diskSlots[i] >= 0 { blocks.release(table[i]) }
                table.update(from: diskSlots, count: count)
                contiguous?.close(slot: s)
                contiguous?.releaseUnpinned(slot: s)
                giveBackCommitted(since: committed)
                throw error
            }
            offload.swapped[s] = false
            offload.failed[s] = false
            // The unscheduled range survived the swap-out: its blocks were written uncomputed as
            // private slots (hash 0: read into fresh blocks, never shared), or hashed when another
            // sequence sharing them indexed them meanwhile; each fresh block left unindexed (a
            // hashed one whose hash another block holds) is prepared again under the kept hash,
            // so that `schedule` indexes it once the server computes it, never under another's.
            let pending = sequences.unscheduled[s], prepared = offload.swapOutQueue.takePrepared(s)
            for i in 0..<count {
                let d = diskSlots[i]
                guard d >= 0 else {
                    offload.swapOutQueue.holds.takeBack(table[i])  // kept as it was, nothing to read
                    continue
                }
                let h = tier.hash(of: d)
                let isShared = paged != nil && h != 0 && blocks.hash(of: table[i]) == h
                if !isShared {
                    if h != 0 { index(table[i], hash: h, parent: tier.parent(of: d), fingerprint: tier.fingerprint(of: d), slot: s, position: i) }
                    if pending.contains(i) && !blocks.isIndexed(table[i]) {
                        let k = 3 * (i - pending.lowerBound)
                        blocks.prepare(table[i], hash: prepared[k], parent: prepared[k + 1], fingerprint: prepared[k + 2])
                    }
                    offload.load(d, block: table[i], slot: s, position: i, tokens: min(bt, length - i * bt))
                }
                tier.unpin(d)  // the swapped-out sequence's pin; a pending read holds its own
            }
            offload.swapIns += 1
            tier.flush()
        }
    }

    /// `trim`'s drop of every cached block with a disk tier, under the lock: spills them,
    /// oldest first, in steps of at most as many blocks as staging buffers are free beyond
    /// those bulk transfers leave to other traffic (`DiskTier.bulkStages`, shared with pending
    /// swap-outs) and as the tier has slots to take without waiting (`DiskTier.spillSlots`),
    /// each step one `BlockPool.dropCached` (so one `allCleared` only when a step empties the
    /// index; sized so, none of its spills is skipped). When no buffer is free beyond the
    /// reserve, or no slot is while spill writes are in flight (each leaves its slot in the
    /// LRU when it completes: a loop that trims and reads its prompts back from the staging
    /// buffers outruns the device and fills the tier with slots being written), it waits
    /// without the lock (`awaitProgress`, which processes completions) until completions make
    /// room: other calls proceed meanwhile and find the reserve free for a prompt's prefix
    /// read, a swap-in or a record write. Only a tier whose every slot is held otherwise
    /// (swapped-out sequences' blocks, records, reads), which no spill write will free, has
    /// the rest dropped unspilled (`spillsSkipped`). After each step, and in every wait that
    /// processed completions, it hands the lock to calls blocked on it (`kvm_lock_yield`): on
    /// a fast device some write has always completed, and the trim held the lock throughout
    /// (helper-165 measured 0.55 s). While it runs
    /// (`DiskTier.trimsSpilling`) pending swap-outs leave it half the bulk buffers
    /// (`DiskTier.swapOutStages`): every call that processes completions offers the buffers
    /// they free to swap-outs first, which would otherwise take them all for as long as they
    /// have blocks to submit. Drops at most as many blocks as were cached when it started, so it ends however busy the engine is
    /// (blocks other calls cache while it waits may stay cached). Returns with the lock held and every spill
    /// submitted. Cost: a copy and checksum per spilled block, O(1) per step.
    func spillCachedBlocks(_ offload: OffloadCoordinator) {
        let tier = offload.tier!
        tier.trimsSpilling += 1
        defer { tier.trimsSpilling -= 1 }
        var left = blocks.cachedCount
        while left > 0 && blocks.cachedCount > 0 {
            let room = min(tier.bulkStages, tier.spillSlots)
            if room > 0 {
                left -= blocks.dropCached(limit: min(room, left))
                kvm_lock_yield(mutex)
            } else if tier.bulkStages <= 0 || tier.spillWritesInFlight > 0 {
                offload.awaitProgress(mutex: mutex, deadlineNanoseconds: nil)
            } else {
                left -= blocks.dropCached(limit: left)  // every slot held otherwise: skipped
            }
        }
        tier.flush()
    }

    /// Frees swapped-out slot `slot`: its disk slots are unpinned (its own ones freed), the
    /// blocks its swap-out kept released (`SwapHolds.release`).
    func releaseSwapped(_ slot: Int) {
        guard let offload else { return }
        let table = sequences.table(slot)
        for i in 0..<sequences.blockCount(slot) { offload.swapOutQueue.holds.release(table[i], tier: offload.tier) }
        _ = offload.swapOutQueue.takePrepared(slot)
        offload.swapped[slot] = false
        sequences.close(slot)
        releaseOffloadedTokens(slot)
        evictionStates[slot] = nil
    }

    /// Waits for every disk-tier request, including every block of pending swap-outs (submitted
    /// as staging buffers free up), settles the asynchronous swap-outs as `poll` does, and
    /// makes the tier durable (fdatasync of slab and journal): everything written before the
    /// call. Throws `io`, also when the slab or journal is no longer the file at its path
    /// (offload_dir removed under the engine). No-op without a disk tier. Waits with the
    /// engine's lock held, except for a swap-out's batch being copied without it
    /// (`copySwapOutBatch`), which it waits for without it; the fdatasyncs (and the directory's
    /// fsync a compaction owes) run without it, on files pinned under it (`PinnedSync`), so
    /// other calls, syncs included, run meanwhile (under it when no descriptor is left to pin
    /// them). Cost: two lock handoffs besides the waits.
    public func syncOffload() throws(KVError) {
        try locked { () throws(KVError) in
            guard let offload else { return }
            repeat {
                if offload.swapOutQueue.isCopying {
                    offload.awaitProgress(mutex: mutex, deadlineNanoseconds: nil)
                    continue
                }
                offload.tier.drain()
                offload.processCompletions()
            } while offload.swapOutQueue.hasUnsubmitted || offload.tier.inflight > 0
            var pinned = offload.tier.beginSync()
            if pinned.needsTheLock {
                pinned.sync()  // no descriptor left to pin the files: under the lock
            } else {
                let hook = offload.tier.beforeSync
                kvm_lock_release(mutex)
                hook?()
                pinned.sync()
                kvm_lock_acquire(mutex)
            }
            try offload.tier.endSync(pinned)
        }
    }

    /// Why the disk tier runs a fallback (thread pool instead of io_uring, buffered instead of
    /// O_DIRECT), or "" (also without a tier). Tests: no caller in the package but the tests;
    /// the C ABI does not expose it.
    public var offloadFallbackReason: String {
        kvm_lock_acquire(mutex)
        defer { kvm_lock_release(mutex) }
        return offload?.tier.fallbackReason ?? ""
    }
}
