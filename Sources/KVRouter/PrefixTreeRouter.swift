/// Baseline: SGLang router's cache-aware policy (sgl-router `CacheAwarePolicy`), at its
/// defaults `cache_threshold` 0.5, `balance_abs_threshold` 32, `balance_rel_threshold` 1.1.
///
/// 1. Load is in-flight requests per instance. The system is imbalanced when
///    `max - min > balance_abs_threshold` and `max > min * balance_rel_threshold`; then the
///    request goes to the least loaded instance.
/// 2. Otherwise the instance with the longest cached prefix wins (ties: fewer in-flight
///    requests, then the lowest slot) if the matched fraction of the prompt exceeds
///    `cache_threshold`;
/// 3. else the instance with the smallest cache tree (fewest tracked blocks: most room).
///
/// SGLang keeps an approximate radix tree per worker built from the requests it routed; the
/// default view here is the same (`CacheViewMode.approximate`); a chained block hash set is a
/// radix tree at block granularity. Cost: O(live instances) after the prefix match.
public final class PrefixTreeRouter: RoutingPolicy {
    /// `RoutingPolicy.kind`.
    public var kind: PolicyKind { .prefixTree }

    /// An SGLang-style policy.
    public init() {}

    /// `RoutingPolicy.choose`: steps 1-3 above. O(live instances) after the prefix match.
    public func choose(_ request: RouteRequest, router: Router) -> Int {
        let loads = router.loads
        let live = router.liveMask
        var minLoad = UInt64.max, maxLoad: UInt64 = 0, leastLoaded = -1
        var m = live
        while m != 0 {
            let s = m.trailingZeroBitCount
            m &= m - 1
            let l = loads[s].activeRequests
            if l < minLoad { minLoad = l; leastLoaded = s }
            maxLoad = max(maxLoad, l)
        }
        let c = router.config
        if maxLoad - minLoad > UInt64(c.balanceAbsThreshold) && Double(maxLoad) > Double(minLoad) * c.balanceRelThreshold {
            return leastLoaded
        }
        var best = -1
        m = live
        while m != 0 {
            let s = m.trailingZeroBitCount
            m &= m - 1
            if best < 0 || router.matched[s] > router.matched[best]
                || (router.matched[s] == router.matched[best] && loads[s].activeRequests < loads[best].activeRequests) {
                best = s
            }
        }
        let matchedTokens = min(request.tokens, router.matched[best] * c.blockTokens)
        if Double(matchedTokens) / Double(request.tokens) > c.cacheThreshold { return best }
        var smallest = -1
        m = live
        while m != 0 {
            let s = m.trailingZeroBitCount
            m &= m - 1
            let size = router.view.blocksPerSlot[s]
            if smallest < 0 || size < router.view.blocksPerSlot[smallest]
                || (size == router.view.blocksPerSlot[smallest] && loads[s].activeRequests < loads[smallest].activeRequests) {
                smallest = s
            }
        }
        return smallest
    }
}
