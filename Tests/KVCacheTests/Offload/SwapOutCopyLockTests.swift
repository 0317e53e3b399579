import TestSupport
import Testing
@testable import KVCache

/// A swap-out copies and checksums its blocks into staging buffers without the engine's lock
/// (kvcache.h, THREAD SAFETY): other threads' calls run while it copies. Found by helper-165's
/// latency review (note44): `kvc_seq_swap_out` of 27 MiB held the lock 45-60 ms for its copies,
/// stalling every other thread's append. The test hook `SwapOutQueue.beforeCopy` runs on the
/// swapping thread just before a batch is copied; there it checks that the lock is free (a
/// `trylock`, which fails for the lock's own holder) and, when it is, has another thread run
/// calls that touch the engine's memory and the disk tier (an append, a create sharing the
/// swapped-out sequence's prefix, a fork, a free; not a trim, whose spills may wait for the
/// staging buffers the copy holds) and waits for them: they must
/// complete, and the swap-out must still write the bytes the sequence held. No timing.
@Suite("A swap-out copies its blocks without the engine's lock", .serialized)
struct SwapOutCopyLockTests {
    /// Sequence 1 holds `prompt` (bytes filled); sequence 2 a short live sequence; sequence 4
    /// a finished one (its blocks cached once freed). Swaps 1 out (`async`: `swapOutAsync` and
    /// then polls until it completed) with the hook running other calls during its first
    /// batch's copy, then swaps it in and checks every byte.
    private func swapOutWithCallsDuringTheCopy(_ layout: Layout, async: Bool, prompt: [Int32]) throws -> LockFreeProbe.Seen {
        let dir = ScratchDir("swapcopy")
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.maxSeqTokens = 8192
        let e = try Engine(c)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        let short = tokens(9, seed: 5)
        try e.createSequence(2, tokens: short)
        try fillKV(e, 2, count: short.count) { short[$0] }
        try e.createSequence(4, tokens: tokens(40, seed: 6))
        let probe = LockFreeProbe(e) { () throws(KVError) -> String in
            try e.append(2, tokens: [77])
            _ = try e.createSequence(3, tokens: Array(prompt.prefix(64)) + [1, 2, 3])
            try e.fork(parent: 2, child: 5)
            try e.free(4)
            return "length \(try e.length(2)), \(e.stats().sequences) sequences"
        }
        e.setSwapOutCopyHook(probe.hook)
        defer { e.setSwapOutCopyHook(nil) }
        if async {
            try e.swapOutAsync(1)
            #expect(waitUntil { e.poll(timeoutMicroseconds: 1000); return e.stats().disk.swapOutsPending == 0 })
        } else {
            try e.swapOut(1)
        }
        let d = e.stats().disk
        #expect(d.swapOuts == 1 && d.swapOutsFailed == 0, "\(d)")
        #expect(try e.ready(1) == false)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: prompt.count) { prompt[$0] } == 0)
        #expect(try kvDifferences(e, 2, count: short.count) { short[$0] } == 0)
        #expect(e.offloadSlotAudit.pinned == 0)
        return probe.seen
    }

    /// 60 blocks: one batch, within the staging buffers.
    @Test(arguments: [Layout.paged, .contiguous], [false, true])
    func otherCallsRunWhileASwapOutCopies(layout: Layout, async: Bool) throws {
        let seen = try swapOutWithCallsDuringTheCopy(layout, async: async, prompt: tokens(4 * 60 + 2, seed: 91))
        #expect(seen.runs >= 1)
        #expect(seen.lockFree, "the swap-out held the engine's lock while it copied its blocks")
        #expect(seen.otherCalls == "length 10, 4 sequences")
    }

    /// 1101 blocks: more than the 896 staging buffers a swap-out may take (1024 of 8 KiB, less
    /// the reserve), so blocks beyond the first batch are copied as writes complete: by the
    /// synchronous call's own loop, in later batches without the lock too (helper-177: the
    /// calls processing completions, its own waits included, copied every later block under
    /// the lock, so the hook ran once), or, asynchronous, by the calls that process completions.
    @Test(arguments: [Layout.paged, .contiguous], [false, true])
    func aSwapOutLargerThanTheStagingAreaRoundTripsWithCallsDuringItsCopy(layout: Layout, async: Bool) throws {
        let seen = try swapOutWithCallsDuringTheCopy(layout, async: async, prompt: tokens(4 * 1100 + 2, seed: 92))
        #expect(seen.lockFree, "the swap-out held the engine's lock while it copied its blocks")
        #expect(seen.otherCalls == "length 10, 4 sequences")
        if !async {
            #expect(seen.runs >= 2, "blocks past the first batch were copied under the lock")
            #expect(seen.everyRunLockFree)
        }
    }
}
