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
    /// Queries that could see each slot's token (for normalised scores), less `visibleOffset`.
    public var visible: UnsafePointer<Float>
    /// Added to every `visible` entry: slot `i`'s token was seen by `visible[i] + visibleOffset`
    /// queries (the engine stores counts relative to a layer's total; see `EvictionState`).
    public var visibleOffset: Float = 0
    /// Attention accumulated while the focused episode's queries ran, or nil (no focus, or
    /// the episode has observed nothing yet).
    public var episode: UnsafePointer<Float>?
    /// The current turn's attention (observed since the last focus), added slot by slot to
    /// `episode` to score a slot (`episode[i] + turn[i]`), or nil (`episode` alone).
    public var turn: UnsafePointer<Float>? = nil
    /// One past the newest position the sequence has held.
    public var nextPosition: Int
    /// Tokens to keep: 1...count.
    public var budget: Int
    /// The row's record of its lowest scores between decode steps, or nil
    /// (`EvictionState.plan` passes it, on a row that does not park, to a policy whose
    /// tracking has `ScoreTracking.lowScores`).
    var lowScores: LowScoreCache.Row? = nil
}

/// Scratch memory a decision may use, allocated once per sequence (capacity = the most
/// tokens a row can hold), so that choosing allocates nothing.
public struct SelectionScratch {
    /// `capacity` floats (twice a row's slots lets selection work on a copy).
    public var values: UnsafeMutablePointer<Float>
    /// At least as many slot indices as a row has slots.
    public var slots: UnsafeMutablePointer<Int32>
    /// Floats `values` holds.
    public var capacity: Int
}

/// A token-eviction policy: given one row, marks which slots stay.
///
/// Contract: `choose` writes `keep[i]` (1 keep, 0 evict) for every slot `i < row.count` and
/// marks exactly `min(row.budget, row.count)` slots; it reads only `row` (what was observed)
/// and may overwrite `scratch`. Cost: O(count) expected, no allocation.
///
/// What a policy needs observed is its own answer (`tracking`, `keepsEveryToken`): the
/// engine and `EvictionState` ask the policy type, never compare kinds, so that a new
/// policy is one file plus its case in `EvictionPolicyKind.policyType`.
public protocol EvictionPolicy: Sendable {
    /// Which policy this is.
    var kind: EvictionPolicyKind { get }
    /// The policy with `config`'s parameters (those it has; it ignores the others).
    init(_ config: EvictionConfig)
    /// What the eviction state must keep for this policy's choices under `config`, beyond
    /// positions and accumulated attention; the `EvictionRow` fields it leaves out are
    /// placeholders `choose` must not read. Depends on `config` and the type only.
    /// Cost: O(1); `EvictionState` asks once, at creation, and the engine once per call
    /// that needs it (never per token or row).
    static func tracking(_ config: EvictionConfig) -> ScoreTracking
    /// Whether `choose` keeps every slot whatever the budget: compacting then changes
    /// nothing, so the engine keeps no eviction state for the sequence (it only checks
    /// observed scores) and `compact` returns at once. Cost: O(1).
    static var keepsEveryToken: Bool { get }
    /// Chooses the slots `row` keeps, into `keep`.
    func choose(_ row: EvictionRow, scratch: SelectionScratch, keep: UnsafeMutablePointer<UInt8>)
}

extension EvictionPolicyKind {
    /// The policy type of this kind: the one place a kind names its policy. Cost: O(1).
    public var policyType: any EvictionPolicy.Type {
        switch self {
        case .none: NoEviction.self
        case .streamingLLM: StreamingLLMPolicy.self
        case .tova: TOVAPolicy.self
        case .heavyHitter: HeavyHitterPolicy.self
        case .episodic: EpisodicPolicy.self
        }
    }

    /// The policy object for this kind with `config`'s parameters.
    public func policy(_ config: EvictionConfig) -> any EvictionPolicy { policyType.init(config) }
}

