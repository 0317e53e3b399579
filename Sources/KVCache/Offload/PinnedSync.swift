import CKVMemory

/// The part of a `kvc_engine_sync` that runs without the engine's lock (`Engine.syncOffload`):
/// the fdatasyncs of slab and journal, pinned under the lock by `DiskTier.beginSync` (the
/// journal's descriptor duplicated, `kvm_slab_pin_files`: a compaction or any other call
/// meanwhile changes nothing they name; the slab's lives as long as the engine), and the fsync of the journal's directory when a compaction's
/// rename was owed then. What they make durable is everything written and journaled before
/// `beginSync`; blocks stored meanwhile by other calls are not promised. `DiskTier.endSync`
/// then reports, under the lock again. Cost: two fdatasyncs (three fsyncs with the directory's);
/// no allocation but the messages of failures.
struct PinnedSync {
    /// The slab whose files these are (for the directory's fsync).
    let slab: OpaquePointer
    /// The slab's descriptor and a duplicate of the journal's, or, borrowed, the journal's own.
    var files: kvm_slab_files
    /// The process had no descriptor left to duplicate (EMFILE), so `files` hold the journal's
    /// own, which a compaction may close: `sync` must run under the engine's lock, as it did
    /// before syncs left it.
    var needsTheLock: Bool { files.borrowed != 0 }
    /// A compaction's rename was not durable yet at `beginSync` (`TierJournal.directorySyncOwed`).
    let directoryOwed: Bool
    /// `TierJournal.renames` at `beginSync`.
    let renames: UInt64
    /// Journal records owed after `beginSync`'s flush (a full disk), and why.
    let unjournaled: Int
    let journalError: String
    /// Set by `sync`: why the fdatasyncs failed, or why the directory's fsync did (nil: it
    /// succeeded or was not owed).
    private(set) var filesFailure: String?
    private(set) var directoryFailure: String?

    /// Syncs the pinned files, closing them, and the directory when owed (after the files only).
    /// Without the engine's lock unless `needsTheLock`; once.
    mutating func sync() {
        if kvm_slab_sync_files(&files) < 0 { return filesFailure = kvmMessage() }
        if directoryOwed && kvm_slab_sync_journal_dir(slab) != 0 { directoryFailure = kvmMessage() }
    }
}
