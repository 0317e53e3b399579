import Testing
import KVRouter
@testable import KVSim

/// What a simulated instance tells the router's prefill estimator (`Router.observePrefill`,
/// the C ABI's `kvc_router_observe_prefill`): each step's prefill tokens and the time its
/// prefill added, the step's time less its decode work alone.
@Suite struct PrefillObservationTests {
    /// One instance: A (1,024 tokens, 200 output) prefills alone, then decodes; B (200 tokens)
    /// is computed in one step beside A's decode token, and C (30 tokens) in another. The
    /// router is told A's whole step (nothing decoded beside it) and B's step less a decode
    /// step of A: 12.2 of its 20.7 ms. C's step costs what A's decode alone costs (its 31
    /// tokens of compute stay under the weight read), so it is not reported. Before, both
    /// whole steps were reported, and the estimate was 12% high (0.1050 ms per token for 0.0934).
    @Test func theRouterIsToldWhatAStepsPrefillAddsNotItsDecodeWork() throws {
        var trace = Trace(source: "short prompts beside a decode", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 1024, output: 200, blockHashes: SharedTierTests.chain(1...2))
        trace.append(arrivalMilliseconds: 300, input: 200, output: 1, blockHashes: SharedTierTests.chain(11...11))
        trace.append(arrivalMilliseconds: 600, input: 30, output: 1, blockHashes: SharedTierTests.chain(21...21))
        let c = SimulatorTests.oneInstance()
        let sim = try ClusterSimulator(trace: trace, config: c)
        try sim.run()
        #expect(sim.result(policy: "round-robin", wallSeconds: 0).served == 3)
        #expect(sim.finish[2] < sim.finish[0], "C is computed while A decodes")

        // The decode context cancels out of the difference (both steps read the same K/V).
        let context = 1100
        let decodeAlone = SimulatorTests.step(c, prefill: [], decodes: 1, decodeContext: context)
        let bStep = SimulatorTests.step(c, prefill: [(200, 0)], decodes: 1, decodeContext: context)
        let cStep = SimulatorTests.step(c, prefill: [(30, 0)], decodes: 1, decodeContext: context)
        #expect(abs(bStep - decodeAlone - 12.19) < 0.01 && abs(bStep - 20.69) < 0.01)
        #expect(cStep == decodeAlone)
        var expected = PrefillEstimator(prior: c.router.prefillMillisecondsPerToken)
        expected.observe(tokens: 1024, milliseconds: SimulatorTests.step(c, prefill: [(1024, 0)]))
        expected.observe(tokens: 200, milliseconds: bStep - decodeAlone)
        let observed = sim.router.prefill.millisecondsPerToken
        #expect(abs(observed - expected.millisecondsPerToken) < 1e-9, "\(observed) ms per token, expected \(expected.millisecondsPerToken)")
    }
}
