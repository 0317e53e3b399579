import TestSupport
import Testing
@testable import KVCache

/// Two live sequences decoding the same tokens (greedy duplicates, retried requests): the
/// second's copies are not indexed (the first's hold the hashes), its next distinct block is,
/// under the first's as parent. When the first's copies leave memory the second's take their
/// place in the index, so the chain the second's later blocks hang from stays reachable
/// (the revradix review's `c/dupchain.c`: on the code before, a lookup of the second's content
/// hit 48 of its 96 tokens once the first's blocks were evicted).
@Suite struct DuplicatePromotionTests {
    static let bt = 16

    /// Runs the review's scenario on `layout`: sequences 1 (A) and 2 (B) from one prompt of
    /// two blocks and a token, both append the same two blocks, B two more of its own, A is
    /// freed and its cached blocks dropped (`trim`). Returns the engine and B's tokens.
    static func scenario(_ layout: Layout, disk: String? = nil) throws -> (Engine, [Int32]) {
        var c = smallConfig(layout, memoryBytes: 1 << 20, blockTokens: bt)
        if let disk {
            c.offloadDir = disk
            c.offloadBytes = 16 << 20
            c.modelTag = testModelTag
        }
        let e = try Engine(c)
        let full = (0..<(6 * bt + 1)).map { Int32(100 + $0) }
        try e.createSequence(1, tokens: Array(full[..<(2 * bt + 1)]))
        try e.createSequence(2, tokens: Array(full[..<(2 * bt + 1)]))
        for i in (2 * bt + 1)..<(4 * bt + 1) {
            try e.append(1, tokens: [full[i]])
            try e.append(2, tokens: [full[i]])
        }
        try e.append(2, tokens: Array(full[(4 * bt + 1)...]))
        #expect(e.cachedPrefixTokens(full) == 6 * bt)
        try e.free(1)
        try e.trim()
        return (e, full)
    }

    @Test(arguments: [Layout.paged, .contiguous])
    func aLiveDuplicateKeepsTheChainReachable(_ layout: Layout) throws {
        let (e, full) = try Self.scenario(layout)
        // Old code: 32 (blocks 2 and 3 left the index with A's copies; 4 and 5 unreachable).
        #expect(e.cachedPrefixTokens(full) == 6 * Self.bt)
        #expect(e.blocks.duplicateCount == 0)  // both promoted
    }

    @Test(arguments: [Layout.paged, .contiguous])
    func theEventsStillMirrorTheIndex(_ layout: Layout) throws {
        let (e, _) = try Self.scenario(layout)
        var view = TwoTierView()
        view.apply(drain(e))
        var dump = TwoTierView()
        dump.apply(e.indexEvents())
        #expect(view.memory == dump.memory)
        #expect(view.memory.count == 6)
    }

    /// With a disk tier the evicted copy is not spilled: the duplicate keeps the hash in memory
    /// (old code: spilled, the lookup found 32 of its 96 tokens on disk, memoryTokens 64).
    @Test(arguments: [Layout.paged, .contiguous])
    func aLiveDuplicateServesFromMemoryWithADiskTier(_ layout: Layout) throws {
        let dir = ScratchDir("dupchain")
        defer { dir.remove() }
        let (e, full) = try Self.scenario(layout, disk: dir.path)
        let found = full.withUnsafeBufferPointer { e.cachedPrefixSources($0) }
        #expect(found.memoryTokens == 6 * Self.bt)
        #expect(found.diskTokens == 0)
        var view = TwoTierView(), dump = TwoTierView()
        view.apply(drainAll(e))
        dump.apply(e.indexEvents())
        #expect(view.memory == dump.memory && view.disk == dump.disk)
    }

    /// A duplicate whose bytes a truncation's cut will rewrite is no longer one: A's copy then
    /// leaves the index with its hash (`blockRemoved`), B's cut block does not stand in.
    @Test(arguments: [Layout.paged, .contiguous])
    func aDuplicateCutByATruncationIsNotPromoted(_ layout: Layout) throws {
        let e = try Engine(smallConfig(layout, memoryBytes: 1 << 20, blockTokens: Self.bt))
        let prompt = (0..<(Self.bt + 1)).map { Int32(7 + $0) }
        let more = (0..<(Self.bt + 1)).map { Int32(500 + $0) }
        try e.createSequence(1, tokens: prompt)
        try e.createSequence(2, tokens: prompt)
        try e.append(1, tokens: more)
        try e.append(2, tokens: more)
        #expect(e.blocks.duplicateCount == 1)
        try e.truncate(2, to: Self.bt + 3)  // into B's copy of block 1
        #expect(e.blocks.duplicateCount == 0)
        try e.free(1)
        try e.trim()
        let chain = prompt + more
        #expect(e.cachedPrefixTokens(chain) == Self.bt)
        var view = TwoTierView(), dump = TwoTierView()
        view.apply(drain(e))
        dump.apply(e.indexEvents())
        #expect(view.memory == dump.memory && view.memory.count == 1)
    }

    @Test(arguments: [Layout.paged, .contiguous])
    func aFreedDuplicateLeavesNoRecord(_ layout: Layout) throws {
        let e = try Engine(smallConfig(layout, memoryBytes: 1 << 20, blockTokens: Self.bt))
        let prompt = (0..<(Self.bt + 1)).map { Int32(7 + $0) }
        let more = (0..<Self.bt).map { Int32(500 + $0) }
        try e.createSequence(1, tokens: prompt)
        try e.createSequence(2, tokens: prompt)
        try e.append(1, tokens: more)
        try e.append(2, tokens: more)
        #expect(e.blocks.duplicateCount == 1)
        try e.free(2)  // the duplicate goes first: A's copy stays indexed
        #expect(e.blocks.duplicateCount == 0)
        try e.free(1)
        try e.trim()
        #expect(e.blocks.duplicateCount == 0)
        var view = TwoTierView(), dump = TwoTierView()
        view.apply(drain(e))
        dump.apply(e.indexEvents())
        #expect(view.memory.isEmpty && dump.memory.isEmpty)
    }
}
