import Glibc
import KVCache

/// One instance's reference count per active block hash (`ActiveBlocks`): an open-addressing
/// map from `UInt64` to a non-zero `UInt32` in one flat array.
///
/// Linear probing with backward-shift deletion (`backwardShiftMoves`), so no tombstones
/// accumulate. A hash's home is the top bits of its product with 2^64 / phi (one multiply:
/// block hashes are uniform already, and it still spreads hashes that differ only in their
/// high bits). A count of 0 marks an empty entry, so any key, 0 included, can be held. Key
/// and count sit side by side (16 bytes), so a probe touches one cache line.
///
/// Memory: the array starts at 16 entries and doubles when an insert would fill more than
/// half of it, so it holds 16 bytes per entry of a power of two between 2 and 4 times the
/// most hashes held at once (32-64 bytes per hash; `removeAll` keeps it). A doubling moves
/// every entry in the one insert that crosses half full: O(hashes held), as the `Dictionary`
/// it replaced did (its owner bounds them: 2^18, a 8 MiB array).
///
/// Cost: O(1) expected per call. A value over memory it manages itself, so the hot path takes
/// no reference count: copies share the array, and its owner calls `deallocate` once. Not
/// thread-safe.
struct HashCounts {
    private struct Entry {
        var key: UInt64
        var count: UInt32
    }
    private var entries: UnsafeMutablePointer<Entry>
    private var mask = 15
    /// 64 - log2(capacity): the home of a key is the top log2(capacity) bits of its product.
    private var shift: UInt64 = 60
    /// Distinct keys held.
    private(set) var count = 0
    /// Entries the array has room for now (a power of two; doubles as keys come).
    var capacity: Int { mask + 1 }

    /// An empty map of 16 entries (256 bytes).
    init() { entries = Self.zeroedArray(16) }

    /// Releases the array; the map must not be used afterwards.
    func deallocate() { free(entries) }

    /// `size` empty entries (all bytes 0). Out of memory traps, as Swift's allocation does.
    private static func zeroedArray(_ size: Int) -> UnsafeMutablePointer<Entry> {
        guard let raw = calloc(size, MemoryLayout<Entry>.stride) else {
            fatalError("HashCounts: cannot allocate \(size) entries")
        }
        return raw.bindMemory(to: Entry.self, capacity: size)
    }

    @inline(__always) private func home(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
    }

    /// The index of `key`, or of the empty entry where its probe ends.
    @inline(__always) private func find(_ key: UInt64) -> Int {
        var i = home(key)
        while entries[i].count != 0 && entries[i].key != key { i = (i + 1) & mask }
        return i
    }

    /// Whether `key` holds a reference. One probe.
    @inline(__always) func contains(_ key: UInt64) -> Bool { entries[find(key)].count != 0 }

    /// Adds a reference to `key` (saturating at `UInt32.max`: `ActiveBlocks.increment`);
    /// returns whether the key is new. One probe, plus a doubling when a new key would fill
    /// more than half of the array.
    @inline(__always)
    mutating func add(_ key: UInt64) -> Bool {
        var i = find(key)
        if entries[i].count == 0 {
            if 2 * (count + 1) > capacity {
                grow()
                i = find(key)
            }
            entries[i].key = key
            count += 1
        }
        return ActiveBlocks.increment(&entries[i].count)
    }

    /// Takes a reference from `key` when it holds one; returns whether that was its last (the
    /// key is gone, by backward shift). Nothing for a key not held. One probe, plus the shift.
    @inline(__always)
    mutating func release(_ key: UInt64) -> Bool {
        let i = find(key)
        switch entries[i].count {
        case 0: return false
        case 1:
            removeAt(i)
            return true
        default:
            entries[i].count -= 1
            return false
        }
    }

    /// Empties entry `start` by backward shift (`backwardShiftMoves`).
    private mutating func removeAt(_ start: Int) {
        var hole = start
        var j = (start + 1) & mask
        while entries[j].count != 0 {
            if backwardShiftMoves(home: home(entries[j].key), hole: hole, probe: j) {
                entries[hole] = entries[j]
                hole = j
            }
            j = (j + 1) & mask
        }
        entries[hole] = Entry(key: 0, count: 0)
        count -= 1
    }

    /// Doubles the array, moving every entry. O(capacity).
    private mutating func grow() {
        let old = entries, oldSize = capacity
        mask = 2 * mask + 1
        shift -= 1
        entries = Self.zeroedArray(mask + 1)
        for i in 0..<oldSize where old[i].count != 0 { entries[find(old[i].key)] = old[i] }
        free(old)
    }

    /// Calls `body` with every key held, in no particular order. O(capacity).
    func forEachKey(_ body: (UInt64) -> Void) {
        for i in 0...mask where entries[i].count != 0 { body(entries[i].key) }
    }

    /// Forgets every key, keeping the array. O(capacity).
    mutating func removeAll() {
        memset(entries, 0, capacity * MemoryLayout<Entry>.stride)
        count = 0
    }
}
