/// The full-cache reference: keeps every token, so `compact` changes nothing.
public struct NoEviction: EvictionPolicy {
    public var kind: EvictionPolicyKind { .none }

    /// A policy that keeps everything.
    public init() {}

    /// Marks every slot (the budget is ignored). Cost: O(count).
    public func choose(_ row: EvictionRow, scratch: SelectionScratch, keep: UnsafeMutablePointer<UInt8>) {
        for i in 0..<row.count { keep[i] = 1 }
    }
}
