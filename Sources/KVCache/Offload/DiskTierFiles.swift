#if canImport(Glibc)
import Glibc
#endif

/// The files a disk tier keeps in its `offload_dir`: the slab of slots and its journal
/// (`kvm_slab.h`) and the tier's identity (`TierIdentity`). Nothing else is written there
/// (an identity is written through a temporary file renamed over it).
public enum DiskTierFiles {
    /// Their names, in the directory.
    public static let names = ["kvcache.slab", "kvcache.journal", TierIdentity.fileName]

    /// Removes them from `dir`, so that the next engine there starts with an empty tier (its
    /// identity included). The directory must not be in use by an engine. Missing files are
    /// not an error. Cost: one `unlink` each.
    public static func remove(in dir: String) {
        for name in names { unlink(dir + "/" + name) }
    }
}
