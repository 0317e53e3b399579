#if canImport(Glibc)
import Glibc
#endif

/// What `stat` says of a tier directory and of its identity file (`TierIdentity.fileName`),
/// so that a peer whose reopen failed (`PeerTier.reopen`: no tier there yet, another model's)
/// is tried again only once something there changed, not at every lookup.
///
/// Every change an engine makes to a tier directory shows in it: creating, removing or
/// renaming an entry (the slab, the journal, the identity, which is written through a
/// temporary file renamed over it) changes the directory's mtime, a directory removed and
/// created again is another inode or has a newer mtime, and an identity rewritten in place
/// changes the file's mtime or size. A change within the same timestamp tick as the stat could
/// go unseen (file systems keep coarse times: a clock tick, or a whole second on some). So a
/// failure's stamp is trusted only once a later one, taken at least `racySeconds` after it on
/// this machine's monotonic clock, is equal and that retry failed too (`confirms`): every
/// mtime in the stamp was at or before the file system's time when the first was taken, that
/// time has advanced by `racySeconds` since, so any later change falls in a later tick and
/// shows, and the retry read whatever changed before it. This compares no file time with this
/// machine's clock, so a file system whose clock runs ahead (a shared one) costs one retry a
/// second after each failure, as any other; before 2026-11-22 a directory whose mtimes lay
/// within a second of the wall clock (or ahead of it) was read again at every lookup.
///
/// Cost: two `stat` calls and one `clock_gettime`.
struct DirectoryStamp: Equatable {
    /// `stat` of one path, or nil when it failed (missing).
    struct FileStamp: Equatable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var mtimeSeconds: Int
        var mtimeNanoseconds: Int
    }

    var directory: FileStamp?
    var identity: FileStamp?
    /// CLOCK_MONOTONIC nanoseconds when the stamp was taken (not compared by `==`).
    private var takenNanoseconds: UInt64

    /// The coarsest common file system timestamp granularity (one second): how long after an
    /// equal stamp one must be taken to `confirm` it.
    static let racySeconds: UInt64 = 1

    /// The stamp of `dir` now.
    init(dir: String) {
        func stamp(_ path: String) -> FileStamp? {
            var st = stat()
            guard stat(path, &st) == 0 else { return nil }
            return FileStamp(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
                             mtimeSeconds: st.st_mtim.tv_sec, mtimeNanoseconds: st.st_mtim.tv_nsec)
        }
        takenNanoseconds = monotonicNanoseconds()
        directory = stamp(dir)
        identity = stamp(dir + "/" + TierIdentity.fileName)
    }

    /// True when this stamp equals `earlier` and was taken at least `racySeconds` after it:
    /// then nothing in the directory changed since `earlier` without this stamp or a later
    /// one showing it, so a read of the directory made after this stamp saw every change.
    func confirms(_ earlier: DirectoryStamp) -> Bool {
        self == earlier && takenNanoseconds >= earlier.takenNanoseconds + DirectoryStamp.racySeconds * 1_000_000_000
    }

    static func == (a: DirectoryStamp, b: DirectoryStamp) -> Bool { a.directory == b.directory && a.identity == b.identity }
}
