import TestSupport
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
                        offloadBytes: UInt64 = 64 << 20, fault: OffloadFault? = nil) throws -> Engine {
        var c = offloadConfig(layout, dir: dir.path, memoryBytes: memoryBytes, offloadBytes: offloadBytes)
        c.offloadForceThreads = true
        c.offloadFault = fault
        c.maxSeqTokens = 8192  // room for `largePrompt`
        let e = try Engine(c)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        return e
    }

    /// 1101 blocks (1100 full, 1 partial): more than the 1024 staging buffers of `smallConfig`'s
    /// 8 KiB slots (32 MiB of them), so the swap-out call cannot copy them all.
    static let largePrompt = tokens(4 * 1100 + 2, seed: 78)
    /// The staging buffers a swap-out may take: all but an eighth (`DiskTier.reservedStages`).
    static let swapOutStages: UInt64 = 1024 - 128

    /// An engine holding `largePrompt` as sequence 1, its stats then, and sequence 1's
    /// asynchronous swap-out started with the I/O held (`swapOutAsyncWithIOHeld`): it returns
    /// with the first 896 writes held in flight and 205 blocks not yet copied.
    private func largeSwapOutWithIOHeld(_ layout: Layout, dir: ScratchDir) throws -> (engine: Engine, before: EngineStats) {
        let e = try engine(layout, dir: dir, prompt: Self.largePrompt)
        let before = e.stats()
        #expect(swapOutAsyncWithIOHeld(e, 1), "returned with its writes held")
        return (e, before)
    }

    /// After a large swap-out whose I/O was held was cancelled: resumes the I/O and checks that
    /// only the blocks submitted before the cancel were written (full blocks: they stay as
    /// cached prefix blocks) and that no slot is left pinned or owned.
    private func expectOnlyTheFirstBatchWritten(_ e: Engine) throws {
        #expect(e.pauseOffloadIO(false))
        try e.syncOffload()
        let d = e.stats().disk
        #expect(d.storedSlots == Self.swapOutStages && d.bytesWritten == Self.swapOutStages * d.slotBytes, "\(d)")
        #expect(e.offloadSlotAudit.pinned == 0 && e.offloadSlotAudit.unhashed == 0)
        expectSwapOutsAddUp(d)
    }

    /// Every swap-out started ended once, or is pending (`DiskTierStats.swapOutsStarted`).
    private func expectSwapOutsAddUp(_ d: DiskTierStats) {
        #expect(d.swapOutsStarted == d.swapOuts + d.swapOutsCancelled + d.swapOutsFailed + d.swapOutsPending, "\(d)")
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

    /// An abort (`free` with `computedTokens`) of a sequence whose asynchronous swap-out is
    /// still pending treats it as swapped out, as every caller sees it: its blocks were
    /// computed before the swap-out, so `computedTokens` is only range-checked and no block
    /// leaves the memory index, as when the swap-out had completed (helper-84's repro took
    /// all of them out).
    @Test(arguments: layouts)
    func anAbortDuringThePendingSwapOutKeepsItsBlocksIndexed(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(4 * 8 + 2, seed: 74)
        let e = try engine(layout, dir: dir, prompt: prompt)
        let memoryIndexed = { e.indexEvents().filter { $0.kind == .blockStored && $0.tier == KVEvent.memoryTier }.count }
        #expect(memoryIndexed() == 8)
        _ = drainAll(e)
        #expect(e.pauseOffloadIO(true))
        try e.swapOutAsync(1)
        #expect(thrown { () throws(KVError) in try e.free(1, computedTokens: prompt.count + 1) }?.code == .invalidArgument,
                "still range-checked")
        try e.free(1, computedTokens: 0)
        #expect(memoryIndexed() == 8, "no block left the memory index")
        #expect(!drainAll(e).contains { $0.kind == .blockRemoved && $0.tier == KVEvent.memoryTier })
        #expect(e.pauseOffloadIO(false))
        try e.syncOffload()
        #expect(try e.createSequence(2, tokens: prompt) == 32, "the prompt is found again")
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

    /// An allocation out of memory with no swap-out pending and no freed sequence waiting for
    /// its reads fails at once and changes nothing, counters included: completions could not
    /// release memory, so it leaves them to a later call. Sequence 3's cached blocks are
    /// trimmed to disk and their writes complete on the device unprocessed; an append that
    /// does not fit then leaves the statistics as they were. Before, it processed those
    /// completions, moving `disk.storedSlots` and `disk.bytesWritten` in a failed call.
    @Test(arguments: layouts)
    func anAllocationOutOfMemoryWithNothingPendingProcessesNoCompletions(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        // 64 KiB: 128 blocks (paged), 4 pages of 128 tokens per tensor (contiguous).
        let prompt = tokens(300, seed: 79)
        let e = try engine(layout, dir: dir, prompt: prompt, memoryBytes: 64 << 10)
        let third = tokens(40, seed: 80)
        try e.createSequence(3, tokens: third)
        try fillKV(e, 3, count: third.count) { third[$0] }
        try e.free(3)
        #expect(e.pauseOffloadIO(true))
        try e.trim()  // sequence 3's cached blocks written to disk, held
        #expect(e.pauseOffloadIO(false))
        let tier = e.offload!.tier!
        // A guard against a hang, not a timing assertion: every write completes on the device.
        #expect(waitUntil(seconds: 20) { tier.inflight > 0 && tier.readyCompletions == tier.inflight })
        let before = e.stats()
        #expect(thrown { () throws(KVError) in try e.append(1, tokens: tokens(300, seed: 81)) }?.code == .outOfMemory)
        #expect(e.stats() == before, "the failed append processed completions")
        #expect(tier.readyCompletions == tier.inflight && tier.inflight > 0, "the writes are still unprocessed")
        try e.syncOffload()
        let after = e.stats()
        #expect(after.disk.storedSlots > before.disk.storedSlots, "a call that processes completions stores them")
        #expect(try e.createSequence(3, tokens: third) == 40 - 4, "sequence 3's prefix is read back from disk")
        try waitReady(e, 3)
        #expect(try kvDifferences(e, 3, count: 36) { third[$0] } == 0)
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
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

    /// A truncation whose copy of a shared cut block finds no room waits for the pending
    /// swap-outs first, as every other allocating call does (it took the plain lock and
    /// reported out of memory while a swap-out was about to release memory). Paged: the cut
    /// block of a fork's child is shared with its parent, so the cut copies it.
    @Test func aTruncationOutOfMemoryWaitsForThePendingSwapOuts() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        // 64 KiB: 128 blocks of 4 tokens; sequence 1 takes 100 of them.
        let prompt = tokens(400, seed: 76)
        let e = try engine(.paged, dir: dir, prompt: prompt, memoryBytes: 64 << 10)
        let other = tokens(102, seed: 78)  // 26 blocks, the last partial
        try e.createSequence(3, tokens: other)
        try fillKV(e, 3, count: other.count) { other[$0] }
        try e.fork(parent: 3, child: 4)
        try e.createSequence(5, tokens: tokens(8, seed: 79))  // the last 2 blocks
        #expect(thrown { () throws(KVError) in try e.truncate(4, to: 50) }?.code == .outOfMemory,
                "nothing pending: out of memory at once")
        #expect(e.pauseOffloadIO(true))
        try e.swapOutAsync(1)
        let order = EventLog()
        let truncation = loggedCall("truncate", order) { try e.truncate(4, to: 50) }
        #expect(waitUntil { e.offloadWaitingCalls == 1 }, "the truncation waits for the swap-out")
        #expect(try e.length(4) == 102)
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        truncation.join()
        #expect(order.events == ["I/O resumed", "truncate returned"])
        #expect(try e.length(4) == 50)
        #expect(try kvDifferences(e, 4, count: 50) { other[$0] } == 0)
        #expect(try kvDifferences(e, 3, count: other.count) { other[$0] } == 0, "the parent keeps its bytes")
    }

    @Test(arguments: layouts)
    func aSequenceLargerThanTheStagingAreaReturnsBeforeAnyWriteCompleted(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = Self.largePrompt
        // Before: the call waited for the held writes to free staging buffers for the rest.
        let (e, before) = try largeSwapOutWithIOHeld(layout, dir: dir)
        var s = e.stats()
        #expect(s.disk.swapOutsStarted == 1 && s.disk.swapOutsPending == 1 && s.disk.swapOuts == 0)
        #expect(s.blocksUsed == before.blocksUsed && s.committedBytes == before.committedBytes)
        #expect(s.disk.bytesWritten == 0)
        #expect(try e.ready(1) == false, "swapped out for every caller at once")
        #expect(thrown { () throws(KVError) in try e.append(1, tokens: [9]) }?.code == .invalidArgument)
        #expect(e.pauseOffloadIO(false))
        #expect(pollUntil(e) { e.stats().disk.swapOuts == 1 }, "later polls submit the rest and settle it")
        s = e.stats()
        #expect(s.disk.storedSlots == 1101 && s.disk.bytesWritten == 1101 * s.disk.slotBytes, "every block written once")
        #expect(s.disk.swapOutsStarted == 1 && s.disk.swapOutsPending == 0 && s.disk.swapOutsCancelled == 0 && s.disk.swapOutsFailed == 0)
        #expect(s.blocksUsed < before.blocksUsed, "released once every write completed")
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
        expectSwapOutsAddUp(e.stats().disk)
    }

    /// A pending large swap-out leaves staging buffers to other traffic: a prompt's prefix
    /// read from disk submitted while every write of the swap-out is held in flight gets
    /// buffers at once (before the reserve: the swap-out took them all, and the create waited
    /// for its writes). A trim's spills are bulk traffic as well (`DiskTier.reservedStages`):
    /// the trim leaves the reserve to such reads and waits, without the engine's lock, for the
    /// swap-out's writes to free buffers (until the trims shared the reserve it took them).
    @Test(arguments: layouts)
    func aPrefixReadDuringALargeSwapOutGetsStagingBuffersAtOnceAndATrimLeavesThemToIt(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir, prompt: Self.largePrompt)
        let onDisk = tokens(4 * 20, seed: 80), cached = tokens(4 * 20, seed: 81)
        try e.createSequence(2, tokens: onDisk)
        try fillKV(e, 2, count: onDisk.count) { onDisk[$0] }
        try e.free(2)
        try e.trim()  // sequence 2's 20 blocks go to disk
        try e.syncOffload()
        try e.createSequence(3, tokens: cached)
        try fillKV(e, 3, count: cached.count) { cached[$0] }
        try e.free(3)  // its 20 blocks stay cached in memory
        #expect(swapOutAsyncWithIOHeld(e, 1))
        let before = e.stats().disk
        let order = EventLog()
        let creator = loggedCall("create", order) {
            let hit = try e.createSequence(2, tokens: onDisk)
            #expect(hit == 76, "19 blocks from disk")
        }
        let created = waitUntil(seconds: 10) { !order.events.isEmpty }  // a guard against a hang, not a timing assertion
        let trimmer = loggedCall("trim", order) { try e.trim() }  // sequence 3's 20 cached blocks
        let trimWaits = created && waitUntil(seconds: 10) { e.offloadWaitingCalls == 1 }
        if trimWaits {  // else a trim holding the lock would hang this call
            let during = e.stats()
            #expect(during.disk.blocksSpilled == before.blocksSpilled && during.blocksCached == 20, "the trim took no buffer of the reserve")
        }
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        creator.join()
        trimmer.join()
        #expect(trimWaits && order.events == ["create returned", "I/O resumed", "trim returned"],
                "the create did not wait for the swap-out's writes; the trim waited for them without the lock")
        let after = e.stats()
        #expect(after.disk.blocksSpilled == before.blocksSpilled + 20 && after.blocksCached == 0)
        #expect(pollUntil(e) { e.stats().disk.swapOuts == 1 })
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 76) { onDisk[$0] } == 0)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: Self.largePrompt.count) { Self.largePrompt[$0] } == 0)
        expectSwapOutsAddUp(e.stats().disk)
    }

    /// A trim waiting for staging buffers gets its share while pending swap-outs still have
    /// blocks to submit. Two large swap-outs are started with the I/O held (896 + 1 writes in
    /// flight, 205 + 1100 blocks not submitted), then a trim of 20 cached blocks waits. Every
    /// call that processes completions offers the buffers they free to the swap-outs first;
    /// before the share (`DiskTier.swapOutStages`) they took every one, so the trim spilled
    /// nothing until all 1305 remaining blocks were submitted, i.e. until at least 2202 - 896
    /// = 1306 writes had completed. Now the swap-outs leave half the bulk area to it: it
    /// returns at the latest on the first wake that freed 20 buffers beyond the reserve, before
    /// the swap-outs submitted anything more, so at most the 897 held writes and its own 20
    /// can have completed. Counts, not durations, are asserted.
    @Test(arguments: layouts)
    func aTrimWaitingForStagingBuffersGetsItsShareWhileSwapOutsHaveBlocksToSubmit(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir, prompt: Self.largePrompt)
        let second = tokens(4 * 1100, seed: 79), cached = tokens(4 * 20, seed: 82)
        try e.createSequence(3, tokens: second)
        try fillKV(e, 3, count: second.count) { second[$0] }
        try e.createSequence(4, tokens: cached)
        try fillKV(e, 4, count: cached.count) { cached[$0] }
        try e.free(4)  // its 20 blocks stay cached in memory
        #expect(swapOutAsyncWithIOHeld(e, 1), "896 writes held, 205 blocks left")
        #expect(swapOutAsyncWithIOHeld(e, 3), "its first write held (from the reserve), 1100 blocks left")
        let before = e.stats()
        #expect(before.disk.swapOutsPending == 2 && before.blocksCached == 20 && before.disk.bytesWritten == 0)
        let order = EventLog()
        var atReturn = EngineStats()
        let trimmer = loggedCall("trim", order) {
            try e.trim()
            atReturn = e.stats()
        }
        let trimWaits = waitUntil(seconds: 10) { e.offloadWaitingCalls == 1 }  // a guard against a hang
        #expect(trimWaits && e.stats().disk.blocksSpilled == before.disk.blocksSpilled, "the trim waits, nothing spilled")
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        trimmer.join()
        #expect(order.events == ["I/O resumed", "trim returned"])
        let written = atReturn.disk.bytesWritten / atReturn.disk.slotBytes
        #expect(written <= 897 + 20, "the trim did not wait for the swap-outs' remaining blocks (\(written) writes completed; without its share at least 1306)")
        #expect(atReturn.blocksCached == 0 && atReturn.disk.blocksSpilled == before.disk.blocksSpilled + 20)
        #expect(pollUntil(e) { e.stats().disk.swapOuts == 2 })
        let after = e.stats().disk
        #expect(after.storedSlots == 20 + 1101 + 1100 && after.bytesWritten == (20 + 1101 + 1100) * after.slotBytes, "every block written once")
        expectSwapOutsAddUp(after)
        try e.swapIn(1)
        try e.swapIn(3)
        try waitReady(e, 1)
        try waitReady(e, 3)
        #expect(try kvDifferences(e, 1, count: Self.largePrompt.count) { Self.largePrompt[$0] } == 0)
        #expect(try kvDifferences(e, 3, count: second.count) { second[$0] } == 0)
        try e.syncOffload()
        #expect(try e.createSequence(4, tokens: cached) == 76, "the trimmed blocks are on disk")
        try waitReady(e, 4)
        #expect(try kvDifferences(e, 4, count: 76) { cached[$0] } == 0)
    }

    @Test(arguments: layouts)
    func aSwapInBeforeTheRestOfALargeSwapOutWasSubmittedCancelsItWithTheExactBytes(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = Self.largePrompt
        let (e, before) = try largeSwapOutWithIOHeld(layout, dir: dir)
        try e.swapIn(1)  // cancels: 896 writes in flight, 205 blocks never copied
        #expect(try e.ready(1), "resident at once: nothing to read")
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
        let s = e.stats()
        #expect(s.disk.swapOutsStarted == 1 && s.disk.swapOutsCancelled == 1 && s.disk.swapOutsPending == 0)
        #expect(s.disk.swapOuts == 0 && s.disk.swapIns == 0, "a cancel is neither a swap-out nor a swap-in")
        #expect(s.blocksUsed == before.blocksUsed)
        try e.append(1, tokens: [5])
        try expectOnlyTheFirstBatchWritten(e)
    }

    @Test(arguments: layouts)
    func aFreeBeforeTheRestOfALargeSwapOutWasSubmittedReleasesTheMemoryAtOnce(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try largeSwapOutWithIOHeld(layout, dir: dir).engine
        try e.free(1)
        let s = e.stats()
        #expect(s.sequences == 0 && s.blocksUsed == 0, "its memory is free at once")
        #expect(s.disk.swapOutsStarted == 1 && s.disk.swapOutsCancelled == 1 && s.disk.swapOutsPending == 0)
        try expectOnlyTheFirstBatchWritten(e)
    }

    /// The tier holds each swap-out when it starts (`DiskTier.checkRoom`), but two together
    /// need one slot more than it has: the first, started with most staging buffers, takes the
    /// free slots as completions free buffers; the other's later blocks find none.
    @Test(arguments: layouts)
    func aLaterBlockTheTierRefusesFailsTheSwapOutOnceAndLosesNothing(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = Self.largePrompt
        let e = try engine(layout, dir: dir, prompt: prompt, offloadBytes: 1105 * 8192)  // 1101 blocks, and 4 more
        let other = tokens(18, seed: 79)  // 5 blocks
        try e.createSequence(2, tokens: other)
        try fillKV(e, 2, count: other.count) { other[$0] }
        let before = e.stats()
        #expect(swapOutAsyncWithIOHeld(e, 1), "returned with its first writes held")
        #expect(swapOutAsyncWithIOHeld(e, 2), "returned: 5 blocks fit in the slots the first has not taken yet")
        #expect(e.pauseOffloadIO(false))
        var failure: KVError?
        #expect(waitUntil {  // until the failure is reported and the first swap-out's writes are done
            e.poll(timeoutMicroseconds: 1000)
            if failure == nil { failure = thrown { () throws(KVError) in _ = try e.ready(2) } }
            return e.stats().disk.swapOutsPending == 0
        })
        if failure == nil { failure = thrown { () throws(KVError) in _ = try e.ready(2) } }
        #expect(failure?.code == .io)
        #expect(failure?.message.contains("offload tier full") == true && failure?.message.contains("stayed in memory") == true)
        #expect(try e.ready(2), "reported once; resident")
        #expect(try kvDifferences(e, 2, count: other.count) { other[$0] } == 0)
        let s = e.stats()
        #expect(s.disk.swapOutsStarted == 2 && s.disk.swapOutsFailed == 1 && s.disk.swapOuts == 1 && s.disk.swapOutsPending == 0)
        #expect(s.blocksUsed == before.blocksUsed - 1101, "the first sequence's memory went")
        #expect(e.offloadSlotAudit.pinned == 1101 && e.offloadSlotAudit.unhashed == 1, "its blocks on disk, the partial one its own")
        try e.append(2, tokens: [3])
        try e.free(2)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
        expectSwapOutsAddUp(e.stats().disk)
    }

    @Test(arguments: layouts)
    func aLaterWriteFailingOnTheDeviceFailsTheSwapOutOnceAndLosesNothing(layout: Layout) throws {
        let probeDir = ScratchDir(), dir = ScratchDir()
        defer {
            probeDir.remove()
            dir.remove()
        }
        let prompt = Self.largePrompt
        let probe = try engine(layout, dir: probeDir, prompt: prompt)
        #expect(swapOutAsyncWithIOHeld(probe, 1))
        let firstBatch = probe.stats().disk.requestsSubmitted  // the call's requests: every later one fails
        #expect(probe.pauseOffloadIO(false))
        let e = try engine(layout, dir: dir, prompt: prompt, fault: OffloadFault(reads: false, writes: true, after: firstBatch))
        try e.swapOutAsync(1)
        try e.syncOffload()  // submits the rest, whose writes fail
        let failure = thrown { () throws(KVError) in try e.swapIn(1) }
        #expect(failure?.code == .io && failure?.message.contains("Input/output error") == true)
        #expect(try e.ready(1), "reported once; resident")
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
        let s = e.stats().disk
        #expect(s.swapOutsStarted == 1 && s.swapOutsFailed == 1 && s.swapOuts == 0 && s.swapOutsPending == 0)
        #expect(s.writesFailed == 1101 - Self.swapOutStages && s.storedSlots == Self.swapOutStages, "the first batch's full blocks stay cached on disk")
        #expect(e.offloadSlotAudit.pinned == 0 && e.offloadSlotAudit.unhashed == 0)
        expectSwapOutsAddUp(s)
    }

    @Test(arguments: layouts)
    func aSynchronousSwapOutOfALargeSequenceReturnsWithEveryBlockOnDisk(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = Self.largePrompt
        let e = try engine(layout, dir: dir, prompt: prompt)
        let before = e.stats()
        try e.swapOut(1)
        let s = e.stats()
        #expect(s.disk.swapOuts == 1 && s.disk.swapOutsStarted == 1 && s.disk.swapOutsPending == 0)
        #expect(s.disk.storedSlots == 1101 && s.blocksUsed < before.blocksUsed)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
    }

    /// `cachedPrefixTokens` answers what a `createSequence` of the same prompt would report now,
    /// also when an asynchronous swap-out's writes completed unprocessed: the create settles it
    /// first (its memory released: its blocks, now on disk, leave memory), so the query must
    /// too. Sequence 2 holds blocks 0-1 of `prompt` alone, block 2 is cached in memory only;
    /// once the swap-out settles, blocks 0-1 are on disk only and block 2 in memory: 12 tokens,
    /// 8 of them read from disk (the lookup looks at every block in memory first, so block 2
    /// is reached after them; when it stopped at the first block found only on disk, the query
    /// counted the unsettled blocks 0-1 and block 2 in memory, 12, and the create then reported 8).
    @Test(arguments: layouts)
    func cachedPrefixTokensSettlesCompletedSwapOutsAsCreateDoes(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(13, seed: 83)
        let e = try engine(layout, dir: dir, prompt: prompt)  // sequence 1: blocks 0-2 indexed
        #expect(try e.createSequence(2, tokens: Array(prompt.prefix(9))) == 8)
        try e.free(1)  // blocks 0-1 held by sequence 2 alone, block 2 cached
        #expect(swapOutAsyncWithIOHeld(e, 2))
        #expect(e.pauseOffloadIO(false))
        let tier = e.offload!.tier!
        // A guard against a hang, not a timing assertion: every write completes on the device.
        #expect(waitUntil(seconds: 20) { tier.readyCompletions == tier.inflight })
        let predicted = e.cachedPrefixTokens(prompt)
        let before = e.stats().disk
        #expect(try e.createSequence(3, tokens: prompt) == predicted)
        #expect(predicted == 12, "blocks 0-1 from disk, block 2 from memory")
        #expect(e.stats().disk.prefixHitTokens - before.prefixHitTokens == 8, "the create settled the swap-out: blocks 0-1 are read")
    }

    /// A swap call refused for bad input changes nothing (kvcache.h, CONVENTIONS), not even by
    /// processing completions: with sequence 1's asynchronous swap-out complete on the device
    /// but unprocessed, a swap-in of resident sequence 2 (not swapped out) and a swap-out of
    /// swapped-out sequence 3 are refused and the statistics stay as they were (sequence 1's
    /// memory still counted, its swap-out not counted). Before, both settled it first.
    @Test(arguments: layouts)
    func aRefusedSwapCallDoesNotProcessCompletions(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir, prompt: tokens(4 * 8 + 2, seed: 84))
        try e.createSequence(2, tokens: tokens(9, seed: 85))
        try e.createSequence(3, tokens: tokens(9, seed: 86))
        try e.swapOut(3)
        #expect(swapOutAsyncWithIOHeld(e, 1))
        #expect(e.pauseOffloadIO(false))
        let tier = e.offload!.tier!
        // A guard against a hang, not a timing assertion: every write completes on the device.
        #expect(waitUntil(seconds: 20) { tier.readyCompletions == tier.inflight })
        let before = e.stats()
        #expect(thrown { () throws(KVError) in try e.swapIn(2) }?.code == .invalidArgument)
        #expect(thrown { () throws(KVError) in try e.swapOut(3) }?.code == .invalidArgument)
        #expect(thrown { () throws(KVError) in try e.swapOutAsync(3) }?.code == .invalidArgument)
        #expect(e.stats() == before, "a refused call processed completions")
        e.poll(timeoutMicroseconds: 0)
        #expect(e.stats().disk.swapOuts == before.disk.swapOuts + 1, "the next call that may settles it")
    }

    /// A swap-out that finds a block already on disk only pins that slot, which counts as
    /// written at once. When another request's read finds the slot corrupt before the
    /// swap-out settles, the swap-out fails: the sequence stays resident with its K/V. Before,
    /// it completed onto the bad slot, released memory whose K/V was intact, and its swap-in
    /// failed. Contiguous: a paged swap-in of blocks still in memory reads no slot. Neither
    /// sequence is resident at the other's swap-out: a swap-out keeps the blocks a resident
    /// sequence shares (`SwapHolds`) and would write no slot for them.
    @Test func aSwapOutDoesNotCompleteOntoASlotAnotherReadFoundCorrupt() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(26, seed: 17)  // six full blocks and two tokens
        let e = try engine(.contiguous, dir: dir, prompt: prompt)
        try e.swapOut(1)  // blocks 0...5 into slots 0...5, indexed; its tail into slot 6
        #expect(try e.createSequence(9, tokens: prompt) == 24)  // read from slots 0...5
        try waitReady(e, 9)
        try fillKV(e, 9, count: prompt.count) { prompt[$0] }
        try e.swapOut(9)  // finds slots 0...5 and pins them; its tail into a slot of its own
        try e.swapIn(1)
        try waitReady(e, 1)
        try e.syncOffload()
        corruptSlots(dir: dir.path, slotBytes: Int(e.stats().disk.slotBytes), 2..<3)
        #expect(e.pauseOffloadIO(true))
        try e.swapOutAsync(1)  // finds slots 0...5 and pins them; its tail's write is held
        try e.swapIn(9)  // reads slots 0...6, held
        #expect(e.pauseOffloadIO(false))
        try e.syncOffload()
        #expect(thrown { () throws(KVError) in try waitReady(e, 9) }?.code == .io, "slot 2 is corrupt")
        let d = e.stats().disk
        #expect(d.swapOuts == 2 && d.swapOutsFailed == 1, "1's first and 9's swap-outs done, 1's second failed")
        let failure = thrown { () throws(KVError) in _ = try e.ready(1) }
        #expect(failure?.code == .io && failure!.message.contains("found corrupt"), "\(failure?.message ?? "no failure")")
        #expect(try e.ready(1), "resident")
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
    }
}
