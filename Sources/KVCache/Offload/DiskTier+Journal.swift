import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The disk tier's journal: appending the records it owes, and syncing it.
extension DiskTier {
    /// Appends the records the journal owes (`TierJournal.flush`), giving the slots whose
    /// FREED records it appended back to `freeSlots`. A failed append loses
    /// none: it is counted (`journalAppendsFailed`, `lastFailure`) and the next flush (the
    /// next call that processes completions, or `sync`) tries them again; meanwhile the blocks
    /// are served in this run, a restart would not find those not journaled yet, and the
    /// slots owing FREED records stay in `waitingSlots`, not rewritten.
    func flushJournal() {
        let owed = journal.owedCount
        guard owed > 0 else { return }
        let appended = journal.flush()
        if waitingCount > 0 && journal.owedCount < owed { giveBackWaitingSlots() }
        guard appended else {
            stats.journalAppendsFailed = journal.appendsFailed
            lastFailure = journal.lastError
            return
        }
        guard let (compaction, bytes) = journal.compactIfLong(), compaction != 0 else { return }
        lastFailure = journal.lastError
        if compaction < 0 {  // the old journal stands
            kvm_log("offload journal in '\(dir)' (\(bytes) bytes) was not compacted: \(journal.lastError)")
        }
    }

    /// Starts a `kvc_engine_sync` (`Engine.syncOffload`): drains the requests in flight, appends
    /// the journal records owed and pins the files (`PinnedSync`), whose fdatasyncs then run
    /// without the engine's lock, or, with no descriptor left to pin them, under it
    /// (`PinnedSync.needsTheLock`). Cost: `drain`'s and the flush's, one dup.
    func beginSync() -> PinnedSync {
        drain()
        flushJournal()
        var files = kvm_slab_files()
        kvm_slab_pin_files(slab, &files)
        journal.mayBeDurable()
        return PinnedSync(slab: slab, files: files, directoryOwed: journal.directorySyncOwed, renames: journal.renames,
                          unjournaled: journal.owedCount, journalError: journal.lastError)
    }

    /// Ends a `kvc_engine_sync` whose `PinnedSync.sync` ran: throws `io` when its fdatasyncs
    /// failed, when the slab or journal is no longer the file at its path (offload_dir removed
    /// or moved, or a file replaced: `kvm_slab_check_files`, checked after the fdatasyncs), when
    /// the directory's owed fsync failed (tried again by the next sync), or when journal records
    /// could not be appended (a full disk): blocks stored before it would not survive a restart.
    /// The directory's fsync ends `directorySyncOwed` unless a compaction meanwhile owes another.
    func endSync(_ pinned: PinnedSync) throws(KVError) {
        if let failure = pinned.filesFailure { throw KVError(.io, failure) }
        if kvm_slab_check_files(slab) < 0 { throw KVError(.io, kvmMessage()) }
        if pinned.directoryOwed {
            if let failure = pinned.directoryFailure {
                throw KVError(.io, "offload journal: \(failure); its compaction's rename may not survive a "
                    + "power loss, which would bring back the old journal without the blocks stored since; later calls try again")
            }
            journal.directorySynced(renames: pinned.renames)
        }
        guard pinned.unjournaled == 0 else {
            throw KVError(.io, "offload journal: \(pinned.unjournaled) records could not be appended (\(pinned.journalError)); "
                + "the blocks they describe would not be found after a restart; later calls try again")
        }
    }
}
