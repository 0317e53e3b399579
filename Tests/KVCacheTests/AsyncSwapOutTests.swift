import Testing
@testable import KVCache

/// `swapOutAsync` returns once its writes are submitted; later calls settle it. The thread-pool
/// backend holds every request in flight while paused (`pauseOffloadIO`), so each test knows
/// the writes are pending; the order of events is asserted, never a duration.
@Suite("Asynchronous swap-out", .serialized)
struct AsyncSwapOutTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    /// An engine on the thread backend with sequence 1 holding `prompt`'s bytes.
    private func engine(_ layout: Layout, dir: ScratchDir, prompt: [Int32], memoryBytes: UInt64 = 64 << 20,
                        fault: OffloadFault? = nil) throws -> Engine {
        var c = offloadConfig(layout, dir: dir.path, memoryBytes: memoryBytes)
        c.offloadForceThreads = true
        c.offloadFault = fault
        let e = try Engine(c)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        return e
    }

    /// Polls until `condition` holds; a guard against a hang, not a timing assertion.
    private func pollUntil(_ e: Engine, _ condition: () -> Bool) -> Bool {
        waitUntil {
            e.poll(timeoutMicroseconds: 1000)
            return condition()
        }
    }

    @Test(arguments: layouts)
    func returnsWithTheWritesInFlightAndReleasesMemoryOnlyOnceTheyCompleted(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(4 * 20 + 2, seed: 71)
        let e = try engine(layout, dir: dir, prompt: prompt)
        let before = e.stats()
        #expect(e.pauseOffloadIO(true))
        try e.swapOutAsync(1)  // returns although not one write can complete
        // Swapped out for every caller at once, memory still held while the writes are pending.
        #expect(try e.ready(1) == false)
        #expect(thrown { () throws(KVError) in try e.append(1, tokens: [9]) }?.code == .invalidArgument)
        #expect(thrown { () throws(KVError) in try e.swapOutAsync(1) }?.code == .invalidArgument)
        #expect(e.poll(timeoutMicroseconds: 0) == 0)
        var s = e.stats()
        #expect(s.blocksUsed == before.blocksUsed)
        #expect(s.committedBytes == before.committedBytes)
        #expect(s.disk.swapOuts == 0)
        #expect(e.pauseOffloadIO(false))
        #expect(pollUntil(e) { e.stats().disk.swapOuts == 1 })
        s = e.stats()
        #expect(s.blocksUsed < before.blocksUsed, "released once the writes completed")
        #expect(s.disk.storedSlots == 21)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
        #expect(e.stats().disk.swapIns == 1)
    }

    @Test(arguments: layouts)
    func aSwapInDuringThePendingSwapOutCancelsItWithTheExactBytes(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(4 * 12 + 3, seed: 72)
        let e = try engine(layout, dir: dir, prompt: prompt)
        let before = e.stats()
        #expect(e.pauseOffloadIO(true))
        try e.swapOutAsync(1)
        try e.swapIn(1)  // cancels: the bytes never left memory
        #expect(try e.ready(1), "resident at once: nothing to read")
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
        try e.append(1, tokens: [5])
        #expect(e.pauseOffloadIO(false))
        try e.syncOffload()
        #expect(e.offloadSlotAudit.pinned == 0 && e.offloadSlotAudit.unhashed == 0, "the cancelled swap-out's own slots were freed when their writes completed")
        let s = e.stats()
        #expect(s.disk.swapOuts == 0 && s.disk.swapIns == 0)
        #expect(s.disk.storedSlots == 12, "its full blocks stay on disk as cached prefix blocks")
        #expect(s.blocksUsed == before.blocksUsed, "52 tokens still fill 13 blocks")
        // And it can be swapped out again, this time to the end.
        try e.swapOutAsync(1)
        #expect(pollUntil(e) { e.stats().disk.swapOuts == 1 })
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
    }

    @Test(arguments: layouts)
    func aFreeDuringThePendingSwapOutReleasesEverySlotAndTheMemory(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(4 * 8 + 2, seed: 73)
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadForceThreads = true
        let e = try Engine(c)
        let empty = e.stats()
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        #expect(e.pauseOffloadIO(true))
        try e.swapOutAsync(1)
        try e.free(1)  // does not wait for the held writes
        var s = e.stats()
        #expect(s.sequences == 0)
        #expect(s.blocksUsed == empty.blocksUsed, "its memory is free at once")
        #expect(thrown { () throws(KVError) in try e.swapIn(1) }?.code == .notFound)
        #expect(e.pauseOffloadIO(false))
        try e.syncOffload()
        #expect(e.offloadSlotAudit.pinned == 0 && e.offloadSlotAudit.unhashed == 0, "no slot pinned, no own slot left")
        s = e.stats()
        #expect(s.disk.storedSlots == 8, "the full blocks stay on disk as cached prefix blocks")
        #expect(s.disk.swapOuts == 0)
        #expect(try e.createSequence(2, tokens: prompt) == 32, "and are found there")
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 32) { prompt[$0] } == 0)
    }

    @Test(arguments: layouts)
    func aWriteFailingAfterTheCallReturnedIsReportedOnceAndLosesNothing(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(4 * 10 + 1, seed: 74)
        let e = try engine(layout, dir: dir, prompt: prompt, fault: OffloadFault(reads: false, writes: true))
        let second = tokens(4 * 6 + 3, seed: 75)
        try e.createSequence(2, tokens: second)
        try fillKV(e, 2, count: second.count) { second[$0] }
        let before = e.stats()
        #expect(e.pauseOffloadIO(true))
        try e.swapOutAsync(1)
        try e.swapOutAsync(2)
        #expect(e.pauseOffloadIO(false))
        e.poll(timeoutMicroseconds: 0)
        try e.syncOffload()  // every write has failed now
        // Sequence 1 learns of it from ready, sequence 2 from swapIn; once each.
        let viaReady = thrown { () throws(KVError) in _ = try e.ready(1) }
        #expect(viaReady?.code == .io)
        #expect(viaReady?.message.contains("Input/output error") == true)
        #expect(viaReady?.message.contains("stayed in memory") == true)
        #expect(try e.ready(1))
        let viaSwapIn = thrown { () throws(KVError) in try e.swapIn(2) }
        #expect(viaSwapIn?.code == .io)
        #expect(try e.ready(2))
        #expect(thrown { () throws(KVError) in try e.swapIn(2) }?.code == .invalidArgument, "resident, not swapped out")
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
        #expect(try kvDifferences(e, 2, count: second.count) { second[$0] } == 0)
        let s = e.stats()
        #expect(s.blocksUsed == before.blocksUsed)
        #expect(s.disk.swapOuts == 0)
        #expect(e.offloadSlotAudit.pinned == 0 && e.offloadSlotAudit.unhashed == 0)
        try e.append(1, tokens: [3, 4])
        try e.free(1)
        try e.free(2)
    }

    @Test(arguments: layouts)
    func anAllocationOutOfMemoryWaitsForThePendingSwapOuts(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        // 64 KiB: 128 blocks (paged), 4 pages of 128 tokens per tensor (contiguous).
        let prompt = tokens(400, seed: 76)
        let e = try engine(layout, dir: dir, prompt: prompt, memoryBytes: 64 << 10)
        let other = tokens(200, seed: 77)
        #expect(thrown { () throws(KVError) in _ = try e.createSequence(2, tokens: other) }?.code == .outOfMemory,
                "nothing pending: out of memory at once")
        #expect(e.pauseOffloadIO(true))
        try e.swapOutAsync(1)
        let order = EventLog()
        let creator = loggedCall("create", order) { _ = try e.createSequence(2, tokens: other) }
        #expect(waitUntil { e.offloadWaitingCalls == 1 }, "the create waits for the swap-out")
        #expect(e.stats().sequences == 1)
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        creator.join()
        #expect(order.events == ["I/O resumed", "create returned"])
        #expect(e.stats().disk.swapOuts == 1)
        try fillKV(e, 2, count: other.count) { other[$0] }
        try e.free(2)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
    }
}
