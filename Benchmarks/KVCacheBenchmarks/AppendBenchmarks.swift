import Benchmark
import KVCache

/// (2) Appending one token to a sequence when no new block (or page) is needed: blocks of
/// 2048 tokens, and each measurement appends 1000 tokens to a fresh 1-token sequence, so
/// no append crosses a block boundary. `Engine.append` against the baseline's
/// Dictionary<UInt64, Sequence> lookup and in-place Array/length update.
/// Target: under 200 ns per appended token.
func registerAppendBenchmarks() {
    let blockTokens = 2048
    precondition(operationsPerMeasurement.rawValue + 1 <= blockTokens)
    let first: [Int32] = [1]

    Benchmark("Engine append") { benchmark in
        let engine = makeEngine(smallEngineConfig(blockTokens: blockTokens))
        var token: Int32 = 7
        do throws(KVError) {
            try engine.createSequence(1, tokens: first)
            benchmark.startMeasurement()
            for i in benchmark.scaledIterations {
                token = Int32(truncatingIfNeeded: i)
                try withUnsafePointer(to: &token) { (p) throws(KVError) in
                    try engine.append(1, tokens: UnsafeBufferPointer(start: p, count: 1))
                }
            }
            benchmark.stopMeasurement()
            try engine.free(1)
        } catch {
            benchmark.error("append failed: \(error)")
        }
    }

    Benchmark("Baseline append") { benchmark in
        let manager = BaselineBlockManager(capacity: 64, blockTokens: blockTokens)
        _ = first.withUnsafeBufferPointer { manager.createSequence(1, tokens: $0) }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(manager.appendToken(1))
        }
        benchmark.stopMeasurement()
        manager.free(1)
    }
}
