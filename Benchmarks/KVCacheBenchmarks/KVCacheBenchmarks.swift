import Benchmark
import KVCache

/// Every benchmark pairs an engine operation with the same operation on
/// `BaselineBlockManager`, in the same run and with the same configuration, named
/// `Engine <operation>` and `Baseline <operation>`; `tools/bench_ratio.sh` divides them. Where
/// vLLM v1's algorithm applies (`VLLMBlockPool`: allocate+free, prefix lookup, trace-replay),
/// a third benchmark `VLLM <operation>` runs it, and the table adds engine/vLLM. A variant of
/// the pool, `VLLM sha256 prefix lookup` (blocks named by vLLM's default SHA-256), is a row of
/// its own in the table, against the same engine benchmark.
///
/// Each measurement runs `operationsPerMeasurement` operations (`scaledIterations`), so the
/// wall-clock time of one measurement in microseconds equals nanoseconds per operation.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 10,
        scalingFactor: operationsPerMeasurement,
        maxDuration: .seconds(2),
        maxIterations: 100_000
    )
    registerBlockAllocationBenchmarks()
    registerAppendBenchmarks()
    registerPrefixLookupBenchmarks()
    registerForkBenchmarks()
    registerCompactionBenchmarks()
    registerUnshareBenchmarks()
    registerSpecDecodeBenchmarks()
    registerIndexDumpBenchmarks()
    registerTraceReplayBenchmarks()
}

/// Operations per measurement (see above).
var operationsPerMeasurement: BenchmarkScalingFactor { .kilo }

/// The configuration of benchmarks whose one operation is long (a decode step, a page copy):
/// one operation per measurement (`tools/bench_ratio.sh` lists them in `OPS_OVERRIDES`), at
/// most 200 of them in 5 s.
var oneOperationPerMeasurement: Benchmark.Configuration {
    Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 3,
        scalingFactor: .one,
        maxDuration: .seconds(5),
        maxIterations: 200
    )
}

/// A small model shape so that the engines' memory stays a few MiB: one token of one tensor
/// is 128 bytes. Only metadata paths are measured, which do not depend on the shape.
func smallEngineConfig(blockTokens: Int) -> EngineConfig {
    var config = EngineConfig()
    config.numLayers = 2
    config.numKVHeads = 1
    config.headDim = 64
    config.blockTokens = blockTokens
    config.maxSeqs = 64
    config.maxSeqTokens = 8192
    config.memoryBytes = 64 << 20
    config.pageBytes = 64 << 10
    return config
}

/// A deterministic prompt of `count` tokens.
func prompt(_ count: Int, seed: Int32 = 1) -> [Int32] {
    (0..<Int32(count)).map { ($0 &* 7919 &+ seed &* 104_729) % 128_000 }
}

/// Creates an engine or stops the benchmark run with the reason.
func makeEngine(_ config: EngineConfig) -> Engine {
    do {
        return try Engine(config)
    } catch {
        fatalError("cannot create the benchmark engine: \(error)")
    }
}
