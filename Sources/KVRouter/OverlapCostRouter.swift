/// Baseline: NVIDIA Dynamo KV router's cost (`lib/kv-router` scheduling selector), at its
/// defaults `overlap_score_weight` 1.0 and `router_temperature` 0 (deterministic argmin):
///
///     logit(i) = overlap_score_weight * potential_prefill_blocks(i) + potential_active_blocks(i)
///     potential_prefill_blocks = (pending prefill tokens + this request's uncached tokens) / block_tokens
///     potential_active_blocks  = active blocks + this request's blocks not among them
///
/// over every live instance, as `ActiveSequences::potential_blocks_and_tokens` computes them:
/// active blocks are the distinct prompt blocks of the requests the router sent to the
/// instance that have not finished, queued ones included (`Router.active`, which `Router.finish`
/// empties; not the engine's blocks in use, which leave queued requests out). The lowest logit
/// wins (ties: fewer in-flight requests, then the lowest slot; logits that overflow to
/// infinity, as with a weight near the largest double, tie). Dynamo learns the overlap from KV
/// events, so the default view is exact. Until 2026-11-24 the active term was the reported
/// blocks in use plus all of the request's blocks (docs/routing.md, the replay table's history).
/// Cost: O(live instances) after the prefix match, plus one active-block probe per request block.
public final class OverlapCostRouter: RoutingPolicy {
    /// `RoutingPolicy.kind`.
    public var kind: PolicyKind { .overlapCost }

    /// A Dynamo-style policy.
    public init() {}

    /// `RoutingPolicy.choose`: the live instance with the lowest cost: `overlapScoreWeight` x
    /// prefill blocks (pending plus this prompt's uncached) + active blocks + this prompt's
    /// blocks not active there (ties: fewer active requests). O(instances + request blocks).
    public func choose(_ request: RouteRequest, router: Router) -> Int {
        let loads = router.loads
        let bt = Double(router.config.blockTokens)
        let w = router.config.overlapScoreWeight
        let active = router.active!  // `PolicyKind.countsActiveBlocks`
        active.countPresent(request.hashes, slots: router.liveMask)
        let requestBlocks = request.hashes.count
        var best = -1
        var bestLogit = Double.infinity
        var m = router.liveMask
        while m != 0 {
            let s = m.trailingZeroBitCount
            m &= m - 1
            let prefill = (Double(loads[s].pendingPrefillTokens) + Double(router.uncachedTokens(tokens: request.tokens, slot: s))) / bt
            let logit = w * prefill + Double(active.unique(slot: s) + requestBlocks - active.present[s])
            if best < 0 || logit < bestLogit || (logit == bestLogit && loads[s].activeRequests < loads[best].activeRequests) {
                best = s
                bestLogit = logit
            }
        }
        return best
    }
}
