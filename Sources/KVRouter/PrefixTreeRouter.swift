/// Baseline: SGLang router's cache-aware policy (sgl-model-gateway, formerly sgl-router,
/// `CacheAwarePolicy::select_worker`), at the Rust library's `CacheAwareConfig::default()`:
/// `cache_threshold` 0.5, `balance_abs_threshold` 32, `balance_rel_threshold` 1.1. The router
/// as launched (`python -m sglang_router.launch_router`, router_args.py) defaults to 0.3, 64
/// and 1.5 with a tree of 2^26 characters (about 32k blocks, not the engine's capacity that
/// `RouterConfig.approximateBlocksPerInstance` gets in the replay); the replay measured those
/// at x1.24 capacity and, with the large tree, x1.14, against x1.24 here (2026-11-24,
/// docs/routing.md), so these defaults are the stronger baseline.
///
/// 1. Load is in-flight requests per instance. The system is imbalanced when
///    `max - min > balance_abs_threshold` and `max > min * balance_rel_threshold`; then the
///    request goes to the least loaded instance (the lowest slot among equals).
/// 2. Otherwise the instance with the longest cached prefix wins (ties: fewer in-flight
///    requests, then the lowest slot) if the matched fraction of the prompt exceeds
///    `cache_threshold`;
/// 3. else the least loaded instance, as step 1 picks it. (The old sgl-router took the
///    smallest tree there; this baseline did until 2026-11-24.)
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
            if leastLoaded < 0 || l < minLoad { minLoad = l; leastLoaded = s }  // loads may all be UInt64.max
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
        return Double(matchedTokens) / Double(request.tokens) > c.cacheThreshold ? best : leastLoaded
    }
}