/// Helpers shared by the policies: windows by position and top-k by score.
enum Selection {
    /// Marks (1 in `keep`) every slot of `row` whose position is below `sinks` or among the
    /// last `recent` positions (at least `row.nextPosition - recent`); returns how many it
    /// marked. Clears the rest. Cost: one pass over the row.
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
    /// slot: a compaction's choice (a decode step's few evictions take `evictFewest`).
    /// Cost: O(count): a gather, a threshold search (`kthLargest`), one marking pass.
    @inline(__always)
    static func markTop(
        _ count: Int, _ k: Int, scratch: SelectionScratch, keep: UnsafeMutablePointer<UInt8>, score: (Int) -> Float
    ) {
        guard k > 0 else { return }
        var n = 0
        for i in 0..<count where keep[i] == 0 {
            scratch.values[n] = score(i)
            scratch.slots[n] = Int32(i)
            n += 1
        }
        if k >= n {
            for j in 0..<n { keep[Int(scratch.slots[j])] = 1 }
            return
        }
        let threshold: Float  // the k-th largest value
        // The selection reorders, so it works on a copy in the upper half of `values` when it
        // fits, else recomputes the scores afterwards.
        if 2 * n <= scratch.capacity {
            (scratch.values + n).update(from: scratch.values, count: n)
            threshold = kthLargest(scratch.values + n, n, k)
        } else {
            threshold = kthLargest(scratch.values, n, k)
            for j in 0..<n { scratch.values[j] = score(Int(scratch.slots[j])) }
        }
        var above = 0
        for j in 0..<n where scratch.values[j] > threshold { above += 1 }
        var ties = k - above
        for j in 0..<n {
            let v = scratch.values[j]
            if v > threshold {
                keep[Int(scratch.slots[j])] = 1
            } else if v == threshold && ties > 0 {
                keep[Int(scratch.slots[j])] = 1
                ties -= 1
            }
        }
    }

    /// Adds to `keep` the `k` unmarked slots with the newest positions (`newest`) or the
    /// oldest. Positions are compared as integers: a `Float` holds them exactly only below
    /// 2^24, and a compacting stream's positions grow past that (neighbours then tie in
    /// `markTop`, and an older token could win). Positions of a row are distinct, so exactly
    /// `min(k, unmarked)` slots are marked. Cost: O(count): a gather into `scratch.slots`, a
    /// threshold search (as `markTop`'s), one marking pass.
    @inline(__always)
    static func markByPosition(_ row: EvictionRow, _ k: Int, newest: Bool, scratch: SelectionScratch, keep: UnsafeMutablePointer<UInt8>) {
        guard k > 0 else { return }
        // The key orders as wanted, largest first: `~p` (= -p - 1) reverses the order, exactly.
        @inline(__always) func key(_ i: Int) -> Int32 { newest ? row.positions[i] : ~row.positions[i] }
        var n = 0
        for i in 0..<row.count where keep[i] == 0 {
            scratch.slots[n] = key(i)
            n += 1
        }
        let threshold: Int32  // the k-th largest key
        if k >= n {
            threshold = .min
        } else if n - k < smallEviction {
            threshold = smallestOrder(scratch.slots, n, n - k + 1)
        } else {
            threshold = kthLargest(scratch.slots, n, k)
        }
        for i in 0..<row.count where keep[i] == 0 && key(i) >= threshold { keep[i] = 1 }
    }

