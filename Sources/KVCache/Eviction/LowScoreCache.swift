#if canImport(Glibc)
import Glibc
#endif

/// Per row of a sequence's eviction state, the slots of the lowest H2O scores found by the
/// last full decode-step scan, so that the next decode steps choose their few evictions from
/// about a hundred slots instead of rescanning the row.
///
/// Why it is exact, for raw sums: accumulated scores never fall (`observe` adds scores >= 0,
/// and a float sum of a value and a non-negative one is never below the value). A scan that
/// keeps the lowest candidates (positions below the recent window's start `from`), the `e` it
/// evicts and `lowCapacity` more, records the highest of them as `bound`: every other such
/// token scored at least `bound` then, so it still does. The scan also records `pending`,
/// every token whose position lies in `from ..< validUntil` (`validUntil = min(from +
/// pendingCapacity, nextPosition)`): the tokens that may leave the window before the next
/// scan. A later step whose window starts at `from' <= validUntil` has as candidates exactly
/// the recorded slots with positions below `from'` plus tokens scoring at least `bound`; when
/// its `e`-th lowest recorded candidate scores below `bound`, those `e` are the step's choice,
/// ties broken as the scan breaks them (every token of a tied score below `bound` is
/// recorded). Otherwise the step rescans. Tokens appended since the scan have positions >=
/// `validUntil`, inside the window.
///
/// Normalised sums (a token's sum over the `v` queries that could see it) can fall, but only
/// so far: after `q` more queries (a layer's total; no token sees more of them) a token that
/// scored `s = a / v >= bound` scores at least `a / (v + q) >= bound * v / (v + q)`, and that
/// is at least `bound * v0 / (v0 + q)` for `v0`, the fewest queries any candidate of the scan
/// had seen (a count rises by at most `q`). A step then compares its `e`-th lowest recorded
/// candidate with that lower limit, shrunk by 2^-20 for the roundings of the divisions on both
/// sides, so the choice stays exactly a scan's; the limit falls as queries arrive, so the
/// record serves fewer steps the smaller `v0` is against the steps since the scan (a recent
/// window of a few hundred positions makes `v0` that large).
///
/// Episodic scores (the focused episode's plus the current turn's, raw or normalised) behave
/// the same while the focus holds: `observe` adds only to the turn. A focus may credit the turn
/// to another episode, re-cluster or change the episode, so `EvictionState` forgets every
/// row's record then (`invalidateAll`).
///
/// Invariants: while row `r` is valid its recorded slots are resident slots of the row,
/// distinct, holding the tokens they held at the scan (`remap` follows compaction and
/// truncation moves; after a truncation `limit` keeps windows past the cut unserved);
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
    /// Normalised scores: the fewest queries a candidate of the scan had seen (at least 1),
    /// and the layer's query total then; raw sums: +infinity and 0.
    private let fewestSeen: UnsafeMutablePointer<Float>
    private let queriesAtScan: UnsafeMutablePointer<Float>
    /// The latest window start the row's record serves; `Int.min` when invalid.
    private let validUntil: UnsafeMutablePointer<Int>
    /// Full decode-step scans so far, over all rows (the steps the record did not serve).
    private let scanCount: UnsafeMutablePointer<Int>
    private let rows: Int

    /// Every row invalid. `recording`: whether `row(_:)` will be asked for (the state's
    /// tracking has `ScoreTracking.lowScores`); without it the per-row slot records, the
    /// cache's bulk (`2 * (lowSlots + pendingCapacity)` Int32 per row), are not allocated and
    /// only the O(rows) bookkeeping that `invalidate` and `remap` read is. Throws
    /// `outOfMemory` naming the bytes when they cannot be allocated (`CheckedAllocations`;
    /// then nothing is kept): they live outside `memory_bytes`, where Swift's `allocate` would
    /// end the process.
    init(rows: Int, recording: Bool) throws(KVError) {
        let count = recording ? 2 * rows * Self.stride : 0
        let a = CheckedAllocations()
        let what = "the token-eviction state's low-score records for \(rows) rows (outside memory_bytes)"
        slots = try a.allocate(count: count, what)
        lowCount = try a.allocate(repeating: 0, count: rows, what)
        pendingCount = try a.allocate(repeating: 0, count: rows, what)
        bound = try a.allocate(repeating: 0, count: rows, what)
        fewestSeen = try a.allocate(repeating: .infinity, count: rows, what)
        queriesAtScan = try a.allocate(repeating: 0, count: rows, what)
        validUntil = try a.allocate(repeating: .min, count: rows, what)
        scanCount = try a.allocate(repeating: 0, count: 1, what)
        a.keep()
        self.rows = rows
        recordBytes = count * MemoryLayout<Int32>.stride
    }

    deinit {
        for p in [UnsafeMutableRawPointer(slots), UnsafeMutableRawPointer(lowCount), UnsafeMutableRawPointer(pendingCount),
                  UnsafeMutableRawPointer(bound), UnsafeMutableRawPointer(fewestSeen), UnsafeMutableRawPointer(queriesAtScan),
                  UnsafeMutableRawPointer(validUntil), UnsafeMutableRawPointer(scanCount)] {
            free(p)
        }
    }

    /// Full decode-step scans so far (for tests: the steps the records did not serve).
    var scans: Int { scanCount.pointee }

    /// Bytes of the rows' slot records: `2 * rows * (lowSlots + pendingCapacity)` Int32 when
    /// created `recording`, else 0 (tests).
    let recordBytes: Int

    /// Row `r`'s record, for `Selection.evictFewest`; only of a cache created `recording`.
    @inline(__always) func row(_ r: Int) -> Row {
        Row(slots: slots + 2 * r * Self.stride, lowCount: lowCount + r, pendingCount: pendingCount + r, bound: bound + r,
            fewestSeen: fewestSeen + r, queriesAtScan: queriesAtScan + r, validUntil: validUntil + r, scans: scanCount)
    }

    /// Row `r`'s lowest candidates as its last scan recorded them, in order, as (slot,
    /// position) pairs, and its `bound` (for tests). Cost: O(lowSlots).
    func lowRecord(row r: Int) -> (low: [(slot: Int32, position: Int32)], bound: Float) {
        let base = slots + 2 * r * Self.stride
        return ((0..<Int(lowCount[r])).map { (base[2 * $0], base[2 * $0 + 1]) }, bound[r])
    }

    /// Forgets row `r`'s record: its next decode step scans.
    @inline(__always) func invalidate(row r: Int) { validUntil[r] = .min }

    /// Forgets every row's record. Cost: O(rows).
    func invalidateAll() { validUntil.update(repeating: .min, count: rows) }

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

    /// Follows a truncation of row `r` to the positions below `cut` (after `remap` dropped the
    /// removed slots): the record serves no window starting past `cut`, since tokens appended
    /// next take positions from `cut` on, unrecorded, and a window starting past them would
    /// wrongly leave them out of its candidates. Cost: O(1).
    func limit(row r: Int, below cut: Int) {
        if validUntil[r] > cut { validUntil[r] = cut }
    }

    /// One row's record: pointers into the cache.
    struct Row {
        let slots: UnsafeMutablePointer<Int32>
        let lowCount: UnsafeMutablePointer<Int32>
        let pendingCount: UnsafeMutablePointer<Int32>
        let bound: UnsafeMutablePointer<Float>
        let fewestSeen: UnsafeMutablePointer<Float>
        let queriesAtScan: UnsafeMutablePointer<Float>
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
        /// least `bound`. Normalised scores: every candidate had seen at least `fewestSeen`
        /// (>= 1) of the layer's `queries` so far; raw sums: `fewestSeen` is +infinity.
        @inline(__always) func endScan(
            low: UnsafeBufferPointer<(Float, Int32)>, positions: UnsafePointer<Int32>, bound: Float, validUntil until: Int,
            fewestSeen seen: Float, queries: Float
        ) {
            precondition(low.count <= LowScoreCache.lowSlots)
            for j in 0..<low.count {
                slots[2 * j] = low[j].1
                slots[2 * j + 1] = positions[Int(low[j].1)]
            }
            lowCount.pointee = Int32(low.count)
            self.bound.pointee = bound
            fewestSeen.pointee = seen
            queriesAtScan.pointee = queries
            validUntil.pointee = until
        }

        /// The `evict` lowest of the recorded candidates (positions below `from`) by
        /// `before`, with slot `i` scoring `score(i)` now and the layer's query total at
        /// `queries` (normalised scores), into `buffer`, when the record proves them the row's
        /// lowest; false (and `buffer` undefined) when the row must be scanned.
        @inline(__always) func choose(
            _ evict: Int, from: Int, score: (Int) -> Float, queries: Float,
            into buffer: UnsafeMutableBufferPointer<(Float, Int32)>, before: ((Float, Int32), (Float, Int32)) -> Bool
        ) -> Bool {
            guard from <= validUntil.pointee else { return false }
            // What every unrecorded candidate still scores at least (see the type's comment).
            var limit = bound.pointee
            let seen = fewestSeen.pointee
            if seen != .infinity && limit != .infinity {
                limit = limit * (seen / (seen + (queries - queriesAtScan.pointee))) * (1 - 0x1p-20)
            }
            // The recorded slots' scores are scattered loads, mostly cache misses after a
            // step's `observe` streamed the rows: gathered by a loop that does nothing else,
            // they are in flight together (the sorted insertion's branches would serialise
            // them). Scores only, so that the buffer stays on the stack.
            return withUnsafeTemporaryAllocation(of: Float.self, capacity: LowScoreCache.stride) { gathered in
                let low = Int(lowCount.pointee), count = low + Int(pendingCount.pointee)
                @inline(__always) func at(_ j: Int) -> Int { j < low ? 2 * j : 2 * (LowScoreCache.lowSlots + j - low) }
                for j in 0..<count where Int(slots[at(j) + 1]) < from { gathered[j] = score(Int(slots[at(j)])) }
                var filled = 0
                for j in 0..<count where Int(slots[at(j) + 1]) < from {
                    Selection.insertSorted((gathered[j], slots[at(j)]), into: buffer, filled: filled, size: evict, before: before)
                    if filled < evict { filled += 1 }
                }
                return filled == evict && buffer[evict - 1].0 < limit
            }
        }
    }
}
