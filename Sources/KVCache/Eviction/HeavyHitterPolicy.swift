/// H2O (Zhang et al., 2023): a recent window plus the "heavy hitters", the tokens with the
/// most attention accumulated over every query observed so far.
///
/// Granularity: the paper (and its code, `H2OKVCache_LayerWise`) keeps a set per head, which
/// is `EvictionConfig.perHead` here (`eviction_per_head`, `evict-eval --per-head`); the
/// default, one set per layer from scores summed over its heads, is a per-layer variant.
///
/// Scores: raw sums (`normalizedScores` false, the paper's choice and the default) favour
/// tokens that have been visible longer; normalised sums divide by the queries that could see
/// the token (`EvictionRow.visible`), so a new token is not penalised for having been seen by
/// fewer queries. `kvcache evict-eval` reports both (`h2o`, `h2o-norm`).
public struct HeavyHitterPolicy: EvictionPolicy {
    /// `EvictionPolicyKind.heavyHitter`: this policy's kind, always.
    public var kind: EvictionPolicyKind { .heavyHitter }
    /// The parameters (recent window, normalisation).
    public let config: EvictionConfig

    /// An H2O policy with `config`'s window and normalisation.
    public init(_ config: EvictionConfig) { self.config = config }

    /// Low-score records (accumulated sums only grow), and visibility counts when scores are
    /// normalised.
    public static func tracking(_ config: EvictionConfig) -> ScoreTracking {
        config.normalizedScores ? [.lowScores, .visibility] : .lowScores
    }

    /// False: it keeps the budget.
    public static var keepsEveryToken: Bool { false }

    /// The recent window by position, then the top accumulated scores among the rest.
    /// Cost: O(count) expected, no allocation; a decode step that `row.lowScores` serves
    /// reads only that record, plus O(count) to write `keep`.
    public func choose(_ row: EvictionRow, scratch: SelectionScratch, keep: UnsafeMutablePointer<UInt8>) {
        Self.choose(row, scores: row.accumulated, plus: nil, config: config, scratch: scratch, keep: keep)
    }

    /// H2O's choice with `scores` (plus `plus`, slot by slot, when given) as the accumulated
    /// attention (the episodic policy passes an episode's scores and the turn's).
    @inline(__always)
    static func choose(
        _ row: EvictionRow, scores: UnsafePointer<Float>, plus: UnsafePointer<Float>?, config: EvictionConfig,
        scratch: SelectionScratch, keep: UnsafeMutablePointer<UInt8>
    ) {
        let k = min(row.budget, row.count)
        let recent = config.recentWindow(budget: k)
        if row.count - k < Selection.smallEviction {  // a decode step: evict a few, one pass
            Selection.evictFewest(row, k, recentFrom: row.nextPosition - recent, scores: scores, plus: plus,
                                  visible: config.normalizedScores ? row.visible : nil, keep: keep)
            return
        }
        let inWindow = Selection.markWindows(row, sinks: 0, recent: recent, keep: keep)
        precondition(inWindow <= k, "the recent window holds at most the budget")
        let offset = row.visibleOffset
        switch (plus, config.normalizedScores) {
        case (nil, false): Selection.markTop(row.count, k - inWindow, scratch: scratch, keep: keep) { scores[$0] }
        case (nil, true): Selection.markTop(row.count, k - inWindow, scratch: scratch, keep: keep) { scores[$0] / max(row.visible[$0] + offset, 1) }
        case (let p?, false): Selection.markTop(row.count, k - inWindow, scratch: scratch, keep: keep) { scores[$0] + p[$0] }
        case (let p?, true):
            Selection.markTop(row.count, k - inWindow, scratch: scratch, keep: keep) { (scores[$0] + p[$0]) / max(row.visible[$0] + offset, 1) }
        }
    }
}
