import Glibc
import KVCache

/// An open-addressing map from block hash to a 64-bit mask of the instance slots caching the
/// block: the router's cache view in flat arrays.
///
/// Linear probing with backward-shift deletion (no tombstones). The array starts small, doubles
/// when an insert would fill more than half of it, up to a power of two at least twice `limit`,
/// and halves when a removal leaves less than an eighth of it full, down to its first size (a
/// halved array is a quarter full at most, a doubled one a quarter full at least, so hashes set
/// and cleared at either boundary do not resize it back and forth); a halving goes straight to
/// the smallest size the hashes held fill a quarter of at most (2^22 -> 2^20 entries in one
/// halving when a burst of removals left that few), so memory follows the distinct hashes held
/// and lookups stay short. Key and mask sit side by side (16 bytes), so a probe touches one
/// cache line. An entry whose mask drops to 0 is removed. Inserts of a new hash while `limit`
/// hashes are held are refused and counted in `refused` (the view then underestimates; it never
/// overestimates): callers that must not lose one check `room` first. Key 0 is never stored (no
/// block hashes to 0 in practice; `allCleared` events carry 0).
///
/// Resizing is incremental, so no call pays for the whole table: a doubling or halving maps the
/// new array as zero pages (`mmap`, touched as entries land) and keeps the outgrown one, and
/// every later `set`, `clear` and `advanceDrain` (which each route calls, so the drain ends
/// when events stop too) first walks the outgrown array in index order, moving up to
/// `migrationSteps` entries to the new array (each removed from the old by backward shift) and
/// passing up to `passSteps` empty ones, whichever comes first (a halving of an array of `S`
/// entries: up to `S / (8 * drainCalls)` moves and `S / drainCalls` passes, when more; and once
/// the outgrown array holds no entry, no reads: its chunks are unmapped, two a call). Every
/// hash sits in exactly one of the two arrays; inserts go to the new one, and a lookup that
/// misses there probes the old one, unless the hash's home there lies before the cursor: the
/// old array's entries before it are all empty, so such a hash has already moved. A doubling's
/// drain (at most `capacity / 2` passes and `capacity / 4` moves) ends before the `capacity /
/// 4` inserts that the next doubling needs; a halving's from `S` entries (`S` passes, at most
/// `S / 8` moves) takes at most `S / 16` calls, or `2 * drainCalls` when that is less (`S` over
/// 2^19), and ends, for a halving by one removal at a time, before the `capacity / 8` removals
/// that would call for the next halving, which waits for it anyway: at most two arrays ever
/// live and the table shrinks as fast as hashes leave. `clearWithoutDrain` (a forget's many
/// removals in one call) advances no drain, so that call costs O(1) per hash; after it the
/// shrink lags by the later calls of at most two drains: the one it started (its size fixed by
/// the hashes held at the start) and the one that halving's end starts, straight to the size
/// the hashes then held call for: at most `4 * drainCalls` calls in all (it was a halving at a
/// time, each `S / 16` calls: 2^23 -> 2^20 entries took ~700,000 routes after routerscale's 64
/// -> 4 instances). The drain unmaps the outgrown array a chunk of `releaseChunk` entries (2
/// MiB) at a time as its cursor leaves the chunk behind, keeping the first chunk (a probe
/// running off the array's end reads its index 0, empty once passed) and the last until the
/// drain ends: no call unmaps more than two chunks (it was the whole array at once: 0.1-0.19 s
/// for glibc's `free` of 256-512 MiB).
///
/// Memory: 16 bytes per entry of a power of two between 2 and 8 times the hashes held (32-128
/// bytes per hash; the first size when that is more; more while a halving lags a
/// `clearWithoutDrain`), plus, while an outgrown array drains, its part not yet passed: at most
/// 3 times the new array's entries then (the old array of a halving by one removal; a halving
/// after a `clearWithoutDrain` burst may shrink further, its outgrown array being the size the
/// hashes held before the burst called for). `forEachHash` examines the new array and that
/// part: at most 24 entries per hash held, or 3 times the first size, in a table never cleared
/// by `clearWithoutDrain` (as an instance's set).
///
/// Cost: O(1) expected per call, plus up to `migrationSteps` moves and `passSteps` passes (a
/// halving of `S > 2^19` entries: `S / 2^17` moves and `S / 2^14` passes, 64 and 512 at 2^23),
/// O(1) expected each, and at most two `munmap`s of a chunk, while an array drains: a lookup
/// then probes twice when the hash is not in the new array and its home in the old one is not
/// yet passed. Not thread-safe.
public final class BlockMaskTable {
    private struct Entry {
        var key: UInt64
        var slots: UInt64
    }
    private var mask: Int
    private var entries: UnsafeMutablePointer<Entry>
    /// The outgrown array while it drains into `entries` (nil otherwise), its mask, and the
    /// index its next migration step looks at: its entries before `drained` are empty, and its
    /// chunks of `releaseChunk` entries lying wholly before `drained`, except the first, are
    /// unmapped.
    private var old: UnsafeMutablePointer<Entry>?
    private var oldMask = 0
    private var drained = 0
    /// Entries still in the outgrown array (0 when none): at 0 the drain reads it no more.
    private var oldCount = 0
    /// Moves and passes one call of the current drain makes at most: `migrationSteps` and
    /// `passSteps`, or a large halving's share (`drainCalls`).
    private var moveBudget = 0
    private var passBudget = 0
    /// Entries a resize moves in one call at most: 4 suffices (a doubling's `capacity / 4`
    /// moves within the `capacity / 4` inserts before the next; a halving's at most
    /// `capacity / 4` within `capacity / 16` calls, with the passes) and bounds the work of
    /// one call.
    static let migrationSteps = 4
    /// Empty entries of the outgrown array one call passes at most: 32 (a halving's `2 *
    /// capacity` passes in `capacity / 16` calls); each is one compare of a sequential read.
    static let passSteps = 32
    /// A halving of `S` entries moves up to `S / (8 * drainCalls)` entries and passes up to
    /// `S / drainCalls` in one call when that is more than `migrationSteps` and `passSteps`
    /// (`S` over 2^19), so its drain takes at most `2 * drainCalls` calls at any size (`S / 8`
    /// moves at most: a halving starts below an eighth full); per call that is 64 moves and
    /// 512 passes (8 KiB read in order) at 2^23 entries. (At 4 and 32, a mass removal's
    /// halvings of 2^23 -> 2^20 entries took ~700,000 later routes to give 145 MB back.)
    static let drainCalls = 1 << 14
    /// Entries held.
    public private(set) var count = 0
    /// Distinct hashes the table may hold.
    public let limit: Int
    /// Inserts refused because the table held `limit` hashes.
    public private(set) var refused: UInt64 = 0
    /// The first capacity: halving stops there.
    private let firstCapacity: Int
    /// Entries of an outgrown array unmapped at a time (a power of two, a whole number of
    /// pages).
    private let releaseChunk: Int
    /// Entries the array has room for now (a power of two between 2 and 8 times `count`, or
    /// the first capacity; doubles and halves as hashes come and go).
    public var capacity: Int { mask + 1 }
    /// The most entries one call has moved from an outgrown array to its successor (tests:
    /// the bound on the work of one call: `migrationSteps`, or a large halving's share).
    private(set) var mostMoved = 0
    /// Whether an outgrown array is still draining (tests).
    var isMigrating: Bool { old != nil }
    /// The most bytes of outgrown arrays one call has released (tests: the bound on what one
    /// call unmaps).
    private(set) var mostReleased = 0
    /// Entries `forEachHash` examines now (tests: the cost of `CacheView.forget`).
    var scanLength: Int { capacity + (old == nil ? 0 : oldMask + 1 - drained) }

