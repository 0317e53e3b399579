import CKVMemory
import Foundation
import Synchronization
import TestSupport
import Testing
@testable import KVCache

/// `kvc_engine_sync` runs its fdatasyncs (slab, journal, and the journal's directory when a
/// compaction's rename is owed) without the engine's lock (kvcache.h, THREAD SAFETY): 6-12 ms
/// on this machine's disk, during which every other thread's call waited. The test hook
/// `DiskTier.beforeSync` runs on the syncing thread just before the fdatasyncs; there it checks
/// that the lock is free (a `trylock`, which fails for the lock's own holder) and, when it is,
/// has another thread append, create, swap out and sync too, and waits for it. The sync must
/// still make durable what was written before it (a restart finds the blocks) and still
/// report a removed offload_dir. No timing.
@Suite("kvc_engine_sync fdatasyncs without the engine's lock", .serialized)
struct SyncLockTests {
    /// Sequence 1 (`prompt`, bytes filled) swapped out; sequence 2 live. Syncs with the hook
    /// running, on its first run, `during` on another thread.
    private func syncWithCallsDuringTheFsync(_ e: Engine, during: @escaping @Sendable () throws(KVError) -> String) throws -> LockFreeProbe.Seen {
        let probe = LockFreeProbe(e, during: during)
        e.setSyncHook(probe.hook)
        defer { e.setSyncHook(nil) }
        try e.syncOffload()
        return probe.seen
    }

    /// Another thread appends, creates, swaps a sequence out and syncs (two syncs at once)
    /// while the first sync is in its fdatasyncs; an engine restarted on the directory then
    /// finds the prompt the first sync's caller spilled before it, every byte.
    @Test(arguments: [Layout.paged, .contiguous])
    func otherCallsRunWhileASyncWaitsForTheDisk(layout: Layout) throws {
        let dir = ScratchDir("synclock")
        defer { dir.remove() }
        let c = offloadConfig(layout, dir: dir.path)
        let prompt = tokens(4 * 20 + 1, seed: 71), other = tokens(4 * 6 + 1, seed: 72)
        do {
            let e = try Engine(c)
            try e.createSequence(1, tokens: prompt)
            try fillKV(e, 1, count: prompt.count) { prompt[$0] }
            try e.free(1)
            try e.trim()  // spills the prompt's 20 cached blocks
            try e.createSequence(2, tokens: tokens(9, seed: 73))
            let seen = try syncWithCallsDuringTheFsync(e) { () throws(KVError) -> String in
                try e.append(2, tokens: [77])
                _ = try e.createSequence(3, tokens: other)
                try e.swapOut(3)
                try e.syncOffload()
                return "length \(try e.length(2)), \(e.stats().disk.swapOuts) swap-outs"
            }
            #expect(seen.lockFree, "the sync held the engine's lock through its fdatasyncs")
            #expect(seen.otherCalls == "length 10, 1 swap-outs")
            #expect(seen.runs == 2)
        }
        let e = try Engine(c)
        #expect(try e.createSequence(1, tokens: prompt) == 80)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 80) { prompt[$0] } == 0)
    }

    /// offload_dir removed while the sync is in its fdatasyncs: the check that the files are
    /// still the ones at their paths runs after them, so the sync still fails naming it.
    @Test(arguments: [Layout.paged, .contiguous])
    func aDirectoryRemovedDuringTheFsyncIsReported(layout: Layout) throws {
        let dir = ScratchDir("synclockrm")
        defer { dir.remove() }
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        let prompt = tokens(41, seed: 43)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        try e.swapOut(1)
        let path = dir.path
        e.setSyncHook { try? FileManager.default.removeItem(atPath: path) }
        defer { e.setSyncHook(nil) }
        do throws(KVError) {
            try e.syncOffload()
            Issue.record("the sync said OK")
        } catch {
            #expect(error.code == .io)
            #expect(error.message.contains("'\(dir.path)/kvcache.slab' is no longer"), "\(error.message)")
        }
    }

