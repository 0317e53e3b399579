import Glibc
import KVCache

/// An open-addressing map from block hash to a 64-bit mask of the instance slots caching the
/// block: the router's cache view in flat arrays.
///
/// Linear probing with backward-shift deletion (no tombstones). The array starts small and
/// doubles when an insert would fill more than half of it, up to a power of two at least twice
/// `limit`; so memory follows the distinct hashes held and lookups stay short. Key and mask
/// sit side by side (16 bytes), so a probe touches one cache line. An entry whose mask drops
/// to 0 is removed. Inserts of a new hash while `limit` hashes are held are refused and
/// counted in `refused` (the view then underestimates; it never overestimates): callers that
/// must not lose one check `room` first. Key 0 is never stored (no block hashes to 0 in
/// practice; `allCleared` events carry 0).
///
/// Growth is incremental, so no call pays for the whole table: a doubling allocates the new
/// array as zero pages (`calloc`, touched as entries land) and keeps the outgrown one, and
/// every later `set`, `clear` and `advanceDrain` (which each route calls, so the drain ends
/// when events stop too) first takes `migrationSteps` steps through the outgrown array
/// in index order (each step moves one entry to the new array, removing it from the old by
/// backward shift, or passes an empty one). Every hash sits in exactly one of the two arrays;
/// inserts go to the new one, and a lookup that misses there probes the old one, unless the
/// hash's home there lies before the cursor: the old array's entries before it are all empty,
/// so such a hash has already moved. A doubling leaves at most `capacity / 2` entries in at most `capacity / 2` old
/// entries, which `migrationSteps` steps per call drain before the `capacity / 4` inserts
/// that the next doubling needs, so at most two arrays ever live.
///
/// Memory: 16 bytes per entry of a power of two between 2 and 4 times the hashes held (32-64
/// bytes per hash), plus, while an outgrown array drains, that array (half the new one's
/// size): 48 bytes per entry of the new array at most. Released when drained.
///
/// Cost: O(1) expected per call, plus `migrationSteps` steps of O(1) expected while an array
/// drains: a lookup then probes twice when the hash is not in the new array and its home in
/// the old one is not yet passed. Not thread-safe.
public final class BlockMaskTable {
    private struct Entry {
        var key: UInt64
        var slots: UInt64
    }
    private var mask: Int
    private var entries: UnsafeMutablePointer<Entry>
    /// The outgrown array while it drains into `entries` (nil otherwise), its mask, and the
    /// index its next migration step looks at: its entries before `drained` are empty.
    private var old: UnsafeMutablePointer<Entry>?
    private var oldMask = 0
    private var drained = 0
    /// Steps through the outgrown array that each `set` and `clear` takes while it drains: 4
    /// suffices (`capacity / 2` old entries plus at most `capacity / 4` moves, in at least
    /// `capacity / 4` inserts before the next doubling) and bounds the entries one call moves.
    static let migrationSteps = 4
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
    /// Whether an outgrown array is still draining (tests).
    var isMigrating: Bool { old != nil }
    /// The most bytes of outgrown arrays one call has released (tests: the bound on what one
    /// call unmaps).
    private(set) var mostReleased = 0
    /// Entries `forEachHash` examines now (tests: the cost of `CacheView.forget`).
    var scanLength: Int { capacity + (old == nil ? 0 : oldMask + 1) }

    /// An empty table for at most `maxEntries` distinct hashes; allocates 4,096 entries (64 KiB)
    /// or fewer for a smaller limit.
    public convenience init(maxEntries: Int) { self.init(maxEntries: maxEntries, firstCapacity: 4096) }

    /// As `init(maxEntries:)`, starting at `firstCapacity` entries (a power of two, at least
    /// 16) or fewer for a smaller limit (tests: many doublings of a small table).
    init(maxEntries: Int, firstCapacity: Int) {
        limit = max(1, maxEntries)
        var size = 16
        while size < min(2 * limit, firstCapacity) { size <<= 1 }
        mask = size - 1
        entries = Self.zeroedArray(size)
    }

    /// Whether `newHashes` more distinct hashes fit under `limit`. O(1).
    public func room(for newHashes: Int) -> Bool { newHashes <= limit - count }

    deinit {
        free(entries)
        free(old)
    }

    /// `size` empty entries (all bytes 0). `calloc` maps a large array as zero pages, so the
    /// cost of clearing it is spread over the writes that touch it. Out of memory traps, as
    /// Swift's allocation does.
    private static func zeroedArray(_ size: Int) -> UnsafeMutablePointer<Entry> {
        guard let raw = calloc(size, MemoryLayout<Entry>.stride) else {
            fatalError("BlockMaskTable: cannot allocate \(size) entries")
        }
        return raw.bindMemory(to: Entry.self, capacity: size)
    }

    @inline(__always) private static func home(_ key: UInt64, _ mask: Int) -> Int {
        Int(truncatingIfNeeded: BlockHash.finalize(key)) & mask
    }

    /// The index of `key` in `array`, or of the empty entry where its probe ends.
    @inline(__always)
    private static func find(_ key: UInt64, in array: UnsafeMutablePointer<Entry>, _ mask: Int) -> Int {
        var i = home(key, mask)
        while array[i].slots != 0 && array[i].key != key { i = (i + 1) & mask }
        return i
    }

