/// The full-cache reference: keeps every token, so `compact` changes nothing.
public struct NoEviction: EvictionPolicy {
    /// `EvictionPolicyKind.none`: this policy's kind, always.
    public var kind: EvictionPolicyKind { .none }

    /// A policy that keeps everything.
    public init() {}

    /// A policy that keeps everything (it has no parameter).
    public init(_ config: EvictionConfig) { self.init() }

    /// Nothing beyond positions: it reads no score.
    public static func tracking(_ config: EvictionConfig) -> ScoreTracking { [] }

    /// True: no state is kept and nothing observed.
    public static var keepsEveryToken: Bool { true }

    /// Marks every slot (the budget is ignored). Cost: O(count).
    public func choose(_ row: EvictionRow, scratch: SelectionScratch, keep: UnsafeMutablePointer<UInt8>) {
        for i in 0..<row.count { keep[i] = 1 }
    }
}
