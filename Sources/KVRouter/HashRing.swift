import KVCache

/// A consistent-hash ring: every live instance owns `virtualNodes x weight` pseudo-random
/// positions on the 64-bit circle; a key belongs to the instance owning the first position at
/// or after the key's own position (wrapping around).
///
/// Positions depend only on the ring's `seed` and the instance *id* (not the order instances
/// were added), so every router replica with the same membership computes the same ring, and
/// adding or removing one of N instances moves only the keys of the positions it gains or
/// loses: about 1/N of them.
///
/// Positions never collide: `position(ofVirtualNode:of:)` is injective in (id, virtual node)
/// (see there), so the ring holds exactly the sum of its members' virtual nodes and its order
/// is the positions' order, whatever order instances came in.
///
/// Storage: two flat arrays sorted by position, changed in place: an insert sorts only the
/// new instance's v positions and merges them in one backward pass (O(v log v + P + v)), a
/// remove compacts the instance's positions out (O(P), no allocation); a third array links
/// each position to the next one another slot owns, rebuilt in one O(P) pass per change.
/// Lookup: a binary search, O(log P), no allocation; excluding one slot, one link more.
public struct HashRing: Sendable {
    /// Distinguishes independent rings (DualMap's two hash functions).
    public let seed: UInt64
    private var positions: ContiguousArray<UInt64> = []
    private var slots: ContiguousArray<Int32> = []
    /// Per position: the index of the first position clockwise after it owned by another
    /// slot, or -1 when one slot owns the whole ring.
    private var nextOther: ContiguousArray<Int32> = []

    /// An empty ring hashing with `seed`.
    public init(seed: UInt64) { self.seed = seed }

    /// True when no instance is on the ring.
    public var isEmpty: Bool { positions.isEmpty }

    /// Positions on the ring.
    public var count: Int { positions.count }

    /// The ring position of `key` (a block hash or any 64-bit key).
    @inline(__always)
    public func position(of key: UInt64) -> UInt64 { BlockHash.finalize(key ^ seed) }

    /// The ring position of virtual node `v` (0 ..< 2^32) of instance `id`. Injective in
    /// (id, v): `id << 32 | v` is, the multiplication by an odd constant and the addition of
    /// the seed are bijections modulo 2^64, and so is `BlockHash.finalize` (xor-shifts by 33
    /// and odd multiplications, each invertible). Two virtual nodes never share a position.
    @inline(__always)
    public func position(ofVirtualNode v: Int, of id: UInt32) -> UInt64 {
        BlockHash.finalize(seed &+ (UInt64(id) << 32 | UInt64(v)) &* 0x9E37_79B9_7F4A_7C15)
    }

    /// The positions in ring order with the slot owning each (a copy, for tests).
    /// Cost: O(P) and two allocations.
    var entries: (positions: [UInt64], slots: [Int32]) { (Array(positions), Array(slots)) }

    /// Puts `virtualNodes` (1 ..< 2^32) positions of instance `id`, held in `slot`, on the
    /// ring. Precondition: neither `id` nor `slot` is on the ring already. Cost: O(v log v)
    /// to generate and sort the v new positions, one pass of O(P + v) merging them from the
    /// back into the grown arrays (which may reallocate once, O(P)).
    public mutating func insert(slot: Int, id: UInt32, virtualNodes: Int) {
        precondition(virtualNodes >= 1 && virtualNodes <= Int(UInt32.max), "virtual nodes \(virtualNodes) outside 1 ..< 2^32")
        var fresh = ContiguousArray<UInt64>(unsafeUninitializedCapacity: virtualNodes) { buf, n in
            for v in 0..<virtualNodes { buf[v] = position(ofVirtualNode: v, of: id) }
            n = virtualNodes
        }
        fresh.sort()
        let old = positions.count
        positions.append(contentsOf: repeatElement(0, count: virtualNodes))
        slots.append(contentsOf: repeatElement(0, count: virtualNodes))
        let owner = Int32(slot)
        fresh.withUnsafeBufferPointer { add in
            positions.withUnsafeMutableBufferPointer { pos in
                slots.withUnsafeMutableBufferPointer { sl in
                    var i = old - 1, j = virtualNodes - 1, k = old + virtualNodes - 1
                    while j >= 0 {
                        if i >= 0 && pos[i] > add[j] {
                            pos[k] = pos[i]
                            sl[k] = sl[i]
                            i -= 1
                        } else {
                            assert(i < 0 || pos[i] != add[j], "two virtual nodes share a ring position")
                            pos[k] = add[j]
                            sl[k] = owner
                            j -= 1
                        }
                        k -= 1
                    }
                }
            }
        }
        linkRuns()
    }

