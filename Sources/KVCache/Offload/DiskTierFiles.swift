#if canImport(Glibc)
import Glibc
#endif

/// The files a disk tier keeps in its `offload_dir`: the slab of slots and its journal
/// (`kvm_slab.h`) and the tier's identity (`TierIdentity`), which is written through a
/// temporary file renamed over it. Nothing else is written there.
public enum DiskTierFiles {
    /// Their names, in the directory, the identity's temporary last (it is there only while an
    /// identity is written, or after a process ended in the middle).
    public static let names = ["kvcache.slab", "kvcache.journal", TierIdentity.fileName, TierIdentity.temporaryFileName]

    /// Removes them from `dir`, so that the next engine there starts with an empty tier (its
    /// identity included). The directory must not be in use by an engine. Missing files are
    /// not an error. Cost: one `unlink` each.
    public static func remove(in dir: String) {
        for name in names { unlink(dir + "/" + name) }
    }
}
