/// Baseline: NVIDIA Dynamo KV router's cost (`lib/kv-router` scheduling selector), at its
/// defaults `overlap_score_weight` 1.0 and `router_temperature` 0 (deterministic argmin):
///
///     logit(i) = overlap_score_weight * potential_prefill_blocks(i) + potential_active_blocks(i)
///     potential_prefill_blocks = (pending prefill tokens + this request's uncached tokens) / block_tokens
///     potential_active_blocks  = running blocks + this request's blocks
///
/// over every live instance; the lowest logit wins (ties: fewer in-flight requests, then the
/// lowest slot; logits that overflow to infinity, as with a weight near the largest double,
/// tie). Dynamo learns the overlap from KV events, so the default view is exact.
/// Cost: O(live instances) after the prefix match.
public final class OverlapCostRouter: RoutingPolicy {
    /// `RoutingPolicy.kind`.
    public var kind: PolicyKind { .overlapCost }

    /// A Dynamo-style policy.
    public init() {}

    /// `RoutingPolicy.choose`: the live instance with the lowest cost: `overlapScoreWeight` x
    /// prefill blocks (pending plus this prompt's uncached) + running blocks (ties: fewer active
    /// requests). O(instances).
    public func choose(_ request: RouteRequest, router: Router) -> Int {
        let loads = router.loads
        let bt = Double(router.config.blockTokens)
        let w = router.config.overlapScoreWeight
        let requestBlocks = Double(router.blocks(request.tokens))
        var best = -1
        var bestLogit = Double.infinity
        var m = router.liveMask
        while m != 0 {
            let s = m.trailingZeroBitCount
            m &= m - 1
            let prefill = (Double(loads[s].pendingPrefillTokens) + Double(router.uncachedTokens(tokens: request.tokens, slot: s))) / bt
            let logit = w * prefill + Double(loads[s].runningBlocks) + requestBlocks
            if best < 0 || logit < bestLogit || (logit == bestLogit && loads[s].activeRequests < loads[best].activeRequests) {
                best = s
                bestLogit = logit
            }
        }
        return best
    }
}
