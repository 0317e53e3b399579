import KVRouter
import Testing
@testable import KVSim

/// The two imbalance measures on a constructed hotspot: round-robin over 2 instances sends
/// every 8,000-token prompt to instance 0 and every 100-token one to instance 1, each with
/// 1,000 output tokens, one request every 20 s (so each is alone on its instance).
@Suite struct PrefillSkewTests {
    @Test func prefillSkewShowsAHotspotThatBusyTimeHides() throws {
        var t = Trace(source: "alternating long and short prompts", blockTokens: 512)
        var next: UInt64 = 1
        for i in 0..<20 {
            let input = i % 2 == 0 ? 8000 : 100
            let blocks = input / 512 + 1
            t.append(arrivalMilliseconds: Double(i) * 20_000, input: input, output: 1000, blockHashes: (0..<blocks).map { next + UInt64($0) })
            next += UInt64(blocks)
        }
        var c = SimulationConfig()
        c.instances = 2
        c.router.policy = .roundRobin
        let sim = try ClusterSimulator(trace: t, config: c)
        try sim.run()
        let r = sim.result(policy: "round-robin", wallSeconds: 0)
        // Instance 0 computes 80,000 prompt tokens, instance 1 1,000: max / mean = 160,000 / 81,000.
        #expect(abs(r.prefillSkew - 160_000.0 / 81_000) < 1e-9, "\(r.prefillSkew)")
        // Busy time counts every decode-only step (at least the 8.47 ms weight read each), which
        // both instances spend most of their time in: it barely sees the hotspot.
        #expect(r.loadImbalance < 1.1, "\(r.loadImbalance)")
    }

    /// An even split gives a skew of 1; a run that computed nothing, 1 too.
    @Test func anEvenSplitHasNoSkew() throws {
        var t = Trace(source: "equal prompts", blockTokens: 512)
        for i in 0..<4 { t.append(arrivalMilliseconds: Double(i) * 1000, input: 1000, output: 2, blockHashes: [UInt64(10 * i + 1), UInt64(10 * i + 2)]) }
        var c = SimulationConfig()
        c.instances = 2
        c.router.policy = .roundRobin
        let sim = try ClusterSimulator(trace: t, config: c)
        try sim.run()
        #expect(sim.result(policy: "round-robin", wallSeconds: 0).prefillSkew == 1)
    }
}
