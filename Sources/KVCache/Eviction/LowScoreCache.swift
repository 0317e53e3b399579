/// Per row of a sequence's eviction state, the slots of the lowest raw accumulated scores
/// found by the last full decode-step scan, so that the next decode steps choose their few
/// evictions from about a hundred slots instead of rescanning the row (H2O with raw sums only).
///
/// Why it is exact: raw accumulated scores never fall (`observe` adds scores >= 0, and a
/// float sum of a value and a non-negative one is never below the value). A scan that keeps
/// the lowest candidates (positions below the recent window's start `from`), the `e` it
/// evicts and `lowCapacity` more, records the highest of them as `bound`: every other such
/// token scored at least `bound` then, so it still does. The scan also records `pending`, every token whose position lies
/// in `from ..< validUntil` (`validUntil = min(from + pendingCapacity, nextPosition)`): the
/// tokens that may leave the window before the next scan. A later step whose window starts at
/// `from' <= validUntil` has as candidates exactly the recorded slots with positions below
/// `from'` plus tokens scoring at least `bound`; when its `e`-th lowest recorded candidate
/// scores below `bound`, those `e` are the step's choice, ties broken as the scan breaks them
/// (every token of a tied score below `bound` is recorded). Otherwise the step rescans.
/// Tokens appended since the scan have positions >= `validUntil`, inside the window.
///
/// Invariants: while row `r` is valid its recorded slots are resident slots of the row,
/// distinct, holding the tokens they held at the scan (`remap` follows compaction moves);
/// anything else that moves a row's tokens (episodic parking and restores, which this cache
/// never serves) must `invalidate` it. Each recorded slot keeps its token's position beside it
/// (a token keeps its position), so a step reads only the recorded slots' scores: about a
/// hundred scattered loads per row. The tokens a scan chooses stay recorded until a compaction's
/// `remap` drops them as evicted: a plan that is never applied (the engine's memory step
/// failed) leaves a record that still covers them. Cost: `rows * (lowSlots + pendingCapacity)`
/// pairs.
final class LowScoreCache {
    /// Lowest candidates a scan records beyond those it evicts.
    static let lowCapacity = 64
    /// Room for a scan's lowest candidates: those it evicts (fewer than
    /// `Selection.smallEviction`) and `lowCapacity` more.
    static let lowSlots = lowCapacity + Selection.smallEviction
    /// Window positions recorded per scan: a scan serves at most this many steps of a window
    /// that moves one position per step.
    static let pendingCapacity = 64
    private static let stride = lowSlots + pendingCapacity

    /// Per row: `lowSlots` low (slot, position) pairs then `pendingCapacity` pending ones.
    private let slots: UnsafeMutablePointer<Int32>
    private let lowCount: UnsafeMutablePointer<Int32>
    private let pendingCount: UnsafeMutablePointer<Int32>
    private let bound: UnsafeMutablePointer<Float>
    /// The latest window start the row's record serves; `Int.min` when invalid.
    private let validUntil: UnsafeMutablePointer<Int>
    /// Full decode-step scans so far, over all rows (the steps the record did not serve).
    private let scanCount: UnsafeMutablePointer<Int>
    private let rows: Int

    /// Every row invalid.
    init(rows: Int) {
        self.rows = rows
        slots = .allocate(capacity: 2 * rows * Self.stride)
        lowCount = .allocate(capacity: rows)
        pendingCount = .allocate(capacity: rows)
        bound = .allocate(capacity: rows)
        validUntil = .allocate(capacity: rows)
        scanCount = .allocate(capacity: 1)
        scanCount.initialize(to: 0)
        lowCount.initialize(repeating: 0, count: rows)
        pendingCount.initialize(repeating: 0, count: rows)
        bound.initialize(repeating: 0, count: rows)
        validUntil.initialize(repeating: .min, count: rows)
    }

    deinit {
        slots.deallocate()
        lowCount.deallocate()
        pendingCount.deallocate()
        bound.deallocate()
        validUntil.deallocate()
        scanCount.deallocate()
    }

    /// Full decode-step scans so far (for tests: the steps the records did not serve).
    var scans: Int { scanCount.pointee }

    /// Row `r`'s record, for `Selection.evictFewest`.
    @inline(__always) func row(_ r: Int) -> Row {
        Row(slots: slots + 2 * r * Self.stride, lowCount: lowCount + r, pendingCount: pendingCount + r, bound: bound + r,
            validUntil: validUntil + r, scans: scanCount)
    }

