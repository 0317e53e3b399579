/// The disk tier's droppable slots in order of last use (`DiskTier`): a doubly linked list
/// threaded through per-slot arrays, from the oldest (`oldest`, dropped first when the tier is
/// full) to the youngest, with a membership flag per slot.
///
/// `DiskTier` keeps a slot here exactly while it is stored, hashed and unpinned; the list only
/// keeps the order and the membership, and leaves those rules to its owner.
///
/// Invariants: `count` slots are members and exactly those are on the list, each once;
/// `oldest` is -1 exactly when `count` is 0; links of non-members are stale and never read.
/// Cost: every operation O(1); a walk (`oldest`, `next(after:)`) O(slots visited).
/// 9 bytes per slot of capacity, allocated at init and freed at deinit; no allocation after.
/// Not thread-safe: the engine serialises calls.
final class SlotLRU {
    /// Slots the list may hold: 0..<capacity.
    let capacity: Int
    /// Per slot: toward the oldest and toward the youngest; -1 at the ends.
    private let prev: UnsafeMutablePointer<Int32>
    private let next: UnsafeMutablePointer<Int32>
    /// Per slot: true while it is on the list.
    private let member: UnsafeMutablePointer<Bool>
    /// The least recently used slot, -1 when empty.
    private(set) var oldest: Int32 = -1
    /// The most recently used slot, -1 when empty.
    private var youngest: Int32 = -1
    /// Slots on the list.
    private(set) var count = 0

    /// An empty list for slots 0..<`capacity`. O(capacity).
    /// Throws `outOfMemory` when its 9 bytes per slot cannot be allocated (`CreateAllocations`).
    init(capacity: Int) throws(KVError) {
        self.capacity = capacity
        let a = CreateAllocations()
        let what = "the disk tier's LRU of \(capacity) slots (offload_bytes / slot bytes)"
        prev = try a.allocate(count: capacity, what)
        next = try a.allocate(count: capacity, what)
        member = try a.allocate(repeating: false, count: capacity, what)
        a.keep()
    }

    deinit {
        prev.deallocate()
        next.deallocate()
        member.deallocate()
    }

    /// True while `slot` is on the list. O(1).
    @inline(__always)
    func contains(_ slot: Int32) -> Bool { member[Int(slot)] }

    /// Appends `slot` as the youngest; nothing when it is already on the list (its place is
    /// kept). O(1).
    func append(_ slot: Int32) {
        let s = Int(slot)
        guard !member[s] else { return }
        member[s] = true
        count += 1
        prev[s] = youngest
        next[s] = -1
        if youngest >= 0 { next[Int(youngest)] = slot } else { oldest = slot }
        youngest = slot
    }

    /// Takes `slot` off the list; nothing when it is not on it. O(1).
    func remove(_ slot: Int32) {
        let s = Int(slot)
        guard member[s] else { return }
        member[s] = false
        count -= 1
        let p = prev[s], n = next[s]
        if p >= 0 { next[Int(p)] = n } else { oldest = n }
        if n >= 0 { prev[Int(n)] = p } else { youngest = p }
    }

    /// Moves `slot` to the young end when it is on the list (a use); nothing otherwise. O(1).
    func touch(_ slot: Int32) {
        guard member[Int(slot)] else { return }
        remove(slot)
        append(slot)
    }

    /// The slot after member `slot` toward the young end, -1 after the youngest (a walk from
    /// `oldest`; read it before removing `slot`). O(1).
    @inline(__always)
    func next(after slot: Int32) -> Int32 { next[Int(slot)] }
}
