import Benchmark
import KVCache

/// Speculative decoding's rollback: one operation is one round of a decode loop that appends
/// `drafts` draft tokens and truncates back to the `accepted` the target model kept
/// (`Engine.truncate`), against the same engine appending only the accepted tokens (the work
/// without a rollback), each round one append call. Blocks of 16 tokens, so rounds cross
/// block (and, contiguous, page) boundaries as a server's do; each measurement starts a fresh
/// sequence and runs 1000 rounds (it grows by 3000 tokens). Each measurement's engine is new,
/// so the memory the rounds reach is reserved (`Engine.reserve`) before they start: a paged
/// engine faults in each page group the first time it takes one (`PagedMemory.prefaultFresh`),
/// once per group in an engine's life, which took 84% of the paged append's samples and ~290
/// of its ~350 ns per round, while the contiguous layout leaves those faults to the server's
/// first K/V writes (none here); a server in steady state reuses its groups. The target adds
/// the bytes committed already: `reserve` counts them toward its target.
/// - `spec-decode`: paged, no eviction state.
/// - `spec-decode-contiguous`: the contiguous layout.
/// - `spec-decode-compacted`: paged, a sequence with H2O eviction state compacted from 1024
///   to 512 tokens before the rounds (the cut lies past every compacted token: nothing moves).
/// Judged by nothing: `tools/bench_ratio.sh` reports the engine/baseline ratio of each (INFO).
func registerSpecDecodeBenchmarks() {
    let drafts = 8, accepted = 3
    let draftTokens = prompt(drafts, seed: 5)
    for (name, layout, compacted) in [("spec-decode", Layout.paged, false), ("spec-decode-contiguous", .contiguous, false),
                                      ("spec-decode-compacted", .paged, true)] {
        var config = smallEngineConfig(blockTokens: 16)
        config.layout = layout
        if compacted { config.eviction = EvictionConfig(.heavyHitter) }
        let start = prompt(compacted ? 1024 : 16, seed: 4)

        /// A fresh sequence 1 (compacted to 512 tokens when asked), then `round` 1000 times.
        func measure(_ benchmark: Benchmark, _ round: (Engine, Int) throws(KVError) -> Void) {
            let engine = makeEngine(config)
            do throws(KVError) {
                try engine.createSequence(1, tokens: start)
                if compacted { try engine.compact(1, budgetTokens: 512) }  // it trims: reserve after it
                let reach = start.count + benchmark.scaledIterations.count * accepted + drafts + config.blockTokens
                _ = try engine.reserve(bytes: engine.stats().committedBytes + UInt64(reach * config.tokenBytes * config.tensors))
                var position = start.count
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    try round(engine, position)
                    position += accepted
                }
                benchmark.stopMeasurement()
                try engine.free(1)
            } catch {
                benchmark.error("\(name) failed: \(error)")
            }
        }

        Benchmark("Engine \(name)") { benchmark in
            measure(benchmark) { (engine, position) throws(KVError) in
                try draftTokens.withUnsafeBufferPointer { (t) throws(KVError) in try engine.append(1, tokens: t) }
                try engine.truncate(1, to: position + accepted)
            }
        }

        Benchmark("Baseline \(name)") { benchmark in
            measure(benchmark) { (engine, _) throws(KVError) in
                try draftTokens.withUnsafeBufferPointer { (t) throws(KVError) in
                    try engine.append(1, tokens: UnsafeBufferPointer(rebasing: t[0..<accepted]))
                }
            }
        }
    }
}
