import KVCache
import Testing
@testable import KVRouter

/// Inputs at the edges of what the router accepts: loads near `UInt64.max`, prompts of
/// `Int.max` tokens, more hashes than the tokens fill, hash 0, extreme prefill observations
/// and thresholds. Each either works with saturated arithmetic or is refused, never a trap.
@Suite struct RouterLimitTests {
    /// A load report is a caller's number: any value, the largest included, routes, and the
    /// optimistic advance saturates at `UInt64.max` instead of trapping.
    @Test(arguments: PolicyKind.allCases) func hugeReportedLoadsSaturate(policy: PolicyKind) throws {
        let r = try makeRouter(policy, instances: 3)
        let huge = InstanceLoad(pendingPrefillTokens: .max, runningBlocks: .max, freeBlocks: .max, activeRequests: .max, waitingRequests: .max)
        for s in 0..<3 { r.report(slot: s, load: huge) }
        let s = try r.routeSlot(chain(1, count: 4), tokens: 64)
        #expect(r.loads[s] == InstanceLoad(pendingPrefillTokens: .max, runningBlocks: .max, freeBlocks: .max - 4, activeRequests: .max,
                                           waitingRequests: .max))
        // Just below the limit too: the sum would overflow by a little.
        for s in 0..<3 {
            r.report(slot: s, load: InstanceLoad(pendingPrefillTokens: .max - 10, runningBlocks: .max - 1, activeRequests: .max - 1,
                                                 waitingRequests: .max - 1))
        }
        let t = try r.routeSlot(chain(2, count: 4), tokens: 64)
        #expect(r.loads[t].pendingPrefillTokens == .max && r.loads[t].runningBlocks == .max && r.loads[t].activeRequests == .max
                && r.loads[t].waitingRequests == .max)
    }

    /// A threshold whose token count exceeds `UInt64.max` (a huge SLO over a tiny per-token
    /// estimate) means no instance is overloaded, not a trap converting it.
    @Test func aThresholdBeyondUInt64MovesNothing() throws {
        let r = try makeRouter(.dualMap, instances: 2) { $0.ttftSLOMilliseconds = 1e300; $0.prefillMillisecondsPerToken = 1e-10 }
        let queues = ArrayQueues(slots: 2)
        queues.queues[0].append((id: 1, hashes: chain(3, count: 2), tokens: 32))
        r.report(slot: 0, load: InstanceLoad(pendingPrefillTokens: .max))
        #expect(r.rebalance(queues) == 0)
    }

    /// The block count of a prompt of `Int.max` tokens is computed without overflow.
    @Test func aPromptOfIntMaxTokensRoutes() throws {
        for policy in PolicyKind.allCases {
            let r = try makeRouter(policy, instances: 2)
            let s = try r.routeSlot([7], tokens: .max)
            #expect(r.loads[s].runningBlocks == UInt64(Int.max / 16 + 1), "\(policy.name)")
            #expect(r.loads[s].pendingPrefillTokens == UInt64(Int.max), "\(policy.name)")
        }
    }

    /// A prompt's hashes name its full blocks and perhaps a partial last one: more hashes than
    /// `ceil(tokens / block_tokens)` cannot describe it and are refused, changing nothing.
    @Test func moreHashesThanTheTokensFillAreInvalid() throws {
        let r = try makeRouter(.overlapCost, instances: 2)
        #expect(try r.routeSlot(chain(4, count: 2), tokens: 17) >= 0, "a partial last block's hash is accepted")
        let before = (r.loads[0], r.loads[1], r.decisions)
        do {
            _ = try r.routeSlot(chain(4, count: 3), tokens: 32)
            Issue.record("routed 3 block hashes for 32 tokens of 16-token blocks")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("n_blocks 3") && error.message.contains("32"), "\(error.message)")
        }
        #expect((r.loads[0], r.loads[1], r.decisions) == before)
    }

    /// Hash 0 names no block (the table never stores it): a stored event of it leaves the
    /// instance's block count alone, so prefix-tree's "smallest cache" stays the view's.
    @Test func aStoredEventOfHashZeroCountsNoBlock() throws {
        let r = try makeRouter(.prefixTree, instances: 2) { $0.view = .exact }
        let events = [KVEvent(kind: .blockStored, blockHash: 0, parentHash: 0),
                      KVEvent(kind: .blockStored, blockHash: 0, parentHash: 0)]
        try events.withUnsafeBufferPointer { (b) throws(KVError) in try r.observe(0, events: b) }
        #expect(r.view.heldBlocks(slot: 0) == 0)
        #expect(r.view.table.count == 0)
    }

    /// Observations that are each a positive number can still drive the decayed sums to
    /// infinity or their ratio to 0; those are refused and change nothing, so the estimate
    /// stays positive and finite (`PrefillEstimator`'s invariant), and so does DualMap's TTFT.
    @Test func extremePrefillObservationsKeepTheEstimatePositiveAndFinite() throws {
        var e = PrefillEstimator(prior: 0.1)
        do { let accepted = e.observe(tokens: 1000, milliseconds: 100); #expect(accepted) }
        do { let accepted = e.observe(tokens: 1, milliseconds: .greatestFiniteMagnitude); #expect(accepted, "the sum still fits") }
        let before = e.millisecondsPerToken
        #expect(before > 0 && before.isFinite)
        do { let accepted = e.observe(tokens: 1, milliseconds: .greatestFiniteMagnitude); #expect(!accepted, "the sum would be infinite") }
        #expect(e.millisecondsPerToken == before)

        var tiny = PrefillEstimator(prior: 0.1)
        do { let accepted = tiny.observe(tokens: .max, milliseconds: .leastNonzeroMagnitude); #expect(!accepted, "the ratio would be 0") }
        #expect(tiny.millisecondsPerToken == 0.1)
        do { let accepted = tiny.observe(tokens: 10, milliseconds: 5); #expect(accepted) }
        #expect(tiny.millisecondsPerToken == 0.5)

        // Through the router: the refusal is an error naming the estimate.
        let r = try makeRouter(.dualMap, instances: 2)
        do {
            try r.observePrefill(tokens: .max, milliseconds: .leastNonzeroMagnitude)
            Issue.record("accepted an observation that makes the estimate 0")
        } catch {
            #expect(error.code == .invalidArgument && error.message.contains("infinite or 0"), "\(error)")
        }
        #expect(r.prefill.millisecondsPerToken == 0.1)
    }
}