    /// An empty table for at most `maxEntries` distinct hashes; maps 4,096 entries (64 KiB)
    /// or fewer for a smaller limit.
    public convenience init(maxEntries: Int) { self.init(maxEntries: maxEntries, firstCapacity: 4096) }

    /// As `init(maxEntries:)`, starting at `firstCapacity` entries (a power of two, at least
    /// 16) or fewer for a smaller limit, and unmapping outgrown arrays `releaseChunk` entries
    /// at a time (a power of two of at least a page: 256) (tests: many resizes of a small
    /// table, released in many chunks).
    init(maxEntries: Int, firstCapacity: Int, releaseChunk: Int = 1 << 17) {
        limit = max(1, maxEntries)
        var size = 16
        while size < min(2 * limit, firstCapacity) { size <<= 1 }
        mask = size - 1
        self.firstCapacity = size
        self.releaseChunk = releaseChunk
        entries = Self.zeroedArray(size)
    }

    /// Whether `newHashes` more distinct hashes fit under `limit`. O(1).
    public func room(for newHashes: Int) -> Bool { newHashes <= limit - count }

    deinit {
        munmap(entries, capacity * MemoryLayout<Entry>.stride)
        if let old { _ = unmapRest(of: old) }
    }

    /// `size` empty entries (all bytes 0), mapped as zero pages, so the cost of clearing them
    /// is spread over the writes that touch them and the array can be unmapped in pieces.
    /// Out of memory traps, as Swift's allocation does.
    private static func zeroedArray(_ size: Int) -> UnsafeMutablePointer<Entry> {
        let raw = mmap(nil, size * MemoryLayout<Entry>.stride, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let raw, raw != MAP_FAILED else { fatalError("BlockMaskTable: cannot map \(size) entries") }
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
    /// empty entry (a probe running off the end meets index 0, passed and still mapped).
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
            resize(to: 2 * capacity)
            i = Self.find(hash, in: entries, mask)
        }
        entries[i] = Entry(key: hash, slots: bits)
        count += 1
        return true
    }

