import Benchmark
import KVCache

/// (5) One decode step of token eviction on a 32k-token sequence with 32 layers x 8 KV heads:
/// `Engine decode-step-scores` is `Engine.observe` for every layer (8 x 32768 attention
/// scores each) plus `Engine.compact` (H2O, per layer, back to 32767 tokens: the steady
/// state, one token evicted per layer and step); `Baseline decode-step-scores` is a plain
/// pass that only sums the same scores into one accumulator per layer (all heads of a token
/// summed, then added once: one read of the scores, one read-modify-write of the sums), the least any
/// accumulating policy must do. The step's `append` is outside the measured interval.
/// `decode-step-norm` is the same pair with H2O's normalised sums (`normalizedScores`).
/// Shape: head_dim 8, fp16 (128-byte tokens, 256 MiB of K/V); compaction moves at most the
/// evicted count of tokens per layer, so the K/V size barely matters.
/// Target: engine / baseline <= 2 for each score mode (tools/bench_ratio.sh).
func registerCompactionBenchmarks() {
    let configuration = oneOperationPerMeasurement

    for (name, fixture) in [("decode-step-scores", { CompactionFixture.raw }), ("decode-step-norm", { CompactionFixture.normalized })] {
        Benchmark("Engine \(name)", configuration: configuration) { benchmark in
            let f = fixture()
            do throws(KVError) {
                var token: Int32 = 1
                try withUnsafePointer(to: &token) { (p) throws(KVError) in try f.engine.append(1, tokens: UnsafeBufferPointer(start: p, count: 1)) }
                benchmark.startMeasurement()
                for layer in 0..<CompactionFixture.layers {
                    try f.engine.observe(1, layer: layer, scores: f.scores + layer * f.rowFloats, nHeads: CompactionFixture.heads,
                                         nTokens: CompactionFixture.tokens)
                }
                try f.engine.compact(1, budgetTokens: CompactionFixture.tokens - 1)
                benchmark.stopMeasurement()
            } catch {
                benchmark.error("observe/compact failed: \(error)")
            }
        }

        Benchmark("Baseline \(name)", configuration: configuration) { benchmark in
            let f = fixture()
            benchmark.startMeasurement()
            let n = CompactionFixture.tokens
            for layer in 0..<CompactionFixture.layers {  // one pass per layer: every head's score of a token, added once
                let acc = f.baselineSums + layer * n
                let rows = f.scores + layer * f.rowFloats
                for t in 0..<n {
                    var s: Float = 0
                    for h in 0..<CompactionFixture.heads { s += rows[h * n + t] }
                    acc[t] += s
                }
            }
            blackHole(f.baselineSums[n / 2])
            benchmark.stopMeasurement()
        }
    }
}

/// The engine with one 32767-token H2O sequence and 32 layers of random scores, built once.
final class CompactionFixture: @unchecked Sendable {
    static let layers = 32, heads = 8, tokens = 32768
    /// H2O with raw sums (the default), and with normalised sums; each built on first use.
    nonisolated(unsafe) static let raw = CompactionFixture(normalized: false)
    nonisolated(unsafe) static let normalized = CompactionFixture(normalized: true)

    let engine: Engine
    let rowFloats = heads * tokens
    /// `[layer][head][token]` probabilities (each head's row sums to 1).
    let scores: UnsafeMutablePointer<Float>
    let baselineSums: UnsafeMutablePointer<Float>

    private init(normalized: Bool) {
        var config = EngineConfig()
        config.numLayers = Self.layers
        config.numKVHeads = Self.heads
        config.headDim = 8
        config.maxSeqs = 4
        config.maxSeqTokens = Self.tokens
        config.memoryBytes = 512 << 20
        config.layout = .contiguous
        config.eviction = EvictionConfig(.heavyHitter)
        config.eviction.normalizedScores = normalized
        engine = makeEngine(config)
        scores = .allocate(capacity: Self.layers * Self.heads * Self.tokens)
        baselineSums = .allocate(capacity: Self.layers * Self.tokens)
        baselineSums.initialize(repeating: 0, count: Self.layers * Self.tokens)
        var rng = SplitMix64(seed: 42)
        for r in 0..<(Self.layers * Self.heads) {
            var sum: Float = 0
            for t in 0..<Self.tokens {
                let v = Float(rng.next() >> 40) / Float(1 << 24)
                scores[r * Self.tokens + t] = v * v * v
                sum += v * v * v
            }
            for t in 0..<Self.tokens { scores[r * Self.tokens + t] /= sum }
        }
        let prompt = [Int32](repeating: 3, count: Self.tokens - 1)
        do { try engine.createSequence(1, tokens: prompt) } catch { fatalError("cannot create the benchmark sequence: \(error)") }
    }
}
