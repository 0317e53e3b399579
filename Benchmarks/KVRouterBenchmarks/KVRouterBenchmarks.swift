import Benchmark
import KVCache
import KVRouter

/// Routing-decision latency at 64 instances, one decision per measured iteration, so the
/// reported wall-clock percentiles are per decision (target: p99 under 2 us). The router and
/// its warm view are built once per policy (`RoutingSetup.shared`), outside the measurement:
/// package-benchmark runs the closure once per iteration.
///
/// Workload: 4,096 requests shaped like the Mooncake conversation trace (24 blocks of 512
/// tokens, all starting with one shared block, then 1 of 512 shared second blocks, then their
/// own blocks), and an exact cache view in which each instance holds the prefixes it would
/// have served: every request's chain is stored at its DualMap ring-1 candidate. Loads are
/// reported every 64 decisions, as instances would.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],  // throughput: the JMH export (bench_ratio.sh --router) needs it
        warmupIterations: 1000,
        scalingFactor: .one,
        maxDuration: .seconds(2),
        maxIterations: 200_000
    )
    for policy in PolicyKind.allCases {
        Benchmark("Route 64 instances \(policy.name)") { benchmark in
            let setup = RoutingSetup.shared(policy)
            setup.reportLoads()
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(setup.route())
            }
            benchmark.stopMeasurement()
        }
    }
    // Overlap cost as a server drives it through the C ABI: each decision, then the request's
    // finish (`kvc_router_finish`), so the active-block tables hold one request's blocks at a
    // time rather than filling to their limit as in "Route 64 instances overlap-cost".
    Benchmark("Route and finish 64 instances overlap-cost") { benchmark in
        let setup = RoutingSetup.finishing
        setup.reportLoads()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(setup.routeAndFinish())
        }
        benchmark.stopMeasurement()
    }
    ringMembershipBenchmarks()
    observeEventsBenchmarks()
}

/// A router of `policy` over 64 instances with a warm exact view, and the request hashes.
final class RoutingSetup {
    static let requests = 4096
    static let blocks = 24
    let router: Router
    let hashes: UnsafeMutableBufferPointer<UInt64>
    private var next = 0

    nonisolated(unsafe) private static var built: [PolicyKind: RoutingSetup] = [:]
    /// Overlap cost's setup for the route + finish benchmark, apart from `shared(.overlapCost)`,
    /// whose active blocks the route-only benchmark leaves near their limit.
    nonisolated(unsafe) static let finishing = RoutingSetup(policy: .overlapCost)

    /// The setup of `policy`, built on first use (benchmarks run one at a time).
    static func shared(_ policy: PolicyKind) -> RoutingSetup {
        if let s = built[policy] { return s }
        let s = RoutingSetup(policy: policy)
        built[policy] = s
        return s
    }

    init(policy: PolicyKind) {
        var c = RouterConfig(policy: policy)
        c.blockTokens = 512
        c.ttftSLOMilliseconds = 10_000
        c.approximateBlocksPerInstance = 1771
        router = try! Router(c)
        for i in 0..<64 { try! router.addInstance(UInt32(i)) }
        hashes = .allocate(capacity: Self.requests * Self.blocks)
        for r in 0..<Self.requests {
            var parent: UInt64 = 0
            for k in 0..<Self.blocks {
                let id: UInt64 = k == 0 ? 0 : k == 1 ? UInt64(1 + r % 512) : UInt64(1_000_000 + r * 100 + k)
                parent = BlockHash.finalize(parent ^ (id &* 0x9E37_79B9_7F4A_7C15) ^ BlockHash.seed)
                hashes[r * Self.blocks + k] = parent
            }
            let chain = UnsafeBufferPointer(rebasing: hashes[r * Self.blocks..<(r + 1) * Self.blocks])
            let owner = router.ring1.lookup(router.key(of: chain))
            var events: [KVEvent] = []
            var p: UInt64 = 0
            for h in chain {
                events.append(KVEvent(kind: .blockStored, blockHash: h, parentHash: p))
                p = h
            }
            events.withUnsafeBufferPointer { router.observe(slot: owner, events: $0) }
        }
        // The view's last doubling drains over later calls, routes included (`BlockMaskTable`):
        // finished here, so that the measured decisions are steady-state ones.
        for _ in 0..<router.view.table.capacity { router.view.table.advanceDrain() }
    }

    deinit { hashes.deallocate() }

    /// Every 64th call: every instance reports a fresh load, as instances would (outside the
    /// measured decision).
    func reportLoads() {
        let i = next
        guard i % 64 == 0 else { return }
        for s in 0..<64 {
            router.report(slot: s, load: InstanceLoad(pendingPrefillTokens: UInt64((s * 7919 + i) % 60_000),
                                                      runningBlocks: UInt64((s * 31 + i) % 1500), freeBlocks: 200, activeRequests: UInt64(s % 40)))
        }
    }

    /// Routes the next request (cycling through them).
    @inline(__always)
    func route() -> Int { try! router.routeSlot(nextChain(), tokens: Self.blocks * 512 - 100) }

    /// Routes the next request and finishes it at the slot it went to.
    @inline(__always)
    func routeAndFinish() -> Int {
        let chain = nextChain()
        let slot = try! router.routeSlot(chain, tokens: Self.blocks * 512 - 100)
        router.finish(slot: slot, hashes: chain)
        return slot
    }

    /// The hashes of the next request (cycling through them).
    @inline(__always)
    private func nextChain() -> UnsafeBufferPointer<UInt64> {
        let r = next % Self.requests
        next += 1
        return UnsafeBufferPointer(rebasing: hashes[r * Self.blocks..<(r + 1) * Self.blocks])
    }
}
