import TestSupport
import Testing
@testable import KVCache

/// A swap-out of a sequence sharing a prefix with a resident one writes, frees and needs back
/// only the blocks it holds alone: it keeps its references to the shared ones (helper-revlong:
/// a sequence sharing 900K of its 1M tokens with a live one wrote all 65,536 blocks, freed
/// 6,554, and its swap-in needed all 65,536 free unless indexing on schedule; a 600 MiB tier
/// refused it outright).
///
/// Set-up: blocks of 128 tokens, one 4 KiB page per tensor each (so the contiguous layout
/// counts pages as blocks), 64 of them in memory; A holds 16, C shares A's first 12 and owns 4.
@Suite struct SharedSwapOutTests {
    static let layouts: [Layout] = [.paged, .contiguous]
    static let bt = 128, memoryBlocks = 64, blocksA = 16, shared = 12, own = 4

    struct Pair {
        let e: Engine
        let a: [Int32]
        let c: [Int32]
    }

    /// The engine and the two sequences, every token's K/V written (`fillKV`); `threads`: on
    /// the thread backend, whose I/O a test can hold in flight (`pauseOffloadIO`).
    func pair(_ layout: Layout, dir: String, offloadBytes: UInt64 = 64 << 20, threads: Bool = false,
              fault: OffloadFault? = nil) throws -> Pair {
        var config = offloadConfig(layout, dir: dir, memoryBytes: UInt64(Self.memoryBlocks) << 14, offloadBytes: offloadBytes)
        config.offloadForceThreads = threads
        config.offloadFault = fault
        config.blockTokens = Self.bt
        config.maxSeqTokens = 64 * Self.bt
        let e = try Engine(config)
        let a = tokens(Self.blocksA * Self.bt, seed: 31)
        let c = Array(a.prefix(Self.shared * Self.bt)) + tokens(Self.own * Self.bt, seed: 32)
        try e.createSequence(1, tokens: a)
        try fillKV(e, 1, count: a.count) { a[$0] }
        #expect(try e.createSequence(3, tokens: c) == Self.shared * Self.bt)
        try fillKV(e, 3, count: Self.own * Self.bt, from: Self.shared * Self.bt) { c[$0] }
        return Pair(e: e, a: a, c: c)
    }

    /// Both sequences' K/V as written.
    func expectIntact(_ p: Pair, a: Bool = true) throws {
        try waitReady(p.e, 3)
        #expect(try kvDifferences(p.e, 3, count: p.c.count) { p.c[$0] } == 0)
        if a {
            try waitReady(p.e, 1)
            #expect(try kvDifferences(p.e, 1, count: p.a.count) { p.a[$0] } == 0)
        }
    }

    /// Takes every free block for a sequence of `seed`'s tokens, writes its K/V, frees it and
    /// trims: the memory other sequences' freed blocks had is reused and given back.
    func reuseEveryFreeBlock(_ e: Engine, seed: Int32) throws {
        let fill = Self.memoryBlocks - Int(e.stats().blocksUsed)
        let other = tokens(fill * Self.bt, seed: seed)
        try e.createSequence(5, tokens: other)
        try fillKV(e, 5, count: other.count) { other[$0] }
        try e.free(5)
        try e.trim()
    }

    /// Swaps C in, checks its K/V, frees it and trims: nothing used or committed must remain.
    func expectSwapInIntactAndEverythingReleased(_ p: Pair) throws {
        try p.e.swapIn(3)
        try expectIntact(p, a: false)
        try p.e.free(3)
        try p.e.trim()
        let s = p.e.stats()
        #expect(s.blocksUsed == 0)
        #expect(s.committedBytes == 0, "\(s.committedBytes) bytes still committed after freeing everything and trimming")
    }

    @Test(arguments: layouts)
    func aSwapOutWritesAndFreesOnlyItsOwnBlocksAndItsSwapInNeedsOnlyThose(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let p = try pair(layout, dir: dir.path)
        let e = p.e
        let before = e.stats()
        try e.swapOut(3)
        let out = e.stats()
        #expect(out.disk.bytesWritten - before.disk.bytesWritten == UInt64(Self.own) * out.disk.slotBytes)
        #expect(out.disk.storedSlots == UInt64(Self.own))
        #expect(before.blocksUsed - out.blocksUsed == UInt64(Self.own))
        // Memory left: exactly the 4 blocks C owned.
        let fill = Self.memoryBlocks - Int(out.blocksUsed) - Self.own
        let other = tokens(fill * Self.bt, seed: 33)
        try e.createSequence(5, tokens: other)
        try e.swapIn(3)
        #expect(e.stats().blocksUsed == UInt64(Self.memoryBlocks))
        try expectIntact(p)
        #expect(e.stats().disk.bytesRead == UInt64(Self.own) * out.disk.slotBytes, "only the own blocks are read")
    }

