import CKVMemory
import Foundation
import TestSupport
import Testing
@testable import KVCache

@Suite("Disk tier: spill, reload, swap, restart, both layouts", .serialized)
struct DiskTierTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    @Test(arguments: layouts)
    func trimSpillsCachedBlocksAndAPrefixHitFromDiskIsByteIdentical(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        let prompt = tokens(203, seed: 7)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: 203) { prompt[$0] }
        try e.free(1)
        _ = drain(e)
        try e.trim()
        #expect(e.stats().blocksCached == 0)
        #expect(e.stats().disk.blocksSpilled == 50)
        let events = drain(e)
        #expect(events.filter { $0.kind == .blockStored && $0.tier == 1 }.count == 50)

        #expect(e.cachedPrefixTokens(prompt) == 200, "the lookup continues into the disk tier")
        try e.syncOffload()  // every spill written: the reads below go to the device
        let submitted = e.stats().disk.requestsSubmitted
        let cached = try e.createSequence(2, tokens: prompt)
        #expect(cached == 200, "the disk tier's blocks count in cached_tokens")
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 200) { prompt[$0] } == 0)
        let slotBytes = e.stats().disk.slotBytes
        try #require(50 * slotBytes <= 1 << 20)
        // The prompt's blocks were spilled last first (the LRU order of a freed prompt) into
        // ascending slots; read in slot order they merge into one request.
        #expect(e.stats().disk.requestsSubmitted - submitted == 1, "50 reads of adjacent slots, \(50 * slotBytes) bytes")
        let s = e.stats()
        #expect(s.disk.prefixHitTokens == 200)
        #expect(s.prefixHitTokens == 200)
        #expect(s.disk.blocksLoaded == 50)
        #expect(s.disk.backend == 0, "io_uring works on this machine")
    }

    @Test(arguments: layouts)
    func memoryPressureWritesBackTheColdestBlocksInsteadOfDroppingThem(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        // 64 KiB of K/V: 128 blocks of 4 tokens x 4 tensors x 32 bytes.
        let e = try Engine(offloadConfig(layout, dir: dir.path, memoryBytes: 64 << 10))
        let first = tokens(101, seed: 11)
        try e.createSequence(1, tokens: first)
        try fillKV(e, 1, count: 101) { first[$0] }
        try e.free(1)
        for i in 0..<8 {  // push the first prompt's blocks out of memory
            let other = tokens(101, seed: 20 + Int32(i))
            try e.createSequence(UInt64(10 + i), tokens: other)
            try e.free(UInt64(10 + i))
        }
        #expect(e.stats().blocksEvicted > 0, "memory alone no longer holds every prompt")
        // Every evicted block was written back, and some still cached ahead of their eviction,
        // as ancestors of an evicted block (chain order, `OffloadCoordinator.spill`).
        #expect(e.stats().disk.spillsSkipped == 0, "staging buffers were free for every spill")
        #expect(e.stats().disk.blocksSpilled >= e.stats().blocksEvicted)
        #expect(e.cachedPrefixTokens(first) == 100, "memory and disk together still hold the first prompt")
        let cached = try e.createSequence(2, tokens: first)
        #expect(cached == 100)
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 100) { first[$0] } == 0)
    }

    @Test(arguments: layouts)
    func swapOutAndInOfA32kTokenSequenceIsByteIdentical(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path, memoryBytes: 8 << 20, offloadBytes: 64 << 20)
        c.maxSeqTokens = 32768 + 16
        c.blockTokens = 16
        let e = try Engine(c)
        let prompt = (0..<32768).map { Int32($0 &* 7 &+ 3) }
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: 32768) { prompt[$0] }
        let before = e.stats()
        try e.swapOut(1)
        let out = e.stats()
        #expect(out.blocksUsed == 0)
        #expect(out.blocksCached == 0, "swapped-out blocks leave memory")
        #expect(out.disk.swapOuts == 1)
        #expect(before.blocksUsed == 2048)
        // The prompt's indexed blocks, only this sequence's, are evicted once on disk, and count
        // in blocksEvicted as kvcache.h says.
        #expect(out.blocksEvicted - before.blocksEvicted == 2048)
        #expect(try e.ready(1) == false)
        #expect(thrown { () throws(KVError) in try e.append(1, tokens: [1]) }?.code == .invalidArgument)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try e.length(1) == 32768)
        #expect(try kvDifferences(e, 1, count: 32768) { prompt[$0] } == 0)
        try e.append(1, tokens: [5])
        #expect(try e.length(1) == 32769, "appends continue after a swap-in")
    }

    /// A paged swap-in shares a memory block under its hash only when the block's bytes are
    /// known computed. Indexing at allocation, a create of the same prompt that leaves its
    /// disk hits to the prefill (computing is faster here) indexes fresh blocks under the
    /// swapped-out sequence's hashes before its server computes them; the swap-in shared them,
    /// was ready at once, and served 1,532 bytes no one wrote (helper-125). It now reads its
    /// own. Indexing on schedule, those blocks are not indexed until scheduled: the control.
    @Test(arguments: [false, true])
    func aSwapInReadsItsOwnBytesRatherThanShareUncomputedBlocks(onSchedule: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(.paged, dir: dir.path)
        c.prefillTokensPerSecond = 1e12  // computing beats reading, once a read rate is known
        c.indexOnSchedule = onSchedule
        let e = try Engine(c)
        let warm = tokens(9, seed: 50)  // a read rate: one swap-out and swap-in
        try e.createSequence(9, tokens: warm)
        try fillKV(e, 9, count: 9) { warm[$0] }
        try e.swapOut(9)
        try e.swapIn(9)
        try waitReady(e, 9)
        try e.free(9)

        let prompt = tokens(4 * 4 + 1, seed: 7)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        try e.swapOut(1)
        #expect(e.stats().blocksUsed == 0)
        #expect(try e.createSequence(2, tokens: prompt) == 0, "the same prompt leaves its disk hits to the prefill")
        if !onSchedule { #expect(e.stats().disk.declinedHitTokens == 16) }
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(e.stats().blocksUsed == 10, "5 blocks each: nothing shared")
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
    }

    @Test(arguments: layouts)
    func aForkAndAnAppendBeforeTheSwapInIsReadySeeTheReadBytes(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        let prompt = tokens(4 * 40 + 2, seed: 21)  // a partial last block, read back too
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        try e.swapOut(1)
        try e.swapIn(1)
        try e.fork(parent: 1, child: 2)  // before anyone asked whether 1 is ready
        try e.append(2, tokens: [7])     // copy on write of the shared partial block
        try waitReady(e, 1)
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
        #expect(try kvDifferences(e, 2, count: prompt.count) { prompt[$0] } == 0)
    }

    @Test(arguments: layouts)
    func sharedPrefixBlocksAreWrittenOnce(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        let shared = tokens(40, seed: 3)
        let a = shared + tokens(6, seed: 4), b = shared + tokens(6, seed: 5)
        try e.createSequence(1, tokens: a)
        try fillKV(e, 1, count: a.count) { a[$0] }
        #expect(try e.createSequence(2, tokens: b) == 40)
        try fillKV(e, 2, count: b.count - 40, from: 40) { b[$0] }
        try e.swapOut(1)
        try e.swapOut(2)
        let s = e.stats()
        // 10 shared blocks + 2 own blocks (one full, one partial) of each sequence.
        #expect(s.disk.bytesWritten == UInt64(14) * s.disk.slotBytes)
        try e.swapIn(2)
        try e.swapIn(1)
        try waitReady(e, 1)
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 1, count: a.count) { a[$0] } == 0)
        #expect(try kvDifferences(e, 2, count: b.count) { b[$0] } == 0)
    }

    /// An engine of `layout` on the new tier `dir` spills an 81-token prompt's 20 full blocks
    /// (written, freed, trimmed, synced) and is destroyed: a restart finds them in the journal.
    /// Returns the prompt and the tier's slot size.
    private func spillPrompt(_ layout: Layout, dir: ScratchDir) throws -> (prompt: [Int32], slotBytes: UInt64) {
        let prompt = tokens(81, seed: 9)
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        #expect(e.stats().disk.journalRecordsDropped == 0 && e.stats().disk.recoveredSlots == 0, "a new directory")
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: 81) { prompt[$0] }
        try e.free(1)
        try e.trim()
        try e.syncOffload()
        return (prompt, e.stats().disk.slotBytes)
    }

    @Test(arguments: layouts)
    func aRestartedEngineFindsItsSpilledBlocks(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = try spillPrompt(layout, dir: dir).prompt
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        #expect(e.stats().disk.recoveredSlots == 20)
        #expect(drain(e).filter { $0.kind == .blockStored && $0.tier == 1 }.count == 20, "a router learns what the disk holds")
        #expect(try e.createSequence(1, tokens: prompt) == 80)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 80) { prompt[$0] } == 0)
    }

    /// A journal record corrupted in the middle is skipped and the replay goes on: the 19
    /// other blocks are recovered (12 journaled before it, 7 after), the corrupt record counted
    /// as dropped (and logged); what is served is byte for byte the prompt's, and the chain
    /// stops at the forgotten block. The compacted journal then holds what was recovered, so
    /// the next restart drops nothing.
    @Test(arguments: layouts)
    func aCorruptJournalRecordIsSkippedAndTheRestRecovered(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = try spillPrompt(layout, dir: dir).prompt
        let journal = URL(fileURLWithPath: dir.path + "/kvcache.journal")
        var bytes = try Data(contentsOf: journal)
        try #require(bytes.count == 20 * 64, "one STORED record per spilled block")
        bytes[12 * 64 + 16] ^= 0xFF  // record 12's block hash: its record checksum no longer matches
        try bytes.write(to: journal)
        do {
            let e = try Engine(offloadConfig(layout, dir: dir.path))
            #expect(e.stats().disk.recoveredSlots == 19)
            #expect(e.stats().disk.journalRecordsDropped == 1, "the corrupt record only")
            let cached = try e.createSequence(1, tokens: prompt)
            #expect(cached < 80, "the block of the corrupt record is not found")
            try waitReady(e, 1)
            #expect(try kvDifferences(e, 1, count: cached) { prompt[$0] } == 0, "what was recovered is served exactly")
        }
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        #expect(e.stats().disk.journalRecordsDropped == 0, "the compacted journal holds only usable records")
        #expect(e.stats().disk.recoveredSlots == 19)
    }

    /// The journal's records of `dir` as (slot, kind, block hash, parent hash), in file order.
    private func journalRecords(dir: String) throws -> [(slot: UInt32, kind: UInt32, hash: UInt64, parent: UInt64)] {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/kvcache.journal"))
        return stride(from: 0, to: bytes.count - 63, by: 64).map { at in
            func field<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
                bytes[(at + offset)..<(at + offset + MemoryLayout<T>.size)].withUnsafeBytes { $0.loadUnaligned(as: T.self) }
            }
            return (field(4, UInt32.self), field(8, UInt32.self), field(16, UInt64.self), field(24, UInt64.self))
        }
    }

    /// Skipping a corrupt record can make a slot's older record win: here a 10-slot tier
    /// spilled prompt A's 10 blocks, then B's 10 replaced them (each slot: STORED A, FREED,
    /// STORED B), and the FREED and STORED B records of the slot that held A's first block are
    /// corrupted. The replay takes that slot's STORED A record, whose bytes are B's: a prompt
    /// A finds its first block on disk, the read verifies the slot against the record and
    /// fails (`io`, never served), and the block is forgotten. The other 9 of B's blocks are
    /// served byte for byte.
    @Test(arguments: layouts)
    func aSlotRevivedByASkippedRecordIsVerifiedAndNeverServed(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let a = tokens(41, seed: 21), b = tokens(41, seed: 22)
        let slotBytes = try spillPrompt(layout, dir: dir).slotBytes  // sizes the slots only
        try DiskTierFiles.remove(in: dir.path)
        do {
            let e = try Engine(offloadConfig(layout, dir: dir.path, offloadBytes: 10 * slotBytes))
            for (id, prompt) in [(UInt64(1), a), (2, b)] {
                try e.createSequence(id, tokens: prompt)
                try fillKV(e, id, count: prompt.count) { prompt[$0] }
                try e.free(id)
                try e.trim()
                try e.syncOffload()
            }
        }
        let records = try journalRecords(dir: dir.path)
        // A's 10 STORED records come first; its first block's parent is none of A's blocks.
        let hashesOfA = Set(records.prefix(10).map(\.hash))
        let firstOfA = try #require(records.prefix(10).first { !hashesOfA.contains($0.parent) })
        let ofSlot = records.indices.filter { records[$0].slot == firstOfA.slot }
        try #require(ofSlot.map { records[$0].kind } == [1, 2, 1], "STORED A, FREED, STORED B in slot \(firstOfA.slot)")
        let journal = URL(fileURLWithPath: dir.path + "/kvcache.journal")
        var bytes = try Data(contentsOf: journal)
        for i in ofSlot.dropFirst() { bytes[i * 64 + 24] ^= 0xFF }  // parent hash: checksum fails
        try bytes.write(to: journal)

        let e = try Engine(offloadConfig(layout, dir: dir.path, offloadBytes: 10 * slotBytes))
        #expect(e.stats().disk.recoveredSlots == 10 && e.stats().disk.journalRecordsDropped == 2)
        #expect(try e.createSequence(1, tokens: a) == 4, "A's first block, revived")
        var failure: KVError?
        do { try waitReady(e, 1) } catch { failure = error }
        #expect(failure?.code == .io, "the slot holds B's bytes: refused")
        try e.free(1)
        #expect(e.stats().disk.loadsFailed == 1)
        #expect(try e.createSequence(3, tokens: a) == 0, "forgotten after the failed read")
        try e.free(3)
        let cached = try e.createSequence(2, tokens: b)
        try waitReady(e, 2)
        #expect(cached < 40, "B's block in that slot is forgotten")
        #expect(try kvDifferences(e, 2, count: cached) { b[$0] } == 0)
    }

    /// Part of a record left at the journal's end (a short write: a full disk, a file-size
    /// limit) is cut off before the next batch, which so stays on record boundaries: after
    /// 10 garbage bytes appended to a restarted engine's journal, the blocks it spills next are
    /// all found by the next restart, nothing dropped.
    @Test(arguments: layouts)
    func aTornTailIsCutOffBeforeTheNextAppend(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let a = try spillPrompt(layout, dir: dir).prompt
        let b = tokens(41, seed: 23)
        do {
            let e = try Engine(offloadConfig(layout, dir: dir.path))
            #expect(e.stats().disk.recoveredSlots == 20)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.path + "/kvcache.journal"))
            try handle.seekToEnd()
            try handle.write(contentsOf: Data(repeating: 0xA5, count: 10))
            try handle.close()
            try e.createSequence(1, tokens: b)
            try fillKV(e, 1, count: b.count) { b[$0] }
            try e.free(1)
            try e.trim()
            try e.syncOffload()
        }
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        #expect(e.stats().disk.recoveredSlots == 30 && e.stats().disk.journalRecordsDropped == 0,
                "\(e.stats().disk.recoveredSlots) recovered, \(e.stats().disk.journalRecordsDropped) dropped")
        for (id, prompt) in [(UInt64(1), a), (2, b)] {
            let cached = try e.createSequence(id, tokens: prompt)
            #expect(cached == prompt.count / 4 * 4)
            try waitReady(e, id)
            #expect(try kvDifferences(e, id, count: cached) { prompt[$0] } == 0)
        }
    }

    /// A partial record at the journal's end (a crash or a short write in the middle of an
    /// append) is dropped, counted as one record and logged, as the header promises; the
    /// compaction then cuts it, so the next restart drops nothing. Before, it was dropped
    /// uncounted and unlogged.
    @Test(arguments: layouts)
    func aTornTailIsCountedWhenTheJournalIsReplayed(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = try spillPrompt(layout, dir: dir).prompt
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.path + "/kvcache.journal"))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(repeating: 0xA5, count: 10))
        try handle.close()
        do {
            let e = try Engine(offloadConfig(layout, dir: dir.path))
            #expect(e.stats().disk.recoveredSlots == 20 && e.stats().disk.journalRecordsDropped == 1,
                    "\(e.stats().disk.recoveredSlots) recovered, \(e.stats().disk.journalRecordsDropped) dropped")
        }
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        #expect(e.stats().disk.recoveredSlots == 20 && e.stats().disk.journalRecordsDropped == 0)
        #expect(try e.createSequence(1, tokens: prompt) == 80)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 80) { prompt[$0] } == 0)
    }

    /// A record whose checksum holds but whose generation is at or past 2^63 (no engine
    /// writes one: forged, or foreign) is dropped, counted and logged, and the tier opens with
    /// the rest; its slot keeps its previous record. Before, the replay's int64 result went
    /// negative and kvc_engine_create failed with an empty message.
    @Test(arguments: layouts)
    func aRecordOfAnImpossibleGenerationIsDropped(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = try spillPrompt(layout, dir: dir).prompt
        var record = kvm_journal_record()
        record.magic = KVM_JOURNAL_MAGIC
        record.slot = 0
        record.kind = UInt32(KVM_JOURNAL_STORED)
        record.block_hash = 0x1234_5678
        record.generation = 1 << 63
        record.payload_bytes = 512
        record.record_checksum = kvm_checksum64(&record, UInt64(MemoryLayout<kvm_journal_record>.offset(of: \.record_checksum)!),
                                                0x6a6f_7572_6e61_6c31)  // the journal's seed, "journal1"
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.path + "/kvcache.journal"))
        try handle.seekToEnd()
        try handle.write(contentsOf: withUnsafeBytes(of: record) { Data($0) })
        try handle.close()
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        #expect(e.stats().disk.recoveredSlots == 20 && e.stats().disk.journalRecordsDropped == 1,
                "\(e.stats().disk.recoveredSlots) recovered, \(e.stats().disk.journalRecordsDropped) dropped")
        #expect(try e.createSequence(1, tokens: prompt) == 80)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 80) { prompt[$0] } == 0)
    }

    /// A tier reopened with a smaller offload_bytes cannot hold the slots past its capacity:
    /// their records are counted as dropped, the rest recovered, and the slab file is cut to
    /// offload_bytes (it kept its size, so shrinking a tier gave no disk space back).
    @Test(arguments: layouts)
    func aTierReopenedSmallerCountsTheRecordsItCannotHold(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let slotBytes = try spillPrompt(layout, dir: dir).slotBytes
        let slab = dir.path + "/kvcache.slab"
        #expect(try FileManager.default.attributesOfItem(atPath: slab)[.size] as? UInt64 ?? 0 > 10 * slotBytes)
        let e = try Engine(offloadConfig(layout, dir: dir.path, offloadBytes: 10 * slotBytes))
        #expect(e.stats().disk.recoveredSlots == 10)
        #expect(e.stats().disk.journalRecordsDropped == 10, "the records of slots 10..<20")
        #expect(try FileManager.default.attributesOfItem(atPath: slab)[.size] as? UInt64 == 10 * slotBytes)
    }

    /// Two engines on one directory would overwrite each other's slots and journal: the second
    /// is refused (`io`) before it opens the journal, and the first keeps its blocks (a second
    /// process is refused too: `CrashRecoveryTests`).
    @Test(arguments: layouts)
    func aSecondEngineOnAHeldDirectoryIsRefused(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(81, seed: 9)
        var first: Engine? = try Engine(offloadConfig(layout, dir: dir.path))
        try first!.createSequence(1, tokens: prompt)
        try fillKV(first!, 1, count: 81) { prompt[$0] }
        try first!.free(1)
        try first!.trim()
        try first!.syncOffload()
        do {
            _ = try Engine(offloadConfig(layout, dir: dir.path))
            Issue.record("a second engine opened a held offload_dir")
        } catch {
            #expect(error.code == .io)
            #expect(error.message.contains("'\(dir.path)' is in use by another engine"), "\(error.message)")
        }
        #expect(try first!.createSequence(2, tokens: prompt) == 80)
        try waitReady(first!, 2)
        #expect(try kvDifferences(first!, 2, count: 80) { prompt[$0] } == 0)
        first = nil
        let again = try Engine(offloadConfig(layout, dir: dir.path))
        #expect(again.stats().disk.recoveredSlots == 20, "the refused engine left the journal whole")
    }

    /// A child forked without exec shares the directory lock's open file description: it
    /// closes its copy at once (a pthread_atfork handler), so the engine's destroy frees the
    /// directory while the child still lives, and a new engine opens there, finding the
    /// blocks. Before, the new engine was refused ("in use by another engine") until the
    /// child exited. The child only sleeps (async-signal-safe calls only), killed at the end.
    /// Forks in an exit test's process: a child of the runner would copy the descriptors of the
    /// tests running beside it for its life, and hold their locks.
    @Test func aForkedChildDoesNotKeepTheDirectoryLocked() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let dir = ScratchDir()
            var problems: [String] = []
            do {
                _ = try DiskTierTests().spillPrompt(.paged, dir: dir)
                var first: Engine? = try Engine(offloadConfig(.paged, dir: dir.path))
                let child = fork()
                if child == 0 {
                    sleep(60)
                    _exit(0)
                }
                guard child > 0 else { ExitReport.exit(Self.forkPrefix, ["fork: \(errno)"]) }
                defer {
                    kill(child, SIGKILL)
                    waitpid(child, nil, 0)
                }
                withExtendedLifetime(first) {}
                first = nil  // destroyed while the child lives
                let again = try Engine(offloadConfig(.paged, dir: dir.path))
                if kill(child, 0) != 0 { problems.append("the child died early") }
                if again.stats().disk.recoveredSlots != 20 { problems.append("recovered \(again.stats().disk.recoveredSlots) slots, not 20") }
            } catch {
                problems.append("\(error)")
            }
            ExitReport.exit(Self.forkPrefix, problems)
        }
        ExitReport.expectNothingReported(Self.forkPrefix, result)
    }

    /// A process that another thread is starting (posix_spawn, vfork, fork then exec) holds
    /// copies of every descriptor of its parent until its exec, the directory lock's open file
    /// description included, so an engine's lock can stay held for moments after its destroy.
    /// Here copies of the slab's descriptors, closed by another thread 100 ms after the
    /// destroy, stand for such a process: the next engine on the directory opens and finds the
    /// blocks. Before, it was refused at once, "in use by another engine" (the flake of
    /// `TierIdentityTests.aRefusedEngineOfASmallerTierLeavesTheOwnersSlabWhole` beside the
    /// exit tests' processes).
    @Test func aLockHeldForMomentsAfterTheDestroyDoesNotRefuseTheNextEngine() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        _ = try spillPrompt(.paged, dir: dir)
        var first: Engine? = try Engine(offloadConfig(.paged, dir: dir.path))
        let copies = descriptors(naming: dir.path + "/kvcache.slab").map { fcntl($0, F_DUPFD_CLOEXEC, 0) }
        let closed = DispatchGroup()
        defer { closed.wait() }
        try #require(copies.count == 2 && copies.allSatisfy { $0 >= 0 }, "the lock's and the I/O descriptor")
        withExtendedLifetime(first) {}
        first = nil
        DispatchQueue.global().async(group: closed) {
            usleep(100_000)
            for fd in copies { close(fd) }
        }
        let again = try Engine(offloadConfig(.paged, dir: dir.path))
        #expect(again.stats().disk.recoveredSlots == 20)
    }

    /// A child forked without exec holds none of the journal's descriptors (closed by the
    /// pthread_atfork handler, as the slab's are): neither the one a fresh tier opens nor the
    /// one that replaces it when the open's compaction renames a new journal over it (an
    /// engine on a directory with blocks). Before, the child kept it, and with it the disk
    /// space of a journal a compaction replaced, for as long as it lived. The child only
    /// calls fcntl (async-signal-safe) on the numbers the parent found, and exits. Forks in an
    /// exit test's process, as the test above.
    @Test func aForkedChildHoldsNoJournalDescriptor() async {
        let fresh = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            Self.exitAfterAChildChecksTheJournal(reopened: false)
        }
        ExitReport.expectNothingReported(Self.forkPrefix, fresh)
        let reopened = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            Self.exitAfterAChildChecksTheJournal(reopened: true)
        }
        ExitReport.expectNothingReported(Self.forkPrefix, reopened)
    }

    /// The problem lines of this suite's exit tests (`ExitReport`).
    static let forkPrefix = "DiskTierTests: "

    /// In an exit test's process: an engine on a fresh directory (`reopened`: one with blocks),
    /// a child that exits 1 when it holds a journal descriptor, and the report.
    static func exitAfterAChildChecksTheJournal(reopened: Bool) -> Never {
        let dir = ScratchDir()
        var problems: [String] = []
        do {
            if reopened { _ = try DiskTierTests().spillPrompt(.paged, dir: dir) }
            let engine = try Engine(offloadConfig(.paged, dir: dir.path))
            let journal = descriptors(naming: dir.path + "/kvcache.journal")
            if journal.isEmpty { problems.append("the engine holds no journal open") }
            let child = fork()
            if child == 0 { _exit(journal.contains { fcntl($0, F_GETFD) != -1 } ? 1 : 0) }
            var status: Int32 = 0
            if child <= 0 || waitpid(child, &status, 0) != child { problems.append("fork or wait failed: \(errno)") }
            if status != 0 { problems.append("the child held a journal descriptor (exit status \(status >> 8))") }
            withExtendedLifetime(engine) {}
        } catch {
            problems.append("\(error)")
        }
        ExitReport.exit(forkPrefix, problems)
    }

    /// The slab's I/O descriptor carries an open-file-description lock, which goes only with
    /// the last reference to the description: an ended engine's queued writes (a killed
    /// process's, to a slow device) and its ring's teardown hold it, and a new engine waits for
    /// them before it reads the journal and writes slots, so none of those writes lands on a
    /// slot it wrote and synced (the audit's lateio, a SIGKILLed engine on a throttled loop
    /// device: 22 and 68 of 150 prompts refused after the successor's restart; 0 with the wait,
    /// which took 5.4 s). Here a descriptor of the test holds such a lock for 300 ms: the
    /// create returns only after it went, and serves the tier. Before, it returned at once.
    @Test func aNewEngineWaitsForTheIOAnEndedEngineQueuedOnTheSlab() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = try spillPrompt(.paged, dir: dir).prompt
        let held = open(dir.path + "/kvcache.slab", O_RDWR | O_CLOEXEC)
        var lock = flock()
        lock.l_type = Int16(F_WRLCK)
        lock.l_whence = Int16(SEEK_SET)
        let F_OFD_SETLK: Int32 = 37  // <bits/fcntl-linux.h>: Swift's Glibc hides it (_GNU_SOURCE)
        // The engine just destroyed holds it until its ring's deferred teardown: moments.
        try #require(waitUntil(seconds: 10) { fcntl(held, F_OFD_SETLK, &lock) == 0 })
        let order = EventLog()
        var engine: Engine?
        let create = loggedCall("create", order) { engine = try Engine(offloadConfig(.paged, dir: dir.path)) }
        usleep(300_000)
        order.add("lock released")
        close(held)
        create.join()
        #expect(order.events == ["lock released", "create returned"])
        let e = try #require(engine)
        #expect(e.stats().disk.recoveredSlots == 20)
        #expect(try e.createSequence(1, tokens: prompt) == 80)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 80) { prompt[$0] } == 0)
    }

    /// `offloadQueueDepth` (`kvc_config.offload_queue_depth`) sizes the staging area when slots
    /// are large: 132 KiB slots (a 128 KiB block over 4 tensors) fit 248 in 32 MiB, so the
    /// default depth of 32 gets 248 buffers and a depth of 512 gets 512; an eighth of them is
    /// the reserve. Out of range is refused, named.
    @Test func theQueueDepthSizesTheStagingArea() throws {
        func bulkStages(depth: Int) throws -> (slotBytes: UInt64, bulk: Int) {
            let dir = ScratchDir()
            defer { dir.remove() }
            // 992 slots: the staging buffers are never more than the slots (a 64 MiB tier has
            // 496 of these, which would cap a depth of 512).
            var c = offloadConfig(.paged, dir: dir.path, offloadBytes: 128 << 20)
            c.numKVHeads = 8
            c.headDim = 128
            c.blockTokens = 16
            c.offloadQueueDepth = depth
            let e = try Engine(c)
            return (e.stats().disk.slotBytes, e.offload!.tier!.bulkStages)
        }
        let standard = try bulkStages(depth: 32)
        #expect(standard.slotBytes == 132 << 10)
        #expect(standard.bulk == 248 - 248 / 8)
        #expect(try bulkStages(depth: 512).bulk == 512 - 512 / 8)
        for bad in [31, 1025] {
            let error = #expect(throws: KVError.self) { try bulkStages(depth: bad) }
            #expect(error?.code == .invalidArgument && error?.message.contains("offload_queue_depth \(bad)") == true)
        }
    }

    @Test(arguments: layouts)
    func aCorruptSlotIsAMissAndIsNeverServed(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(41, seed: 13)
        var slotBytes = 0
        do {
            let e = try Engine(offloadConfig(layout, dir: dir.path))
            try e.createSequence(1, tokens: prompt)
            try fillKV(e, 1, count: 41) { prompt[$0] }
            try e.free(1)
            try e.trim()
            try e.syncOffload()
            slotBytes = Int(e.stats().disk.slotBytes)
        }
        // Freed blocks join the LRU last first, so the trim spilled block 9 - k into slot k:
        // spoil every block but the first three.
        corruptSlots(dir: dir.path, slotBytes: slotBytes, 0..<7)
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        #expect(try e.createSequence(1, tokens: prompt) == 40, "the journal still lists all ten blocks")
        var failure: KVError?
        do { try waitReady(e, 1) } catch { failure = error }
        #expect(failure?.code == .io)
        try e.free(1)  // waits for the sequence's remaining reads
        #expect(e.stats().disk.loadsFailed == 7)
        // The spoiled blocks left both tiers: the chain now stops after the three good ones.
        let cached = try e.createSequence(2, tokens: prompt)
        #expect(cached == 12)
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: cached) { prompt[$0] } == 0)
    }

    /// A slot a swapped-out sequence pins whose read is found corrupt (by a prompt sharing the
    /// block) leaves the tier's index at once and is journaled FREED at once, not when the
    /// pin goes: a restart before then does not announce and serve it again. (Before, found by
    /// helper-78: the journal still said STORED, so the next engine announced the block and
    /// its next prompt failed on it again.)
    @Test(arguments: layouts)
    func aCorruptSlotASwappedOutSequencePinsIsNotFoundAfterARestart(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(26, seed: 17)  // six full blocks and two tokens
        do {
            let e = try Engine(offloadConfig(layout, dir: dir.path))
            try e.createSequence(1, tokens: prompt)
            try fillKV(e, 1, count: prompt.count) { prompt[$0] }
            try e.swapOut(1)  // blocks 0...6 into slots 0...6, pinned by the swapped-out sequence
            try e.syncOffload()
            corruptSlots(dir: dir.path, slotBytes: Int(e.stats().disk.slotBytes), 2..<3)
            #expect(try e.createSequence(2, tokens: prompt) == 24)
            #expect(thrown { () throws(KVError) in try waitReady(e, 2) }?.code == .io)
            try e.free(2)
            try e.syncOffload()
        }  // sequence 1 is still swapped out
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        let cached = try e.createSequence(3, tokens: prompt)
        #expect(cached == 8, "the chain stops before the corrupt block")
        try waitReady(e, 3)
        #expect(try kvDifferences(e, 3, count: cached) { prompt[$0] } == 0)
    }

    /// A swap-out the tier cannot hold fails before it drops any cached block (`DiskTier.checkRoom`):
    /// it once dropped cached prefix blocks from the LRU for its first blocks and then failed,
    /// that prefix lost to every later request for nothing.
    @Test(arguments: layouts)
    func aSwapOutTheTierCannotHoldDropsNoCachedBlock(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Engine(offloadConfig(layout, dir: dir.path, offloadBytes: 20 * 8192))  // 20 slots
        let held = tokens(48, seed: 90)  // 12 blocks, swapped out: 12 slots pinned
        try e.createSequence(1, tokens: held)
        try fillKV(e, 1, count: held.count) { held[$0] }
        try e.swapOut(1)
        let cached = tokens(33, seed: 91)  // 8 full blocks, spilled: the other 8 slots, cached
        try e.createSequence(2, tokens: cached)
        try fillKV(e, 2, count: cached.count) { cached[$0] }
        try e.free(2)
        try e.trim()
        try e.syncOffload()
        #expect(e.stats().disk.storedSlots == 20)
        #expect(e.cachedPrefixTokens(cached) == 32)
        _ = drain(e)
        let big = tokens(40, seed: 92)  // 10 blocks: 2 more than the 8 cached slots
        try e.createSequence(3, tokens: big)
        try fillKV(e, 3, count: big.count) { big[$0] }
        let failure = thrown { () throws(KVError) in try e.swapOut(3) }
        #expect(failure?.code == .io && failure?.message.contains("needs 10 slots and 8 can be had") == true, "\(String(describing: failure))")
        #expect(drain(e).filter { $0.tier == KVEvent.diskTier }.isEmpty, "no disk-tier event: nothing stored or dropped")
        #expect(e.stats().disk.slotsEvicted == 0 && e.stats().disk.storedSlots == 20)
        #expect(e.cachedPrefixTokens(cached) == 32)
        #expect(try kvDifferences(e, 3, count: big.count) { big[$0] } == 0)
        try e.append(3, tokens: [1])
        #expect(try e.createSequence(4, tokens: cached) == 32)
        try waitReady(e, 4)
        #expect(try kvDifferences(e, 4, count: 32) { cached[$0] } == 0)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: held.count) { held[$0] } == 0)
    }

    /// A swap-out that fits once the spills in flight have landed waits for them: it once
    /// failed "tier full ... pending I/O" at once, as if the tier held only swapped-out blocks,
    /// and a server would have fallen back to recomputing the sequence.
    @Test(arguments: layouts)
    func aSwapOutWaitsForSpillWritesInsteadOfCallingTheTierFull(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path, offloadBytes: 20 * 8192)
        c.offloadForceThreads = true  // the thread backend can hold its requests
        let e = try Engine(c)
        // 18 full blocks, their spills held in flight: the tier has 20 staging buffers (one per
        // slot), 2 of them reserved, so a trim's spills take at most 18 without waiting for a
        // completion (a 19th would wait for a write held here). 2 slots stay free.
        let spilled = tokens(73, seed: 93)
        let chain = Set(BlockHash.chain(spilled, blockTokens: 4))
        try e.createSequence(1, tokens: spilled)
        try fillKV(e, 1, count: spilled.count) { spilled[$0] }
        try e.free(1)
        let swapped = tokens(40, seed: 94)  // 10 blocks
        try e.createSequence(2, tokens: swapped)
        try fillKV(e, 2, count: swapped.count) { swapped[$0] }
        #expect(e.pauseOffloadIO(true))
        try e.trim()
        #expect(e.stats().disk.blocksSpilled == 18, "every slot but 2 of the tier is being written")
        let order = EventLog()
        let caller = loggedCall("swap-out", order) { try e.swapOut(2) }
        #expect(!waitUntil(seconds: 1) { !order.events.isEmpty }, "it waits for the spills while they are held")
        #expect(e.pauseOffloadIO(false))
        caller.join()
        #expect(order.events == ["swap-out returned"])
        let d = e.stats().disk
        #expect(d.swapOuts == 1 && d.slotsEvicted == UInt64(DiskTier.dropBatch) && d.storedSlots == 12, "\(d)")
        // Which 2 of the 18 stay is the order their writes completed in (a slot joins the LRU
        // when its write ends): the trim's spills went out as 4 requests (a batch is flushed at
        // a quarter of the 20 buffers), which the thread backend's workers complete in any
        // order, so the kept pair may be any blocks of the chain, the prefix lookup 0 to 8.
        let kept = e.offload!.tier!.findableHashes.hashes
        #expect(kept.count == 12 && kept.intersection(chain).count == 2, "the 10 swapped-out blocks and 2 spilled ones")
        try e.swapIn(2)
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: swapped.count) { swapped[$0] } == 0)
    }

    @Test(arguments: layouts)
    func theThreadPoolFallbackServesTheSameBytes(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadForceThreads = true
        let e = try Engine(c)
        #expect(e.stats().disk.backend == 1)
        #expect(e.offloadFallbackReason.contains("thread pool"))
        let prompt = tokens(123, seed: 17)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: 123) { prompt[$0] }
        try e.swapOut(1)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 123) { prompt[$0] } == 0)
        try e.free(1)
        try e.trim()
        #expect(try e.createSequence(2, tokens: prompt) == 120)
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 120) { prompt[$0] } == 0)
    }

    @Test func bufferedFallbackIsUsedWhenODirectIsDisabled() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(.paged, dir: dir.path)
        c.offloadForceBuffered = true
        let e = try Engine(c)
        #expect(e.stats().disk.direct == 0)
        #expect(e.offloadFallbackReason.contains("buffered"))
        let prompt = tokens(9, seed: 1)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: 9) { prompt[$0] }
        try e.swapOut(1)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 9) { prompt[$0] } == 0)
    }
}
