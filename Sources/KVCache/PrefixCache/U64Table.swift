/// An open-addressing hash map from `UInt64` to a non-negative `Int32`, in two flat arrays:
/// the prefix indexes' (block hash -> first block or slot of the hash, `HashChains`) and the
/// sequence directory (id -> slot).
///
/// Linear probing with backward-shift deletion, so no tombstones accumulate. Capacity is fixed
/// at creation (a power of two at least twice the most entries it will hold), so inserts never
/// allocate. Cost: O(1) expected per call. Not thread-safe.
final class U64Table {
    private let mask: Int
    private let keys: UnsafeMutablePointer<UInt64>
    private let values: UnsafeMutablePointer<Int32>
    /// Entries held.
    private(set) var count = 0
    /// Entries it may hold.
    let limit: Int

    /// A table for at most `maxEntries` entries.
    /// Throws `outOfMemory` (`CheckedAllocations`) when its 12 bytes per slot, 2 to 4 slots per
    /// entry, cannot be allocated, naming `what` it indexes and the config that sized it.
    init(maxEntries: Int, _ what: @autoclosure () -> String) throws(KVError) {
        limit = max(1, maxEntries)
        var size = 16
        while size < 2 * limit { size <<= 1 }
        mask = size - 1
        let a = CheckedAllocations()
        keys = try a.allocate(repeating: 0, count: size, "the hash table of \(what())")
        values = try a.allocate(repeating: -1, count: size, "the hash table of \(what())")
        a.keep()
    }

    /// A table for at most `maxEntries` entries, trapping when it cannot be allocated: for
    /// tables that grow after creation (`PeerTier.grow`) and tests.
    convenience init(maxEntries: Int) {
        do { try self.init(maxEntries: maxEntries, "\(maxEntries) entries") } catch { fatalError("U64Table: \(error)") }
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    @inline(__always) private func home(_ key: UInt64) -> Int { Int(truncatingIfNeeded: BlockHash.finalize(key)) & mask }

    /// The value stored for `key`, or -1.
    @inline(__always) func find(_ key: UInt64) -> Int32 {
        var i = home(key)
        while true {
            let v = values[i]
            if v < 0 || keys[i] == key { return v }
            i = (i + 1) & mask
        }
    }

    /// Stores `value` (>= 0) for `key` unless `key` is present or the table is full; returns
    /// whether it stored.
    @discardableResult
    func insert(_ key: UInt64, _ value: Int32) -> Bool {
        precondition(value >= 0)
        if count >= limit { return false }
        var i = home(key)
        while values[i] >= 0 {
            if keys[i] == key { return false }
            i = (i + 1) & mask
        }
        keys[i] = key
        values[i] = value
        count += 1
        return true
    }

    /// Removes `key`; returns its value or -1 when absent.
    @discardableResult
    func remove(_ key: UInt64) -> Int32 {
        var i = home(key)
        while values[i] >= 0 && keys[i] != key { i = (i + 1) & mask }
        let removed = values[i]
        if removed < 0 { return -1 }
        // Backward shift: pull later entries of the probe run into the hole when their home
        // position does not lie cyclically in (hole, j].
        var hole = i
        var j = (i + 1) & mask
        while values[j] >= 0 {
            let h = home(keys[j])
            if backwardShiftMoves(home: h, hole: hole, probe: j) {
                keys[hole] = keys[j]
                values[hole] = values[j]
                hole = j
            }
            j = (j + 1) & mask
        }
        values[hole] = -1
        count -= 1
        return removed
    }
}
