/// A doubly linked list of small integer ids (0..<capacity) threaded through two per-id arrays
/// of links, from `first` to `last`: the LRU order of the prefix cache's cached blocks
/// (`BlockPool`, oldest first) and of the disk tier's droppable slots (`SlotLRU`).
///
/// The list keeps only the order. Which ids are on it is its owner's knowledge (`BlockPool`: a
/// block is on it exactly while cached; `SlotLRU`: a flag per slot), and the owner must never
/// `append` an id that is on the list nor `remove` one that is not: the list does not check.
///
/// Invariants: every id on the list appears once; `first` is -1 exactly when the list is empty,
/// and then so is `last`; the links of ids not on the list are stale and never read.
/// Cost: `append`, `remove` and `next(after:)` are O(1), a few loads and stores each, no
/// branches beyond the ends' and no checks; a walk (`first`, `next(after:)`) is O(ids visited).
/// 8 bytes per id of capacity, allocated at init and freed at deinit; no allocation after.
/// Noncopyable, so that its owner holds it inline (no object, no reference counting) and the
/// arrays have exactly one owner. Not thread-safe: its owner serialises calls.
struct IndexList: ~Copyable {
    /// Per id: toward `first` and toward `last`; -1 at the ends.
    private let prev: UnsafeMutablePointer<Int32>
    private let next: UnsafeMutablePointer<Int32>
    /// The id at the front (the oldest, in LRU use), -1 when empty.
    private(set) var first: Int32 = -1
    /// The id at the back (the youngest, most recently appended), -1 when empty.
    private(set) var last: Int32 = -1

    /// An empty list for ids 0..<`capacity`. O(capacity): the links start as -1, so no
    /// uninitialised memory is ever read, even through a misuse. Throws `outOfMemory` saying
    /// `what` (the owner's description, naming the config fields that sized it) when the links
    /// cannot be allocated (`CheckedAllocations`).
    init(capacity: Int, _ what: @autoclosure () -> String) throws(KVError) {
        let a = CheckedAllocations()
        // Both first, then the fields: a noncopyable value cannot be left half made by a throw.
        let toFirst: UnsafeMutablePointer<Int32> = try a.allocate(repeating: -1, count: capacity, what())
        let toLast: UnsafeMutablePointer<Int32> = try a.allocate(repeating: -1, count: capacity, what())
        a.keep()
        prev = toFirst
        next = toLast
    }

    deinit {
        prev.deallocate()
        next.deallocate()
    }

    /// True when no id is on the list. O(1).
    @inline(__always)
    var isEmpty: Bool { first < 0 }

    /// Puts `id` at the back (after `last`). Precondition (unchecked): `id` is not on the
    /// list. O(1).
    @inline(__always)
    mutating func append(_ id: Int32) {
        prev[Int(id)] = last
        next[Int(id)] = -1
        if last >= 0 { next[Int(last)] = id } else { first = id }
        last = id
    }

    /// Takes `id` off the list, wherever it is; its neighbours are joined. Precondition
    /// (unchecked): `id` is on the list. O(1).
    @inline(__always)
    mutating func remove(_ id: Int32) {
        let p = prev[Int(id)], n = next[Int(id)]
        if p >= 0 { next[Int(p)] = n } else { first = n }
        if n >= 0 { prev[Int(n)] = p } else { last = p }
    }

    /// The id after `id` toward the back, -1 after `last`: a walk from `first`. Read it before
    /// removing `id` (a removed id's links are stale). Precondition (unchecked): `id` is on the
    /// list. O(1).
    @inline(__always)
    func next(after id: Int32) -> Int32 { next[Int(id)] }
}