    @Test(arguments: layouts)
    func theSharedBlocksOutliveTheSharerWhileTheSequenceIsSwappedOut(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let p = try pair(layout, dir: dir.path)
        let e = p.e
        try e.swapOut(3)
        try e.free(1)
        #expect(e.stats().blocksUsed == UInt64(Self.shared), "the swapped-out sequence keeps the blocks it shared")
        // Every other block taken and given back: the memory of A's own blocks is reused.
        try reuseEveryFreeBlock(e, seed: 34)
        try e.swapIn(3)
        try expectIntact(p, a: false)
        try e.free(3)
        #expect(e.stats().blocksUsed == 0)
    }

    @Test(arguments: layouts)
    func theSharerSwappedOutTooWritesTheSharedBlocksAndBothFreeAllMemory(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let p = try pair(layout, dir: dir.path)
        let e = p.e
        try e.swapOut(3)
        try e.swapOut(1)
        let s = e.stats()
        #expect(s.blocksUsed == 0, "no sequence is resident")
        #expect(s.disk.storedSlots == UInt64(Self.blocksA + Self.own), "each block written once")
        #expect(s.disk.bytesWritten == UInt64(Self.blocksA + Self.own) * s.disk.slotBytes)
        try e.swapIn(3)
        try e.swapIn(1)
        try expectIntact(p)
        try e.free(1)
        try e.free(3)
        #expect(e.stats().blocksUsed == 0)
        #expect(e.offloadSlotAudit.pinned == 0)
    }

    @Test(arguments: layouts)
    func anAsynchronousSwapOutWritesAndFreesOnlyItsOwnBlocks(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let p = try pair(layout, dir: dir.path)
        let e = p.e
        let before = e.stats()
        try e.swapOutAsync(3)
        try e.syncOffload()
        let out = e.stats()
        #expect(out.disk.swapOuts == 1)
        #expect(out.disk.bytesWritten - before.disk.bytesWritten == UInt64(Self.own) * out.disk.slotBytes)
        #expect(before.blocksUsed - out.blocksUsed == UInt64(Self.own))
        try e.swapIn(3)
        try expectIntact(p)
    }

    @Test(arguments: layouts)
    func aTierWithRoomForTheOwnBlocksOnlyAdmitsTheSwapOut(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var probe = offloadConfig(layout, dir: dir.path)
        probe.blockTokens = Self.bt
        let p = try pair(layout, dir: dir.path, offloadBytes: UInt64(Self.own + 2) * tierSlotBytes(probe))
        try p.e.swapOut(3)
        #expect(p.e.stats().disk.storedSlots == UInt64(Self.own))
        try p.e.swapIn(3)
        try expectIntact(p)
    }

    /// A kept block that leaves the prefix index while its sequence is swapped out (the sharer
    /// freed with `computedTokens` below the shared prefix) keeps its bytes for the swap-in,
    /// and freeing everything gives back every block and page (contiguous: a block leaving the
    /// index drops the index's record of its pages).
    @Test(arguments: layouts)
    func aKeptBlockForgottenByTheSharersAbortKeepsItsBytesAndLeaksNothing(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let p = try pair(layout, dir: dir.path)
        let e = p.e
        try e.swapOut(3)
        try e.free(1, computedTokens: 4 * Self.bt)  // blocks 4..<12 of the shared prefix leave the index
        // Every other block taken, written and given back, and the free memory trimmed.
        try reuseEveryFreeBlock(e, seed: 35)
        try expectSwapInIntactAndEverythingReleased(p)
    }

