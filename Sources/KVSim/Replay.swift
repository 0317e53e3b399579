import Dispatch
import KVCache
import KVRouter
import KVReport

/// Replays a trace through the simulated cluster for several policies, optionally searching
/// each one's effective capacity, on up to `threads` threads (policies are independent runs
/// with their own engines and router).
public struct Replay: Sendable {
    /// The base configuration (its `router.policy` is replaced per policy).
    public var config: SimulationConfig
    /// Policies, in report order.
    public var policies: [PolicyKind]
    /// Cache view override (nil: each policy's default).
    public var view: CacheViewMode?
    /// Capacity search parameters; nil skips the search.
    public var search: CapacitySearch?
    /// Threads running policies concurrently.
    public var threads: Int

    /// A replay of `policies` with `config`.
    public init(config: SimulationConfig, policies: [PolicyKind], view: CacheViewMode? = nil, search: CapacitySearch? = CapacitySearch(), threads: Int = 2) {
        self.config = config
        self.policies = policies
        self.view = view
        self.search = search
        self.threads = threads
    }

    /// One policy's outcome: the run at `config.rateScale`, and the capacity search.
    public struct Outcome: Sendable {
        /// The run at `config.rateScale`.
        public var result: ReplayResult
        /// The effective capacity (rate scale); nil without a search.
        public var capacity: Double?
        /// Every rate scale the search tried, in order.
        public var probes: [CapacitySearch.Probe]
    }

    /// Simulates `policy` once at `rateScale`.
    public func simulate(_ trace: Trace, policy: PolicyKind, rateScale: Double) throws -> ReplayResult {
        var c = config
        c.router.policy = policy
        c.router.view = view
        c.rateScale = rateScale
        let start = monotonicNanoseconds()
        let sim = try ClusterSimulator(trace: trace, config: c)
        try sim.run()
        return sim.result(policy: policy.name, wallSeconds: Double(monotonicNanoseconds() - start) / 1e9)
    }

    /// Runs every policy; `progress` receives a line per finished simulation (any thread).
    public func run(_ trace: Trace, progress: (@Sendable (String) -> Void)? = nil) throws -> [Outcome] {
        let slots = UnsafeMutableBufferPointer<Result<Outcome, Error>?>.allocate(capacity: policies.count)
        slots.initialize(repeating: nil)
        defer { slots.deallocate() }
        nonisolated(unsafe) let out = slots
        let next = WorkerCounter()
        let body: @Sendable () -> Void = { [self] in
            while true {
                let i = next.take()
                if i >= policies.count { return }
                out[i] = Result { try outcome(trace, policies[i], progress) }
            }
        }
        let workers = max(1, min(threads, policies.count))
        DispatchQueue.concurrentPerform(iterations: workers) { _ in body() }
        return try slots.map { try $0!.get() }
    }

    private func outcome(_ trace: Trace, _ policy: PolicyKind, _ progress: (@Sendable (String) -> Void)?) throws -> Outcome {
        let result = try simulate(trace, policy: policy, rateScale: config.rateScale)
        progress?("\(policy.name): x\(trimmedFixed(config.rateScale, 2)) attainment \(trimmedFixed(result.sloAttainment * 100, 2))% in \(trimmedFixed(result.wallSeconds, 2)) s")
        guard let search else { return Outcome(result: result, capacity: nil, probes: []) }
        let found = try search.run { scale in
            if scale == config.rateScale { return result.sloAttainment }
            let r = try simulate(trace, policy: policy, rateScale: scale)
            progress?("\(policy.name): x\(trimmedFixed(scale, 2)) attainment \(trimmedFixed(r.sloAttainment * 100, 2))% in \(trimmedFixed(r.wallSeconds, 2)) s")
            return r.sloAttainment
        }
        return Outcome(result: result, capacity: found.capacity, probes: found.probes)
    }
}