    /// Takes every position of `slot` off the ring, keeping the others' order. Cost: one
    /// O(P) compaction pass, no allocation.
    public mutating func remove(slot: Int) {
        let gone = Int32(slot)
        var kept = 0
        positions.withUnsafeMutableBufferPointer { pos in
            slots.withUnsafeMutableBufferPointer { sl in
                for i in 0..<pos.count where sl[i] != gone {
                    pos[kept] = pos[i]
                    sl[kept] = sl[i]
                    kept += 1
                }
            }
        }
        positions.removeLast(positions.count - kept)
        slots.removeLast(slots.count - kept)
        linkRuns()
    }

    /// Rebuilds `nextOther`: position 0's link by a scan forward to the first other owner
    /// (none: one slot owns the ring, every link -1), then every other position counter-
    /// clockwise from the last, each linking to its successor when another slot owns that,
    /// else to the successor's link. Cost: one pass over the slots, O(P), no division.
    private mutating func linkRuns() {
        let n = positions.count
        nextOther.removeAll(keepingCapacity: true)
        nextOther.append(contentsOf: repeatElement(-1, count: n))
        guard n > 1 else { return }
        slots.withUnsafeBufferPointer { sl in
            nextOther.withUnsafeMutableBufferPointer { next in
                var first = 1
                while first < n && sl[first] == sl[0] { first += 1 }
                guard first < n else { return }
                next[0] = Int32(first)
                next[n - 1] = sl[0] != sl[n - 1] ? 0 : next[0]
                var i = n - 2
                while i > 0 {
                    next[i] = sl[i + 1] != sl[i] ? Int32(i + 1) : next[i + 1]
                    i -= 1
                }
            }
        }
    }

    /// Index of the first position at or after `p`, wrapping to 0. Precondition: not empty.
    @inline(__always)
    private func successor(_ p: UInt64) -> Int {
        var lo = 0, hi = positions.count
        positions.withUnsafeBufferPointer { pos in
            while lo < hi {
                let mid = (lo + hi) >> 1
                if pos[mid] < p { lo = mid + 1 } else { hi = mid }
            }
        }
        return lo == positions.count ? 0 : lo
    }

    /// The slot owning `key`, or -1 when the ring is empty. Cost: O(log P).
    @inline(__always)
    public func lookup(_ key: UInt64) -> Int {
        if positions.isEmpty { return -1 }
        return Int(slots[successor(position(of: key))])
    }

    /// The first slot clockwise from `key`'s position that is not `excluded`, or -1 when no
    /// such slot exists. Cost: O(log P) and one link (`nextOther`), whatever share of the
    /// ring `excluded` owns.
    public func lookup(_ key: UInt64, excluding excluded: Int) -> Int {
        if positions.isEmpty { return -1 }
        let i = successor(position(of: key))
        if Int(slots[i]) != excluded { return Int(slots[i]) }
        let j = Int(nextOther[i])
        return j < 0 ? -1 : Int(slots[j])
    }

    /// The first slot clockwise from `key`'s position outside `excluded` (a bit mask of
    /// slots), or -1. Cost: O(log P) plus one link per run of excluded slots' positions
    /// passed (a run of one slot's positions is passed in one step), at most P.
    public func lookup(_ key: UInt64, excludingMask excluded: UInt64) -> Int {
        if positions.isEmpty { return -1 }
        var i = successor(position(of: key))
        for _ in 0..<positions.count {
            let s = Int(slots[i])
            if excluded & (1 << UInt64(s)) == 0 { return s }
            let j = Int(nextOther[i])
            if j < 0 { return -1 }
            i = j
        }
        return -1
    }
}