    /// Starts a doubling or halving: the current array becomes the outgrown one, drained by
    /// later calls, `migrationSteps` and `passSteps` a call or a large halving's share
    /// (`drainCalls`; passes under half a chunk, so a call crosses one chunk's end at most).
    /// O(1) but for the mapping (zero pages). The previous outgrown array has drained.
    private func resize(to size: Int) {
        precondition(old == nil, "BlockMaskTable: a resize before the previous one drained")
        let share = size < capacity ? capacity / Self.drainCalls : 0
        moveBudget = max(Self.migrationSteps, share / 8)
        passBudget = min(releaseChunk / 2, max(Self.passSteps, share))
        old = entries
        oldMask = mask
        oldCount = count
        drained = 0
        mask = size - 1
        entries = Self.zeroedArray(size)
    }

    /// Starts a halving when less than an eighth of the array is held, above the first
    /// capacity, and no outgrown array drains (the next halving waits for the drain's end):
    /// to the smallest size, down to the first capacity, that the hashes held fill an eighth
    /// of at least, a quarter at most (one drain after a burst of removals, not one per
    /// halving). O(1) but when it starts one: O(log capacity).
    @inline(__always)
    private func shrinkIfSparse() {
        guard 8 * count < capacity && capacity > firstCapacity && old == nil else { return }
        var size = capacity / 2
        while size > firstCapacity && 8 * count < size { size /= 2 }
        resize(to: size)
    }

    /// While an outgrown array drains, walks it (`migrate`); otherwise nothing. `set` and
    /// `clear` call it, and so does each route (`Router.routeSlot`), so a resized table
    /// returns to one array within the calls of its drain, of either kind, events or not. O(1).
    @inline(__always)
    public func advanceDrain() {
        if old != nil { migrate() }
    }

    /// Walks the outgrown array from `drained`: moves the entry there to the new array (a
    /// backward shift may refill that index) or, when it is empty, passes it, unmapping each
    /// chunk but the first the cursor leaves; up to `moveBudget` moves and `passBudget`
    /// passes. Once the array holds no entry, reads it no more: `skipEmptyChunks`. Past the
    /// last index, `finishDrain`.
    private func migrate() {
        guard let old else { return }
        guard oldCount > 0 else { return skipEmptyChunks(old) }
        var moved = 0, passed = 0, released = 0
        while moved < moveBudget && passed < passBudget {
            if old[drained].slots != 0 {
                let e = old[drained]
                entries[Self.find(e.key, in: entries, mask)] = e
                Self.removeAt(drained, in: old, oldMask)
                oldCount -= 1
                moved += 1
            } else if drained < oldMask {
                drained += 1
                passed += 1
                if drained & (releaseChunk - 1) == 0 && drained > releaseChunk {
                    released += releaseChunkBefore(drained, of: old)
                }
            } else {
                released += finishDrain(old)
                break
            }
        }
        mostMoved = max(mostMoved, moved)
        mostReleased = max(mostReleased, released)
    }

