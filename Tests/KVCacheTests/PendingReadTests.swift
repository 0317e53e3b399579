import Testing
@testable import KVCache

#if canImport(Glibc)
import Glibc
#endif

/// Disk reads that find every staging buffer in flight are queued (`PendingReads`) instead of
/// waiting for the device under the engine's lock, and later calls that process completions
/// submit them. These 8 KiB slots give 1024 staging buffers; a 1200-block prefix on disk
/// takes all of them with its first 1024 reads, held in flight by the paused thread backend,
/// and queues 176. The order of events is asserted, never a duration: every wait is a guard
/// against a call that waits for the held I/O (the I/O is then resumed so the test ends).
@Suite("Disk reads queued for a staging buffer", .serialized)
struct PendingReadTests {
    static let layouts: [Layout] = [.paged, .contiguous]
    static let blocksOnDisk = 1200, buffers = 1024

    /// Sequence 1 created, with the I/O held, from a prompt whose 1200 full blocks are all on
    /// disk (none cached in memory), beside a resident, filled sequence 3: the engine, both
    /// prompts, the tier's counters before the create, the log of events, and whether the
    /// create returned while the I/O was held. The I/O is held; the directory is removed with it.
    private final class HeldCreate {
        let dir = ScratchDir()
        let e: Engine
        let prompt: [Int32], other: [Int32]
        let before: DiskTierStats
        let order = EventLog()
        let returned: Bool

        init(_ layout: Layout, seed: Int32) throws {
            prompt = tokens(4 * PendingReadTests.blocksOnDisk + 1, seed: seed)
            other = tokens(4 * 3 + 1, seed: seed + 1)
            var c = offloadConfig(layout, dir: dir.path)
            c.offloadForceThreads = true
            c.maxSeqTokens = 8192
            e = try Engine(c)
            try e.createSequence(1, tokens: prompt)
            try fillKV(e, 1, count: prompt.count) { [prompt] in prompt[$0] }
            try e.free(1)
            try e.trim()
            try e.syncOffload()
            try e.createSequence(3, tokens: other)
            try fillKV(e, 3, count: other.count) { [other] in other[$0] }
            let s = e.stats()
            #expect(s.blocksCached == 0 && s.disk.storedSlots == UInt64(PendingReadTests.blocksOnDisk))
            before = s.disk
            returned = callWithIOHeld(e, "create", order: order) { [e, prompt] in
                let hit = try e.createSequence(1, tokens: prompt)
                #expect(hit == 4 * PendingReadTests.blocksOnDisk)
            }
        }

        deinit { dir.remove() }
    }

    /// A decode step of sequence 3 on another thread while the I/O is held, then the I/O
    /// resumed (logged in `order`): true when the append returned before (within 10 s).
    private func appendThenResumeIO(_ e: Engine, order: EventLog) -> Bool {
        let appender = loggedCall("append", order) { try e.append(3, tokens: [5]) }
        let appended = waitUntil(seconds: 10) { order.events.contains("append returned") }
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        appender.join()
        return appended
    }

    @Test(arguments: layouts)
    func aCreateWhoseReadsFindNoFreeBufferReturnsAndAnotherThreadsAppendProceeds(layout: Layout) throws {
        let held = try HeldCreate(layout, seed: 71)
        let (e, prompt, other, before, order, returned) = (held.e, held.prompt, held.other, held.before, held.order, held.returned)
        #expect(returned, "the create did not wait for the device under the lock")
        let during = e.stats().disk
        #expect(e.offload!.tier.pendingReadCount == Self.blocksOnDisk - Self.buffers, "the reads beyond the buffers are queued")
        #expect(try e.ready(1) == false)
        #expect(during.blocksLoaded == before.blocksLoaded, "nothing landed while the I/O is held")
        // Another thread's decode step on another sequence, while the reads are held and queued.
        let appended = appendThenResumeIO(e, order: order)
        #expect(appended && order.events == ["create returned", "append returned", "I/O resumed"])
        try waitReady(e, 1)
        let after = e.stats().disk
        #expect(e.offload!.tier.pendingReadCount == 0)
        #expect(after.blocksLoaded == before.blocksLoaded + UInt64(Self.blocksOnDisk) && after.loadsFailed == before.loadsFailed)
        // Queued in slot order and submitted oldest first into buffers freed together: the 176
        // queued reads went out merged, in fewer requests than blocks.
        let queuedRequests = after.requestsSubmitted - during.requestsSubmitted
        #expect(queuedRequests > 0 && queuedRequests < UInt64(Self.blocksOnDisk - Self.buffers), "queued reads merged: \(queuedRequests) requests")
        #expect(during.requestsSubmitted - before.requestsSubmitted < UInt64(Self.buffers) / 8, "submitted reads merged")
        #expect(try kvDifferences(e, 1, count: 4 * Self.blocksOnDisk) { prompt[$0] } == 0)
        #expect(try kvDifferences(e, 3, count: other.count) { other[$0] } == 0)
    }

