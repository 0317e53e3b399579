import CKVMemory
import TestSupport
import Testing
@testable import KVCache

#if canImport(Glibc)
import Glibc
#endif

/// `poll` and `swapOut` wait for the disk without holding the engine's lock. The thread-pool
/// backend holds every request in flight while paused, so each test knows the I/O is pending
/// while another thread's calls run; the order of events is asserted, never a duration.
@Suite("Waiting for the disk without the engine lock", .serialized)
struct OffloadWaitTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    @Test(arguments: layouts)
    func anotherThreadsCallsCompleteWhilePollWaits(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadForceThreads = true
        let e = try Engine(c)
        let prompt = tokens(4 * 10, seed: 31)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        try e.free(1)
        #expect(e.pauseOffloadIO(true))
        try e.trim()  // spills the cached blocks: their writes stay in flight
        let order = EventLog()
        var completed = 0
        let poller = TestThread {
            completed = e.poll(timeoutMicroseconds: .max)
            order.add("poll returned")
        }
        #expect(waitUntil { e.offloadWaitingCalls == 1 }, "poll is waiting for the device")
        let other = otherCalls(e, order: order, seed: 32) { try e.append(2, tokens: [1, 2]) }
        let finished = waitUntil { order.events.count > 0 }  // a guard against a deadlock, not a timing assertion
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        other.join()
        poller.join()
        #expect(finished)
        #expect(order.events == ["other calls returned", "I/O resumed", "poll returned"])
        #expect(completed > 0)
        #expect(e.stats().disk.blocksSpilled == 10)
    }

    @Test(arguments: layouts)
    func anotherThreadsCallsCompleteWhileASwapOutsWritesAreInFlight(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadForceThreads = true
        let e = try Engine(c)
        let prompt = tokens(4 * 20 + 2, seed: 41)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        let third = tokens(4 * 5 + 1, seed: 43)
        try e.createSequence(3, tokens: third)
        try fillKV(e, 3, count: third.count) { third[$0] }
        let usedBefore = e.stats().blocksUsed
        #expect(e.pauseOffloadIO(true))
        let order = EventLog()
        let swapper = loggedCall("swap-out", order) { try e.swapOut(1) }
        #expect(waitUntil { e.offloadWaitingCalls == 1 }, "the swap-out is waiting for its writes")
        // Marked swapped out from the start: not ready, its memory not reachable.
        #expect(try e.ready(1) == false)
        #expect(thrown { () throws(KVError) in try e.append(1, tokens: [9]) }?.code == .invalidArgument)
        let other = otherCalls(e, order: order, seed: 42) { try e.append(3, tokens: [7]) }
        let finished = waitUntil { order.events.count > 0 }  // a guard against a deadlock, not a timing assertion
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        other.join()
        swapper.join()
        #expect(finished)
        #expect(order.events == ["other calls returned", "I/O resumed", "swap-out returned"])
        let s = e.stats()
        #expect(s.disk.swapOuts == 1)
        #expect(s.blocksUsed < usedBefore, "the swap-out released its memory when its writes completed")
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
        #expect(try kvDifferences(e, 3, count: third.count) { third[$0] } == 0)
    }

    /// A hand-over to the kernel that fails (io_uring_enter short of memory) leaves a
    /// synchronous swap-out's writes in the ring, unsent, and fails twice more; the swap-out,
    /// waiting for them without the lock (`awaitProgress`: a wait_for 0 reap, then an untimed
    /// device wait), hands them over again and returns, its sequence swapped in intact after.
    /// Before, a wait_for 0 reap sent nothing and the device wait could not see unsent
    /// entries: the call waited forever (here, until the guard's drain sent them).
    @Test(.enabled(if: ioUringWorks, "io_uring only: this machine's disk tier falls back to threads"), arguments: layouts)
    func aSwapOutWhoseWritesAFailedHandOverLeftUnsentReturns(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        try #require(e.stats().disk.backend == 0, "io_uring only: this disk tier fell back to threads")
        let prompt = tokens(4 * 8 + 2, seed: 71)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        try #require(e.failOffloadSubmits(3))
        let order = EventLog()
        let swapper = loggedCall("swap-out", order) { try e.swapOut(1) }
        let finished = waitUntil(seconds: 10) { order.events.count > 0 }
        if !finished { _ = e.offloadSlotAudit }  // its drain sends the writes and wakes the swap-out, so the test ends
        swapper.join()
        #expect(finished, "the swap-out's own wait handed its writes over")
        #expect(order.events == ["swap-out returned"])
        #expect(e.stats().disk.swapOuts == 1)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
    }

    @Test func aFreeOfASequenceBeingSwappedOutWaitsForTheSwapOut() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(.paged, dir: dir.path)
        c.offloadForceThreads = true
        let e = try Engine(c)
        let prompt = tokens(4 * 8, seed: 51)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        #expect(e.pauseOffloadIO(true))
        let order = EventLog()
        let swapper = loggedCall("swap-out", order) { try e.swapOut(1) }
        #expect(waitUntil { e.offloadWaitingCalls == 1 })
        let freer = loggedCall("free", order) { try e.free(1) }
        #expect(waitUntil { e.offloadWaitingCalls == 2 }, "the free waits too")
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        swapper.join()
        freer.join()
        #expect(order.events.first == "I/O resumed")
        #expect(Set(order.events.dropFirst()) == ["swap-out returned", "free returned"])
        let s = e.stats()
        #expect(s.sequences == 0)
        #expect(s.disk.storedSlots == 8, "the freed sequence's blocks stay on disk as cached prefix blocks")
    }

    /// A trim larger than the staging area (1100 cached blocks to spill, 1024 buffers of these
    /// 8 KiB slots) leaves buffers to other traffic as a pending swap-out does: it spills seven
    /// eighths of them (`DiskTier.reservedStages`) and waits for its writes to free more
    /// without the engine's lock, so a prompt whose prefix is on disk, created while every
    /// write of the trim is held in flight, gets its reads submitted at once. Before, the trim
    /// took every buffer and waited for its own writes holding the lock: the create waited
    /// for them. The I/O is held, so the order of events is asserted, never a duration.
    @Test(arguments: layouts)
    func aPrefixReadDuringATrimLargerThanTheStagingAreaDoesNotWaitForTheTrim(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadForceThreads = true
        c.maxSeqTokens = 8192
        let e = try Engine(c)
        let onDisk = tokens(4 * 20, seed: 61), large = tokens(4 * 1100, seed: 62)
        try e.createSequence(2, tokens: onDisk)
        try fillKV(e, 2, count: onDisk.count) { onDisk[$0] }
        try e.free(2)
        try e.trim()  // sequence 2's 20 blocks go to disk
        try e.syncOffload()
        try e.createSequence(1, tokens: large)
        try fillKV(e, 1, count: large.count) { large[$0] }
        try e.free(1)  // its 1100 blocks stay cached in memory
        let before = e.stats()
        #expect(before.blocksCached == 1100 && before.disk.storedSlots == 20)
        #expect(e.pauseOffloadIO(true))
        let order = EventLog()
        let trimmer = loggedCall("trim", order) { try e.trim() }
        let creator = loggedCall("create", order) {
            // Once the trim waits for buffers (before the fix this blocked on the trim's lock).
            _ = waitUntil(seconds: 10) { e.offloadWaitingCalls == 1 }
            let hit = try e.createSequence(2, tokens: onDisk)
            #expect(hit == 76, "19 blocks from disk")
        }
        // A guard against a call that waits for the held writes, not a timing assertion.
        let created = waitUntil(seconds: 20) { order.events.contains("create returned") }
        let during = created ? e.stats() : nil  // before the fix the trim held the lock until the I/O resumed
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        creator.join()
        trimmer.join()
        #expect(created && order.events == ["create returned", "I/O resumed", "trim returned"], "the create did not wait for the trim")
        if let during {
            #expect(during.disk.blocksSpilled == before.disk.blocksSpilled + 896 && during.blocksCached == 1100 - 896,
                    "the trim spilled seven eighths of the buffers' worth, then waited")
            #expect(during.disk.bytesWritten == before.disk.bytesWritten, "no write completed before the create returned")
        }
        let after = e.stats()
        #expect(after.blocksCached == 0 && after.disk.blocksSpilled == before.disk.blocksSpilled + 1100, "the trim spilled every block")
        #expect(e.offload!.tier.bulkStages >= 0, "it returned leaving the reserve free for the next call")  // no other call runs now
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 76) { onDisk[$0] } == 0)
        try e.syncOffload()
        #expect(try e.createSequence(1, tokens: large) == 4 * 1099, "every trimmed block is on disk")
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 4 * 1099) { large[$0] } == 0)
    }

    /// Four threads swap their own sequences out and in and poll at once (each waits for the
    /// device without the lock, several of them at a time), on io_uring and on the thread
    /// pool; every byte comes back.
    @Test(arguments: [(Layout.paged, false), (.contiguous, false), (.paged, true), (.contiguous, true)])
    func threadsSwappingAndPollingAtOnceKeepTheirBytes(layout: Layout, threadBackend: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadForceThreads = threadBackend
        let e = try Engine(c)
        let failures = Failures()
        DispatchLike.concurrentPerform(iterations: 4) { thread in
            for round in 0..<6 {
                let seq = UInt64(thread * 100 + round)
                let prompt = tokens(4 * 16 + thread, seed: Int32(600 + thread * 10 + round))
                do {
                    try e.createSequence(seq, tokens: prompt)
                    try fillKV(e, seq, count: prompt.count) { prompt[$0] }
                    try e.swapOut(seq)
                    e.poll(timeoutMicroseconds: 1000)
                    try e.swapIn(seq)
                    try waitReady(e, seq)
                    failures.values[thread] += try kvDifferences(e, seq, count: prompt.count) { prompt[$0] }
                    try e.free(seq)
                } catch {
                    failures.values[thread] += 1_000_000
                }
            }
        }
        #expect((0..<4).map { failures.values[$0] } == [0, 0, 0, 0])
        #expect(e.stats().disk.swapOuts == 24)
        #expect(e.stats().disk.swapIns == 24)
    }
}

