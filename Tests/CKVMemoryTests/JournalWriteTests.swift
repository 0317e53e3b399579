import CKVMemory
import Glibc
import Testing

/// Journal records are written one way (slab_journal.c `write_records`), by an append and by a
/// compaction's add: both refuse, writing nothing, records that would pass the process's
/// file-size limit, with one message naming the file and the limit, no errno text after it
/// (it already says what failed).
@Suite("Journal record writes")
struct JournalWriteTests {
    /// In a child (RLIMIT_FSIZE is the process's): opens a slab in a fresh directory, lowers the
    /// file-size limit to 4 KiB, and writes 65 records (4,160 bytes) to the journal or the
    /// compaction's file. Exits 0 when the write is -EFBIG, the file is unchanged and the
    /// message is the one expected; 2-6 name the step that differed.
    static func refusedPastTheLimit(compaction: Bool) -> Never {
        signal(SIGXFSZ, SIG_IGN)
        var template = Array("/tmp/kvcache-journal-write-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { exit(2) }
        let dir = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var config = kvm_slab_config()
        config.slot_bytes = 8192
        config.max_bytes = 4 * 8192
        var slab: OpaquePointer?
        let opened = dir.withCString { d -> Int32 in
            config.dir = d
            return kvm_slab_open(&config, &slab)
        }
        guard opened == 0 else { exit(3) }
        if compaction { guard kvm_slab_journal_rewrite_begin(slab) == 0 else { exit(4) } }
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &limit) == 0 else { exit(2) }
        limit.rlim_cur = 4096
        guard setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &limit) == 0 else { exit(2) }
        var records = [kvm_journal_record](repeating: kvm_journal_record(), count: 65)
        let rc = compaction ? kvm_slab_journal_rewrite_add(slab, &records, 65) : kvm_slab_journal_append(slab, &records, 65)
        guard rc == -EFBIG else { exit(5) }
        let file = dir + (compaction ? "/kvcache.journal.new" : "/kvcache.journal")
        let expected = "offload: 65 journal records would take '\(file)' past the process's file-size limit (RLIMIT_FSIZE, 4096 bytes)"
        let message = String(cString: kvm_error())
        kvm_slab_close(slab)
        for name in ["/kvcache.journal.new", "/kvcache.journal", "/kvcache.slab"] { unlink(dir + name) }
        rmdir(dir)
        guard message == expected else {
            _ = (message + "\n").withCString { write(2, $0, strlen($0)) }
            exit(6)
        }
        exit(0)
    }

    @Test func anAppendPastTheFileSizeLimitIsRefusedWithTheOneMessage() async {
        await #expect(processExitsWith: .exitCode(0)) { JournalWriteTests.refusedPastTheLimit(compaction: false) }
    }

    @Test func aCompactionPastTheFileSizeLimitIsRefusedWithTheOneMessage() async {
        await #expect(processExitsWith: .exitCode(0)) { JournalWriteTests.refusedPastTheLimit(compaction: true) }
    }
}
