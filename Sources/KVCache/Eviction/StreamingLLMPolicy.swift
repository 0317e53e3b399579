/// StreamingLLM (Xiao et al., 2023): the first `sinkTokens` positions, which soak up
/// attention whatever the content ("attention sinks"), plus the most recent tokens, up to the
/// budget. Needs no scores: a baseline for score-based policies.
public struct StreamingLLMPolicy: EvictionPolicy {
    /// `EvictionPolicyKind.streamingLLM`: this policy's kind, always.
    public var kind: EvictionPolicyKind { .streamingLLM }
    /// Positions kept as sinks (fewer when the budget is smaller).
    public let sinkTokens: Int

    /// A StreamingLLM policy keeping `sinkTokens` sinks.
    public init(sinkTokens: Int) { self.sinkTokens = sinkTokens }

    /// A StreamingLLM policy keeping `config.sinkTokens` sinks.
    public init(_ config: EvictionConfig) { self.init(sinkTokens: config.sinkTokens) }

    /// Nothing beyond positions: it chooses by position alone.
    public static func tracking(_ config: EvictionConfig) -> ScoreTracking { [] }

    /// False: it keeps the budget.
    public static var keepsEveryToken: Bool { false }

    /// Keeps sinks by position, then the newest positions (compared as integers: exact for
    /// any position). Cost: a decode step (sinks and evictions together fewer than
    /// `Selection.smallEviction`) one pass over the positions (`Selection.evictOldest`); else
    /// O(count) per selection (`Selection.markByPosition`).
    public func choose(_ row: EvictionRow, scratch: SelectionScratch, keep: UnsafeMutablePointer<UInt8>) {
        let k = min(row.budget, row.count)
        let sinks = min(sinkTokens, k)
        if sinks + row.count - k < Selection.smallEviction {
            Selection.evictOldest(row, row.count - k, after: sinks, keep: keep)
            return
        }
        // Sinks: the `sinks` lowest positions present (the first ones unless evicted earlier).
        for i in 0..<row.count { keep[i] = 0 }
        Selection.markByPosition(row, sinks, newest: false, scratch: scratch, keep: keep)
        Selection.markByPosition(row, k - sinks, newest: true, scratch: scratch, keep: keep)
    }
}
