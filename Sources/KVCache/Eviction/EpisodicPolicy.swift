/// EpiCache (Kim et al., 2025), as an eviction policy: H2O's recent window plus heavy
/// hitters, but heavy hitters ranked by the attention observed while the *focused episode's*
/// queries ran, so that a conversation returning to an earlier topic finds that topic's
/// tokens kept. Episodes come from k-means over the segments the server registered
/// (`Engine.addSegment`, `KMeans`). A turn's observed attention is credited, at the next
/// `Engine.focus`, to the episode of the segment the server added for that turn (so the
/// first turn, observed before any episode existed, counts too); the focus then picks the
/// episode nearest to the new query, and heavy hitters are ranked by that episode's
/// attention plus the current turn's. Before any focus, or while the focused episode has
/// observed nothing, it is H2O.
///
/// EpiCache-style, not the paper's method (arXiv 2509.17396): the paper builds a cache per
/// episode by block-wise prefill, scoring tokens by the attention of the episode's medoid
/// segment over the whole history, matches a query to the nearest centroid, and sets
/// per-layer budgets by key-state sensitivity; this policy credits instead the attention
/// observed while an episode's own turns ran (and its adaptive budgets use the server's
/// sensitivity or observed entropy).
///
/// With a disk tier (per layer or per head) the tokens outside the focused episode are
/// offloaded instead of dropped, so a later focus on another episode restores them
/// (Engine+EpisodicOffload.swift);
/// without one they are dropped like H2O's (see docs/token-eviction.md, "Episodic offload").
public struct EpisodicPolicy: EvictionPolicy {
    /// `EvictionPolicyKind.episodic`: this policy's kind, always.
    public var kind: EvictionPolicyKind { .episodic }
    /// The parameters (recent window, normalisation, episodes).
    public let config: EvictionConfig

    /// An episodic policy with `config`'s parameters.
    public init(_ config: EvictionConfig) { self.config = config }

    /// H2O's (whose choice it makes, on an episode's scores while focused), plus the scores
    /// per episode and turn. Its low-score records hold while the focus does: the focused
    /// episode's scores plus the turn's only grow, and every focus forgets the records.
    public static func tracking(_ config: EvictionConfig) -> ScoreTracking {
        HeavyHitterPolicy.tracking(config).union(.episodes)
    }

    /// False: it keeps the budget.
    public static var keepsEveryToken: Bool { false }

    /// The recent window, then the top scores of the focused episode (H2O's when none).
    /// Cost: O(count) expected, no allocation.
    public func choose(_ row: EvictionRow, scratch: SelectionScratch, keep: UnsafeMutablePointer<UInt8>) {
        if let episode = row.episode {
            HeavyHitterPolicy.choose(row, scores: episode, plus: row.turn, config: config, scratch: scratch, keep: keep)
        } else {
            HeavyHitterPolicy.choose(row, scores: row.accumulated, plus: nil, config: config, scratch: scratch, keep: keep)
        }
    }
}
