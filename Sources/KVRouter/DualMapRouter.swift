/// DualMap (2026): "map each request by its prompt prefix to two instances with two independent
/// hash rings; take the one with more cache affinity unless its estimated TTFT breaks the SLO,
/// then the less loaded one; rebalance hotspots by moving queued requests to their other
/// candidate; consistent hashing keeps scaling cheap."
///
/// Decision (`choose`), for key = hash of the first `keyBlocks` blocks:
/// 1. Candidates: the ring-1 owner and the ring-2 owner (the next distinct instance on ring 2
///    when they agree), so they are always distinct.
/// 2. Affinity candidate: the one caching the longer prefix (ties: fewer running blocks, then
///    the ring-1 candidate).
/// 3. If its estimated TTFT exceeds `sloThresholdMilliseconds` (strictly), take the candidate
///    with the lower estimated TTFT instead (ties: fewer running blocks, then the affinity one).
///
/// Rebalancing (`rebalance`): an instance whose pending prefill alone exceeds the threshold is
/// overloaded; its queued requests move to their other candidate or, when that is overloaded
/// too, to the next instance on ring 1 that is not, cheapest first (the fewest extra prefill
/// tokens at the target compared with the source), while the source stays overloaded and the
/// target stays under the threshold with the request.
///
/// Defaults: `keyBlocks` 2 (DualMap's reference code keys on the first two blocks), 128
/// virtual nodes per ring, threshold half the TTFT SLO. Cost: two ring lookups, a prefix match
/// of the two candidates, O(1) arithmetic; no allocation.
public final class DualMapRouter: RoutingPolicy {
    /// Requests examined per overloaded instance per rebalancing pass (a bound on the work).
    public static let maxExamined = 256
    /// `RoutingPolicy.kind`.
    public var kind: PolicyKind { .dualMap }
    private var scratchIds = [Int](repeating: 0, count: maxExamined)
    private var scratchTargets = [Int](repeating: 0, count: maxExamined)
    private var scratchCosts = [Int](repeating: 0, count: maxExamined)
    private var scratchFrom = [Int](repeating: 0, count: maxExamined)
    private var scratchTo = [Int](repeating: 0, count: maxExamined)
    private var scratchBlocks = [Int](repeating: 0, count: maxExamined)
    private var order = [Int](repeating: 0, count: maxExamined)

    /// A DualMap policy.
    public init() {}

    /// The candidates of the request being decided (from `slotsToMatch`).
    private var a = -1, b = -1

    /// Only the two candidates' cached prefixes matter: the match stops as soon as both miss.
    public func slotsToMatch(_ request: RouteRequest, router: Router) -> UInt64 {
        (a, b) = router.candidates(request.key)
        return (1 << UInt64(a)) | (b >= 0 ? 1 << UInt64(b) : 0)
    }

    /// `RoutingPolicy.choose`: steps 1-3 of the decision above. O(1) after the prefix match.
    public func choose(_ request: RouteRequest, router: Router) -> Int {
        let a = self.a, b = self.b
        if b < 0 { return a }
        let loads = router.loads
        let ma = router.matched[a], mb = router.matched[b]
        let affinity: Int
        if ma != mb {
            affinity = ma > mb ? a : b
        } else {
            affinity = loads[b].runningBlocks < loads[a].runningBlocks ? b : a
        }
        let other = affinity == a ? b : a
        let tAffinity = router.estimatedTTFT(slot: affinity, uncachedTokens: router.uncachedTokens(tokens: request.tokens, slot: affinity))
        if tAffinity <= router.config.sloThresholdMilliseconds { return affinity }
        let tOther = router.estimatedTTFT(slot: other, uncachedTokens: router.uncachedTokens(tokens: request.tokens, slot: other))
        if tOther < tAffinity || (tOther == tAffinity && loads[other].runningBlocks < loads[affinity].runningBlocks) {
            router.sloSwitches += 1
            return other
        }
        return affinity
    }

    /// `RoutingPolicy.rebalance`: the rebalancing above, at most `maxExamined` queued requests
    /// examined per overloaded instance; returns how many moved.
    public func rebalance(router: Router, queues: any RequestQueues) -> Int {
        guard router.config.rebalance, router.instanceCount > 1 else { return 0 }
        let perToken = router.prefill.millisecondsPerToken
        // A threshold beyond UInt64.max tokens (a huge SLO over a tiny estimate) overloads nothing.
        let limit = router.config.sloThresholdMilliseconds / perToken
        let limitTokens = limit < 0x1p64 ? UInt64(limit) : .max
        let loads = router.loads
        var overloaded: UInt64 = 0
        var m = router.liveMask
        while m != 0 {
            let s = m.trailingZeroBitCount
            if loads[s].pendingPrefillTokens > limitTokens { overloaded |= 1 << UInt64(s) }
            m &= m - 1
        }
        if overloaded == 0 || overloaded == router.liveMask { return 0 }
        var moved = 0
        var sources = overloaded
        while sources != 0 {
            let s = sources.trailingZeroBitCount
            sources &= sources - 1
            let n = min(queues.queuedCount(slot: s), Self.maxExamined)
            var k = 0
            for i in 0..<n {
                let q = queues.queuedRequest(slot: s, index: i)
                let key = router.key(of: q.hashes)
                let (a, b) = router.candidates(key)
                var target = a == s ? b : a
                if target < 0 || overloaded & (1 << UInt64(target)) != 0 {
                    target = router.ring1.lookup(key, excludingMask: overloaded)
                }
                if target < 0 { continue }
                let bt = router.config.blockTokens
                let fromTokens = max(0, q.tokens - router.view.matchedBlocks(q.hashes, slot: s) * bt)
                let toTokens = max(0, q.tokens - router.view.matchedBlocks(q.hashes, slot: target) * bt)
                scratchIds[k] = q.id
                scratchTargets[k] = target
                scratchFrom[k] = fromTokens
                scratchTo[k] = toTokens
                scratchCosts[k] = toTokens - fromTokens
                scratchBlocks[k] = router.blocks(q.tokens)
                order[k] = k
                k += 1
            }
            // Cheapest first: the fewest extra prefill tokens caused by the move.
            let costs = scratchCosts
            order[0..<k].sort { costs[$0] != costs[$1] ? costs[$0] < costs[$1] : $0 < $1 }
            for j in 0..<k {
                if loads[s].pendingPrefillTokens <= limitTokens { break }
                let i = order[j], t = scratchTargets[i]
                guard loads[t].pendingPrefillTokens.addingSaturated(UInt64(scratchTo[i])) <= limitTokens else { continue }
                // Moved first: the queues may read the view (a simulator estimates the target's
                // uncached tokens), which `transfer` then credits (helper-130: crediting first
                // made that estimate 0). The moved request is the last at `t`.
                queues.move(id: scratchIds[i], from: s, to: t)
                let request = queues.queuedRequest(slot: t, index: queues.queuedCount(slot: t) - 1)
                router.transfer(from: s, to: t, fromTokens: scratchFrom[i], toTokens: scratchTo[i], blocks: scratchBlocks[i],
                                hashes: request.hashes)
                moved += 1
            }
        }
        return moved
    }
}