    /// A journal compaction that commits while the sync is in its fdatasyncs, and whose own
    /// fsync of the directory fails (injected: `kvm_slab_fail_dir_syncs`), owes that fsync
    /// although the sync's fsync of the directory, owed since an earlier such compaction,
    /// succeeds: it may have run before the rename. So the sync says OK (it covered what was
    /// written before it), the next sync fsyncs the directory again (with the fault still
    /// injected it fails, naming it), and a restart finds the prompt swapped out before the
    /// sync, every byte. Without the guard (`TierJournal.directorySynced`'s count of renames)
    /// the first sync's fsync cleared the debt and the next sync said OK with the rename not
    /// durable. The compactions are the tier's own (`compactIfLong`), from spills that evict
    /// (the prompt's slots are pinned); no hook after the fdatasyncs is needed.
    @Test(arguments: [Layout.paged, .contiguous])
    func aCompactionDuringTheFsyncStillOwesTheDirectoryItsFsync(layout: Layout) throws {
        let dir = ScratchDir("synclockcompact")
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadBytes = 48 * 8192  // 21 slots pinned by the prompt, 27 for the churn
        let journal = dir.path + "/kvcache.journal"
        let prompt = tokens(4 * 20 + 1, seed: 74)
        do {
            let e = try Engine(c)
            #expect(e.stats().disk.slotBytes == 8192)
            nonisolated(unsafe) let slab = e.offload!.tier.slab  // the tier's, as long as `e`
            try e.createSequence(1, tokens: prompt)
            try fillKV(e, 1, count: prompt.count) { prompt[$0] }
            try e.swapOut(1)  // the promised blocks, pinned while swapped out
            kvm_slab_fail_dir_syncs(slab, 0)
            #expect(try churnUntilCompaction(e, journal: journal, seed: 1000) > 0, "no compaction before the sync")
            let probe = LockFreeProbe(e) { () throws(KVError) -> String in
                defer { kvm_slab_fail_dir_syncs(slab, -1) }  // the sync's own fsync of the directory succeeds
                do {
                    return try churnUntilCompaction(e, journal: journal, seed: 2000) > 0 ? "compacted" : "not compacted"
                } catch {
                    return "failed: \(error)"
                }
            }
            e.setSyncHook(probe.hook)
            try e.syncOffload()
            e.setSyncHook(nil)
            #expect(probe.seen.lockFree && probe.seen.otherCalls == "compacted", "\(probe.seen)")
            kvm_slab_fail_dir_syncs(slab, 0)
            let owed = thrown { () throws(KVError) in try e.syncOffload() }
            #expect(owed?.code == .io && owed?.message.contains("injected fault") == true,
                    "the compaction's directory fsync is no longer owed: \(String(describing: owed))")
            kvm_slab_fail_dir_syncs(slab, -1)
            try e.syncOffload()  // pays it
            kvm_slab_fail_dir_syncs(slab, 0)
            try e.syncOffload()  // nothing owed: no fsync of the directory tried
            kvm_slab_fail_dir_syncs(slab, -1)
        }
        let e = try Engine(c)
        #expect(try e.createSequence(1, tokens: prompt) == 80)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 80) { prompt[$0] } == 0)
    }

    /// The sync pins the journal's descriptor (a compaction may replace it) but not the slab's:
    /// a duplicate of the slab's, held through the fdatasyncs, would be kept by a child forked
    /// without exec meanwhile, and with it the slab's I/O lock, so the next engine on the
    /// directory waited 60 s and failed (helper-187). In the hook the process holds as many
    /// descriptors of the slab as before the sync, and one more of the journal.
    @Test(arguments: [Layout.paged, .contiguous])
    func theSyncPinsNoDuplicateOfTheSlab(layout: Layout) throws {
        let dir = ScratchDir("synclockfd")
        defer { dir.remove() }
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        let prompt = tokens(41, seed: 44)
        try e.createSequence(1, tokens: prompt)
        try e.swapOut(1)
        let slab = dir.path + "/kvcache.slab", journal = dir.path + "/kvcache.journal"
        let before = (descriptors(naming: slab).count, descriptors(naming: journal).count)
        let during = Mutex((-1, -1))
        e.setSyncHook { during.withLock { $0 = (descriptors(naming: slab).count, descriptors(naming: journal).count) } }
        defer { e.setSyncHook(nil) }
        try e.syncOffload()
        let seen = during.withLock { $0 }
        #expect(before.0 >= 1 && seen.0 == before.0, "the slab's descriptors: \(before.0) before the sync, \(seen.0) during it")
        #expect(seen.1 == before.1 + 1, "the journal's: \(before.1) before, \(seen.1) during")
        #expect((descriptors(naming: slab).count, descriptors(naming: journal).count) == before, "the duplicate is closed after")
    }
}

/// Spills 10-block prompts (seeds from `seed`; sequence 2 each time), evicting older spilled
/// ones, until the journal at `journal` is another file (a compaction renamed its rewrite over
/// it), at most 500 rounds; returns the rounds, 0 when none compacted. No sync.
private func churnUntilCompaction(_ e: Engine, journal: String, seed: Int32) throws -> Int {
    var st = stat()
    guard stat(journal, &st) == 0 else { return 0 }
    let inode = st.st_ino
    for round in 1...500 {
        let prompt = tokens(4 * 10 + 1, seed: seed + Int32(round))
        try e.createSequence(2, tokens: prompt)
        try fillKV(e, 2, count: prompt.count) { prompt[$0] }
        try e.free(2)
        try e.trim()
        for _ in 0..<10 { e.poll(timeoutMicroseconds: 100) }
        if stat(journal, &st) == 0 && st.st_ino != inode { return round }
    }
    return 0
}

