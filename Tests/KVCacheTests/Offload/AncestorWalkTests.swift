import TestSupport
import Testing
@testable import KVCache

/// The walk up a chain for the cached ancestors the disk tier lacks
/// (`OffloadCoordinator.missingAncestors`), which an allocation's eviction and each writeback
/// round take before writing a block, costs O(chain) in all for a freed chain, not O(chain)
/// per eviction. Counts are asserted (`ancestorsExamined`), never a duration.
@Suite("Disk tier: the ancestor walk of spills", .serialized)
struct AncestorWalkTests {
    /// Cached blocks of the freed chain.
    static let chain = 1500

    /// 1 MiB of paged K/V (2048 blocks of 4 tokens) and a disk tier: a freed 6001-token prompt
    /// leaves one chain of 1500 cached blocks, a filler takes the free blocks, and a sequence
    /// grown one block per append then evicts one cached block per append, the chain's last
    /// first (the order a free caches them in), each eviction writing its block's oldest
    /// missing ancestors first. With writeback on, the thread writes the whole chain ahead
    /// first. Before, every eviction (and every writeback round) walked all the ancestors
    /// still missing and wrote only the oldest 8: about 1500^2/18 lookups (125,584
    /// counted, 141,188 with writeback). Now a walk resumes where the last one on the chain
    /// stopped: at most `ancestorsPerSpill + 4` per block. Every block still reaches the
    /// disk, reachable: the prompt comes back from disk byte for byte.
    @Test(arguments: [false, true])
    func evictingAFreedChainTailFirstWalksEachAncestorAboutOnce(writeback: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(.paged, dir: dir.path, memoryBytes: 1 << 20)
        c.maxSeqTokens = 8192
        c.offloadWriteback = writeback
        let e = try Engine(c)
        let prompt = tokens(4 * Self.chain + 1, seed: 61)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        try e.free(1)
        if writeback {
            #expect(waitUntil { e.stats().disk.blocksWrittenAhead == UInt64(Self.chain) }, "got \(e.stats().disk.blocksWrittenAhead)")
        }
        let cached = e.stats()
        #expect(cached.blocksCached == UInt64(Self.chain))
        let free = cached.blocksTotal - cached.blocksUsed - cached.blocksCached
        try e.createSequence(3, tokens: tokens(4 * Int(free), seed: 62))
        #expect(e.stats().blocksCached == UInt64(Self.chain), "the filler took only free blocks")
        let grown = tokens(4 * Self.chain, seed: 63)
        try e.createSequence(2, tokens: Array(grown[0..<4]))
        var appended = 4
        while e.stats().blocksCached > 0 {
            try e.append(2, tokens: Array(grown[appended..<appended + 4]))
            appended += 4
            e.poll(timeoutMicroseconds: 1000)
        }
        try e.syncOffload()
        let evicted = e.stats()
        #expect(evicted.blocksEvicted == UInt64(Self.chain))
        #expect(evicted.disk.blocksSpilled == UInt64(Self.chain) && evicted.disk.spillsSkipped == 0, "every block written once")
        let examined = try e.locked { () throws(KVError) in e.offload!.ancestorsExamined }
        let bound = UInt64((OffloadCoordinator.ancestorsPerSpill + 4) * Self.chain)
        #expect(examined <= bound, "ancestors examined: \(examined), bound \(bound)")

        try e.free(2)
        try e.free(3)
        #expect(try e.createSequence(4, tokens: prompt) == 4 * Self.chain, "the whole chain from disk")
        try waitReady(e, 4)
        #expect(try kvDifferences(e, 4, count: 4 * Self.chain) { prompt[$0] } == 0)
    }
}
