import Benchmark
import KVCache
import KVRouter

/// The cost of applying one instance's drained KV events to a router's exact view
/// (`Router.observe(_:events:)`, what `kvc_router_observe_events` calls under its mutex),
/// against a plain Swift `Dictionary` from hash to instance mask applying the same events, in
/// the same run. One measured iteration applies one batch of `ObserveWorkload.batch` events
/// (half stored, half removed), so a per-event cost is the batch's time divided by it.
///
/// Workload: a default-configured DualMap router of 64 instances in exact view. Instance
/// `i % 64` gets batch `i`: 512 newly stored blocks (chains of 24, each block's parent the one
/// before it) and the removal of the 512 it stored four batches earlier, so in steady state
/// each instance holds ~2,048 blocks and the view ~131k, and every batch both adds and clears
/// table entries. The batch is filled before the measurement starts.
func observeEventsBenchmarks() {
    // package-benchmark runs a closure once per iteration (scalingFactor .one), so the view and
    // the workload live across iterations (`ObserveState`), and the warm-up iterations
    // take them to the steady state (4 x 64 batches before the first removal).
    let configuration = Benchmark.Configuration(metrics: [.wallClock, .throughput, .mallocCountTotal], warmupIterations: 512,
                                                scalingFactor: .one, maxDuration: .seconds(2), maxIterations: 100_000)
    Benchmark("Router observe 1024 events exact", configuration: configuration) { benchmark in
        let state = ObserveState.router
        let id = state.workload.fillNextBatch()
        benchmark.startMeasurement()
        state.workload.events.withUnsafeBufferPointer { try! state.router!.observe(UInt32(id), events: $0) }
        benchmark.stopMeasurement()
    }
    Benchmark("Dictionary observe 1024 events exact", configuration: configuration) { benchmark in
        let state = ObserveState.dictionary
        let id = state.workload.fillNextBatch()
        benchmark.startMeasurement()
        let bit: UInt64 = 1 << UInt64(id)
        for e in state.workload.events {
            switch e.kind {
            case .blockStored: state.masks[e.blockHash, default: 0] |= bit
            case .blockRemoved:
                if let m = state.masks[e.blockHash] { state.masks[e.blockHash] = m & ~bit == 0 ? nil : m & ~bit }
            case .allCleared: break
            }
        }
        benchmark.stopMeasurement()
    }
}

/// One side of the pair, built on first use (benchmarks run one at a time) and kept: its
/// workload and either a default-configured DualMap router of 64 instances in exact view or
/// the Dictionary.
final class ObserveState {
    nonisolated(unsafe) static let router = ObserveState(router: true)
    nonisolated(unsafe) static let dictionary = ObserveState(router: false)
    let workload = ObserveWorkload()
    let router: Router?
    var masks: [UInt64: UInt64] = [:]

    init(router withRouter: Bool) {
        router = withRouter ? try! Router(RouterConfig(policy: .dualMap)) : nil
        for id in 0..<64 { try! router?.addInstance(UInt32(id)) }
        if !withRouter { masks.reserveCapacity(1 << 18) }
    }
}

/// The batches of `observeEventsBenchmarks`: batch `i` is instance `i % 64`'s. Hashes are
/// distinct across batches (`BlockHash.finalize` of a counter), so a stored block is new to
/// every instance.
final class ObserveWorkload {
    static let batch = 1024
    static let chain = 24
    /// Batches an instance's stored blocks stay before their removal.
    static let held = 4
    /// The current batch, refilled by `fillNextBatch`.
    var events: [KVEvent] = []
    private var next = 0
    /// Per instance, its last `held` batches' stored hashes (a ring of `held` x batch / 2).
    private var stored: [[UInt64]] = Array(repeating: Array(repeating: 0, count: held * batch / 2), count: 64)

    init() { events.reserveCapacity(Self.batch) }

    /// Fills `events` with the next batch and returns the instance it belongs to.
    func fillNextBatch() -> Int {
        let i = next, id = i % 64, round = (i / 64) % Self.held, half = Self.batch / 2
        next += 1
        events.removeAll(keepingCapacity: true)
        var parent: UInt64 = 0
        for k in 0..<half {
            let old = stored[id][round * half + k]
            if old != 0 { events.append(KVEvent(kind: .blockRemoved, blockHash: old, parentHash: 0)) }
            if k % Self.chain == 0 { parent = 0 }
            let h = BlockHash.finalize(UInt64(i * half + k + 1) ^ BlockHash.seed)
            events.append(KVEvent(kind: .blockStored, blockHash: h, parentHash: parent))
            stored[id][round * half + k] = h
            parent = h
        }
        return id
    }
}
