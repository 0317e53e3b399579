/// Baseline: the instance with the fewest pending prefill tokens (ties: fewer active requests,
/// then the lowest slot), ignoring cache contents: least-outstanding-work balancing as in
/// vLLM production-stack's and llm-d's load-aware scorers. No parameters.
/// Cost: O(live instances).
public final class LeastLoadedRouter: RoutingPolicy {
    /// `RoutingPolicy.kind`.
    public var kind: PolicyKind { .leastLoaded }

    /// A least-loaded policy.
    public init() {}

    /// `RoutingPolicy.choose`: the live instance with the fewest pending prefill tokens (ties:
    /// fewer active requests, then the lowest slot). O(instances).
    public func choose(_ request: RouteRequest, router: Router) -> Int {
        var best = -1
        var m = router.liveMask
        let loads = router.loads
        while m != 0 {
            let s = m.trailingZeroBitCount
            m &= m - 1
            if best < 0 { best = s; continue }
            let l = loads[s], b = loads[best]
            if l.pendingPrefillTokens < b.pendingPrefillTokens
                || (l.pendingPrefillTokens == b.pendingPrefillTokens && l.activeRequests < b.activeRequests) {
                best = s
            }
        }
        return best
    }
}
