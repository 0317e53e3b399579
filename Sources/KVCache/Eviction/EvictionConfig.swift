/// Which tokens a sequence keeps when it is compacted (`KVC_EVICTION_*`).
public enum EvictionPolicyKind: UInt32, Sendable, CaseIterable {
    /// Keep everything: `compact` changes nothing (the full-cache reference).
    case none = 0
    /// StreamingLLM: the first `sinkTokens` positions (attention sinks) plus the most recent.
    case streamingLLM = 1
    /// TOVA: the tokens with the highest attention from the last observed query.
    case tova = 2
    /// H2O: a recent window plus the heavy hitters by accumulated attention.
    case heavyHitter = 3
    /// EpiCache: like H2O, but heavy hitters are scored by the attention observed while the
    /// focused episode's queries ran (`focus`), episodes found by k-means over segments.
    case episodic = 4

    /// The short name the CLI and JSON use.
    public var name: String {
        switch self {
        case .none: "none"
        case .streamingLLM: "streaming"
        case .tova: "tova"
        case .heavyHitter: "h2o"
        case .episodic: "episodic"
        }
    }
}

/// A token-eviction policy and its parameters (the eviction fields of `kvc_config`); set per
/// engine and overridable per sequence (`Engine.setEviction`).
///
/// Budgets: `compact(budget)` keeps at most `budget` tokens per layer (per head in per-head
/// mode). H2O and episodic split it into a recent window of `recentTokens` tokens (or, when
/// that is 0, `recentRatio * budget`) and heavy hitters for the rest; StreamingLLM keeps
/// `sinkTokens` sinks and a recent window of the rest.
public struct EvictionConfig: Equatable, Sendable {
    /// The policy.
    public var policy: EvictionPolicyKind = .none
    /// False: one kept set per layer, chosen from the scores summed over the layer's heads
    /// (for H2O a per-layer variant). True: one kept set per KV head (positions and bytes then
    /// differ per head), H2O as its paper keeps.
    public var perHead: Bool = false
    /// StreamingLLM's attention sinks: the first positions always kept.
    public var sinkTokens: Int = 4
    /// The recent window as a count; 0 means `recentRatio * budget`. A window past the budget
    /// is clamped to it: the budget's newest tokens are kept, no heavy hitter.
    public var recentTokens: Int = 0
    /// The recent window as a fraction of the budget, in 0...1 (when `recentTokens` is 0).
    public var recentRatio: Float = 0.5
    /// H2O and episodic scores: false ranks tokens by the raw sum of the attention they got
    /// (the H2O paper); true by that sum divided by the number of queries that could see the
    /// token (an average that does not favour old tokens merely for being old).
    public var normalizedScores: Bool = false
    /// Episodes k of the episodic policy's k-means, 1...64.
    public var episodes: Int = 4
    /// Dimension of segment and query embeddings, 1...4096, or 0: fixed per sequence by its
    /// first segment.
    public var embeddingDim: Int = 0
    /// The k-means seed: the same segments and seed give the same episodes on every machine.
    public var seed: UInt64 = 0x6b76_6361_6368_6531
    /// True: per-layer budgets follow each layer's sensitivity (`setLayerSensitivity`) or,
    /// without one, the normalised entropy of the attention it observed; the mean stays the
    /// budget exactly, every layer keeping at least one token. False: every layer gets the
    /// budget.
    public var adaptiveBudgets: Bool = false

    /// The defaults above (no eviction).
    public init() {}

    /// A configuration for `policy` with the other defaults.
    public init(_ policy: EvictionPolicyKind) { self.policy = policy }

    /// Checks each field; throws `invalidArgument` naming it.
    public func validate() throws(KVError) {
        guard (0...(1 << 24)).contains(sinkTokens) else { throw .invalid("sink_tokens \(sinkTokens) is outside 0...16777216") }
        guard (0...(1 << 24)).contains(recentTokens) else { throw .invalid("recent_tokens \(recentTokens) is outside 0...16777216") }
        guard recentRatio >= 0 && recentRatio <= 1 else { throw .invalid("recent_ratio \(recentRatio) is outside 0...1") }
        guard (1...64).contains(episodes) else { throw .invalid("episodes \(episodes) is outside 1...64") }
        guard (0...4096).contains(embeddingDim) else { throw .invalid("embedding_dim \(embeddingDim) is outside 0...4096") }
    }

    /// What an eviction state must keep for this configuration's policy: the policy type's
    /// answer (`EvictionPolicy.tracking`). Cost: O(1).
    public var tracking: ScoreTracking { policy.policyType.tracking(self) }
    /// Whether the policy keeps every token (`EvictionPolicy.keepsEveryToken`). Cost: O(1).
    var keepsEveryToken: Bool { policy.policyType.keepsEveryToken }

    /// The recent window for `budget`: at most `budget` (`Selection` requires it).
    @inline(__always) func recentWindow(budget: Int) -> Int {
        recentTokens > 0 ? min(recentTokens, budget) : min(budget, Int(Float(budget) * recentRatio))
    }
}
