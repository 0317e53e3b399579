import CKVMemory
import Glibc
import Testing

/// `kvm_sync_parent` makes a rename durable (the journal's compaction, the tier identity): it
/// syncs the directory that holds the path, whichever form the path takes, and a directory it
/// cannot open or sync is an error naming it, not a silent success.
///
/// Which directory it synced is told apart by the kernel, without tracing: /proc/self opens as
/// a directory but refuses fsync (EINVAL: procfs has no fsync), while /tmp and / sync. A symlink
/// to /proc/self placed as the path's parent, or as the path itself, makes only a sync of that
/// one directory fail.
@Suite("Directory sync")
struct SyncParentTests {
    /// A fresh directory holding `proc` (a link to /proc/self), `dir/proc` (the same link one
    /// level down) and `file` (a regular file); removed by `remove`.
    struct Tree {
        let root: String

        init() throws {
            var template = Array("/tmp/kvcache-sync-parent-XXXXXX".utf8CString)
            try #require(mkdtemp(&template) != nil)
            root = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            try #require(symlink("/proc/self", root + "/proc") == 0)
            try #require(mkdir(root + "/dir", 0o755) == 0)
            try #require(symlink("/proc/self", root + "/dir/proc") == 0)
            let fd = open(root + "/file", O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
            try #require(fd >= 0)
            close(fd)
        }

        func remove() {
            for path in ["/dir/proc", "/proc", "/file"] { unlink(root + path) }
            rmdir(root + "/dir")
            rmdir(root)
        }
    }

    @Test func syncsTheDirectoryOfAbsoluteRootAndRelativePaths() {
        #expect(kvm_sync_parent("/tmp/kvcache-sync-parent-test") == 0)
        #expect(kvm_sync_parent("/kvcache-sync-parent-test") == 0)
        #expect(kvm_sync_parent("kvcache-sync-parent-test") == 0)
    }

    /// The parent, and only the parent: a path under the unsyncable directory fails naming it
    /// (its grandparent, the working directory and / would sync), and an unsyncable path under
    /// a real directory succeeds (so the path itself is not what gets synced).
    @Test func syncsExactlyTheDirectoryHoldingThePath() throws {
        let tree = try Tree()
        defer { tree.remove() }
        #expect(kvm_sync_parent(tree.root + "/proc/journal") == -EINVAL)
        #expect(String(cString: kvm_error()).contains("fsync of the directory '\(tree.root)/proc' failed"))
        #expect(kvm_sync_parent(tree.root + "/dir/proc") == 0)
        #expect(kvm_sync_parent(tree.root + "/dir/journal") == 0)
    }

    /// A relative path's parent is resolved from the working directory: enough `..` reach /
    /// from any working directory, so the same check as above holds without changing it.
    @Test func syncsTheParentOfARelativePath() {
        let up = String(repeating: "../", count: 64)
        #expect(kvm_sync_parent(up + "proc/self/journal") == -EINVAL)
        #expect(String(cString: kvm_error()).contains("'\(up)proc/self'"))
        #expect(kvm_sync_parent(up + "tmp/journal") == 0)
    }

    @Test func aParentThatIsAFileIsAnErrorNamingIt() throws {
        let tree = try Tree()
        defer { tree.remove() }
        #expect(kvm_sync_parent(tree.root + "/file/journal") == -ENOTDIR)
        #expect(String(cString: kvm_error()).contains("cannot open the directory '\(tree.root)/file'"))
    }

    @Test func aMissingDirectoryIsAnErrorNamingIt() {
        let rc = kvm_sync_parent("/tmp/kvcache-no-such-directory-31/journal")
        #expect(rc == -ENOENT)
        #expect(String(cString: kvm_error()).contains("'/tmp/kvcache-no-such-directory-31'"))
    }
}