    /// The outgrown array `old` holds no entry, so nothing in it needs reading: moves the
    /// cursor to the end of its chunk, unmapping the chunk left (but the first), until two
    /// chunks are unmapped; the drain's end (`finishDrain`, two chunks) waits for a call that
    /// has unmapped none. O(1): an emptied 2^23-entry array (128 MiB) goes in 32 calls.
    private func skipEmptyChunks(_ old: UnsafeMutablePointer<Entry>) {
        let chunkBytes = releaseChunk * MemoryLayout<Entry>.stride
        var released = 0
        while released < 2 * chunkBytes {
            let next = (drained / releaseChunk + 1) * releaseChunk
            if next > oldMask {
                if released == 0 { released = finishDrain(old) }
                break
            }
            drained = next
            if drained > releaseChunk { released += releaseChunkBefore(drained, of: old) }
        }
        mostReleased = max(mostReleased, released)
    }

    /// Unmaps the chunk of `old` that ends at `end`; returns its bytes.
    private func releaseChunkBefore(_ end: Int, of old: UnsafeMutablePointer<Entry>) -> Int {
        let bytes = releaseChunk * MemoryLayout<Entry>.stride
        munmap(old + (end - releaseChunk), bytes)
        return bytes
    }

    /// Ends a drain past `old`'s last index: unmaps the rest, drops the array and starts the
    /// next halving if the table is still sparse. Returns the bytes unmapped.
    private func finishDrain(_ old: UnsafeMutablePointer<Entry>) -> Int {
        let released = unmapRest(of: old)
        self.old = nil
        shrinkIfSparse()
        return released
    }

    /// Unmaps what `migrate` has not of the outgrown array `old`: the whole array when it is
    /// one chunk or less, else the first chunk and every index from the chunk holding
    /// `drained` on (at the drain's end, the last chunk). Returns the bytes unmapped.
    private func unmapRest(of old: UnsafeMutablePointer<Entry>) -> Int {
        let size = oldMask + 1, stride = MemoryLayout<Entry>.stride
        guard size > releaseChunk else {
            munmap(old, size * stride)
            return size * stride
        }
        let from = max(1, drained / releaseChunk) * releaseChunk
        munmap(old, releaseChunk * stride)
        munmap(old + from, (size - from) * stride)
        return (releaseChunk + size - from) * stride
    }

    /// Calls `body` with every hash held, in no particular order; `body` must not change
    /// this table. O(`scanLength`): the capacity plus the outgrown array's part not yet
    /// passed, at most 24 entries per hash held or 3 times the first capacity.
    public func forEachHash(_ body: (UInt64) -> Void) {
        for i in 0...mask where entries[i].slots != 0 { body(entries[i].key) }
        if let old { for i in drained...oldMask where old[i].slots != 0 { body(old[i].key) } }
    }

    /// Entries whose mask holds any of `bits` (tests: what a slot holds, counted in the table
    /// itself). O(`scanLength`).
    func holders(of bits: UInt64) -> Int {
        var n = 0
        for i in 0...mask where entries[i].slots & bits != 0 { n += 1 }
        if let old { for i in drained...oldMask where old[i].slots & bits != 0 { n += 1 } }
        return n
    }

    /// Whether the table is one array of its first capacity, which `removeAll` empties in
    /// place.
    public var isAtFirstCapacity: Bool { old == nil && mask + 1 == firstCapacity }

    /// Empties a table that `isAtFirstCapacity` in place, keeping its array mapped (no
    /// `munmap` now, no `mmap` at its next insert: the unmap of a 64 KiB set took an empty
    /// slot's forget from 0.02 to 0.075 ms), writing only the entries held. O(capacity)
    /// compares.
    public func removeAll() {
        precondition(isAtFirstCapacity, "BlockMaskTable: removeAll of a grown table")
        for i in 0...mask where entries[i].slots != 0 { entries[i] = Entry(key: 0, slots: 0) }
        count = 0
    }

    /// Removes `bits` from the mask of `hash`, and the entry when its mask becomes 0 (then
    /// halving the array if that leaves it sparse: `shrinkIfSparse`).
    public func clear(_ hash: UInt64, _ bits: UInt64) {
        advanceDrain()
        clearWithoutDrain(hash, bits)
    }

    /// `clear` without advancing a drain: O(1) expected, for removing many hashes in one call
    /// (`CacheView.forget`), whose cost then follows the hashes it removes. A halving it
    /// starts is drained by later calls, and the next one waits for that, so after such a
    /// burst the array may stay over 8 times the hashes held for the later calls of at most
    /// two drains (`drainCalls`).
    public func clearWithoutDrain(_ hash: UInt64, _ bits: UInt64) {
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
            if array != entries { oldCount -= 1 }
            shrinkIfSparse()
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
