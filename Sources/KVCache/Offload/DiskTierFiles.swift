import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The files a disk tier keeps in its `offload_dir`: the slab of slots and its journal
/// (`kvm_slab.h`), whose compaction writes the next journal as `kvcache.journal.new` and renames
/// it over, and the tier's identity (`TierIdentity`), which is written through a temporary file
/// renamed over it too. Nothing else is written there.
public enum DiskTierFiles {
    /// Their names, in the directory, the two temporaries last (each is there only while a
    /// journal compaction or an identity is written, or after a process ended in the middle).
    public static let names = [KVM_SLAB_FILE, KVM_JOURNAL_FILE, TierIdentity.fileName, TierIdentity.temporaryFileName,
                               KVM_JOURNAL_REWRITE_FILE]

    /// Removes them from `dir`, so that the next engine there starts with an empty tier (its
    /// identity included). Refused, removing nothing, while an engine uses the directory: the
    /// slab's lock (the one `kvm_slab_open` takes) is held across the unlinks, so no engine
    /// opens it meanwhile either; the lock's descriptor is closed in a child forked meanwhile
    /// (`kvm_fork_close_open`), which would hold the lock for its life. Missing files are not
    /// an error. Cost: an open, a lock and one `unlink` per file.
    public static func remove(in dir: String) throws(KVError) {
        var entry: Int32 = -1
        let lock = kvm_fork_close_open(dir + "/" + names[0], O_RDONLY | O_NOFOLLOW, 0, &entry)  // a link is only unlinked
        defer { if lock >= 0 { kvm_fork_close_close(lock, entry) } }
        if lock >= 0 && flock(lock, LOCK_EX | LOCK_NB) != 0 {
            let err = errno
            if err == EWOULDBLOCK {
                throw KVError(.io, "offload_dir '\(dir)' is in use by another engine (its slab file is locked); its tier files stay")
            }
            throw KVError(.io, "cannot lock '\(dir)/\(names[0])': \(String(cString: strerror(err)))")
        }
        for name in names { unlink(dir + "/" + name) }
    }
}
