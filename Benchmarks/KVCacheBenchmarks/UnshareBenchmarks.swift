import Benchmark
import KVCache

/// (6) A compaction that must copy every page it writes because another sequence maps them
/// (`ContiguousMemory.unshare`): `Engine unshare` is one `Engine.compact` of a freshly
/// prefilled 2056-token H2O sequence, forked once (the fork maps its whole pages shared), that
/// evicts one token in each of its first `UnshareFixture.pages` pages (moving 4 tokens of the
/// last page into the holes), so it copies exactly those pages, every one of the 64 tensors
/// (32 layers x K/V, 64 KiB pages: 16 MiB in all), into fresh page groups. (Until 2026-11-22
/// the fixture had no fork: the prefix index's hold on the pages, through the sequence's own
/// indexed blocks, forced the copy too; a page only the sequence and its own unwritten indexed
/// blocks hold is now written in place, `ContiguousMemory.isHeldElsewhere`.)
/// `Baseline unshare` is one `memcpy` of the same 16 MiB between two buffers whose pages are
/// already resident: the least any copy of those bytes costs. One operation = one compaction
/// (one copy), `scalingFactor` `.one`.
/// Outside the measured interval, each iteration drops the cache and releases free pages
/// (`Engine.trim`), creates the sequence (fresh pages, indexed), writes its K/V through
/// `Engine.kv` (the prefill, which faults the pages in), observes scores that make H2O evict
/// the tokens above, forks it (and trims again: the fork's copy of the boundary page
/// committed a batch of groups), and frees both afterwards; so every measured copy reads
/// resident pages into groups that nothing has committed or touched yet, as after a real
/// prefill.
/// Shape: 32 layers, 1 KV head of 64 fp16 (128-byte tokens, 512 tokens per page).
func registerUnshareBenchmarks() {
    let configuration = oneOperationPerMeasurement

    Benchmark("Engine unshare", configuration: configuration) { benchmark in
        let f = UnshareFixture.shared
        do throws(KVError) {
            try f.prefill()
            benchmark.startMeasurement()
            try f.engine.compact(1, budgetTokens: UnshareFixture.tokens - UnshareFixture.evicted)
            benchmark.stopMeasurement()
            try f.engine.free(1)
            try f.engine.free(2)
        } catch {
            benchmark.error("prefill/compact failed: \(error)")
        }
    }

    Benchmark("Baseline unshare", configuration: configuration) { benchmark in
        let f = UnshareFixture.shared
        benchmark.startMeasurement()
        f.copyTo.copyMemory(from: f.copyFrom, byteCount: UnshareFixture.copiedBytes)
        blackHole(f.copyTo.load(fromByteOffset: UnshareFixture.copiedBytes / 2, as: UInt8.self))
        benchmark.stopMeasurement()
    }
}

/// The contiguous H2O engine, the prompt and scores of `Engine unshare`, and the two resident
/// buffers of `Baseline unshare`, built once.
final class UnshareFixture: @unchecked Sendable {
    static let layers = 32, pageBytes = 64 << 10, tokenBytes = 128
    /// Pages the compaction copies; each holds one evicted token.
    static let pages = 4
    static let tokensPerPage = pageBytes / tokenBytes
    /// Tokens evicted: one per copied page.
    static let evicted = pages
    /// The copied pages plus a last page of fewer tokens than a block (not indexed, so written
    /// without a copy) that keeps some after the compaction (so nothing is unmapped or trimmed).
    static let tokens = pages * tokensPerPage + 2 * evicted
    /// Bytes of the copied pages over every tensor.
    static let copiedBytes = pages * pageBytes * 2 * layers
    static let shared = UnshareFixture()

    let engine: Engine
    let prompt: [Int32]
    /// One layer's scores for H2O (one head): 1 everywhere but 0 at one token in each of the
    /// first `pages` pages (the evicted ones), mid-page.
    let scores: [Float]
    let copyFrom: UnsafeMutableRawPointer
    let copyTo: UnsafeMutableRawPointer

    private init() {
        var config = EngineConfig()
        config.numLayers = Self.layers
        config.numKVHeads = 1
        config.headDim = Self.tokenBytes / 2
        config.maxSeqs = 4
        config.maxSeqTokens = 4 * Self.tokens
        config.memoryBytes = 128 << 20
        config.pageBytes = UInt64(Self.pageBytes)
        config.layout = .contiguous
        config.eviction = EvictionConfig(.heavyHitter)
        config.eviction.recentTokens = 1
        engine = makeEngine(config)
        prompt = KVCacheBenchmarks.prompt(Self.tokens, seed: 6)
        var s = [Float](repeating: 1, count: Self.tokens)
        for p in 0..<Self.pages { s[p * Self.tokensPerPage + Self.tokensPerPage / 2] = 0 }
        scores = s
        copyFrom = .allocate(byteCount: Self.copiedBytes, alignment: 4096)
        copyTo = .allocate(byteCount: Self.copiedBytes, alignment: 4096)
        copyFrom.initializeMemory(as: UInt8.self, repeating: 1, count: Self.copiedBytes)
        copyTo.initializeMemory(as: UInt8.self, repeating: 2, count: Self.copiedBytes)
    }

    /// Sequence 1 freshly prefilled and indexed, with the scores observed, and its fork 2
    /// (see the benchmark).
    func prefill() throws(KVError) {
        try engine.trim()
        try engine.createSequence(1, tokens: prompt)
        for layer in 0..<Self.layers {
            let (k, v) = try engine.kv(1, layer: layer)
            k.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: layer), count: Self.tokens * Self.tokenBytes)
            v.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: ~layer), count: Self.tokens * Self.tokenBytes)
            try scores.withUnsafeBufferPointer { (p) throws(KVError) in
                try engine.observe(1, layer: layer, scores: p.baseAddress!, nHeads: 1, nTokens: Self.tokens)
            }
        }
        try engine.fork(parent: 1, child: 2)
        try engine.trim()  // the rest of the commit batch the fork's boundary page took
    }
}
