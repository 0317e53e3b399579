/// Baseline: llm-d's inference scheduler with its precise prefix-cache profile: the
/// `precise-prefix-cache-scorer` (fed by the instances' KV events), `kv-cache-utilization-scorer`
/// and `queue-scorer` at the profile's weights 3, 2 and 2, then `max-score-picker`:
///
///     score(i) = 3 * prefix(i) + 2 * (1 - kvUsage(i)) + 2 * queue(i)
///
/// - `prefix`: the instance's cached prefix in blocks from block 0 (the longest-prefix
///   strategy), min-max normalised over the instances that cache at least the first block
///   (1 for all of them when they tie, so one instance caching a single block scores as one
///   caching the whole prompt), 0 for the others;
/// - `kvUsage`: `runningBlocks / (runningBlocks + freeBlocks)` (vLLM's KV-cache usage, which
///   counts evictable cached blocks as free; 0 with no blocks);
/// - `queue`: `(max - waitingRequests(i)) / (max - min)` over the live instances (1 for all
///   when they tie).
///
/// The highest score wins. llm-d breaks ties at random; this baseline breaks them by fewer
/// active requests, then the lowest slot, so that a replay is deterministic. No parameters.
/// Cost: O(live instances) after the prefix match; no allocation.
public final class LLMDRouter: RoutingPolicy {
    /// `RoutingPolicy.kind`.
    public var kind: PolicyKind { .llmD }

    /// An llm-d-style policy.
    public init() {}

    /// `RoutingPolicy.choose`: the scoring above. O(live instances) after the prefix match.
    public func choose(_ request: RouteRequest, router: Router) -> Int {
        let loads = router.loads, matched = router.matched
        var minPrefix = Int.max, maxPrefix = 0
        var minWaiting = UInt64.max, maxWaiting: UInt64 = 0
        var m = router.liveMask
        while m != 0 {
            let s = m.trailingZeroBitCount
            m &= m - 1
            if matched[s] > 0 {
                minPrefix = min(minPrefix, matched[s])
                maxPrefix = max(maxPrefix, matched[s])
            }
            minWaiting = min(minWaiting, loads[s].waitingRequests)
            maxWaiting = max(maxWaiting, loads[s].waitingRequests)
        }
        var best = -1
        var bestScore = -Double.infinity
        m = router.liveMask
        while m != 0 {
            let s = m.trailingZeroBitCount
            m &= m - 1
            let l = loads[s]
            var prefix = 0.0
            if matched[s] > 0 {
                prefix = maxPrefix == minPrefix ? 1 : Double(matched[s] - minPrefix) / Double(maxPrefix - minPrefix)
            }
            let blocks = Double(l.runningBlocks) + Double(l.freeBlocks)  // a report may say anything: no overflow
            let usage = blocks == 0 ? 0 : Double(l.runningBlocks) / blocks
            let queue = maxWaiting == minWaiting ? 1 : Double(maxWaiting - l.waitingRequests) / Double(maxWaiting - minWaiting)
            let score = 3 * prefix + 2 * (1 - usage) + 2 * queue
            if score > bestScore || (score == bestScore && l.activeRequests < loads[best].activeRequests) {
                best = s
                bestScore = score
            }
        }
        return best
    }
}