/// A thread making other engine calls while one call waits for the device: creates sequence 2
/// from `seed`, runs `more`, frees 2, and logs "other calls returned" (or the failure) in `order`.
func otherCalls(_ e: Engine, order: EventLog, seed: Int32, _ more: @escaping @Sendable () throws -> Void) -> TestThread {
    loggedCall("other calls", order) {
        try e.createSequence(2, tokens: tokens(4 * 3 + 1, seed: seed))
        try more()
        try e.free(2)
    }
}

/// A thread running `call`, which logs "`name` returned" in `order`, or "`name` failed: error".
func loggedCall(_ name: String, _ order: EventLog, _ call: @escaping () throws -> Void) -> TestThread {
    TestThread {
        do {
            try call()
            order.add("\(name) returned")
        } catch {
            order.add("\(name) failed: \(error)")
        }
    }
}

/// Events in the order threads record them.
final class EventLog: @unchecked Sendable {
    private var lock = pthread_mutex_t()
    private var list: [String] = []
    init() { pthread_mutex_init(&lock, nil) }
    func add(_ event: String) {
        pthread_mutex_lock(&lock)
        list.append(event)
        pthread_mutex_unlock(&lock)
    }
    var events: [String] {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return list
    }
}

/// Checks `condition` every millisecond until it holds (true) or `seconds` passed (false): a
/// guard so that a broken implementation fails the test instead of hanging it.
func waitUntil(seconds: Int = 60, _ condition: () -> Bool) -> Bool {
    for _ in 0..<(seconds * 1000) {
        if condition() { return true }
        usleep(1000)
    }
    return condition()
}