    /// A block an asynchronous swap-out decided to keep leaves the prefix index while the
    /// swap-out is pending (the sharer freed with `computedTokens` 0): the completion still
    /// keeps it, so its bytes must stay for the swap-in. Contiguous, the index's page record was
    /// dropped with the index entry before the completion counted the hold, the completion
    /// released the slot's mapping, and the swap-in copied the kept blocks from groups other
    /// sequences had since taken (the ABI soak, `abi_model 1 10000 219016`, contiguous step
    /// 2324: seq 10's K/V bytes were another sequence's).
    @Test(arguments: layouts)
    func aKeptBlockForgottenWhileItsSwapOutIsPendingKeepsItsBytes(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let p = try pair(layout, dir: dir.path, threads: true)
        let e = p.e
        #expect(e.pauseOffloadIO(true))  // the swap-out stays pending across the abort
        try e.swapOutAsync(3)
        try e.free(1, computedTokens: 0)  // the shared blocks leave the index; C still holds them
        #expect(e.pauseOffloadIO(false))
        try e.syncOffload()
        #expect(e.stats().disk.swapOuts == 1)
        // Every other block taken, written and given back, and the free memory trimmed.
        try reuseEveryFreeBlock(e, seed: 36)
        try expectSwapInIntactAndEverythingReleased(p)
        #expect(e.offloadSlotAudit.pinned == 0)
    }

    /// A swap-out that keeps blocks and then does not complete — cancelled by the swap-in
    /// (`cancelled`) or failed by a write error — gives back what it held for them from its
    /// start (contiguous: the page record and groups, `SwapHolds.reserve`), also when they left
    /// the index meanwhile: the sequence is resident and intact, and freeing everything gives
    /// back every block and page.
    @Test(arguments: layouts, [true, false])
    func aSwapOutThatKeptBlocksAndDidNotCompleteLeaksNothing(layout: Layout, cancelled: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let p = try pair(layout, dir: dir.path, threads: true, fault: cancelled ? nil : OffloadFault(reads: false, writes: true))
        let e = p.e
        #expect(e.pauseOffloadIO(true))
        try e.swapOutAsync(3)
        try e.free(1, computedTokens: 0)  // the shared blocks leave the index; C still holds them
        if cancelled {
            try e.swapIn(3)  // cancels the pending swap-out
            #expect(e.pauseOffloadIO(false))
        } else {
            #expect(e.pauseOffloadIO(false))
            try e.syncOffload()  // its writes fail
            #expect(thrown { () throws(KVError) in try e.swapIn(3) }?.code == .io, "the failure is reported once; C is resident")
        }
        let s = e.stats().disk
        #expect(s.swapOuts == 0 && s.swapOutsPending == 0 && (cancelled ? s.swapOutsCancelled : s.swapOutsFailed) == 1)
        try expectIntact(p, a: false)
        try e.free(3)
        try e.trim()
        #expect(e.stats().blocksUsed == 0)
        #expect(e.stats().committedBytes == 0, "\(e.stats().committedBytes) bytes still committed after freeing everything and trimming")
        #expect(e.offloadSlotAudit.pinned == 0)
    }

    /// Two sharers' swap-outs pending at once: each started while the other was resident, so
    /// both keep the shared blocks and neither writes them (no resident holder is left and none
    /// hands the blocks over). They stay in memory, nothing is lost, and freeing both gives
    /// everything back (kvcache.h, kvc_seq_swap_out).
    @Test(arguments: layouts)
    func twoSharersSwappedOutAtOnceKeepTheSharedBlocksAndLoseNothing(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let p = try pair(layout, dir: dir.path, threads: true)
        let e = p.e
        #expect(e.pauseOffloadIO(true))  // both pending at once
        try e.swapOutAsync(3)
        try e.swapOutAsync(1)
        #expect(e.pauseOffloadIO(false))
        try e.syncOffload()
        let s = e.stats()
        #expect(s.disk.swapOuts == 2)
        #expect(s.blocksUsed == UInt64(Self.shared), "both keep the shared blocks in memory")
        #expect(s.disk.storedSlots == UInt64(Self.blocksA - Self.shared + Self.own), "only the own blocks written")
        try e.swapIn(3)
        try expectIntact(p, a: false)
        try e.free(3)
        try e.free(1)  // still swapped out
        try e.trim()
        #expect(e.stats().blocksUsed == 0)
        #expect(e.stats().committedBytes == 0)
        #expect(e.offloadSlotAudit.pinned == 0)
    }
}
