import Benchmark
import Foundation
import KVCache

/// (7) The bundled Mooncake trace replayed at block level (`TraceReplay`: 8192 blocks of 512
/// tokens, 16 live requests, outputs capped at 64 tokens) through a metadata-only engine and
/// through `VLLMBlockPool`, vLLM v1's algorithm. One operation = one request: free the oldest
/// live one, create (prefix lookup + allocation, evicting as needed), append its output one
/// token at a time. Each benchmark keeps its target and its place in the trace across
/// measurements (cycling through the trace), so every measurement runs on a full, evicting
/// cache. Before any measurement, `replayCheck` must pass.
///
/// Requests differ a lot in size (1 to 247 prompt blocks), so a measurement's time depends on
/// which 1000 requests it covers. Both benchmarks therefore run exactly the same measurements
/// (`traceReplayConfiguration`: warm-up for one pass over the trace, then 120 measurements, no
/// time limit) and so the same windows of the trace; the median is over those windows.
func registerTraceReplayBenchmarks() {
    var engineRun: ReplayRun<EngineReplayTarget>?
    Benchmark("Engine trace-replay", configuration: traceReplayConfiguration) { benchmark in
        guard let replay = checkedReplay(benchmark) else { return }
        let run = engineRun ?? ReplayRun(replay, EngineReplayTarget(makeEngine(replay.engineConfig)))
        engineRun = run
        run.measure(benchmark)
    }

    var vllmRun: ReplayRun<VLLMBlockPool>?
    Benchmark("VLLM trace-replay", configuration: traceReplayConfiguration) { benchmark in
        guard let replay = checkedReplay(benchmark) else { return }
        let run = vllmRun ?? ReplayRun(replay, VLLMBlockPool(blocks: TraceReplay.budgetBlocks, blockTokens: replay.trace.blockTokens))
        vllmRun = run
        run.measure(benchmark)
    }
}

/// Trace replay measurements: 1000 requests each (`operationsPerMeasurement`), 13 warm-up
/// measurements (one pass over the 12,031 requests fills and starts evicting the cache), then
/// exactly 120 measured (about 10 passes) whatever they take.
var traceReplayConfiguration: Benchmark.Configuration {
    Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 13,
        scalingFactor: operationsPerMeasurement,
        maxDuration: .seconds(120),
        maxIterations: 120
    )
}

/// One replay benchmark's state across its measurements: the target and where the replay is.
final class ReplayRun<T: ReplayTarget> {
    let replay: TraceReplay
    var target: T
    var cursor = TraceReplay.Cursor()

    init(_ replay: TraceReplay, _ target: T) {
        self.replay = replay
        self.target = target
    }

    /// Replays the next `scaledIterations` requests inside the measurement.
    func measure(_ benchmark: Benchmark) {
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { replay.step(&target, &cursor) }
        benchmark.stopMeasurement()
        blackHole(cursor.hitTokens)
    }
}

/// The replay, once the check passed; else reports the problem on `benchmark` and returns nil.
func checkedReplay(_ benchmark: Benchmark) -> TraceReplay? {
    switch replayCheck {
    case .success(let replay): return replay
    case .failure(let problem):
        benchmark.error("trace replay check failed: \(problem)")
        return nil
    }
}

/// Run once per process before the replay benchmarks measure. The whole trace is replayed on a
/// fresh engine and a fresh `VLLMBlockPool`. Each must admit every request and append every
/// token, the pool's invariants must hold (`invariantViolation`), and the two must report
/// exactly the same prefix-hit tokens and evictions: the engine's LRU semantics are vLLM's.
/// (They were not until 2026-11-21: the engine released a freed request's blocks first block
/// first and hit 27,686,912 prompt tokens of 144,793,823 where vLLM, tail first, hits
/// 27,789,824; `Engine.release` now frees tail first.) Prints both sides' hits to stderr.
let replayCheck: Result<TraceReplay, ReplayError> = {
    let replay: TraceReplay
    switch TraceReplay.shared {
    case .success(let r): replay = r
    case .failure(let problem): return .failure(problem)
    }
    var engine = EngineReplayTarget(makeEngine(replay.engineConfig))
    let e = replay.replayAll(&engine)
    let engineEvictions = Int(engine.engine.stats().blocksEvicted)
    var vllm = VLLMBlockPool(blocks: TraceReplay.budgetBlocks, blockTokens: replay.trace.blockTokens)
    let v = replay.replayAll(&vllm)
    let percent = { (c: TraceReplay.Cursor) in String(format: "%.2f%%", 100.0 * Double(c.hitTokens) / Double(max(1, c.promptTokens))) }
    FileHandle.standardError.write(Data("""
        trace-replay check: \(replay.trace.count) requests, \(e.promptTokens) prompt tokens; cached prefix tokens \
        (evictions): engine \(e.hitTokens) \(percent(e)) (\(engineEvictions)), vLLM pool \(v.hitTokens) \(percent(v)) \
        (\(vllm.evictions))\n
        """.utf8))
    for (name, c) in [("engine", e), ("vLLM pool", v)] where c.failures > 0 {
        return .failure(ReplayError(message: "\(name): \(c.failures) failed admissions or appends"))
    }
    if let broken = vllm.invariantViolation() { return .failure(ReplayError(message: "vLLM pool invariant: \(broken)")) }
    guard v.hitTokens == e.hitTokens, vllm.evictions == engineEvictions else {
        return .failure(ReplayError(message: """
            the engine and vLLM's algorithm differ: cached prefix tokens \(e.hitTokens) vs \(v.hitTokens), \
            evictions \(engineEvictions) vs \(vllm.evictions)
            """))
    }
    return .success(replay)
}()
