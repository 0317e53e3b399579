import Synchronization
import TestSupport
import Testing
@testable import KVCache

#if canImport(Glibc)
import Glibc
#endif

/// A trim works in steps and hands the engine's lock to a call waiting for it between steps
/// (kvcache.h, kvc_engine_trim): another thread's `stats` sees the trim half done. Found by
/// helper-165's latency review: a trim with a disk tier never let go of the lock while it
/// spilled (`awaitProgress` returned at once whenever a write had completed, which on a fast
/// device is always), and the release of free memory punched every group in one go; a probe
/// thread waited 0.55 s. The probe loops on `stats` while the trim runs; it records what it
/// saw strictly between the state before the trim and after it, which only a call that got
/// the lock between two steps can see. No timing: a round of many steps, retried a few times
/// (the probe may not run at all during one trim on a loaded machine).
@Suite("A trim hands the lock over between steps", .serialized)
struct TrimLockHandoffTests {
    /// Runs `trim` on its own thread while this one calls `stats` until it returned; returns
    /// how many of those calls saw `midway` hold.
    private func probedTrim(_ e: Engine, midway: (EngineStats) -> Bool) throws -> Int {
        let done = Atomic<Bool>(false)
        let failure = Mutex<KVError?>(nil)
        let trimmer = TestThread {
            do throws(KVError) { try e.trim() } catch { failure.withLock { $0 = error } }
            done.store(true, ordering: .releasing)
        }
        var seen = 0
        while !done.load(ordering: .acquiring) { seen += midway(e.stats()) ? 1 : 0 }
        trimmer.join()
        if let error = failure.withLock({ $0 }) { throw error }
        return seen
    }

    /// The release of free committed memory: 128 MiB of 16 KiB groups, 16 steps of 8 MiB.
    @Test(arguments: [Layout.paged, .contiguous])
    func aCallGetsTheLockWhileATrimReleasesMemory(layout: Layout) throws {
        let e = try Engine(smallConfig(layout, memoryBytes: 128 << 20))
        var midway = 0
        for _ in 0..<5 where midway == 0 {
            let reserved = try e.reserve(bytes: 128 << 20)
            #expect(reserved == 128 << 20)
            midway = try probedTrim(e) { $0.committedBytes > 0 && $0.committedBytes < reserved }
            #expect(e.stats().committedBytes == 0)
        }
        #expect(midway > 0, "no stats call got the lock while the trim released memory")
    }

    /// The spill of 8000 cached blocks into a tier with room for all: steps of at most the bulk
    /// staging buffers (896 of 1024), between which the trim waits for completions; the
    /// reviewer's case (the writes complete while a step copies, so the old wait returned at
    /// once, the lock held). The default backend (io_uring): the thread backend's writes are
    /// slow enough here that the old trim did wait.
    @Test(arguments: [Layout.paged, .contiguous])
    func aCallGetsTheLockWhileATrimSpills(layout: Layout) throws {
        let dir = ScratchDir("handoff")
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadBytes = tierSlotBytes(c) * 10_000
        let e = try Engine(c)
        var midway = 0
        for round in 0..<5 where midway == 0 {
            for i in 0..<8 {
                let seq = UInt64(round * 8 + i)
                try e.createSequence(seq, tokens: tokens(4000, seed: Int32(seq + 1)))
                try e.free(seq)
            }
            let cached = e.stats().blocksCached
            #expect(cached >= 7000)
            midway = try probedTrim(e) { $0.blocksCached > 0 && $0.blocksCached < cached }
            #expect(e.stats().blocksCached == 0)
            #expect(e.stats().disk.spillsSkipped == 0)
        }
        #expect(midway > 0, "no stats call got the lock while the trim spilled")
    }
}
