import Testing
@testable import KVCache

/// `makeWritable` (a compaction's, a compacted truncation's, an adaptive-budget append's)
/// copies shared blocks and pages and takes blocks out of the prefix index; a commit or
/// mapping that fails part-way used to leave the copies made and the blocks unindexed, with
/// their events sent (found by helper-119). Every step that can fail now runs before the first
/// change, so each k-th commit (or mapping) failing leaves the engine as it was
/// (`failureSweep`), committed bytes included (`Engine.giveBackCommitted`).
@Suite(.serialized) struct MakeWritableFailureTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    private func engine(_ layout: Layout, adaptive: Bool = false) throws -> Engine {
        var c = smallConfig(layout, memoryBytes: 4 << 20)
        c.eviction = EvictionConfig(.heavyHitter)
        c.eviction.adaptiveBudgets = adaptive
        return try Engine(c)
    }

    /// Sequence 2 forks 1 (2000 tokens) and is compacted to 1500: every written shared block
    /// (paged) or page (contiguous) is copied.
    @Test(arguments: layouts)
    func aCompactionOfAForkChangesNothingWhenACopyFails(layout: Layout) throws {
        let p = tokens(2000, seed: 1)
        let problems = try failureSweep("compact fork \(layout)", setup: {
            let e = try engine(layout)
            try e.createSequence(1, tokens: p)
            try writeKV(e, 1, tokens: p, from: 0)
            try e.fork(parent: 1, child: 2)
            try observeAll(e, 2, scores(e, n: 2000, heavy: Set(1000..<2000)), n: 2000)
            return SweepSetup(engine: e, sequences: [1, 2], prompts: [p])
        }, op: { e in try e.compact(2, budgetTokens: 1500) })
        #expect(problems.isEmpty, "\(problems)")
    }

    /// Paged: sequence 1's first 250 blocks are its own and indexed, its next 250 shared with
    /// sequence 3 (created from their hashes). Compacting 1 unindexes its own written blocks
    /// (sending `blockRemoved`) and copies the shared ones: the unindexing used to come first.
    @Test func aCompactionThatUnindexesAndCopiesChangesNothingWhenACopyFails() throws {
        let p = tokens(2000, seed: 1)
        let problems = try failureSweep("compact unindex paged", setup: {
            let e = try engine(.paged)
            try e.createSequence(1, tokens: p)
            try writeKV(e, 1, tokens: p, from: 0)
            var h = [UInt64](repeating: 0, count: 500)
            _ = p.withUnsafeBufferPointer { b in h.withUnsafeMutableBufferPointer { BlockHash.chain(b, blockTokens: 4, salt: 0, into: $0) } }
            let hit = try Array(h[250..<500]).withUnsafeBufferPointer { try e.createSequence(3, blockHashes: $0, tokens: 1001) }
            #expect(hit == 1000)
            try observeAll(e, 1, scores(e, n: 2000, heavy: Set(stride(from: 0, to: 2000, by: 3))), n: 2000)
            return SweepSetup(engine: e, sequences: [1, 3], prompts: [p])
        }, op: { e in try e.compact(1, budgetTokens: 1200) })
        #expect(problems.isEmpty, "\(problems)")
    }

    /// Sequence 1 was created over a cached prompt (its first blocks exclusive and indexed; in
    /// the contiguous layout its pages map the cache's groups, which sequence 3 maps too) and is
    /// compacted: blocks leave the index and, contiguous, pages are copied.
    @Test(arguments: layouts)
    func aCompactionOverACachedPrefixChangesNothingWhenACopyFails(layout: Layout) throws {
        let p = tokens(1000, seed: 1), all = p + tokens(1000, seed: 2)
        let problems = try failureSweep("compact cached \(layout)", setup: {
            let e = try engine(layout)
            try e.createSequence(9, tokens: p + [5])
            try writeKV(e, 9, tokens: p, from: 0)
            try e.free(9)
            try e.createSequence(1, tokens: all)
            try writeKV(e, 1, tokens: all, from: 0)
            try e.createSequence(3, tokens: p + [7])
            try observeAll(e, 1, scores(e, n: 2000, heavy: Set(stride(from: 0, to: 2000, by: 3))), n: 2000)
            return SweepSetup(engine: e, sequences: [1, 3], prompts: [p, all])
        }, op: { e in try e.compact(1, budgetTokens: 1200) })
        #expect(problems.isEmpty, "\(problems)")
    }

    /// Contiguous: the k-th mapping of a fork's compaction fails (the page copies' `mmap`s).
    @Test func aCompactionChangesNothingWhenAPageCopysMappingFails() throws {
        let p = tokens(1000, seed: 1)
        let problems = try failureSweep("compact fork mmap", mmaps: true, setup: {
            let e = try engine(.contiguous)
            try e.createSequence(1, tokens: p)
            try writeKV(e, 1, tokens: p, from: 0)
            try e.fork(parent: 1, child: 2)
            try observeAll(e, 2, scores(e, n: 1000, heavy: Set(stride(from: 0, to: 1000, by: 3))), n: 1000)
            return SweepSetup(engine: e, sequences: [1, 2], prompts: [p])
        }, op: { e in try e.compact(2, budgetTokens: 600) })
        #expect(problems.isEmpty, "\(problems)")
    }

    /// With adaptive budgets a layer ends shorter than the sequence, so an append writes into
    /// blocks (pages) below its length that a fork shares: they are made the sequence's own
    /// first. When the append's own allocation then failed, those copies stayed.
    @Test(arguments: layouts)
    func anAppendAfterAnAdaptiveCompactionChangesNothingWhenItsAllocationFails(layout: Layout) throws {
        let p = tokens(2000, seed: 1)
        let problems = try failureSweep("append adaptive \(layout)", setup: {
            let e = try engine(layout, adaptive: true)
            try e.createSequence(1, tokens: p)
            try writeKV(e, 1, tokens: p, from: 0)
            try [Float(1), 4].withUnsafeBufferPointer { try e.setLayerSensitivity(1, $0) }
            try observeAll(e, 1, scores(e, n: 2000, heavy: Set(stride(from: 0, to: 2000, by: 3))), n: 2000)
            try e.compact(1, budgetTokens: 1000)
            try e.fork(parent: 1, child: 2)
            #expect(try e.layerLength(2, layer: 0) < e.length(2), "a short layer")
            return SweepSetup(engine: e, sequences: [1, 2], prompts: [p])
        }, op: { e in try e.append(2, tokens: tokens(2000, seed: 5)) })
        #expect(problems.isEmpty, "\(problems)")
    }
}
