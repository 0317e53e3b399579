import KVCache
import KVRouter
import Testing
@testable import KVSim

/// The warm-up window: requests arriving in the trace's first `warmupSeconds` are simulated
/// like every other but left out of the TTFT percentiles, the attainment and the hit rate.
@Suite struct WarmupTests {
    /// One instance; 40 cold 8,000-token prompts at once (a cluster starting empty meets a
    /// burst: about 31 s of prefill, so most wait past the 10 s SLO), then from 600 s one
    /// 1,000-token prompt every 10 s, each alone on the instance.
    static func coldBurstThenSteady() -> Trace {
        var t = Trace(source: "a cold-start burst, then a steady state", blockTokens: 512)
        var next: UInt64 = 1
        func chain(_ blocks: Int) -> [UInt64] {
            defer { next += UInt64(blocks) }
            return (0..<blocks).map { next + UInt64($0) }
        }
        for _ in 0..<40 { t.append(arrivalMilliseconds: 0, input: 8000, output: 10, blockHashes: chain(16)) }
        for i in 0..<40 { t.append(arrivalMilliseconds: 600_000 + Double(i) * 10_000, input: 1000, output: 10, blockHashes: chain(2)) }
        return t
    }

    static func run(warmup: Double, rateScale: Double = 1) throws -> (ClusterSimulator, ReplayResult) {
        var c = SimulationConfig()
        c.instances = 1
        c.router.policy = .roundRobin
        c.rateScale = rateScale
        c.warmupSeconds = warmup
        let sim = try ClusterSimulator(trace: coldBurstThenSteady(), config: c)
        try sim.run()
        return (sim, sim.result(policy: "round-robin", wallSeconds: 0))
    }

    @Test func theWarmUpExcludesTheColdStartBurstFromTheMetrics() throws {
        let (coldSim, cold) = try Self.run(warmup: 0)
        let (warmSim, warm) = try Self.run(warmup: 300)
        // Without a warm-up the burst fails the SLO; the steady state alone passes.
        #expect(cold.warmupRequests == 0 && cold.ttftSorted.count == 80)
        #expect(cold.sloAttainment < 0.9, "\(cold.sloAttainment)")
        #expect(warm.warmupRequests == 40 && warm.ttftSorted.count == 40 && warm.sloMet == 40)
        #expect(warm.sloAttainment == 1)
        #expect(try #require(warm.ttftQuantile(0.99)) < 1000)
        // The warm-up changes what is measured, not what is simulated.
        #expect(coldSim.ttft == warmSim.ttft && coldSim.finish == warmSim.finish)
        #expect(cold.loadImbalance == warm.loadImbalance && cold.prefillSkew == warm.prefillSkew)
    }

    /// The window is in the trace's own time: at twice the rate the same 40 requests are in it.
    @Test func theWindowIsInTraceTime() throws {
        let (_, fast) = try Self.run(warmup: 300, rateScale: 2)
        #expect(fast.warmupRequests == 40 && fast.ttftSorted.count == 40)
    }

    /// A window covering every request would leave nothing to measure (an attainment of 0,
    /// a capacity of 0): refused, naming how long the trace is; so is a negative one.
    @Test(arguments: [(1000.0, "covers every request"), (-1.0, "warmup_s -1.0 is not a finite number >= 0")])
    func aWindowLeavingNothingToMeasureIsRefused(warmup: Double, message: String) {
        #expect {
            _ = try Self.run(warmup: warmup)
        } throws: { error in
            (error as? KVError)?.code == .invalidArgument && "\(error)".contains(message)
        }
    }

    /// Two instances, round-robin, a shared tier. In the warm-up, A (8 blocks) at 0 s on
    /// instance 0, then B (the same blocks) at 10 s on instance 1, which loads them from the
    /// tier; measured, C, a fresh 2-block prompt at 600 s: nothing of it can come from the tier.
    @Test func theSharedTierHitsCountOnlyMeasuredRequests() throws {
        var t = Trace(source: "warm-up tier hit", blockTokens: 512)
        t.append(arrivalMilliseconds: 0, input: 8 * 512, output: 4, blockHashes: SharedTierTests.chain(1...8))
        t.append(arrivalMilliseconds: 10_000, input: 8 * 512, output: 4, blockHashes: SharedTierTests.chain(1...8))
        t.append(arrivalMilliseconds: 600_000, input: 2 * 512, output: 4, blockHashes: SharedTierTests.chain(100...101))
        func run(warmup: Double) throws -> ReplayResult {
            var c = SimulationConfig()
            c.instances = 2
            c.router.policy = .roundRobin
            c.sharedTier = SharedTierConfig()
            c.warmupSeconds = warmup
            let sim = try ClusterSimulator(trace: t, config: c)
            try sim.run()
            return sim.result(policy: "round-robin", wallSeconds: 0)
        }
        let all = try run(warmup: 0), measured = try run(warmup: 300)
        #expect(all.sharedTierHitTokens == 8 * 512 - 512, "B loads A's blocks but its last from the tier")
        #expect(measured.warmupRequests == 2 && measured.sharedTierHitTokens == 0 && measured.sharedTierHitRate == 0)
    }
}
