#if canImport(Glibc)
import Glibc
#endif

/// The buffers of one eviction state (`EvictionState`) whose size scales with its capacity (slots
/// per row), allocated together or not at all. They live outside `memory_bytes` and a valid config
/// can make them larger than the process may map (many rows, long sequences, many episodes;
/// RLIMIT_AS, a cgroup, overcommit off), where Swift's `allocate(capacity:)` would end the process:
/// they come from `CheckedAllocations.zeroed` (calloc), and a refusal is `outOfMemory` naming the
/// bytes, with nothing left allocated, so that the state (and the engine call that creates or grows
/// it) changes nothing.
///
/// Sizes, in 4-byte words per row and slot: `positions`, `accumulated` and `moves` one each
/// (`moves` 2 more per row), `last` one with `ScoreTracking.lastStep`, `visible` one with
/// `.visibility`, `episodeScores` `episodes + 1` with `.episodes`; plus
/// `(4 * heads + 13) * capacity + 4096` bytes of scratch used one row (layer) at a time
/// (`keepMask`, `values`, `slotScratch`, `summedBuffer`). `bytes` is the exact total.
/// The owner frees them with `free()`.
struct EvictionStateBuffers {
    /// `rows * capacity` original positions.
    let positions: UnsafeMutablePointer<Int32>
    /// `rows * capacity` accumulated scores.
    let accumulated: UnsafeMutablePointer<Float>
    /// `rows * capacity` last-step scores with `.lastStep`, else none.
    let last: UnsafeMutablePointer<Float>
    /// `rows * capacity` visibility counts with `.visibility`, else none.
    let visible: UnsafeMutablePointer<Float>
    /// `episodeBlocks` blocks of `rows * capacity`.
    let episodeScores: UnsafeMutablePointer<Float>
    /// One row's keep mask: `capacity` bytes.
    let keepMask: UnsafeMutablePointer<UInt8>
    /// Selection values: `2 * capacity` floats.
    let values: UnsafeMutablePointer<Float>
    /// Selection slots: `capacity` slots.
    let slotScratch: UnsafeMutablePointer<Int32>
    /// A layer's summed scores: `heads * capacity` floats plus `pageFloats` of room to place them.
    let summedBuffer: UnsafeMutablePointer<Float>
    /// The compaction plan's (destination, source) pairs: `2 * rows * (capacity / 2 + 1)`.
    let moves: UnsafeMutablePointer<Int32>

    /// Bytes the buffers of a state with these parameters take, or nil when that does not fit
    /// in an `Int`. Cost: O(1).
    static func bytes(rows: Int, heads: Int, tracking: ScoreTracking, episodeBlocks: Int, capacity: Int) -> Int? {
        let words = sizes(rows: rows, heads: heads, tracking: tracking, episodeBlocks: episodeBlocks, capacity: capacity)
        var total = 0
        for w in words {
            guard let w, case let (b, o) = w.multipliedReportingOverflow(by: 4), !o,
                  case let (t, o2) = total.addingReportingOverflow(b), !o2 else { return nil }
            total = t
        }
        return total
    }

    /// The 4-byte words of each buffer, in field order (`keepMask` rounded up to words), nil
    /// where the count overflows.
    private static func sizes(rows: Int, heads: Int, tracking: ScoreTracking, episodeBlocks: Int, capacity c: Int) -> [Int?] {
        func product(_ a: Int, _ b: Int) -> Int? {
            let (p, o) = a.multipliedReportingOverflow(by: b)
            return o ? nil : p
        }
        let perRow = product(rows, c)
        return [perRow, perRow, tracking.contains(.lastStep) ? perRow : 0, tracking.contains(.visibility) ? perRow : 0,
                perRow.flatMap { product(episodeBlocks, $0) }, (c + 3) / 4, product(2, c), c,
                product(heads, c).map { $0 + EvictionState.pageFloats }, product(2 * rows, c / 2 + 1)]
    }

    /// Buffers for `rows` rows of `capacity` slots, every value 0 (`CheckedAllocations.zeroed`).
    /// Throws `outOfMemory` naming the total bytes when any allocation fails (then none is
    /// kept). Cost: the allocation; `calloc` of a large buffer maps zero pages, touched only
    /// when written.
    init(rows: Int, heads: Int, tracking: ScoreTracking, episodeBlocks: Int, capacity: Int) throws(KVError) {
        let words = Self.sizes(rows: rows, heads: heads, tracking: tracking, episodeBlocks: episodeBlocks, capacity: capacity)
        let total = Self.bytes(rows: rows, heads: heads, tracking: tracking, episodeBlocks: episodeBlocks, capacity: capacity)
        func what() -> String {
            "the token-eviction state (\(total.map { "\($0) bytes" } ?? "more bytes than an Int holds") in all for \(rows) rows x "
                + "\(capacity) slots, outside memory_bytes; kvcache.h \"Memory outside memory_bytes\": fewer layers, KV heads "
                + "(per head), episodes or tokens need less)"
        }
        guard total != nil else { throw .outOfMemory("cannot allocate \(what())") }
        let a = CheckedAllocations()
        positions = try a.zeroed(count: words[0]!, what())
        accumulated = try a.zeroed(count: words[1]!, what())
        last = try a.zeroed(count: words[2]!, what())
        visible = try a.zeroed(count: words[3]!, what())
        episodeScores = try a.zeroed(count: words[4]!, what())
        keepMask = try a.zeroed(count: 4 * words[5]!, what())
        values = try a.zeroed(count: words[6]!, what())
        slotScratch = try a.zeroed(count: words[7]!, what())
        summedBuffer = try a.zeroed(count: words[8]!, what())
        moves = try a.zeroed(count: words[9]!, what())
        a.keep()
    }

    /// Frees every buffer (the owner's last use of them).
    func free() {
        for p in [UnsafeMutableRawPointer(positions), UnsafeMutableRawPointer(accumulated), UnsafeMutableRawPointer(last),
                  UnsafeMutableRawPointer(visible), UnsafeMutableRawPointer(episodeScores), UnsafeMutableRawPointer(keepMask),
                  UnsafeMutableRawPointer(values), UnsafeMutableRawPointer(slotScratch), UnsafeMutableRawPointer(summedBuffer),
                  UnsafeMutableRawPointer(moves)] {
            Glibc.free(p)
        }
    }
}
