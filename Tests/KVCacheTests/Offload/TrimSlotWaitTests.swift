import TestSupport
import Testing
@testable import KVCache

#if canImport(Glibc)
import Glibc
#endif

/// A trim whose tier has every slot taken by spill writes still in flight waits for them
/// (their slots join the LRU when they complete, and the trim drops the oldest for its own
/// spills) instead of skipping its spills: kvcache.h, kvc_engine_trim, "A trim skips no
/// spill". Found by the reviewer's slot_leak reproducer: a server loop that trims every round
/// and reads its prompt back from the writes' staging buffers outran the thread backend's
/// writes, filled the tier with slots being written, and its next trims dropped prompts
/// without spilling them. The thread backend holds the writes in flight while paused, so the
/// state is reached every run. A tier has no more staging buffers than slots
/// (`DiskTier.stagingBuffers`) and keeps an eighth of them from bulk transfers, so a trim's
/// writes alone never hold every slot: a swapped-out sequence pins the rest.
@Suite("A trim waits for the tier's slots being written", .serialized)
struct TrimSlotWaitTests {
    @Test(arguments: [Layout.paged, .contiguous])
    func aTrimWaitsForSpillWritesHoldingEverySlotInsteadOfSkipping(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadForceThreads = true
        c.offloadBytes = tierSlotBytes(c) * 8  // a tier of 8 slots
        let e = try Engine(c)
        let bt = c.blockTokens
        #expect(e.stats().disk.capacitySlots == 8)
        // A swapped-out sequence's 2 blocks pin 2 slots; the first prompt's 6 full blocks take
        // the other 6 (within the 7 buffers bulk transfers may take); their writes stay in
        // flight.
        let pinned = tokens(2 * bt, seed: 60)
        try e.createSequence(4, tokens: pinned)
        try fillKV(e, 4, count: pinned.count) { pinned[$0] }
        try e.swapOut(4)
        let first = tokens(6 * bt + 1, seed: 61)
        try e.createSequence(1, tokens: first)
        try fillKV(e, 1, count: first.count) { first[$0] }
        try e.free(1)
        #expect(e.pauseOffloadIO(true))
        try e.trim()
        #expect(e.stats().disk.blocksSpilled == 6)
        #expect(e.stats().disk.spillsSkipped == 0)
        // The second prompt's 3 blocks find no slot free, none in the LRU: all are being written.
        let second = tokens(3 * bt + 1, seed: 62)
        try e.createSequence(2, tokens: second)
        try fillKV(e, 2, count: second.count) { second[$0] }
        try e.free(2)
        let order = EventLog()
        let trimmer = TestThread {
            do { try e.trim() } catch { order.add("trim threw \(error)") }
            order.add("trim returned")
        }
        let waited = waitUntil(seconds: 10) { e.offloadWaitingCalls == 1 || !order.events.isEmpty }
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        trimmer.join()
        let s = e.stats()
        #expect(waited)
        #expect(order.events == ["I/O resumed", "trim returned"], "the trim waited for the writes holding the slots")
        #expect(s.disk.spillsSkipped == 0)
        #expect(s.disk.blocksSpilled == 9)
        #expect(s.blocksCached == 0)
        // The second prompt is found on disk, whole, with its bytes.
        #expect(try e.createSequence(3, tokens: second) == 3 * bt)
        try waitReady(e, 3)
        #expect(try kvDifferences(e, 3, count: 3 * bt) { second[$0] } == 0)
    }

    /// The same on a tier the file system's free space bounds, not offload_bytes: the slots
    /// the slab cannot grow by are no room, so the trim waits for its writes and drops the
    /// oldest as on a tier offload_bytes bounds to as many slots. Before, the trim counted
    /// growth up to offload_bytes as room and its spills failed (a reviewer's 256 KiB tmpfs:
    /// 22 spilled, 19 failed, counted as disk errors though the device reported none).
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"))
    func aTrimOnATierTheDiskBoundsWaitsAsOnATierOffloadBytesBounds() throws {
        /// Trims a 41-block prompt: (spilled, failed, skipped, stored slots).
        func trimPrompt(_ c: EngineConfig) throws -> (UInt64, UInt64, UInt64, UInt64) {
            let e = try Engine(c)
            let prompt = tokens(41 * c.blockTokens + 1, seed: 71)
            try e.createSequence(1, tokens: prompt)
            try fillKV(e, 1, count: prompt.count) { prompt[$0] }
            try e.free(1)
            try e.trim()
            try e.syncOffload()
            let d = e.stats().disk
            return (d.blocksSpilled, d.spillsFailed, d.spillsSkipped, d.storedSlots)
        }
        let fs = try #require(mountTmpfs(bytes: 256 << 10))
        defer { unmount(fs) }
        var c = offloadConfig(.paged, dir: fs.path)
        c.offloadForceThreads = true
        let disk = try trimPrompt(c)
        let dir = ScratchDir()
        defer { dir.remove() }
        var d = offloadConfig(.paged, dir: dir.path)
        d.offloadBytes = tierSlotBytes(d) * disk.3
        d.offloadForceThreads = true
        let bytes = try trimPrompt(d)
        #expect(disk.3 > 4 && disk.3 < 41, "the disk holds some of the prompt: \(disk)")
        #expect(bytes.1 == 0 && bytes.2 == 0 && bytes.0 == 41, "\(bytes)")
        #expect(disk.1 == 0 && disk.2 == 0 && disk.0 == 41, "the disk-bounded tier: \(disk)")
    }
}
