import KVReport
import KVRouter

/// The measurements of one replay (one policy, one rate scale).
public struct ReplayResult: Sendable {
    /// Policy name.
    public var policy: String
    /// How the router knew the caches.
    public var view: CacheViewMode
    /// Instances simulated.
    public var instances: Int
    /// Arrival rate multiplier.
    public var rateScale: Double
    /// The TTFT SLO in ms.
    public var ttftSLOMilliseconds: Double
    /// Requests in the trace.
    public var requests: Int
    /// Requests arriving in the warm-up (`SimulationConfig.warmupSeconds`): simulated, not
    /// measured. `served`, `sloMet`, `ttftSorted`, `prefixHitRate` and `sloAttainment` are of
    /// the `requests - warmupRequests` after it.
    public var warmupRequests: Int
    /// Measured requests that got a first token (aborted ones included).
    public var served: Int
    /// Measured requests whose TTFT met the SLO.
    public var sloMet: Int
    /// TTFTs of served measured requests in ms, ascending (a rejected request has none; an
    /// aborted one has its own).
    public var ttftSorted: [Double]
    /// Prompt tokens found cached at admission over prompt tokens (first admissions of
    /// measured requests).
    public var prefixHitRate: Double
    /// Prompt tokens loaded from the shared tier at first admissions of measured requests (as
    /// `prefixHitRate`'s); nil without a tier.
    public var sharedTierHitTokens: Int?
    /// `sharedTierHitTokens` over prompt tokens (first admissions, as `prefixHitRate`: the two
    /// add up to the prompt tokens not computed); nil without a tier.
    public var sharedTierHitRate: Double?
    /// Max over mean of the instances' busy time (1 = perfectly even), the whole run. Every
    /// step counts, decode-only ones too (each at least the weight read), so an instance
    /// decoding one sequence is as busy as one prefilling a burst: near 1 for every policy
    /// on a loaded cluster. `prefillSkew` shows where the prompt work went.
    public var loadImbalance: Double
    /// Max over mean of the prompt tokens each instance computed (prefill chunks, recomputes
    /// included; 1 = even, also when nothing was computed), the whole run: a hotspot of
    /// prefill work that busy time hides.
    public var prefillSkew: Double
    /// When the last request finished, seconds after the first arrival (0 when none did).
    public var makespanSeconds: Double
    /// Recompute preemptions.
    public var preemptions: Int
    /// Requests no instance could hold, refused before their first token (no TTFT).
    public var rejected: Int
    /// Requests served a first token, then dropped after a preemption: their prompt and
    /// output so far no longer fit their instance (`ClusterSimulator.aborted`). Disjoint from
    /// `rejected`; counted in `served`.
    public var aborted: Int
    /// Requests finished at the engine's `maxSeqTokens` before their trace output length.
    public var lengthCapped: Int
    /// KV events the instances' engines dropped before the router saw them (their queues
    /// overflowed between drains); 0 in a sound run.
    public var eventsDropped: Int
    /// Exact views rebuilt from an engine's index after such drops (`ClusterSimulator`).
    public var viewResyncs: Int
    /// DualMap decisions that left the affinity candidate for the SLO.
    public var sloSwitches: Int
    /// Queued requests moved by rebalancing.
    public var rebalanceMoves: Int
    /// Wall-clock seconds the simulation took.
    public var wallSeconds: Double

    /// Fraction of the measured requests (unserved ones count as misses) meeting the SLO.
    public var sloAttainment: Double { requests > warmupRequests ? Double(sloMet) / Double(requests - warmupRequests) : 0 }

    /// The `q`-quantile (0...1) of the served requests' TTFT in ms (`Quantile.nearestRank`);
    /// nil when nothing was served (a quantile of no TTFT is not 0 ms). O(1).
    public func ttftQuantile(_ q: Double) -> Double? { Quantile.nearestRank(ttftSorted, q) }
}
