import TestSupport
import Testing
@testable import KVCache

/// An allocation that evicts cached blocks spills them only into staging buffers free beyond
/// the reserve, and never waits for one (`DiskTier.spill`): without such a buffer the block is
/// dropped as without a tier and counted in `spillsSkipped`. The thread-pool backend holds
/// every request in flight while paused, so the tests know no buffer frees meanwhile; the
/// order of events and counts are asserted, never a duration.
@Suite("Spills of an allocation", .serialized)
struct AllocationSpillTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    /// The tests' engine: 1 MiB of K/V (2048 blocks of 512 bytes; contiguous, 64 page groups of
    /// 128 tokens) and a disk tier on the thread-pool backend in `dir`, holding sequence 2's
    /// 20 blocks (`onDisk`, trimmed to disk), live sequence 1 (`large`, 1101 blocks) and
    /// `cachedBlocks` cached blocks in memory (sequence 3's, freed); prompts from `seed`,
    /// `seed + 1`, `seed + 2`, every token's K/V written.
    static func engineWithCachedBlocks(_ layout: Layout, dir: ScratchDir, cachedBlocks: Int, seed: Int32) throws
        -> (engine: Engine, large: [Int32], onDisk: [Int32]) {
        var c = offloadConfig(layout, dir: dir.path, memoryBytes: 1 << 20)
        c.offloadForceThreads = true
        c.maxSeqTokens = 8192
        let e = try Engine(c)
        let large = tokens(4 * 1100 + 2, seed: seed), onDisk = tokens(4 * 20, seed: seed + 1)
        let cached = tokens(4 * cachedBlocks, seed: seed + 2)
        try e.createSequence(2, tokens: onDisk)
        try fillKV(e, 2, count: onDisk.count) { onDisk[$0] }
        try e.free(2)
        try e.trim()  // sequence 2's 20 blocks go to disk
        try e.syncOffload()
        try e.createSequence(1, tokens: large)
        try fillKV(e, 1, count: large.count) { large[$0] }
        try e.createSequence(3, tokens: cached)
        try fillKV(e, 3, count: cached.count) { cached[$0] }
        try e.free(3)  // its blocks stay cached in memory
        return (e, large, onDisk)
    }

    /// 1 MiB of K/V (2048 blocks of 512 bytes; contiguous, 64 page groups of 128 tokens):
    /// sequence 1 (1101 blocks) and 832 cached blocks fill most of it, so a 1024-token prompt
    /// evicts cached blocks. Sequence 1's asynchronous swap-out, started with the I/O held,
    /// takes every staging buffer beyond the reserve (896 of 1024). Before, each eviction's
    /// spill took a buffer of the reserve and, the reserve gone, waited for a completion
    /// holding the engine's lock: the create hung until the I/O resumed, and a prompt's prefix
    /// read found no buffer either. Now the create returns with the I/O still held, every
    /// evicted block counted as skipped, the reserve untouched, and a prefix read from disk
    /// issued next gets its buffers at once.
    @Test(arguments: layouts)
    func anAllocationEvictingWhileNoBufferIsFreeBeyondTheReserveSkipsTheSpillsWithoutWaiting(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let (e, large, onDisk) = try Self.engineWithCachedBlocks(layout, dir: dir, cachedBlocks: 832, seed: 90)
        let fresh = tokens(1024, seed: 93)
        #expect(swapOutAsyncWithIOHeld(e, 1), "896 writes held")
        let tier = e.offload!.tier!
        #expect(tier.bulkStages == 0, "no staging buffer free beyond the reserve")
        let before = e.stats()
        #expect(before.blocksCached == 832 && before.disk.storedSlots == 20)
        let order = EventLog()
        let creator = loggedCall("create", order) {
            let missed = try e.createSequence(4, tokens: fresh)
            let hit = try e.createSequence(2, tokens: onDisk)
            #expect(missed == 0 && hit == 76, "19 blocks from disk")
        }
        // A guard against a create that waits for the held writes, not a timing assertion.
        let created = waitUntil(seconds: 10) { !order.events.isEmpty }
        // The creating thread's calls have returned and the held writes free no buffer.
        let during = created ? e.stats() : nil
        let reserveLeft = created ? tier.bulkStages : nil
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        creator.join()
        #expect(order.events == ["create returned", "I/O resumed"], "the allocation did not wait for the device")
        if let during {
            let evicted = during.blocksEvicted - before.blocksEvicted
            #expect(evicted > 0, "the prompts evicted cached blocks")
            #expect(during.disk.spillsSkipped - before.disk.spillsSkipped == evicted, "every eviction's spill was skipped")
            #expect(during.disk.blocksSpilled == before.disk.blocksSpilled && during.disk.spillsFailed == 0)
            #expect(reserveLeft == -19, "the spills took no buffer of the reserve; the 19 prefix reads did")
        }
        #expect(waitUntil {
            e.poll(timeoutMicroseconds: 1000)
            return e.stats().disk.swapOuts == 1
        })
        try e.syncOffload()
        let after = e.stats()
        #expect(after.disk.storedSlots == 20 + 1101, "only sequence 2's and the swap-out's blocks are on disk: nothing skipped was written")
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 76) { onDisk[$0] } == 0)
        try e.free(4)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: large.count) { large[$0] } == 0)
    }

    /// A spill that finds no buffer free beyond the reserve first takes the writes already
    /// completed on the device, without waiting (`DiskTier.reapWrites`), and is written into
    /// the buffers they free; reads completed meanwhile are left for the next call that
    /// processes completions, since processing one writes into memory in the middle of the
    /// allocation. A 1101-block asynchronous swap-out fills the bulk area (896 writes) and a
    /// prompt's 19-block prefix read is issued from the reserve, all with the I/O held; the I/O
    /// then completes every request, and an append (which processes no completions) evicts
    /// cached blocks, writing them and their cached ancestors (74 evicted blocks and 592
    /// ancestors paged, 128 and 672, the whole chain, contiguous). Before, every eviction was
    /// skipped (the completions sat unreaped).
    @Test(arguments: layouts)
    func aSpillTakesTheBuffersOfWritesAlreadyCompletedAndLeavesReadsForLater(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let (e, large, onDisk) = try Self.engineWithCachedBlocks(layout, dir: dir, cachedBlocks: 800, seed: 95)
        try e.createSequence(4, tokens: [7])
        #expect(swapOutAsyncWithIOHeld(e, 1), "896 writes held")
        #expect(try e.createSequence(2, tokens: onDisk) == 76, "19 blocks read from disk, held")
        let tier = e.offload!.tier!
        #expect(tier.bulkStages == -19, "no buffer beyond the reserve, 19 of the reserve reading")
        #expect(e.pauseOffloadIO(false))
        // A guard against a hang, not a timing assertion: every request completes on the device.
        #expect(waitUntil(seconds: 20) { tier.readyCompletions == tier.inflight })
        let before = e.stats()
        try e.append(4, tokens: tokens(4 * 200, seed: 98))
        let after = e.stats()
        let evicted = after.blocksEvicted - before.blocksEvicted
        #expect(evicted > 0, "the append evicted cached blocks")
        #expect(after.disk.spillsSkipped == before.disk.spillsSkipped, "no spill skipped")
        // Sequence 3's 800 cached blocks are one chain, evicted last first: each eviction writes
        // the 8 oldest of its ancestors not on disk yet and then itself (chain order).
        let written = after.disk.blocksSpilled - before.disk.blocksSpilled
        #expect(written == min(evicted * UInt64(1 + OffloadCoordinator.ancestorsPerSpill), 800), "every evicted block written, ancestors first")
        #expect(after.disk.swapOuts == 0 && after.disk.blocksLoaded == before.disk.blocksLoaded, "the append processed no read and settled nothing")
        #expect(!e.offload!.resident(try e.slot(2)), "sequence 2's reads completed on the device but were not processed")
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 76) { onDisk[$0] } == 0)
        #expect(waitUntil {
            e.poll(timeoutMicroseconds: 1000)
            return e.stats().disk.swapOuts == 1
        })
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: large.count) { large[$0] } == 0)
    }

    /// An allocation short of staging buffers spends them on a chain's first blocks, not its
    /// last (`OffloadCoordinator.spill`). A 40-block prompt is freed (its blocks join the LRU
    /// last first, so its last block is evicted first); an 891-block asynchronous swap-out,
    /// started with the I/O held, leaves 5 buffers beyond the reserve; appends then evict all
    /// 40 blocks. Before, the 5 evicted first, the prompt's blocks 35-39, were written and the
    /// other 35 skipped: the disk copies were unreachable (a lookup stops at block 0, found
    /// nowhere) and the prompt hit nothing. Now the first eviction writes blocks 0-4 ahead
    /// (still cached, then evicted clean), the same 35 are skipped, and the prompt hits its
    /// first 5 blocks on disk, every byte right.
    @Test(arguments: layouts)
    func anAllocationShortOfBuffersSpillsAChainsFirstBlocksNotItsLast(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path, memoryBytes: 1 << 20)
        c.offloadForceThreads = true
        c.maxSeqTokens = 8192
        let e = try Engine(c)
        let tier = e.offload!.tier!
        let chain = tokens(4 * 40, seed: 120), large = tokens(4 * (tier.bulkStages - 5), seed: 121)
        try e.createSequence(3, tokens: chain)
        try fillKV(e, 3, count: chain.count) { chain[$0] }
        try e.free(3)
        try e.createSequence(1, tokens: large)
        try fillKV(e, 1, count: large.count) { large[$0] }
        try e.createSequence(4, tokens: [7])
        #expect(swapOutAsyncWithIOHeld(e, 1), "891 writes held")
        #expect(tier.bulkStages == 5)
        let before = e.stats()
        #expect(before.blocksCached == 40 && before.disk.storedSlots == 0)
        let block = tokens(4, seed: 122)
        var appends = 0
        while e.stats().blocksCached > 0 && appends < 2000 {  // a block at a time, until memory is full
            try e.append(4, tokens: block)
            appends += 1
        }
        let after = e.stats()
        #expect(after.blocksEvicted - before.blocksEvicted == 40, "every cached block evicted")
        #expect(after.disk.blocksSpilled - before.disk.blocksSpilled == 5 && after.disk.spillsSkipped - before.disk.spillsSkipped == 35)
        #expect(e.cachedPrefixTokens(chain) == 4 * 5, "blocks 0-4 on disk; before, blocks 35-39, unreachable")
        #expect(e.pauseOffloadIO(false))
        #expect(waitUntil {
            e.poll(timeoutMicroseconds: 1000)
            return e.stats().disk.swapOuts == 1
        })
        try e.free(4)
        #expect(try e.createSequence(5, tokens: chain) == 4 * 5)
        try waitReady(e, 5)
        #expect(try kvDifferences(e, 5, count: 4 * 5) { chain[$0] } == 0)
    }
}
