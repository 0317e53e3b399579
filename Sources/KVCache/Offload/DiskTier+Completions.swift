import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The disk tier's completions: reaping the I/O queue.
extension DiskTier {
    /// Processes completed requests, the reads `reapWrites` deferred first: waits until at
    /// least `waitFor` (capped at those in flight) completed, or `timeoutMicroseconds` passed
    /// (negative: no limit); never waits when it processed deferred reads. Returns how many.
    /// Submits queued reads (`pendingReads`, oldest first) into the buffers free before and
    /// after, so while any is queued a request is in flight (a buffer is taken only by one).
    @discardableResult
    func reap(waitFor: Int = 0, timeoutMicroseconds: Int64 = -1) -> Int {
        submitPendingReads()
        flush()
        let deferred = deferredReadCount
        for i in 0..<deferred { completeRequest(tag: deferredReads[i].tag, result: deferredReads[i].result) }
        deferredReadCount = 0
        let n = Int(max(0, kvm_io_reap(io, done, UInt32(stages), UInt32(deferred > 0 ? 0 : waitFor), timeoutMicroseconds)))
        guard n + deferred > 0 else { return 0 }
        for i in 0..<n { completeRequest(tag: done[i].tag, result: done[i].result) }
        // The buffers just freed go to queued reads first (oldest first), before pending
        // swap-outs' blocks (`SwapOutQueue.settle`, after this) or spills.
        submitPendingReads()
        flush()
        flushJournal()
        onCompletions?(n + deferred)
        return n + deferred
    }

    /// For an allocation's spill that finds no staging buffer free beyond the reserve: takes
    /// the requests completed on the device without waiting and processes the writes among
    /// them, whose buffers are free at once; the reads are kept for the next `reap`
    /// (`deferredReads`). Safe in the middle of an allocation: a write's completion changes
    /// only the tier (its slot becomes stored, or, failed, leaves the index and is freed unless
    /// pinned), and every slot a call holds across an allocation is pinned (a create's prefix,
    /// `Engine.tieredPrefix`; swapped-out sequences'; records). Submits nothing (a request the
    /// queue refused would complete at once, reads included). O(completions); on io_uring no
    /// system call.
    func reapWrites() {
        let n = Int(max(0, kvm_io_reap(io, done, UInt32(stages), 0, 0)))
        var writes = 0
        for i in 0..<n {
            let op = stageOp[Int(done[i].tag & 0xFFFF_FFFF)]
            if op == DiskTier.read || op == DiskTier.peerRead {
                deferredReads[deferredReadCount] = done[i]
                deferredReadCount += 1
            } else {
                completeRequest(tag: done[i].tag, result: done[i].result)
                writes += 1
            }
        }
        guard writes > 0 else { return }
        flushJournal()
        onCompletions?(writes)
    }

    /// Tests: completions the device posted that nothing has taken yet.
    var readyCompletions: Int { Int(kvm_io_ready(io)) }
}
