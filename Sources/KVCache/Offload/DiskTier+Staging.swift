import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The disk tier's staging buffers: taking one, and the shares of them bulk transfers,
/// swap-outs and trims may take.
extension DiskTier {
    /// A free staging buffer for a request on `slot` (`StagingBuffers.take`: the next after the
    /// previous request's when `slot` follows its slot, else the lowest), waiting for completions
    /// under the engine's lock while none is (writes and record reads only: block reads queue
    /// instead, `load`). O(stages / 64), plus the waits.
    func takeStage(for slot: Int32) -> Int32 {
        while true {
            if let stage = staging.take(for: slot) { return stage }
            reap(waitFor: 1)
        }
    }

    /// Staging buffers in all.
    var stagingBuffers: Int { stages }

    /// True when a staging buffer is free now: a write (a swap-out's first block) takes one
    /// without waiting for the device (`takeStage`). O(1).
    var hasFreeStage: Bool { staging.freeCount > 0 }

    /// Staging buffers a bulk transfer may take now without waiting: those free beyond
    /// `reservedStages` and beyond the reads queued for one (`pendingReads`, which go first)
    /// (0 or less: none; it leaves the rest to a later call, or waits without the engine's
    /// lock). O(1).
    var bulkStages: Int { staging.freeCount - reservedStages - pendingReads.count }

    /// Staging buffers pending swap-outs may take now (`SwapOutQueue`): `bulkStages`, except
    /// while a trim is spilling (`trimsSpilling > 0`). Then they leave free the buffers still
    /// owed to spills: half the bulk area (`stages - reservedStages`) less the spill writes in
    /// flight. A trim waits for buffers without the engine's lock, and every call that
    /// processes completions hands the buffers they freed to pending swap-outs first
    /// (`SwapOutQueue.settle`) before the trim looks; without the share the trim would wait for
    /// as long as swap-outs keep blocks unsubmitted (a stream of them: indefinitely). With it,
    /// the buffers each completion frees go to the trim up to its half, the rest to the
    /// swap-outs, so both hold about half the bulk area in flight while both want buffers
    /// (the trim takes whatever is free when it looks, so it may hold more while the swap-outs
    /// have nothing left to submit). O(1).
    var swapOutStages: Int {
        guard trimsSpilling > 0 else { return bulkStages }
        return bulkStages - max(0, (stages - reservedStages) / 2 - spillWritesInFlight)
    }
}
