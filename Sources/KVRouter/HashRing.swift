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
/// Storage: two flat arrays sorted by position, rebuilt on membership change (O(P log P) for
/// P positions). Lookup: a binary search, O(log P), no allocation.
public struct HashRing: Sendable {
    /// Distinguishes independent rings (DualMap's two hash functions).
    public let seed: UInt64
    private var positions: ContiguousArray<UInt64> = []
    private var slots: ContiguousArray<Int32> = []

    /// An empty ring hashing with `seed`.
    public init(seed: UInt64) { self.seed = seed }

    /// True when no instance is on the ring.
    public var isEmpty: Bool { positions.isEmpty }

    /// Positions on the ring.
    public var count: Int { positions.count }

    /// The ring position of `key` (a block hash or any 64-bit key).
    @inline(__always)
    public func position(of key: UInt64) -> UInt64 { BlockHash.finalize(key ^ seed) }

    /// Rebuilds the ring for `members`: (slot, instance id, virtual nodes). Positions that
    /// collide (rare) keep the lower instance id, so the ring stays a function of membership.
    public mutating func rebuild(_ members: [(slot: Int, id: UInt32, virtualNodes: Int)]) {
        var entries: [(UInt64, UInt32, Int32)] = []
        entries.reserveCapacity(members.reduce(0) { $0 + $1.virtualNodes })
        for m in members {
            for v in 0..<m.virtualNodes {
                let p = BlockHash.finalize(seed &+ (UInt64(m.id) << 32 | UInt64(v)) &* 0x9E37_79B9_7F4A_7C15)
                entries.append((p, m.id, Int32(m.slot)))
            }
        }
        entries.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        positions.removeAll(keepingCapacity: true)
        slots.removeAll(keepingCapacity: true)
        for e in entries where positions.last != e.0 {
            positions.append(e.0)
            slots.append(e.2)
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
    /// such slot exists. Cost: O(log P) plus the positions skipped (few: they are shuffled).
    public func lookup(_ key: UInt64, excluding excluded: Int) -> Int {
        if positions.isEmpty { return -1 }
        var i = successor(position(of: key))
        for _ in 0..<positions.count {
            let s = Int(slots[i])
            if s != excluded { return s }
            i = i + 1 == positions.count ? 0 : i + 1
        }
        return -1
    }

    /// The first slot clockwise from `key`'s position outside `excluded` (a bit mask of
    /// slots), or -1. Cost: O(log P) plus the positions skipped.
    public func lookup(_ key: UInt64, excludingMask excluded: UInt64) -> Int {
        if positions.isEmpty { return -1 }
        var i = successor(position(of: key))
        for _ in 0..<positions.count {
            let s = Int(slots[i])
            if excluded & (1 << UInt64(s)) == 0 { return s }
            i = i + 1 == positions.count ? 0 : i + 1
        }
        return -1
    }
}
