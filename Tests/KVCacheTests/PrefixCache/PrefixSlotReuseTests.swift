import TestSupport
import Testing
@testable import KVCache

/// A prompt's prefix found on disk must stay on disk until its reads are issued, even when the
/// same create's allocation spills evicted blocks into a full tier.
@Suite("Disk prefix slots during the create's own spills", .serialized)
struct PrefixSlotReuseTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    /// A tier of 32 slots holds prompt A's 20 blocks and 12 others; memory (128 blocks) is full
    /// of cached blocks. Creating A again finds 19 of its blocks on disk and evicts 12 cached
    /// blocks for its own memory; their spills find the tier full and drop its 16 least
    /// recently used slots, then reuse them. Before the found slots were pinned, three of A's
    /// were among those dropped and rewritten with C's blocks, and the create served C's
    /// bytes (from their staging buffers) as A's prefix, reporting it ready.
    @Test(arguments: layouts)
    func theCreatesSpillsDoNotReuseTheDiskSlotsItsPrefixIsReadFrom(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Engine(offloadConfig(layout, dir: dir.path, memoryBytes: 64 << 10, offloadBytes: 32 * 8192))
        let a = tokens(4 * 20, seed: 101), b = tokens(4 * 12, seed: 102), c = tokens(4 * 120, seed: 103)
        for (seq, prompt) in [(UInt64(1), a), (2, b)] {
            try e.createSequence(seq, tokens: prompt)
            try fillKV(e, seq, count: prompt.count) { prompt[$0] }
            try e.free(seq)
            try e.trim()
            try e.syncOffload()
        }
        #expect(e.stats().disk.storedSlots == 32 && e.stats().disk.capacitySlots == 32)
        try e.createSequence(3, tokens: c)
        try fillKV(e, 3, count: c.count) { c[$0] }
        try e.free(3)
        let before = e.stats()
        let hit = try e.createSequence(1, tokens: a)
        let after = e.stats()
        #expect(hit == 76)
        #expect(after.blocksEvicted > before.blocksEvicted && after.disk.slotsEvicted > before.disk.slotsEvicted,
                "the create's spills found the tier full and dropped slots")
        // Paged evicts 12 of C's blocks, contiguous a whole page group (32), C's last first;
        // their spills write C's first blocks ahead (chain order, `OffloadCoordinator.spill`):
        // 13 are written over the dropped slots, then the tier, whose other 19 slots are the
        // pinned prefix, has no slot left: the rest are skipped (dropped as without a tier), a
        // capacity condition, not a device error.
        let spilled = after.disk.blocksSpilled - before.disk.blocksSpilled, skipped = after.disk.spillsSkipped - before.disk.spillsSkipped
        #expect(spilled == 13, "no slot of the prefix was reused")
        #expect(skipped > 0 && skipped < after.blocksEvicted - before.blocksEvicted)
        #expect(after.disk.spillsFailed == before.disk.spillsFailed, "a tier full of held slots is not a disk error")
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 76) { a[$0] } == 0, "the prefix read back is A's")
    }
}
