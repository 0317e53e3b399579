import CKVMemory
import Glibc
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
    static func fillFileSystem(_ dir: String) {
        let fd = open(dir + "/filler", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
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

    /// An append that fails keeps its records, and a slot whose FREED record it could not
    /// append is not rewritten: with the file system filled behind the tier's back, a second
    /// prompt B is spilled over the first, A, in a full 40-slot tier. The first 16 A slots
    /// dropped get their FREED records into the journal's allocated page and take 16 of B's
    /// blocks; the next appends fail, counted, so the next 16 dropped wait unrewritten and
    /// B's other 24 blocks are not spilled (`spillsFailed`); `syncOffload` throws `io` instead
    /// of calling the tier durable, and once space is free again the next sync appends what
    /// was owed: the restart finds exactly what the tier held, A's remaining 8 blocks (its
    /// prefix: a trim spills a chain's tail first, so the LRU drops A's tail) byte for byte
    /// and B's 16. Before, the slots whose FREED append failed were rewritten anyway (all of B
    /// spilled), which a crash then turned into journaled slots holding other blocks
    /// (`aCrashWithTheJournalFullLeavesNoJournaledSlotRewritten`); before that, the records
    /// were dropped, the sync succeeded and the restart did not find B.
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"), arguments: [Layout.paged, .contiguous])
    func aFailedAppendIsCountedKeptAndTriedAgain(layout: Layout) throws {
        let mnt = try #require(mountTmpfs(bytes: 1 << 20))
        defer { unmount(mnt) }
        let a = tokens(161, seed: 41), b = tokens(161, seed: 42)  // 40 blocks each
        var config = offloadConfig(layout, dir: mnt.path)
        config.offloadBytes = 40 * 8192
        var held: UInt64 = 0
        do {
            let e = try Engine(config)
            #expect(e.stats().disk.slotBytes == 8192)
            try spillPrompt(e, 1, a)  // 40 STORED records: 2560 bytes of the journal's 4096-byte first page
            JournalFullDiskTests.fillFileSystem(mnt.path)
            try e.createSequence(2, tokens: b)
            try fillKV(e, 2, count: b.count) { b[$0] }
            try e.free(2)
            try e.trim()
            var failure: KVError?
            do { try e.syncOffload() } catch { failure = error }
            #expect(failure?.code == .io && failure?.message.contains("could not be appended") == true, "\(String(describing: failure))")
            let disk = e.stats().disk
            #expect(disk.journalAppendsFailed >= 1)
            #expect(disk.blocksSpilled == 40 + 16 && disk.spillsFailed == 24 && disk.slotsEvicted == 32, "\(disk)")
            unlink(mnt.path + "/filler")
            try e.syncOffload()
            held = e.stats().disk.storedSlots
        }
        let e = try Engine(config)
        #expect(held == 24 && e.stats().disk.recoveredSlots == held, "\(e.stats().disk.recoveredSlots) of \(held) recovered")
        #expect(try e.createSequence(1, tokens: a) == 32, "A's prefix the tier kept")
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 32) { a[$0] } == 0)
    }

    /// A swap-out that needs slots the journal cannot record freed is refused before it
    /// changes anything, and goes through once the journal appends again: in the full 40-slot
    /// tier of `aFailedAppendIsCountedKeptAndTriedAgain` (24 blocks held, 16 freed slots
    /// waiting for their FREED records, appends failing), swapping out a 33-token sequence
    /// fails with `io` naming the journal; the sequence stays resident and byte-identical, and
    /// the tier drops nothing (`slotsEvicted`, `storedSlots` unchanged). With the filler gone
    /// the same swap-out takes the waiting slots and swaps back in byte for byte. Before, the
    /// room check counted the cached slots, and the swap-out rewrote slots whose FREED
    /// records were never appended.
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"), arguments: [Layout.paged, .contiguous])
    func aSwapOutWaitsForTheJournalToRecordFreedSlots(layout: Layout) throws {
        let mnt = try #require(mountTmpfs(bytes: 1 << 20))
        defer { unmount(mnt) }
        let a = tokens(161, seed: 51), b = tokens(161, seed: 52), c = tokens(33, seed: 53)
        var config = offloadConfig(layout, dir: mnt.path)
        config.offloadBytes = 40 * 8192
        let e = try Engine(config)
        try spillPrompt(e, 1, a)
        JournalFullDiskTests.fillFileSystem(mnt.path)
        try e.createSequence(2, tokens: b)
        try fillKV(e, 2, count: b.count) { b[$0] }
        try e.free(2)
        try e.trim()
        #expect(throws: KVError.self) { try e.syncOffload() }  // the spills landed; their records could not be appended
        try e.createSequence(3, tokens: c)
        try fillKV(e, 3, count: c.count) { c[$0] }
        let before = e.stats().disk
        #expect(before.journalAppendsFailed > 0 && before.storedSlots == 24, "\(before)")
        var failure: KVError?
        do { try e.swapOut(3) } catch { failure = error }
        #expect(failure?.code == .io && failure?.message.contains("the journal cannot record freed slots") == true,
                "\(String(describing: failure))")
        let after = e.stats().disk
        #expect(after.storedSlots == before.storedSlots && after.slotsEvicted == before.slotsEvicted, "\(after)")
        #expect(try kvDifferences(e, 3, count: c.count) { c[$0] } == 0, "resident and unchanged")
        unlink(mnt.path + "/filler")
        try e.swapOut(3)
        try e.swapIn(3)
        try waitReady(e, 3)
        #expect(try kvDifferences(e, 3, count: c.count) { c[$0] } == 0)
    }

    /// A crash while the journal cannot append leaves no journaled slot rewritten: a child
    /// process spills prompt A into a full 40-slot tier (synced), fills the file system,
    /// spills prompt B over A's slots and SIGKILLs itself; the restart (space free again)
    /// reads back every block it recovered and announces, verified and byte-identical. The
    /// tier rewrote only slots whose FREED records were appended; the others waited, and B's
    /// blocks that found no slot were not spilled. Before, the slots whose FREED append failed
    /// were rewritten anyway: the restart replayed A's STORED records over B's bytes, counted
    /// them as cached tokens, and the read failed ("holds generation ... expected ...").
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"), arguments: [Layout.paged, .contiguous])
    func aCrashWithTheJournalFullLeavesNoJournaledSlotRewritten(layout: Layout) async throws {
        let mnt = try #require(mountTmpfs(bytes: 1 << 20))
        defer { unmount(mnt) }
        // The child finds the mount by its parent's pid (an exit test captures nothing).
        let link = JournalFullDiskTests.crashDir(testPID: getpid(), layout: layout)
        try? FileManager.default.removeItem(atPath: link)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: mnt.path)
        defer { try? FileManager.default.removeItem(atPath: link) }
        switch layout {
        case .paged: await #expect(processExitsWith: .signal(SIGKILL)) { JournalFullDiskTests.spillOverJournaledSlotsAndDie(.paged) }
        case .contiguous: await #expect(processExitsWith: .signal(SIGKILL)) { JournalFullDiskTests.spillOverJournaledSlotsAndDie(.contiguous) }
        }
        unlink(mnt.path + "/filler")
        let e = try Engine(JournalFullDiskTests.crashConfig(layout, dir: mnt.path))
        let recovered = e.stats().disk.recoveredSlots
        #expect(recovered > 0)
        var cachedBlocks = 0
        for (seq, prompt) in [(UInt64(1), JournalFullDiskTests.crashPrompt(0)), (2, JournalFullDiskTests.crashPrompt(1))] {
            let cached = try e.createSequence(seq, tokens: prompt)
            try waitReady(e, seq)
            #expect(try kvDifferences(e, seq, count: cached) { prompt[$0] } == 0, "prompt \(seq)")
            cachedBlocks += cached / 4
        }
        #expect(cachedBlocks > 0 && cachedBlocks <= Int(recovered), "\(cachedBlocks) blocks hit of \(recovered) recovered")
    }

    static func crashDir(testPID: pid_t, layout: Layout) -> String { "/tmp/kvc-journal-full-crash-\(testPID)-\(layout)" }

    static func crashConfig(_ layout: Layout, dir: String) -> EngineConfig {
        var config = offloadConfig(layout, dir: dir)
        config.offloadBytes = 40 * 8192
        return config
    }

    /// Prompt A (0) or B (1): 40 blocks each.
    static func crashPrompt(_ which: Int32) -> [Int32] { tokens(161, seed: 43 + which) }

    /// The child's part: A spilled and synced, the file system filled, B spilled over A's
    /// slots, then SIGKILL (no close: the owed records are never appended). Exits 1 on an
    /// unexpected failure.
    static func spillOverJournaledSlotsAndDie(_ layout: Layout) {
        let dir = crashDir(testPID: getppid(), layout: layout)
        do {
            let e = try Engine(crashConfig(layout, dir: dir))
            try spillPrompt(e, 1, crashPrompt(0))
            JournalFullDiskTests.fillFileSystem(dir)
            let b = crashPrompt(1)
            try e.createSequence(2, tokens: b)
            try fillKV(e, 2, count: b.count) { b[$0] }
            try e.free(2)
            try e.trim()
            guard e.stats().disk.journalAppendsFailed > 0 else { exit(2) }  // the journal did fill
            kill(getpid(), SIGKILL)
        } catch {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
        }
        exit(1)
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
        JournalFullDiskTests.fillFileSystem(mnt.path)
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
        JournalFullDiskTests.fillFileSystem(mnt.path)
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
