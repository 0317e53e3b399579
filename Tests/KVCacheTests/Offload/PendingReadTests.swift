import TestSupport
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

    /// The free takes the queued reads back and returns with the 1024 submitted ones still
    /// held in flight: it never waits for the device. The sequence is gone at once (its id is
    /// free), but its slot keeps every block, counted used, until the reads landed; then the
    /// next call that processes completions releases them.
    @Test(arguments: layouts)
    func freeingASequenceWithQueuedReadsCancelsThemAndReturnsWithTheRestInFlight(layout: Layout) throws {
        let held = try HeldCreate(layout, seed: 81)
        let (e, prompt, other, before, order, returned) = (held.e, held.prompt, held.other, held.before, held.order, held.returned)
        #expect(returned)
        #expect(e.offload!.tier.pendingReadCount == Self.blocksOnDisk - Self.buffers)
        let usedBefore = e.stats().blocksUsed
        // The free takes its queued reads back at once and returns without waiting for the held ones.
        let freer = loggedCall("free", order) { try e.free(1) }
        let freed = waitUntil(seconds: 10) { order.events.contains("free returned") }
        #expect(freed, "the free did not wait for its reads in flight under the lock")
        let appended = appendThenResumeIO(e, order: order)  // another thread's decode step, then the I/O resumed
        freer.join()
        #expect(freed && appended)
        #expect(order.events == ["create returned", "free returned", "append returned", "I/O resumed"])
        let during = e.stats()
        #expect(during.sequences == 1, "the freed sequence is gone at once")
        #expect(during.blocksUsed == usedBefore, "its memory stays counted used while reads land in it")
        #expect(e.offload!.deferredFreeCount == 1)
        #expect(throws: KVError.self) { try e.ready(1) }  // not found: its id is free
        try e.syncOffload()  // the reads land; the slot is released
        let after = e.stats()
        #expect(e.offload!.deferredFreeCount == 0)
        #expect(after.sequences == 1)
        #expect(after.blocksUsed == usedBefore - UInt64(Self.blocksOnDisk + 1), "its memory came back once the reads landed")
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

    /// A swap-out whose first block finds every staging buffer in flight (1024 reads held, 176
    /// queued behind them) waits for one without the engine's lock, behind the queued reads:
    /// another thread's append returns meanwhile, and the swap-out then completes with every
    /// byte, the swap-out counters balanced.
    @Test(arguments: layouts)
    func aSwapOutFindingEveryBufferInFlightWaitsForOneWithoutTheLock(layout: Layout) throws {
        let held = try HeldCreate(layout, seed: 87)
        let (e, prompt, other, order, returned) = (held.e, held.prompt, held.other, held.order, held.returned)
        #expect(returned)
        // A resident sequence created and filled while the I/O is held (no disk hit: no I/O).
        let fourth = tokens(4 * 6 + 3, seed: 300)
        #expect(try e.createSequence(4, tokens: fourth) == 0)
        try fillKV(e, 4, count: fourth.count) { fourth[$0] }
        #expect(!e.offload!.tier.hasFreeStage, "every staging buffer is in flight")
        let swapper = loggedCall("swap-out", order) { try e.swapOutAsync(4) }
        let waiting = waitUntil(seconds: 10) { e.offload!.waitingCalls == 1 }
        #expect(waiting, "the swap-out waits for a staging buffer without the lock (a wait under it would hold it)")
        let appended = appendThenResumeIO(e, order: order)
        swapper.join()
        #expect(appended && order.events == ["create returned", "append returned", "I/O resumed", "swap-out returned"])
        try e.syncOffload()
        let s = e.stats().disk
        #expect(s.swapOuts == 1 && s.swapOutsFailed == 0)
        #expect(s.swapOutsStarted == s.swapOuts + s.swapOutsCancelled + s.swapOutsFailed + s.swapOutsPending)
        try e.swapIn(4)
        try waitReady(e, 4)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 4, count: fourth.count) { fourth[$0] } == 0)
        #expect(try kvDifferences(e, 1, count: 4 * Self.blocksOnDisk) { prompt[$0] } == 0)
        #expect(try kvDifferences(e, 3, count: other.count) { other[$0] } == 0)
        try e.free(4)
        try e.free(1)
        try e.syncOffload()
        #expect(e.offloadSlotAudit == (0, 0))
    }

    /// Paged, with memory for about 1024 blocks: a free of a sequence whose 400 reads are held
    /// in flight returns at once, and its memory is not counted free: a sequence taking every
    /// block left gets none of it, and a create that needs more waits for it without the lock
    /// (another thread's append returns meanwhile) until the reads landed and the freed slot
    /// was released. No read lands in memory another sequence was given: every byte of both
    /// new sequences is what they wrote.
    @Test func aFreedSequencesMemoryComesBackOnlyOnceItsReadsLanded() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(.paged, dir: dir.path, memoryBytes: 512 << 10)
        c.offloadForceThreads = true
        let e = try Engine(c)
        let prompt = tokens(4 * 400 + 1, seed: 97), other = tokens(4 * 3 + 1, seed: 98)
        try spillPrompt(e, 1, prompt)
        try e.createSequence(3, tokens: other)
        try fillKV(e, 3, count: other.count) { other[$0] }
        let before = e.stats()
        #expect(before.blocksCached == 0 && before.disk.storedSlots == 400)
        let order = EventLog()
        let created = callWithIOHeld(e, "create", order: order) {
            let hit = try e.createSequence(1, tokens: prompt)
            #expect(hit == 4 * 400)
        }
        #expect(created, "the create did not wait for the device")
        #expect(e.offload!.tier.pendingReadCount == 0, "all 400 reads are in flight, none queued")
        let freer = loggedCall("free", order) { try e.free(1) }
        let freed = waitUntil(seconds: 10) { order.events.contains("free returned") }
        guard freed else {
            // It waits under the lock: release the I/O so that it ends (and every call after it).
            #expect(e.pauseOffloadIO(false))
            freer.join()
            Issue.record("the free waited for its reads in flight under the lock")
            return
        }
        let during = e.stats()
        #expect(during.sequences == 1 && during.blocksUsed == before.blocksUsed + 401 && during.blocksCached == 0)
        // Every block not held: a sequence takes them all (no eviction of the freed one's).
        let free = Int(during.blocksTotal - during.blocksUsed)
        #expect(free > 0 && free * 4 <= c.maxSeqTokens)
        let fifth = tokens(4 * free, seed: 99), sixth = tokens(4 * 5, seed: 100)
        #expect(try e.createSequence(5, tokens: fifth) == 0)
        try fillKV(e, 5, count: fifth.count) { fifth[$0] }
        // A create that needs more memory waits for the freed sequence's, without the lock.
        let creator = loggedCall("create 6", order) {
            let hit = try e.createSequence(6, tokens: sixth)
            #expect(hit == 0)
        }
        let waiting = waitUntil(seconds: 10) { e.offload!.waitingCalls == 1 }
        #expect(waiting, "the create waits for the freed memory without the lock")
        let appended = appendThenResumeIO(e, order: order)
        creator.join()
        freer.join()
        #expect(freed && appended)
        #expect(order.events == ["create returned", "free returned", "append returned", "I/O resumed", "create 6 returned"])
        try fillKV(e, 6, count: sixth.count) { sixth[$0] }
        try e.syncOffload()
        let after = e.stats()
        #expect(e.offload!.deferredFreeCount == 0 && after.sequences == 3)
        #expect(after.disk.blocksLoaded == before.disk.blocksLoaded + 400 && after.disk.loadsFailed == 0)
        #expect(try kvDifferences(e, 5, count: fifth.count) { fifth[$0] } == 0, "no read landed in the memory sequence 5 was given")
        #expect(try kvDifferences(e, 6, count: sixth.count) { sixth[$0] } == 0)
        #expect(try kvDifferences(e, 3, count: other.count) { other[$0] } == 0)
        for seq: UInt64 in [3, 5, 6] { try e.free(seq) }
        try e.syncOffload()
        #expect(e.offloadSlotAudit == (0, 0))
        // The blocks read back (400, less the 5 evicted for sequence 6) are cached, and served.
        #expect(try e.createSequence(1, tokens: prompt) == 4 * 400)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 4 * 400) { prompt[$0] } == 0)
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
        let freed = waitUntil(seconds: 10) { order.events.contains("free returned") }
        #expect(b.offload!.tier.pendingReadCount == 0)
        #expect(b.pauseOffloadIO(false))
        freer.join()
        #expect(freed, "the free did not wait for its reads in flight")
        try b.syncOffload()  // the submitted reads land; the freed slot is released
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
func callWithIOHeld(_ e: Engine, _ name: String, order: EventLog, _ call: @escaping () throws -> Void) -> Bool {
    #expect(e.pauseOffloadIO(true))
    let caller = loggedCall(name, order, call)
    let returned = waitUntil(seconds: 10) { order.events.contains("\(name) returned") }
    if !returned { _ = e.pauseOffloadIO(false) }
    caller.join()
    _ = e.pauseOffloadIO(true)
    return returned
}

/// A decode step of sequence 3 on another thread while `e`'s I/O is held, then the I/O
/// resumed (logged in `order`): true when the append returned before (within 10 s).
func appendThenResumeIO(_ e: Engine, order: EventLog) -> Bool {
    let appender = loggedCall("append", order) { try e.append(3, tokens: [5]) }
    let appended = waitUntil(seconds: 10) { order.events.contains("append returned") }
    order.add("I/O resumed")
    #expect(e.pauseOffloadIO(false))
    appender.join()
    return appended
}
