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
        // A prompt matching 1 of 4 blocks (25% < 50%) goes to the smallest tree.
        let other = [h[0]] + chain(22, count: 3)
        let s = try r.routeSlot(other, tokens: 64)
        #expect(s == 0 || s == 1)
        // Imbalance (gap > 32 and ratio > 1.1): the least loaded wins regardless of cache.
        r.report(slot: 0, load: InstanceLoad(activeRequests: 40))
        r.report(slot: 1, load: InstanceLoad(activeRequests: 3))
        r.report(slot: 2, load: InstanceLoad(activeRequests: 50))
        #expect(try r.routeSlot(h, tokens: 64) == 1)
    }

    @Test func overlapCostTradesCachedBlocksAgainstLoad() throws {
        let r = try makeRouter(.overlapCost, instances: 2)
        let h = chain(31, count: 8)  // 128 tokens = 8 blocks
        try r.store(h, at: 1)
        // Slot 1 saves 8 prefill blocks; it wins while its extra active blocks are fewer.
        r.report(slot: 0, load: InstanceLoad(runningBlocks: 0))
        r.report(slot: 1, load: InstanceLoad(runningBlocks: 7))
        #expect(try r.routeSlot(h, tokens: 128) == 1)
        r.report(slot: 0, load: InstanceLoad(runningBlocks: 0))
        r.report(slot: 1, load: InstanceLoad(runningBlocks: 9))
        #expect(try r.routeSlot(h, tokens: 128) == 0)
    }
}
