import CKVMemory
import Foundation
import Testing
@testable import KVCache

/// The journal on a full file system: the slab's growth leaves it a reserve, an append that
/// fails anyway loses no record (counted, tried again, and `syncOffload` refuses to call the
/// tier durable meanwhile), and a restart whose compaction finds no room keeps the old
/// journal. Real small file systems: tmpfs mounts (needs root, as CI runs).
@Suite("Disk tier: the journal on a full file system", .serialized)
struct JournalFullDiskTests {
    /// Fills the file system holding `dir` (a file `filler` there) until a write fails.
    private func fillFileSystem(_ dir: String) {
        let fd = open(dir + "/filler", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        #expect(fd >= 0)
        let page = [UInt8](repeating: 1, count: 4096)
        while page.withUnsafeBytes({ write(fd, $0.baseAddress, 4096) }) == 4096 {}
        close(fd)
    }

    /// A slab that grows until the file system is full leaves the journal its reserve: 30
    /// prompts of 10 blocks spill through a 512 KiB tmpfs (the slab stops at ~50 slots, the
    /// LRU drops the oldest), every append succeeds, and a restart finds every block the tier
    /// held at the sync. Before, the slab took all the free space, the journal's appends
    /// failed unseen, the sync said durable, and the restart found only the blocks journaled
    /// before the disk filled.
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"), arguments: [Layout.paged, .contiguous])
    func theSlabLeavesTheJournalRoomOnAFullFileSystem(layout: Layout) throws {
        let mnt = try #require(mountTmpfs(bytes: 512 << 10))
        defer { unmount(mnt) }
        var held = 0
        let last = tokens(41, seed: 129)
        do {
            let e = try Engine(offloadConfig(layout, dir: mnt.path))
            for i in 0..<30 { try spillPrompt(e, UInt64(i + 1), tokens(41, seed: Int32(100 + i))) }
            let disk = e.stats().disk
            #expect(disk.journalAppendsFailed == 0 && disk.spillsFailed == 0,
                    "\(disk.journalAppendsFailed) appends failed, \(disk.spillsFailed) spills failed")
            #expect(disk.slotsEvicted > 0, "the file system, not offload_bytes, bounded the tier")
            held = Int(disk.storedSlots)
        }
        let e = try Engine(offloadConfig(layout, dir: mnt.path))
        #expect(held >= 10 && e.stats().disk.recoveredSlots == UInt64(held), "\(e.stats().disk.recoveredSlots) of \(held) recovered")
        #expect(try e.createSequence(1, tokens: last) == 40, "the last prompt's blocks survived the restart")
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 40) { last[$0] } == 0)
    }

    /// An append that fails keeps its records: with the file system filled behind the tier's
    /// back, a second prompt replaces the first in a full 40-slot tier (40 FREED and 40 STORED
    /// records, more than the journal's allocated page holds); the appends past the page fail,
    /// counted, `syncOffload` throws `io` instead of calling the tier durable, and once space
    /// is free again the next sync appends what was owed: the restart finds the second prompt
    /// whole. Before, the records were dropped, the sync succeeded and the restart did not
    /// find the prompt.
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"), arguments: [Layout.paged, .contiguous])
    func aFailedAppendIsCountedKeptAndTriedAgain(layout: Layout) throws {
        let mnt = try #require(mountTmpfs(bytes: 1 << 20))
        defer { unmount(mnt) }
        let a = tokens(161, seed: 41), b = tokens(161, seed: 42)  // 40 blocks each
        var config = offloadConfig(layout, dir: mnt.path)
        config.offloadBytes = 40 * 8192
        do {
            let e = try Engine(config)
            #expect(e.stats().disk.slotBytes == 8192)
            try spillPrompt(e, 1, a)  // 40 STORED records: 2560 bytes of the journal's first page
            fillFileSystem(mnt.path)
            try e.createSequence(2, tokens: b)
            try fillKV(e, 2, count: b.count) { b[$0] }
            try e.free(2)
            try e.trim()
            var failure: KVError?
            do { try e.syncOffload() } catch { failure = error }
            #expect(failure?.code == .io && failure?.message.contains("could not be appended") == true, "\(String(describing: failure))")
            #expect(e.stats().disk.journalAppendsFailed >= 1)
            unlink(mnt.path + "/filler")
            try e.syncOffload()
        }
        let e = try Engine(config)
        #expect(e.stats().disk.recoveredSlots == 40)
        #expect(try e.createSequence(1, tokens: b) == 160, "the prompt spilled while the disk was full")
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 160) { b[$0] } == 0)
    }

    /// A tier that filled its file system reopens: the restart's compaction cannot write the
    /// new journal beside the old (ENOSPC), so the old one is kept, unchanged (and logged), and
    /// what its replay found is served; once space is free the next restart compacts it.
    /// Before, the engine could not be created ("writing '.../kvcache.journal.new' failed",
    /// without the reason).
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"), arguments: [Layout.paged, .contiguous])
    func aTierOnAFullFileSystemReopensOnItsOldJournal(layout: Layout) throws {
        let mnt = try #require(mountTmpfs(bytes: 1 << 20))
        defer { unmount(mnt) }
        let a = tokens(81, seed: 61)
        do {
            let e = try Engine(offloadConfig(layout, dir: mnt.path))
            try spillPrompt(e, 1, a)
        }
        let journal = mnt.path + "/kvcache.journal"
        let before = try Data(contentsOf: URL(fileURLWithPath: journal))
        #expect(before.count == 20 * 64)
        fillFileSystem(mnt.path)
        do {
            let e = try Engine(offloadConfig(layout, dir: mnt.path))
            #expect(e.stats().disk.recoveredSlots == 20)
            #expect(try e.createSequence(1, tokens: a) == 80)
            try waitReady(e, 1)
            #expect(try kvDifferences(e, 1, count: 80) { a[$0] } == 0)
            #expect(try Data(contentsOf: URL(fileURLWithPath: journal)) == before, "the old journal, kept as it was")
            #expect(!FileManager.default.fileExists(atPath: journal + ".new"))
        }
        unlink(mnt.path + "/filler")
        let e = try Engine(offloadConfig(layout, dir: mnt.path))
        #expect(e.stats().disk.recoveredSlots == 20 && e.stats().disk.journalRecordsDropped == 0)
    }

    /// Every failure of the compaction names its cause (`strerror`): here a full file system.
    /// Before, a failed write said only "writing '...' failed".
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"))
    func aCompactionThatFailsNamesWhy() throws {
        let mnt = try #require(mountTmpfs(bytes: 256 << 10))
        defer { unmount(mnt) }
        var config = kvm_slab_config()
        config.slot_bytes = 8192
        config.max_bytes = 4 * 8192
        var slab: OpaquePointer?
        let rc = mnt.path.withCString { dir -> Int32 in
            config.dir = dir
            return kvm_slab_open(&config, &slab)
        }
        try #require(rc == 0, "\(String(cString: kvm_error()))")
        defer { kvm_slab_close(slab) }
        fillFileSystem(mnt.path)
        var record = kvm_journal_record()
        record.kind = UInt32(KVM_JOURNAL_STORED)
        record.block_hash = 1
        // The compaction's steps as TierJournal.compact takes them; a step that fails aborts.
        var step = kvm_slab_journal_rewrite_begin(slab)
        if step == 0 { step = kvm_slab_journal_rewrite_add(slab, &record, 1) }
        if step == 0 { step = kvm_slab_journal_rewrite_commit(slab) } else { kvm_slab_journal_rewrite_abort(slab) }
        #expect(step == -ENOSPC)
        let message = String(cString: kvm_error())
        #expect(message.contains("kvcache.journal.new") && message.contains("No space left on device"), "\(message)")
        #expect(!FileManager.default.fileExists(atPath: mnt.path + "/kvcache.journal.new"))
    }
}