    /// The slots caching `hash` (0 when none). Empty entries have mask 0.
    @inline(__always)
    public func slots(_ hash: UInt64) -> UInt64 {
        let s = entries[Self.find(hash, in: entries, mask)].slots
        guard s == 0, let old, let j = findOld(hash, old) else { return s }
        return old[j].slots
    }

    /// The index of `key` in the outgrown array `old`, or nil when it is not there: its home
    /// lies before `drained` (so it has moved, and no probe is needed) or its probe meets an
    /// empty entry.
    @inline(__always)
    private func findOld(_ key: UInt64, _ old: UnsafeMutablePointer<Entry>) -> Int? {
        var i = Self.home(key, oldMask)
        if i < drained { return nil }
        while old[i].slots != 0 {
            if old[i].key == key { return i }
            i = (i + 1) & oldMask
        }
        return nil
    }

    /// Adds `bits` to the mask of `hash`; returns false when the table is full (refused).
    @discardableResult
    public func set(_ hash: UInt64, _ bits: UInt64) -> Bool {
        guard hash != 0, bits != 0 else { return true }
        advanceDrain()
        var i = Self.find(hash, in: entries, mask)
        if entries[i].slots != 0 {
            entries[i].slots |= bits
            return true
        }
        if let old, let j = findOld(hash, old) {
            old[j].slots |= bits
            return true
        }
        if count >= limit {
            refused += 1
            return false
        }
        if 2 * (count + 1) > capacity {
            grow()
            i = Self.find(hash, in: entries, mask)
        }
        entries[i] = Entry(key: hash, slots: bits)
        count += 1
        return true
    }

    /// Starts a doubling: the current array becomes the outgrown one, drained by later calls.
    /// O(1) but for the allocation (zero pages). The previous outgrown array has drained
    /// (`migrationSteps`).
    private func grow() {
        precondition(old == nil, "BlockMaskTable: a doubling before the previous one drained")
        old = entries
        oldMask = mask
        drained = 0
        mask = 2 * mask + 1
        entries = Self.zeroedArray(mask + 1)
    }

    /// While an outgrown array drains, takes `migrationSteps` steps through it (`migrate`);
    /// otherwise nothing. `set` and `clear` call it, and so does each route
    /// (`Router.routeSlot`), so a doubled table returns to one array within
    /// `3 * capacity / (4 * migrationSteps)` calls of either kind, events or not. O(1).
    @inline(__always)
    public func advanceDrain() {
        if old != nil { migrate() }
    }

    /// Takes `migrationSteps` steps through the outgrown array: moves its entry at `drained` to
    /// the new array (a backward shift may refill that index) or, when that entry is empty,
    /// passes it; releases the array once every index is passed.
    private func migrate() {
        guard let old else { return }
        var moved = 0
        for _ in 0..<Self.migrationSteps {
            if old[drained].slots != 0 {
                let e = old[drained]
                entries[Self.find(e.key, in: entries, mask)] = e
                Self.removeAt(drained, in: old, oldMask)
                moved += 1
            } else if drained == oldMask {
                mostReleased = max(mostReleased, (oldMask + 1) * MemoryLayout<Entry>.stride)
                free(old)
                self.old = nil
                break
            } else {
                drained += 1
            }
        }
        mostMoved = max(mostMoved, moved)
    }

    /// Calls `body` with every hash held, in no particular order; `body` must not change
    /// this table. O(capacity), plus the outgrown array's while one drains.
    public func forEachHash(_ body: (UInt64) -> Void) {
        for i in 0...mask where entries[i].slots != 0 { body(entries[i].key) }
        if let old { for i in 0...oldMask where old[i].slots != 0 { body(old[i].key) } }
    }

    /// Entries whose mask holds any of `bits` (tests: what a slot holds, counted in the table
    /// itself). O(capacity).
    func holders(of bits: UInt64) -> Int {
        var n = 0
        for i in 0...mask where entries[i].slots & bits != 0 { n += 1 }
        if let old { for i in 0...oldMask where old[i].slots & bits != 0 { n += 1 } }
        return n
    }

    /// Removes `bits` from the mask of `hash`, and the entry when its mask becomes 0.
    public func clear(_ hash: UInt64, _ bits: UInt64) {
        advanceDrain()
        var array = entries, arrayMask = mask
        var i = Self.find(hash, in: array, arrayMask)
        if array[i].slots == 0 {
            guard let old, let j = findOld(hash, old) else { return }
            array = old
            arrayMask = oldMask
            i = j
        }
        array[i].slots &= ~bits
        if array[i].slots == 0 {
            Self.removeAt(i, in: array, arrayMask)
            count -= 1
        }
    }

    /// Empties entry `start` of `array` by backward shift (`backwardShiftMoves`).
    private static func removeAt(_ start: Int, in array: UnsafeMutablePointer<Entry>, _ mask: Int) {
        var hole = start
        var j = (start + 1) & mask
        while array[j].slots != 0 {
            if backwardShiftMoves(home: home(array[j].key, mask), hole: hole, probe: j) {
                array[hole] = array[j]
                hole = j
            }
            j = (j + 1) & mask
        }
        array[hole] = Entry(key: 0, slots: 0)
    }
}
