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