    @Test(arguments: layouts)
    func freeingASequenceWithQueuedReadsCancelsThemAndKeepsEverythingElse(layout: Layout) throws {
        let held = try HeldCreate(layout, seed: 81)
        let (e, prompt, other, before, order, returned) = (held.e, held.prompt, held.other, held.before, held.order, held.returned)
        #expect(returned)
        #expect(e.offload!.tier.pendingReadCount == Self.blocksOnDisk - Self.buffers)
        // The free takes its queued reads back at once, then waits for the held ones.
        let freer = loggedCall("free", order) { try e.free(1) }
        let cancelled = waitUntil(seconds: 10) { e.offload!.tier.pendingReadCount == 0 }
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        freer.join()
        #expect(cancelled)
        #expect(order.events == ["create returned", "I/O resumed", "free returned"])
        let after = e.stats()
        #expect(after.sequences == 1)
        #expect(after.disk.blocksLoaded == before.blocksLoaded + UInt64(Self.buffers), "only the submitted reads landed")
        #expect(after.disk.loadsFailed == before.loadsFailed)
        #expect(after.blocksCached == UInt64(Self.buffers), "the cancelled blocks left the index: never filled")
        #expect(e.offloadSlotAudit == (0, 0), "every slot the reads pinned is unpinned")
        #expect(try kvDifferences(e, 3, count: other.count) { other[$0] } == 0)
        // The cancelled blocks are still on disk: the prompt is served whole, byte-identical.
        #expect(try e.createSequence(1, tokens: prompt) == 4 * Self.blocksOnDisk)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 4 * Self.blocksOnDisk) { prompt[$0] } == 0)
        #expect(e.stats().disk.loadsFailed == after.disk.loadsFailed)
    }

    @Test(arguments: layouts)
    func aSwapOutOfASequenceWithQueuedReadsWaitsForThemWithoutTheLock(layout: Layout) throws {
        let held = try HeldCreate(layout, seed: 85)
        let (e, prompt, other, order, returned) = (held.e, held.prompt, held.other, held.order, held.returned)
        #expect(returned)
        let swapper = loggedCall("swap-out", order) { try e.swapOutAsync(1) }
        #expect(waitUntil(seconds: 10) { e.offload!.waitingCalls == 1 }, "the swap-out waits for the sequence's reads (read without the lock, which a wait under it would hold)")
        let appended = appendThenResumeIO(e, order: order)
        swapper.join()
        #expect(appended && order.events == ["create returned", "append returned", "I/O resumed", "swap-out returned"])
        try e.syncOffload()
        #expect(e.stats().disk.swapOuts == 1)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 4 * Self.blocksOnDisk) { prompt[$0] } == 0)
        #expect(try kvDifferences(e, 3, count: other.count) { other[$0] } == 0)
    }

