import KVCache

/// One slot's credited blocks for an approximate `CacheView`, in order of last use: an
/// open-addressing map from block hash to its entry, whose entries are also linked into a
/// doubly linked list from the most recently used (`head`) to the least (`tail`).
///
/// The list lives in the map's own entries (key and two 32-bit links, 16 bytes), so there is
/// no separate node pool and one probe finds a block's place in the order. Linear probing with
/// backward-shift deletion (no tombstones): an entry shifted back into a hole has its
/// neighbours' links (or `head` / `tail`) repointed, and so has a caller's cursor naming it.
/// Key 0 marks an empty entry (the view never credits hash 0).
///
/// Invariants: `count` entries are non-empty and exactly those are on the list, each once;
/// `count <= limit`; the table is a power of two at least twice `limit`, so probes stay short
/// (load <= 1/2). Cost: `find`, `insert` and `removeTail` O(1) expected (one probe sequence;
/// a removal also shifts back the entries of its cluster, each O(1) to relink); `moveAfter`
/// O(1). Storage is allocated once by `allocate` and kept until `deallocate`; nothing else
/// allocates. A plain struct over a pointer: the owner stores it in place and mutates it
/// there (`CacheView` keeps one per slot). Not thread-safe.
struct RecencyList {
    struct Entry {
        var key: UInt64
        /// Toward `head` (more recent) and toward `tail` (less recent); -1 at the ends.
        var prev: Int32
        var next: Int32
    }

    /// nil until `allocate`.
    private(set) var entries: UnsafeMutablePointer<Entry>? = nil
    private var mask = 0
    /// The most recently used entry's index, -1 when empty.
    private(set) var head: Int32 = -1
    /// The least recently used entry's index, -1 when empty.
    private(set) var tail: Int32 = -1
    /// Entries held.
    private(set) var count = 0
    /// Entries the list may hold (set by `allocate`).
    private(set) var limit = 0

    /// Bytes `allocate(limit:)` takes: 16 per entry of a table of the smallest power of two
    /// (at least 16) not below `2 * limit`.
    static func bytes(limit: Int) -> Int { 16 * tableSize(limit) }

    private static func tableSize(_ limit: Int) -> Int {
        var size = 16
        while size < 2 * limit { size <<= 1 }
        return size
    }

    /// Allocates room for `limit` (1...2^24) entries, empty. Called once, before any other use.
    mutating func allocate(limit: Int) {
        precondition(entries == nil && limit >= 1 && limit <= 1 << 24)
        let size = RecencyList.tableSize(limit)
        let e = UnsafeMutablePointer<Entry>.allocate(capacity: size)
        e.initialize(repeating: Entry(key: 0, prev: -1, next: -1), count: size)
        entries = e
        mask = size - 1
        self.limit = limit
    }

    func deallocate() { entries?.deallocate() }

    /// The home index of `key`: the finalizer's high half, so that it does not follow the
    /// `BlockMaskTable`'s home (its low bits) for the same key.
    @inline(__always) private func home(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: BlockHash.finalize(key) >> 32) & mask
    }

    /// The entry's key (tests and `CacheView.forget`).
    @inline(__always) func key(at i: Int32) -> UInt64 { entries![Int(i)].key }

    /// The next less recently used entry after `i`, -1 after the tail.
    @inline(__always) func next(_ i: Int32) -> Int32 { entries![Int(i)].next }

    /// The index of `key`'s entry, -1 when absent (`key` nonzero).
    @inline(__always)
    func find(_ key: UInt64) -> Int32 {
        let e = entries!
        var i = home(key)
        while true {
            let k = e[i].key
            if k == key { return Int32(truncatingIfNeeded: i) }
            if k == 0 { return -1 }
            i = (i + 1) & mask
        }
    }

    /// Takes entry `i` off the list (it stays in the map).
    @inline(__always)
    private mutating func unlink(_ i: Int32) {
        let e = entries!
        let p = e[Int(i)].prev, n = e[Int(i)].next
        if p >= 0 { e[Int(p)].next = n } else { head = n }
        if n >= 0 { e[Int(n)].prev = p } else { tail = p }
    }

    /// Puts entry `i` (off the list) on it just after `cursor` (less recent than it), or at the
    /// head when `cursor` is -1.
    @inline(__always)
    private mutating func link(_ i: Int32, after cursor: Int32) {
        let e = entries!
        let n = cursor >= 0 ? e[Int(cursor)].next : head
        e[Int(i)].prev = cursor
        e[Int(i)].next = n
        if cursor >= 0 { e[Int(cursor)].next = i } else { head = i }
        if n >= 0 { e[Int(n)].prev = i } else { tail = i }
    }

    /// Moves entry `i` just after `cursor` (-1: to the head). No-op when `i == cursor`.
    @inline(__always)
    mutating func moveAfter(_ i: Int32, _ cursor: Int32) {
        guard i != cursor else { return }
        unlink(i)
        link(i, after: cursor)
    }

    /// Adds `key` (nonzero, absent; `count < limit`) just after `cursor` (-1: at the head) and
    /// returns its index.
    mutating func insert(_ key: UInt64, after cursor: Int32) -> Int32 {
        precondition(count < limit)
        let e = entries!
        var i = home(key)
        while e[i].key != 0 { i = (i + 1) & mask }
        e[i].key = key
        let index = Int32(truncatingIfNeeded: i)
        link(index, after: cursor)
        count += 1
        return index
    }

    /// Removes the least recently used entry (`count > 0`) and returns its key. Entries shifted
    /// back to fill the hole keep their place in the order; if one of them is `cursor`, `cursor`
    /// is updated to its new index.
    mutating func removeTail(cursor: inout Int32) -> UInt64 {
        let e = entries!
        let t = tail
        let key = e[Int(t)].key
        unlink(t)
        count -= 1
        // Backward-shift deletion: move later entries of the cluster whose home does not lie
        // cyclically in (hole, j] into the hole, relinking each.
        var hole = Int(t)
        var j = (hole + 1) & mask
        while e[j].key != 0 {
            let h = home(e[j].key)
            if backwardShiftMoves(home: h, hole: hole, probe: j) {
                let moved = e[j]
                e[hole] = moved
                let to = Int32(truncatingIfNeeded: hole)
                if moved.prev >= 0 { e[Int(moved.prev)].next = to } else { head = to }
                if moved.next >= 0 { e[Int(moved.next)].prev = to } else { tail = to }
                if cursor == Int32(truncatingIfNeeded: j) { cursor = to }
                hole = j
            }
            j = (j + 1) & mask
        }
        e[hole] = Entry(key: 0, prev: -1, next: -1)
        return key
    }

    /// Calls `body` with every key, most recent first, and empties the list (the storage stays).
    /// O(count): only the held entries are visited.
    mutating func removeAll(_ body: (UInt64) -> Void) {
        guard let e = entries else { return }
        var i = head
        while i >= 0 {
            let n = e[Int(i)].next
            body(e[Int(i)].key)
            e[Int(i)] = Entry(key: 0, prev: -1, next: -1)
            i = n
        }
        head = -1
        tail = -1
        count = 0
    }
}
