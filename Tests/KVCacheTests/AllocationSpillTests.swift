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
        var c = offloadConfig(layout, dir: dir.path, memoryBytes: 1 << 20)
        c.offloadForceThreads = true
        c.maxSeqTokens = 8192
        let e = try Engine(c)
        let large = tokens(4 * 1100 + 2, seed: 90), onDisk = tokens(4 * 20, seed: 91)
        let cached = tokens(4 * 832, seed: 92), fresh = tokens(1024, seed: 93)
        try e.createSequence(2, tokens: onDisk)
        try fillKV(e, 2, count: onDisk.count) { onDisk[$0] }
        try e.free(2)
        try e.trim()  // sequence 2's 20 blocks go to disk
        try e.syncOffload()
        try e.createSequence(1, tokens: large)
        try fillKV(e, 1, count: large.count) { large[$0] }
        try e.createSequence(3, tokens: cached)
        try fillKV(e, 3, count: cached.count) { cached[$0] }
        try e.free(3)  // its 832 blocks stay cached in memory
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
}