    /// Peer reads queue the same way, with the record their lookup captured; a free takes the
    /// queued ones back (nothing of the peer's is pinned) and the rest land verified.
    @Test func aCreateFromAPeerQueuesItsReadsAndAFreeTakesThemBack() throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        var ca = offloadConfig(.paged, dir: dirA.path)
        ca.maxSeqTokens = 8192
        let prompt = tokens(4 * Self.blocksOnDisk + 1, seed: 95)
        try spillPrompt(try Engine(ca), 1, prompt)
        var cb = peerConfig(.paged, dir: dirB.path, peers: [dirA.path])
        cb.offloadForceThreads = true
        cb.maxSeqTokens = 8192
        let b = try Engine(cb)
        let order = EventLog()
        let returned = callWithIOHeld(b, "create", order: order) {
            let hit = try b.createSequence(1, tokens: prompt)
            #expect(hit == 4 * Self.blocksOnDisk)
        }
        #expect(returned, "the create did not wait for the device under the lock")
        #expect(b.offload!.tier.pendingReadCount == Self.blocksOnDisk - Self.buffers)
        #expect(try b.ready(1) == false)
        let freer = loggedCall("free", order) { try b.free(1) }
        let cancelled = waitUntil(seconds: 10) { b.offload!.tier.pendingReadCount == 0 }
        #expect(b.pauseOffloadIO(false))
        freer.join()
        #expect(cancelled)
        let s = b.stats()
        #expect(s.disk.peerHits == UInt64(Self.buffers) && s.disk.peerStale == 0, "only the submitted reads landed, verified")
        #expect(s.blocksCached == UInt64(Self.buffers))
        #expect(b.offloadSlotAudit == (0, 0))
        #expect(try b.createSequence(1, tokens: prompt) == 4 * Self.blocksOnDisk)
        try waitReady(b, 1)
        #expect(try kvDifferences(b, 1, count: 4 * Self.blocksOnDisk) { prompt[$0] } == 0)
        #expect(b.stats().disk.peerStale == 0)
    }

    @Test(arguments: layouts)
    func aSwapInWithMoreBlocksThanBuffersReturnsAndAnotherThreadsAppendProceeds(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadForceThreads = true
        c.maxSeqTokens = 8192
        let e = try Engine(c)
        let long = tokens(4 * Self.blocksOnDisk + 2, seed: 91), other = tokens(4 * 3 + 1, seed: 92)
        try e.createSequence(1, tokens: long)
        try fillKV(e, 1, count: long.count) { long[$0] }
        try e.createSequence(3, tokens: other)
        try fillKV(e, 3, count: other.count) { other[$0] }
        try e.swapOut(1)
        try e.trim()  // paged: no block of it left in memory to share
        try e.syncOffload()
        let before = e.stats().disk
        let order = EventLog()
        let returned = callWithIOHeld(e, "swap-in", order: order) { try e.swapIn(1) }
        #expect(returned, "the swap-in did not wait for the device under the lock")
        #expect(e.offload!.tier.pendingReadCount == Self.blocksOnDisk + 1 - Self.buffers)
        #expect(try e.ready(1) == false)
        let appended = appendThenResumeIO(e, order: order)
        #expect(appended && order.events == ["swap-in returned", "append returned", "I/O resumed"])
        try waitReady(e, 1)
        #expect(e.stats().disk.blocksLoaded == before.blocksLoaded + UInt64(Self.blocksOnDisk + 1))
        #expect(try kvDifferences(e, 1, count: long.count) { long[$0] } == 0)
        #expect(try kvDifferences(e, 3, count: other.count) { other[$0] } == 0)
        try e.free(1)
        #expect(e.offloadSlotAudit == (0, 0))
    }
}

/// Runs `call` on another thread (logged as `name` in `order`) with the I/O of `e`'s tier held:
/// true when it returned meanwhile (within 10 s). Otherwise resumes the I/O so that it can end.
/// The I/O is held on return either way.
private func callWithIOHeld(_ e: Engine, _ name: String, order: EventLog, _ call: @escaping () throws -> Void) -> Bool {
    #expect(e.pauseOffloadIO(true))
    let caller = loggedCall(name, order, call)
    let returned = waitUntil(seconds: 10) { order.events.contains("\(name) returned") }
    if !returned { _ = e.pauseOffloadIO(false) }
    caller.join()
    _ = e.pauseOffloadIO(true)
    return returned
}
