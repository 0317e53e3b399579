import Testing
@testable import KVCache
@testable import KVRouter
@testable import KVSim

/// A request DualMap's rebalancing moves counts its prefill in its target's backlog. With an
/// approximate view the router credits the target with the request's blocks; it did so
/// before the simulator's `move` re-estimated the request's uncached tokens from that view,
/// which then found them all cached: the target's backlog grew by 0 (the router's own count
/// by the request's prefill), and the target looked idle at its next report (helper-130).
/// Every request here has a block of its own, so each waiting one owes at least 512 tokens.
@Suite struct RebalanceLoadTests {
    @Test func aMovedRequestsBacklogAtItsTargetIsItsPrefill() throws {
        let shared = SharedTierTests.chain(1...2)
        var trace = Trace(source: "one conversation key, distinct third blocks, all at 0", blockTokens: 512)
        for i in 0..<6 {
            trace.append(arrivalMilliseconds: 0, input: 1536, output: 1,
                         blockHashes: shared + [Trace.chainedHash(parent: shared[1], id: UInt64(100 + i))])
        }
        var c = SimulationConfig()
        c.instances = 4
        c.router.policy = .dualMap
        c.router.view = .approximate
        c.router.rebalance = true
        let perToken = try ClusterSimulator(trace: trace, config: c).router.prefill.millisecondsPerToken
        c.ttftSLOMilliseconds = 3600 * perToken  // overloaded past 1,800 pending tokens
        c.router.ttftSLOMilliseconds = 3600 * perToken
        let sim = try ClusterSimulator(trace: trace, config: c)
        var moves = 0
        for _ in 0..<6 {
            let before = sim.router.rebalanceMoves
            guard case .arrival = try sim.advance() else { break }
            guard sim.router.rebalanceMoves > before else { continue }
            moves += 1
            for (i, instance) in sim.instances.enumerated() {
                #expect(instance.pendingPrefillTokens >= 512 * instance.waitingCount,
                        "instance \(i): \(instance.waitingCount) waiting, \(instance.pendingPrefillTokens) tokens pending")
            }
        }
        #expect(moves > 0, "nothing moved: the test shows nothing")
    }
}
