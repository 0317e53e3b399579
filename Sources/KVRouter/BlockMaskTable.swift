import KVCache

/// An open-addressing map from block hash to a 64-bit mask of the instance slots caching the
/// block: the router's cache view in one flat array.
///
/// Linear probing with backward-shift deletion (no tombstones). The array starts small and
/// doubles (a rehash of every entry) when an insert would fill more than half of it, up to a
/// power of two at least twice `limit`; so memory follows the distinct hashes held (16-32
/// bytes each) and lookups stay short. Key and mask sit side by side (16 bytes), so a probe
/// touches one cache line. An entry whose mask drops to 0 is removed. Inserts of a new hash
/// while `limit` hashes are held are refused and counted in `refused` (the view then
/// underestimates; it never overestimates): callers that must not lose one check `room`
/// first. Key 0 is never stored (no block hashes to 0 in practice; `allCleared` events carry 0).
///
/// Cost: O(1) expected per call; an insert that doubles the array is O(count) (amortised
/// O(1)). Not thread-safe.
public final class BlockMaskTable {
    private struct Entry {
        var key: UInt64
        var slots: UInt64
    }
    private var mask: Int
    private var entries: UnsafeMutablePointer<Entry>
    /// Entries held.
    public private(set) var count = 0
    /// Distinct hashes the table may hold.
    public let limit: Int
    /// Inserts refused because the table held `limit` hashes.
    public private(set) var refused: UInt64 = 0
    /// Entries the array has room for now (a power of two; doubles as hashes come).
    public var capacity: Int { mask + 1 }
    /// The most entries one call has moved from an outgrown array to its successor (tests:
    /// the bound on the work of one call).
    private(set) var mostMoved = 0

    /// An empty table for at most `maxEntries` distinct hashes; allocates 4,096 entries (64 KiB)
    /// or fewer for a smaller limit.
    public init(maxEntries: Int) {
        limit = max(1, maxEntries)
        var size = 16
        while size < min(2 * limit, 4096) { size <<= 1 }
        mask = size - 1
        entries = .allocate(capacity: size)
        entries.initialize(repeating: Entry(key: 0, slots: 0), count: size)
    }

    /// Whether `newHashes` more distinct hashes fit under `limit`. O(1).
    public func room(for newHashes: Int) -> Bool { newHashes <= limit - count }

    deinit { entries.deallocate() }

    @inline(__always) private func home(_ key: UInt64) -> Int { Int(truncatingIfNeeded: BlockHash.finalize(key)) & mask }

    /// The slots caching `hash` (0 when none). Empty entries have mask 0.
    @inline(__always)
    public func slots(_ hash: UInt64) -> UInt64 {
        var i = home(hash)
        while true {
            let e = entries[i]
            if e.slots == 0 || e.key == hash { return e.slots }
            i = (i + 1) & mask
        }
    }

    /// Adds `bits` to the mask of `hash`; returns false when the table is full (refused).
    @discardableResult
    public func set(_ hash: UInt64, _ bits: UInt64) -> Bool {
        guard hash != 0, bits != 0 else { return true }
        var i = home(hash)
        while entries[i].slots != 0 {
            if entries[i].key == hash {
                entries[i].slots |= bits
                return true
            }
            i = (i + 1) & mask
        }
        if count >= limit {
            refused += 1
            return false
        }
        if 2 * (count + 1) > capacity {
            grow()
            i = home(hash)
            while entries[i].slots != 0 { i = (i + 1) & mask }
        }
        entries[i] = Entry(key: hash, slots: bits)
        count += 1
        return true
    }

    /// Doubles the array and re-inserts every entry. O(count).
    private func grow() {
        let old = entries, oldSize = capacity
        mostMoved = max(mostMoved, count)
        mask = 2 * oldSize - 1
        entries = .allocate(capacity: 2 * oldSize)
        entries.initialize(repeating: Entry(key: 0, slots: 0), count: 2 * oldSize)
        for j in 0..<oldSize where old[j].slots != 0 {
            var i = home(old[j].key)
            while entries[i].slots != 0 { i = (i + 1) & mask }
            entries[i] = old[j]
        }
        old.deallocate()
    }

    /// Entries whose mask holds any of `bits` (tests: what a slot holds, counted in the table
    /// itself). O(capacity).
    func holders(of bits: UInt64) -> Int {
        var n = 0
        for i in 0...mask where entries[i].slots & bits != 0 { n += 1 }
        return n
    }

    /// Removes `bits` from the mask of `hash`, and the entry when its mask becomes 0.
    public func clear(_ hash: UInt64, _ bits: UInt64) {
        var i = home(hash)
        while entries[i].slots != 0 && entries[i].key != hash { i = (i + 1) & mask }
        if entries[i].slots == 0 { return }
        entries[i].slots &= ~bits
        if entries[i].slots == 0 { removeAt(i) }
    }

    private func removeAt(_ start: Int) {
        var hole = start
        var j = (start + 1) & mask
        while entries[j].slots != 0 {
            let h = home(entries[j].key)
            if backwardShiftMoves(home: h, hole: hole, probe: j) {
                entries[hole] = entries[j]
                hole = j
            }
            j = (j + 1) & mask
        }
        entries[hole] = Entry(key: 0, slots: 0)
        count -= 1
    }
}
