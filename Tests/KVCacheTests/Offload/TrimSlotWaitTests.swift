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
/// state is reached every run.
@Suite("A trim waits for the tier's slots being written", .serialized)
struct TrimSlotWaitTests {
    @Test(arguments: [Layout.paged, .contiguous])
    func aTrimWaitsForSpillWritesHoldingEverySlotInsteadOfSkipping(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadForceThreads = true
        let probe = ScratchDir("probe")
        defer { probe.remove() }
        c.offloadBytes = try Engine(offloadConfig(layout, dir: probe.path)).stats().disk.slotBytes * 8  // a tier of 8 slots
        let e = try Engine(c)
        let bt = c.blockTokens
        #expect(e.stats().disk.capacitySlots == 8)
        // The first prompt's 8 full blocks take every slot; their writes stay in flight.
        let first = tokens(8 * bt + 1, seed: 61)
        try e.createSequence(1, tokens: first)
        try fillKV(e, 1, count: first.count) { first[$0] }
        try e.free(1)
        #expect(e.pauseOffloadIO(true))
        try e.trim()
        #expect(e.stats().disk.blocksSpilled == 8)
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
        #expect(s.disk.blocksSpilled == 11)
        #expect(s.blocksCached == 0)
        // The second prompt is found on disk, whole, with its bytes.
        #expect(try e.createSequence(3, tokens: second) == 3 * bt)
        try waitReady(e, 3)
        #expect(try kvDifferences(e, 3, count: 3 * bt) { second[$0] } == 0)
    }
}
