import Benchmark
import KVCache

/// (4) Fork of a 2048-token sequence (128 blocks of 16) and free of the child:
/// `Engine.fork` + `Engine.free` against copying the baseline's Array block table and bumping
/// each block's count in its Dictionary (then releasing them). One operation = fork + free.
func registerForkBenchmarks() {
    let tokens = prompt(2048, seed: 2)

    Benchmark("Engine fork+free") { benchmark in
        let engine = makeEngine(smallEngineConfig(blockTokens: 16))
        do throws(KVError) {
            try engine.createSequence(1, tokens: tokens)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                try engine.fork(parent: 1, child: 2)
                try engine.free(2)
            }
            benchmark.stopMeasurement()
        } catch {
            benchmark.error("fork failed: \(error)")
        }
    }

    Benchmark("Baseline fork+free") { benchmark in
        let manager = BaselineBlockManager(capacity: 1024, blockTokens: 16)
        _ = tokens.withUnsafeBufferPointer { manager.createSequence(1, tokens: $0) }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            guard manager.fork(parent: 1, child: 2), manager.free(2) else {
                benchmark.error("baseline fork failed")
                return
            }
        }
        benchmark.stopMeasurement()
    }
}