    /// Forgets row `r`'s record: its next decode step scans.
    @inline(__always) func invalidate(row r: Int) { validUntil[r] = .min }

    /// Follows a compaction of row `r` to `kept` slots that moved slot `s` to `d` for each
    /// `(d, s)` pair of `moves`: a recorded slot at or past `kept` moves with its token or was
    /// evicted; one below `kept` stays unless it was a hole (evicted). Cost: O(recorded x moves).
    func remap(row r: Int, kept: Int, moves: UnsafeBufferPointer<Int32>) {
        guard validUntil[r] != .min else { return }
        let base = slots + 2 * r * Self.stride
        @inline(__always) func follow(_ list: UnsafeMutablePointer<Int32>, _ count: UnsafeMutablePointer<Int32>) {
            var out = 0
            for j in 0..<Int(count.pointee) {
                var x = list[2 * j]
                var evicted = x >= kept
                for m in Swift.stride(from: 0, to: moves.count, by: 2) {
                    if x >= kept && moves[m + 1] == x { x = moves[m]; evicted = false; break }
                    if x < kept && moves[m] == x { evicted = true; break }
                }
                if !evicted {
                    list[2 * out] = x
                    list[2 * out + 1] = list[2 * j + 1]
                    out += 1
                }
            }
            count.pointee = Int32(out)
        }
        follow(base, lowCount + r)
        follow(base + 2 * Self.lowSlots, pendingCount + r)
    }

    /// One row's record: pointers into the cache.
    struct Row {
        let slots: UnsafeMutablePointer<Int32>
        let lowCount: UnsafeMutablePointer<Int32>
        let pendingCount: UnsafeMutablePointer<Int32>
        let bound: UnsafeMutablePointer<Float>
        let validUntil: UnsafeMutablePointer<Int>
        let scans: UnsafeMutablePointer<Int>

        /// Starts a scan of a row whose window starts at `from`: records nothing yet, and the
        /// positions it records as pending end at the returned `validUntil`.
        @inline(__always) func beginScan(from: Int, nextPosition: Int) -> Int {
            lowCount.pointee = 0
            pendingCount.pointee = 0
            validUntil.pointee = .min
            scans.pointee += 1
            return min(from + LowScoreCache.pendingCapacity, nextPosition)
        }

        /// Records slot `i`, whose position `p` is in the scan's pending range.
        @inline(__always) func addPending(_ i: Int, _ p: Int) {
            let at = 2 * (LowScoreCache.lowSlots + Int(pendingCount.pointee))
            slots[at] = Int32(i)
            slots[at + 1] = Int32(p)
            pendingCount.pointee += 1
        }

        /// Ends a scan: `low` are the lowest candidates it found, those it evicts included
        /// (slots of a row whose positions are `positions`); every other candidate scored at
        /// least `bound`.
        @inline(__always) func endScan(
            low: UnsafeBufferPointer<(Float, Int32)>, positions: UnsafePointer<Int32>, bound: Float, validUntil until: Int
        ) {
            precondition(low.count <= LowScoreCache.lowSlots)
            for j in 0..<low.count {
                slots[2 * j] = low[j].1
                slots[2 * j + 1] = positions[Int(low[j].1)]
            }
            lowCount.pointee = Int32(low.count)
            self.bound.pointee = bound
            validUntil.pointee = until
        }

        /// The `evict` lowest of the recorded candidates (positions below `from`) by
        /// `before`, into `buffer`, when the record proves them the row's lowest; false (and
        /// `buffer` undefined) when the row must be scanned.
        @inline(__always) func choose(
            _ evict: Int, from: Int, scores: UnsafePointer<Float>,
            into buffer: UnsafeMutableBufferPointer<(Float, Int32)>, before: ((Float, Int32), (Float, Int32)) -> Bool
        ) -> Bool {
            guard from <= validUntil.pointee else { return false }
            var filled = 0
            @inline(__always) func offer(_ at: Int) {
                let i = slots[at]
                guard Int(slots[at + 1]) < from else { return }
                Selection.insertSorted((scores[Int(i)], i), into: buffer, filled: filled, size: evict, before: before)
                if filled < evict { filled += 1 }
            }
            for j in 0..<Int(lowCount.pointee) { offer(2 * j) }
            for j in 0..<Int(pendingCount.pointee) { offer(2 * (LowScoreCache.lowSlots + j)) }
            return filled == evict && buffer[evict - 1].0 < bound.pointee
        }
    }
}
