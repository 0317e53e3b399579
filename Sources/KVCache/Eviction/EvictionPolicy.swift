/// What one policy decision sees: one row (a layer, or one KV head of a layer in per-head
/// mode) of a sequence's eviction state, slot by slot. Slot `i` holds the token at original
/// position `positions[i]`; slots are not in position order after a compaction.
///
/// Only what the server has reported so far is here (no policy can see future attention).
public struct EvictionRow {
    /// Tokens the row holds (slots 0..<count).
    public var count: Int
    /// Original position of each slot.
    public var positions: UnsafePointer<Int32>
    /// Attention accumulated per slot since the token arrived (summed over heads per layer).
    public var accumulated: UnsafePointer<Float>
    /// Attention of the last observed step only.
    public var last: UnsafePointer<Float>
    /// Queries that could see each slot's token (for normalised scores).
    public var visible: UnsafePointer<Float>
    /// Attention accumulated while the focused episode's queries ran, or nil (no focus, or
    /// the episode has observed nothing yet).
    public var episode: UnsafePointer<Float>?
    /// One past the newest position the sequence has held.
    public var nextPosition: Int
    /// Tokens to keep: 1...count.
    public var budget: Int
}

/// Scratch memory a decision may use, allocated once per sequence (capacity = the most
/// tokens a row can hold), so that choosing allocates nothing.
public struct SelectionScratch {
    /// `capacity` floats.
    public var values: UnsafeMutablePointer<Float>
    /// `capacity` slot indices.
    public var slots: UnsafeMutablePointer<Int32>
    /// Elements each buffer holds.
    public var capacity: Int
}

/// A token-eviction policy: given one row, marks which slots stay.
///
/// Contract: `choose` writes `keep[i]` (1 keep, 0 evict) for every slot `i < row.count` and
/// marks exactly `min(row.budget, row.count)` slots; it reads only `row` (what was observed)
/// and may overwrite `scratch`. Cost: O(count) expected, no allocation.
public protocol EvictionPolicy: Sendable {
    /// Which policy this is.
    var kind: EvictionPolicyKind { get }
    /// Chooses the slots `row` keeps, into `keep`.
    func choose(_ row: EvictionRow, scratch: SelectionScratch, keep: UnsafeMutablePointer<UInt8>)
}

extension EvictionPolicyKind {
    /// The policy object for this kind with `config`'s parameters.
    public func policy(_ config: EvictionConfig) -> any EvictionPolicy {
        switch self {
        case .none: NoEviction()
        case .streamingLLM: StreamingLLMPolicy(sinkTokens: config.sinkTokens)
        case .tova: TOVAPolicy()
        case .heavyHitter: HeavyHitterPolicy(config)
        case .episodic: EpisodicPolicy(config)
        }
    }

    /// Whether observing must keep the last step's scores (TOVA).
    var tracksLast: Bool { self == .tova }
    /// Whether observing must keep per-slot visibility counts.
    var tracksVisibility: Bool { self == .heavyHitter || self == .episodic }
}

/// Helpers shared by the policies: windows by position and top-k by score.
enum Selection {
    /// Marks every slot whose position is below `sinks` or at least `recentFrom`, up to
    /// `limit` marks (sinks first, then newest); returns how many it marked. Clears the rest.
    @inline(__always)
    static func markWindows(_ row: EvictionRow, sinks: Int, recent: Int, keep: UnsafeMutablePointer<UInt8>) -> Int {
        let recentFrom = row.nextPosition - recent
        var marked = 0
        for i in 0..<row.count {
            let p = Int(row.positions[i])
            let k: UInt8 = (p < sinks || p >= recentFrom) ? 1 : 0
            keep[i] = k
            marked += Int(k)
        }
        return marked
    }

    /// Adds to `keep` the `k` unmarked slots with the highest `score(i)`, ties to the lowest
    /// slot. Cost: O(count) expected (quickselect on a copy in `scratch`).
    @inline(__always)
    static func markTop(
        _ count: Int, _ k: Int, scratch: SelectionScratch, keep: UnsafeMutablePointer<UInt8>, score: (Int) -> Float
    ) {
        guard k > 0 else { return }
        var n = 0
        for i in 0..<count where keep[i] == 0 {
            scratch.values[n] = score(i)
            n += 1
        }
        if k >= n {
            for i in 0..<count { keep[i] = 1 }
            return
        }
        let threshold = kthLargest(scratch.values, n, k)
        var above = 0
        for i in 0..<count where keep[i] == 0 && score(i) > threshold { above += 1 }
        var ties = k - above
        for i in 0..<count where keep[i] == 0 {
            let s = score(i)
            if s > threshold {
                keep[i] = 2
            } else if s == threshold && ties > 0 {
                keep[i] = 2
                ties -= 1
            }
        }
        for i in 0..<count where keep[i] == 2 { keep[i] = 1 }
    }

    /// The `k`-th largest of `values[0..<n]` (1 <= k <= n); reorders `values`.
    /// Hoare quickselect with a median-of-three pivot: O(n) expected, deterministic.
    static func kthLargest(_ values: UnsafeMutablePointer<Float>, _ n: Int, _ k: Int) -> Float {
        var lo = 0, hi = n - 1
        let target = k - 1  // index in descending order
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            var a = values[lo], b = values[mid], c = values[hi]
            if a < b { swap(&a, &b) }
            if b < c { swap(&b, &c) }
            if a < b { swap(&a, &b) }
            let pivot = b
            var i = lo, j = hi
            while i <= j {
                while values[i] > pivot { i += 1 }
                while values[j] < pivot { j -= 1 }
                if i <= j {
                    let t = values[i]; values[i] = values[j]; values[j] = t
                    i += 1
                    j -= 1
                }
            }
            if target <= j { hi = j } else if target >= i { lo = i } else { return values[target] }
        }
        return values[target]
    }
}
