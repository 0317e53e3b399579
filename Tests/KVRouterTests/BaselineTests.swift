import KVCache
import Testing
@testable import KVRouter

@Suite struct BaselineTests {
    @Test func roundRobinCyclesOverLiveInstances() throws {
        let r = try makeRouter(.roundRobin, instances: 3)
        let picks = try (0..<6).map { _ in try r.routeSlot([1], tokens: 1) }
        #expect(picks == [0, 1, 2, 0, 1, 2])
        try r.removeInstance(1)
        #expect(try (0..<4).map { _ in try r.routeSlot([1], tokens: 1) } == [0, 2, 0, 2], "continues after the last pick, skipping the removed slot")
    }

    @Test func leastLoadedPicksFewestPendingTokens() throws {
        let r = try makeRouter(.leastLoaded, instances: 3)
        r.report(slot: 0, load: InstanceLoad(pendingPrefillTokens: 300))
        r.report(slot: 1, load: InstanceLoad(pendingPrefillTokens: 100))
        r.report(slot: 2, load: InstanceLoad(pendingPrefillTokens: 200))
        #expect(try r.routeSlot([1], tokens: 16) == 1)
        // The decision itself added 16 pending tokens to slot 1.
        #expect(r.loads[1].pendingPrefillTokens == 116)
    }

    @Test func consistentHashIgnoresLoad() throws {
        let r = try makeRouter(.consistentHash, instances: 4)
        let h = chain(11, count: 3)
        let first = try r.routeSlot(h, tokens: 48)
        r.report(slot: first, load: InstanceLoad(pendingPrefillTokens: 1 << 40))
        #expect(try r.routeSlot(h, tokens: 48) == first)
    }

    @Test func prefixTreeFollowsTheCacheAboveTheThresholdAndBalancesWhenImbalanced() throws {
        let r = try makeRouter(.prefixTree, instances: 3)
        let h = chain(21, count: 4)
        try r.report(2, load: InstanceLoad(activeRequests: 5))
        h.withUnsafeBufferPointer { r.view.recordRoute($0, slot: 2) }
        #expect(try r.routeSlot(h, tokens: 64) == 2, "a 100% match beats the cache threshold")
        // A prompt matching 1 of 4 blocks (25% < 50%) goes to the least loaded (slot 2 has 6).
        let other = [h[0]] + chain(22, count: 3)
        #expect(try r.routeSlot(other, tokens: 64) == 0)
        // Imbalance (gap > 32 and ratio > 1.1): the least loaded wins regardless of cache.
        r.report(slot: 0, load: InstanceLoad(activeRequests: 40))
        r.report(slot: 1, load: InstanceLoad(activeRequests: 3))
        r.report(slot: 2, load: InstanceLoad(activeRequests: 50))
        #expect(try r.routeSlot(h, tokens: 64) == 1)
    }

    /// Current SGLang (sgl-model-gateway `CacheAwarePolicy::select_worker`): a prompt whose best
    /// match is at or under `cache_threshold` goes to the least loaded worker (fewest in-flight
    /// requests), not to the smallest tree as the old sgl-router did.
    @Test func prefixTreeSendsACacheMissToTheLeastLoadedInstance() throws {
        let r = try makeRouter(.prefixTree, instances: 2)
        chain(40, count: 5).withUnsafeBufferPointer { r.view.recordRoute($0, slot: 1) }  // slot 1's tree: 5 blocks, slot 0's empty
        r.report(slot: 0, load: InstanceLoad(activeRequests: 10))  // balanced: a gap of 10 <= 32
        #expect(try r.routeSlot(chain(41, count: 4), tokens: 64) == 1, "a miss goes to the least loaded, the larger tree")
    }

    @Test func overlapCostTradesCachedBlocksAgainstLoad() throws {
        let r = try makeRouter(.overlapCost, instances: 2)
        let h = chain(31, count: 8)  // 128 tokens = 8 blocks
        let busy = chain(33, count: 7)
        try r.store(h, at: 1)
        try r.store(busy, at: 1)
        #expect(try r.routeSlot(busy, tokens: 112) == 1, "cached at 1: 7 against 14")
        // Slot 1 saves 8 prefill blocks; it wins while the blocks active there are fewer:
        // 7 + 8 against 8 + 8.
        #expect(try r.routeSlot(h, tokens: 128) == 1)
        try r.finish(h, at: 1)
        try r.finish(busy, at: 1)
        let more = chain(34, count: 9)
        try r.store(more, at: 1)
        #expect(try r.routeSlot(more, tokens: 144) == 1, "cached at 1: 9 against 18")
        // 9 active blocks at slot 1 now: 9 + 8 against 8 + 8.
        #expect(try r.routeSlot(h, tokens: 128) == 0)
    }

