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
/// go unseen (file systems keep coarse times: a clock tick, or a whole second on some), so a
/// stamp is trusted (`isSettled`) only when every mtime in it is at least `racySeconds` older
/// than the clock when it was taken — the rule git uses for its "racily clean" index entries.
/// A directory that changed within the last second is therefore read at every lookup for that
/// second, and not again until it changes.
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
    /// The wall clock's seconds when the stamp was taken (not compared).
    private var takenSeconds: Int

    /// How much older than the stamp every mtime must be to trust it: the coarsest common file
    /// system timestamp granularity (one second).
    static let racySeconds = 1

    /// The stamp of `dir` now.
    init(dir: String) {
        func stamp(_ path: String) -> FileStamp? {
            var st = stat()
            guard stat(path, &st) == 0 else { return nil }
            return FileStamp(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
                             mtimeSeconds: st.st_mtim.tv_sec, mtimeNanoseconds: st.st_mtim.tv_nsec)
        }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        takenSeconds = now.tv_sec
        directory = stamp(dir)
        identity = stamp(dir + "/" + TierIdentity.fileName)
    }

    /// True when nothing in the stamp changed within `racySeconds` before it was taken, so
    /// that an equal stamp later means nothing changed since.
    var isSettled: Bool {
        [directory, identity].allSatisfy { $0.map { $0.mtimeSeconds + DirectoryStamp.racySeconds < takenSeconds } ?? true }
    }

    static func == (a: DirectoryStamp, b: DirectoryStamp) -> Bool { a.directory == b.directory && a.identity == b.identity }
}