    /// Keeps all but the `row.count - k` (< `smallEviction`) slots outside the recent window
    /// (positions >= `recentFrom`; TOVA passes `row.nextPosition`: no window) with the lowest
    /// score, ties evicting the highest slot first: the same choice as `markWindows` +
    /// `markTop`, in one pass over the row with a max-heap of the lowest candidates
    /// (`makeHeap`; the steady state of decoding, where each step evicts about one token). A slot's score is `scores[i]` (plus `plus[i]` when
    /// given), divided by `max(visible[i] + row.visibleOffset, 1)` when `visible` is given. Precondition: the
    /// window holds at most `k` slots. Cost: one SIMD pass (8 slots per compare against the
    /// current cut; only a chunk with a slot at or below it takes the scalar path), O(log h)
    /// per candidate that enters the heap of h = `row.count - k` (+ `LowScoreCache.lowCapacity`
    /// with a cache) items, O(h) to build it and O(h log h) to sort it at the end, no
    /// allocation. With `row.lowScores` the pass also records the row's lowest candidates, and
    /// later steps that record proves choose from it instead: O(`LowScoreCache` record) per
    /// step, a pass about once per `LowScoreCache.pendingCapacity` steps.
    @inline(__always)
    static func evictFewest(
        _ row: EvictionRow, _ k: Int, recentFrom: Int, scores: UnsafePointer<Float>, plus: UnsafePointer<Float>?,
        visible: UnsafePointer<Float>?, keep: UnsafeMutablePointer<UInt8>
    ) {
        let evict = row.count - k
        keep.update(repeating: 1, count: row.count)
        guard evict > 0 else { return }
        let cache = row.lowScores, offset = row.visibleOffset
        @inline(__always) func score(_ i: Int) -> Float {
            let s = plus.map { scores[i] + $0[i] } ?? scores[i]
            guard let visible else { return s }
            return s / max(visible[i] + offset, 1)
        }
        // Orders (score, slot) by score, then higher slot first: the first `evict` go.
        @inline(__always) func before(_ a: (Float, Int32), _ b: (Float, Int32)) -> Bool { a.0 < b.0 || (a.0 == b.0 && a.1 > b.1) }
        // The scan keeps the `size` lowest, in a max-heap by `before` whose top is the cut:
        // those to evict, and the cache's record after them.
        let size = cache == nil ? evict : evict + LowScoreCache.lowCapacity
        withUnsafeTemporaryAllocation(of: (Float, Int32).self, capacity: size) { buffer in
            if let cache, cache.choose(evict, from: recentFrom, score: score, queries: offset, into: buffer, before: before) {
                for j in 0..<evict { keep[Int(buffer[j].1)] = 0 }
                return
            }
            // The fewest queries any candidate was seen by (normalised scores, for the record).
            var fewestSeen = Float.infinity
            @inline(__always) func noteSeen(_ i: Int) {
                if let visible { fewestSeen = min(fewestSeen, visible[i] + offset) }
            }
            // Positions `recentFrom..<pendingUntil` are recorded as pending (none without a cache).
            let pendingUntil = cache?.beginScan(from: recentFrom, nextPosition: row.nextPosition) ?? recentFrom
            var filled = 0, i = 0
            while filled < size && i < row.count {  // the first `size` candidates, then a heap
                let p = Int(row.positions[i])
                if p < recentFrom {
                    buffer[filled] = (score(i), Int32(i))
                    noteSeen(i)
                    filled += 1
                } else if p < pendingUntil {
                    cache?.addPending(i, p)
                }
                i += 1
            }
            precondition(filled >= evict, "the recent window holds at most the budget")
            makeHeap(buffer, filled, before: before)
            // The rest (when the buffer filled up): a window slot scores +infinity (never
            // evicted); only a score at or below the current cut, or a pending position, takes
            // the slow path.
            var cut = filled == size ? buffer[0].0 : Float.infinity
            @inline(__always) func consider(_ i: Int) {
                let p = Int(row.positions[i])
                if p >= recentFrom {
                    if p < pendingUntil { cache?.addPending(i, p) }
                    return
                }
                noteSeen(i)
                let s = score(i)
                if s <= cut && before((s, Int32(i)), buffer[0]) {
                    siftDown((s, Int32(i)), at: 0, buffer, size, before: before)
                    cut = buffer[0].0
                }
            }
            typealias V = SIMD8<Float>
            let from = SIMD8<Int32>(repeating: Int32(clamping: recentFrom))
            let until = SIMD8<Int32>(repeating: Int32(clamping: pendingUntil))
            let one = V(repeating: 1), shift = V(repeating: offset), never = V(repeating: .infinity)
            var fewest = never
            let scoreBytes = UnsafeRawPointer(scores), positionBytes = UnsafeRawPointer(row.positions)
            let plusBytes = plus.map { UnsafeRawPointer($0) }, visibleBytes = visible.map { UnsafeRawPointer($0) }
            while i + 8 <= row.count {
                var s = scoreBytes.loadUnaligned(fromByteOffset: i * 4, as: V.self)
                if let plusBytes { s += plusBytes.loadUnaligned(fromByteOffset: i * 4, as: V.self) }
                let p = positionBytes.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Int32>.self)
                if let visibleBytes {
                    let seen = visibleBytes.loadUnaligned(fromByteOffset: i * 4, as: V.self) + shift
                    s /= pointwiseMax(seen, one)
                    fewest = pointwiseMin(fewest, seen.replacing(with: never, where: p .>= from))
                }
                if any(((s .<= V(repeating: cut)) .& (p .< from)) .| ((p .>= from) .& (p .< until))) {
                    for j in i..<(i + 8) { consider(j) }
                }
                i += 8
            }
            while i < row.count {
                consider(i)
                i += 1
            }
            sortHeap(buffer, filled, before: before)
            for j in 0..<evict { keep[Int(buffer[j].1)] = 0 }
            cache?.endScan(low: UnsafeBufferPointer(rebasing: buffer[0..<filled]), positions: row.positions,
                           bound: filled == size ? buffer[size - 1].0 : .infinity, validUntil: pendingUntil,
                           fewestSeen: visible == nil ? .infinity : max(min(fewestSeen, fewest.min()), 1), queries: offset)
        }
    }

    /// Inserts `item` into `buffer[0..<filled]`, sorted by `before`, keeping at most `size`
    /// items (one past the end is dropped). Cost: O(filled) moves.
    @inline(__always)
    static func insertSorted(
        _ item: (Float, Int32), into buffer: UnsafeMutableBufferPointer<(Float, Int32)>, filled: Int, size: Int,
        before: ((Float, Int32), (Float, Int32)) -> Bool
    ) {
        var j = filled
        while j > 0 && before(item, buffer[j - 1]) {
            if j < size { buffer[j] = buffer[j - 1] }
            j -= 1
        }
        if j < size { buffer[j] = item }
    }

    /// Evictions below which a choice is a decode step's: `evictFewest` (H2O, episodic, TOVA)
    /// and `evictOldest` (StreamingLLM, counting its sinks too) choose in one pass over the row,
    /// and `markByPosition` finds its threshold with a sorted buffer.
    static let smallEviction = 32

    /// The `order`-th smallest of `values[0..<n]` (1 <= order <= min(n, smallEviction)), in one
    /// pass keeping the `order` smallest seen in a sorted stack buffer. Does not reorder.
    @inline(__always)
    static func smallestOrder<T: Comparable>(_ values: UnsafeMutablePointer<T>, _ n: Int, _ order: Int) -> T {
        withUnsafeTemporaryAllocation(of: T.self, capacity: order) { buffer in
            var filled = 0
            for j in 0..<n {
                let v = values[j]
                if filled == order && !(v < buffer[order - 1]) { continue }
                var i = filled == order ? order - 1 : filled
                if filled < order { filled += 1 }
                while i > 0 && buffer[i - 1] > v {
                    buffer[i] = buffer[i - 1]
                    i -= 1
                }
                buffer[i] = v
            }
            return buffer[order - 1]
        }
    }

    /// The `k`-th largest of `values[0..<n]` (1 <= k <= n); reorders `values` (a
    /// permutation). Introselect: Hoare quickselect with the median of three values (first,
    /// middle, last) as pivot, on `nintherFrom` values or more the median of three such medians
    /// spread over the range (a ninther), then `heapSelect` on what is left once `2 log2(n)`
    /// passes have not found it. Median of three alone made it quadratic on a compacted row's
    /// newest positions (a few newest in the oldest slots, then ascending: the median of three
    /// is next to the maximum, each pass drops a few); the pass limit bounds any input.
    /// Cost: O(n) expected, O(n log n) at worst; deterministic, no allocation.
    static func kthLargest<T: Comparable>(_ values: UnsafeMutablePointer<T>, _ n: Int, _ k: Int) -> T {
        var lo = 0, hi = n - 1
        let target = k - 1  // index in descending order
        var passes = 2 * (Int.bitWidth - n.leadingZeroBitCount)
        while lo < hi {
            if passes == 0 { return heapSelect(values + lo, hi - lo + 1, target - lo + 1) }
            passes -= 1
            let span = hi - lo, mid = lo + span / 2
            let pivot: T
            if span < nintherFrom {
                pivot = median(values[lo], values[mid], values[hi])
            } else {
                let d = span / 8
                pivot = median(median(values[lo], values[lo + d], values[lo + 2 * d]),
                               median(values[mid - d], values[mid], values[mid + d]),
                               median(values[hi - 2 * d], values[hi - d], values[hi]))
            }
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

    /// Ranges of at least this many values take a ninther pivot in `kthLargest`.
    static let nintherFrom = 128

    /// The median of `a`, `b`, `c`. Cost: 3 comparisons.
    @inline(__always)
    static func median<T: Comparable>(_ a: T, _ b: T, _ c: T) -> T {
        var a = a, b = b, c = c
        if a < b { swap(&a, &b) }
        if b < c { swap(&b, &c) }
        if a < b { swap(&a, &b) }
        return b
    }

    /// The `t`-th largest of `values[0..<m]` (1 <= t <= m), by a heap built in place at the
    /// front of `values` (`LowestHeap`): of the `t` largest seen, or of the `m - t + 1` smallest
    /// when fewer; its top is the answer. Reorders `values` (a permutation). `kthLargest`'s
    /// bound. Cost: O(m log min(t, m - t + 1)) comparisons, no allocation.
    static func heapSelect<T: Comparable>(_ values: UnsafeMutablePointer<T>, _ m: Int, _ t: Int) -> T {
        // Keeps the `size` first by `before` in a max-heap by `before`: its top is the
        // size-th first.
        @inline(__always) func first(_ size: Int, before: (T, T) -> Bool) -> T {
            let heap = UnsafeMutableBufferPointer(start: values, count: size)
            makeHeap(heap, size, before: before)
            for j in size..<m where before(values[j], heap[0]) {
                let item = values[j]
                values[j] = heap[0]
                siftDown(item, at: 0, heap, size, before: before)
            }
            return heap[0]
        }
        return t <= m - t + 1 ? first(t, before: >) : first(m - t + 1, before: <)
    }
}
