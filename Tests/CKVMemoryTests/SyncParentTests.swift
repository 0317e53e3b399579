import CKVMemory
import Glibc
import Testing

/// `kvm_sync_parent` makes a rename durable (the journal's compaction, the tier identity): it
/// syncs the directory that holds the path, whichever form the path takes, and a directory it
/// cannot open is an error naming it, not a silent success.
@Suite("Directory sync")
struct SyncParentTests {
    @Test func syncsTheDirectoryOfAbsoluteRootAndRelativePaths() {
        #expect(kvm_sync_parent("/tmp/kvcache-sync-parent-test") == 0)
        #expect(kvm_sync_parent("/kvcache-sync-parent-test") == 0)
        #expect(kvm_sync_parent("kvcache-sync-parent-test") == 0)
    }

    @Test func aMissingDirectoryIsAnErrorNamingIt() {
        let rc = kvm_sync_parent("/tmp/kvcache-no-such-directory-31/journal")
        #expect(rc == -ENOENT)
        #expect(String(cString: kvm_error()).contains("'/tmp/kvcache-no-such-directory-31'"))
    }
}
