/// The disk tier's droppable slots in order of last use (`DiskTier`): an `IndexList` of slots,
/// from the oldest (`oldest`, dropped first when the tier is full) to the youngest, with a
/// membership flag per slot and a count on top of it.
///
/// `DiskTier` keeps a slot here exactly while it is stored, hashed and unpinned; the list only
/// keeps the order and the membership, and leaves those rules to its owner. Unlike the bare
/// list, it checks membership: appending a member or removing a non-member does nothing.
///
/// Invariants: `count` slots are members and exactly those are on the list, each once;
/// `oldest` is -1 exactly when `count` is 0; links of non-members are stale and never read.
/// Cost: every operation O(1); a walk (`oldest`, `next(after:)`) O(slots visited).
/// 9 bytes per slot of capacity, allocated at init and freed at deinit; no allocation after.
/// Not thread-safe: the engine serialises calls.
final class SlotLRU {
    /// Slots the list may hold: 0..<capacity.
    let capacity: Int
    /// The members, oldest first.
    private var list: IndexList
    /// Per slot: true while it is on the list.
    private let member: UnsafeMutablePointer<Bool>
    /// Slots on the list.
    private(set) var count = 0

    /// An empty list for slots 0..<`capacity`. O(capacity).
    /// Throws `outOfMemory` when its 9 bytes per slot cannot be allocated (`CheckedAllocations`).
    init(capacity: Int) throws(KVError) {
        self.capacity = capacity
        let what = "the disk tier's LRU of \(capacity) slots (offload_bytes / slot bytes)"
        list = try IndexList(capacity: capacity, what)
        let a = CheckedAllocations()
        member = try a.allocate(repeating: false, count: capacity, what)
        a.keep()
    }

    deinit {
        member.deallocate()
    }

    /// The least recently used slot, -1 when empty. O(1).
    @inline(__always)
    var oldest: Int32 { list.first }

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
        list.append(slot)
    }

    /// Takes `slot` off the list; nothing when it is not on it. O(1).
    func remove(_ slot: Int32) {
        let s = Int(slot)
        guard member[s] else { return }
        member[s] = false
        count -= 1
        list.remove(slot)
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
    func next(after slot: Int32) -> Int32 { list.next(after: slot) }
}
