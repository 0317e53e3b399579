/// TOVA (Oren et al., 2024): keeps the tokens the last observed query attended to most
/// (summed over the layer's heads in per-layer mode); no history beyond one step.
public struct TOVAPolicy: EvictionPolicy {
    /// `EvictionPolicyKind.tova`: this policy's kind, always.
    public var kind: EvictionPolicyKind { .tova }

    /// A TOVA policy.
    public init() {}

    /// A TOVA policy (it has no parameter).
    public init(_ config: EvictionConfig) { self.init() }

    /// The last step's scores (`EvictionRow.last`), all it ranks by.
    public static func tracking(_ config: EvictionConfig) -> ScoreTracking { .lastStep }

    /// False: it keeps the budget.
    public static var keepsEveryToken: Bool { false }

    /// Top `budget` slots by the last step's attention, ties to the lowest slot. Cost: a
    /// decode step (fewer than `Selection.smallEviction` evictions) one pass over the scores
    /// (`Selection.evictFewest`, no window); else O(count) expected (`Selection.markTop`).
    public func choose(_ row: EvictionRow, scratch: SelectionScratch, keep: UnsafeMutablePointer<UInt8>) {
        let k = min(row.budget, row.count)
        if row.count - k < Selection.smallEviction {
            Selection.evictFewest(row, k, recentFrom: row.nextPosition, scores: row.last, plus: nil, visible: nil, keep: keep)
            return
        }
        for i in 0..<row.count { keep[i] = 0 }
        Selection.markTop(row.count, k, scratch: scratch, keep: keep) { row.last[$0] }
    }
}