    /// A weight near the largest finite one makes every logit with a prefill overflow to
    /// infinity: they tie, and the tie-break (fewer in-flight requests, then the lowest slot)
    /// decides, where it once left no slot chosen and trapped.
    @Test func overlapCostLogitsThatOverflowTieInsteadOfTrapping() throws {
        let r = try makeRouter(.overlapCost, instances: 3) { $0.overlapScoreWeight = .greatestFiniteMagnitude }
        let h = chain(32, count: 8)
        for s in 0..<3 { r.report(slot: s, load: InstanceLoad(pendingPrefillTokens: 1000, activeRequests: UInt64(5 - s))) }
        #expect(try r.routeSlot(h, tokens: 128) == 2, "all logits infinite: the fewest in-flight requests wins")
        for s in 0..<3 { r.report(slot: s, load: InstanceLoad(pendingPrefillTokens: 1000, activeRequests: 1)) }
        #expect(try r.routeSlot(h, tokens: 128) == 0, "a full tie: the lowest slot")
    }

    /// llm-d's precise profile, 3 x prefix + 2 x (1 - KV usage) + 2 x queue: the prefix score
    /// is min-max normalised over the instances caching block 0, so caching 2 of 8 blocks
    /// scores as caching none when another instance caches all 8, and as caching all 8 when
    /// it is the only one that caches any.
    @Test func llmDScoresPrefixKVUsageAndQueueAsItsPreciseProfile() throws {
        let r = try makeRouter(.llmD, instances: 3)
        let h = chain(41, count: 8)  // 128 tokens = 8 blocks
        try r.store(h, at: 1)
        try r.store(Array(h[0..<2]), at: 2)
        let idle = InstanceLoad(freeBlocks: 100)
        for s in 0..<3 { r.report(slot: s, load: idle) }
        #expect(try r.routeSlot(h, tokens: 128) == 1, "8 blocks: prefix 1, the others 0")

        // Slot 1's queue is the longest (queue 0) and its KV use 90 %: 3 + 0.2 + 0 = 3.2,
        // against 0 + 2 + 2 = 4 for slots 0 and 2, which tie (prefix 0 each, slot 2's 2
        // blocks included): fewer active requests wins.
        r.report(slot: 0, load: InstanceLoad(freeBlocks: 100, activeRequests: 3))
        r.report(slot: 1, load: InstanceLoad(runningBlocks: 90, freeBlocks: 10, activeRequests: 10, waitingRequests: 10))
        r.report(slot: 2, load: InstanceLoad(freeBlocks: 100, activeRequests: 4))
        #expect(try r.routeSlot(h, tokens: 128) == 0)
        // At 50 % KV use it wins again: 3 + 1 + 0 = 4 against 4 for the others is a tie broken
        // by active requests (10 against 2 and 3), so raise it to 40 %: 3 + 1.2 = 4.2.
        r.report(slot: 1, load: InstanceLoad(runningBlocks: 40, freeBlocks: 60, activeRequests: 10, waitingRequests: 10))
        r.report(slot: 2, load: InstanceLoad(freeBlocks: 100, activeRequests: 2))
        #expect(try r.routeSlot(h, tokens: 128) == 1)

        // Only slot 2 caches any of this prompt (its first 2 of 8 blocks): prefix 1 there.
        let other = chain(42, count: 8)
        try r.store(Array(other[0..<2]), at: 2)
        for s in 0..<3 { r.report(slot: s, load: idle) }
        #expect(try r.routeSlot(other, tokens: 128) == 2)
    }

    /// Each decision adds a waiting request to its instance until the next report, so that
    /// ties spread: equal instances take a burst of uncached requests in turn.
    @Test func llmDSpreadsABurstByTheWaitingRequestsItAdds() throws {
        let r = try makeRouter(.llmD, instances: 3)
        for s in 0..<3 { r.report(slot: s, load: InstanceLoad(freeBlocks: 1000)) }
        var picks: [Int] = []
        for k in 0..<6 { picks.append(try r.routeSlot(chain(UInt64(50 + k), count: 1), tokens: 16)) }
        #expect(picks == [0, 1, 2, 0, 1, 2])
        #expect(r.loads[0].waitingRequests == 2 && r.loads[0].activeRequests == 2)
    }
}
