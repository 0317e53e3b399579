/// Backward-shift deletion in a linear-probing table of `mask + 1` entries (a power of two):
/// after a removal leaves `hole`, the probe walks on from it, and the entry met at `probe`,
/// whose home is `home`, moves into the hole exactly when its home does not lie cyclically in
/// `(hole, probe]` (there a lookup would stop at the hole before reaching it). So no
/// tombstones accumulate. The one rule of `U64Table`, KVRouter's `BlockMaskTable` and
/// `RecencyList`. O(1), inlined into their loops.
@inlinable @inline(__always)
public func backwardShiftMoves(home h: Int, hole: Int, probe j: Int) -> Bool {
    hole <= j ? (h <= hole || h > j) : (h <= hole && h > j)
}
