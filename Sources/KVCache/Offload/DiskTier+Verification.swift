/// The disk tier's unverified slots: those a restart recovered (`recover`) that no read has
/// verified since. A process crash leaves every STORED record over its own block (a slot is
/// rewritten only after its FREED record is appended), but a power loss may keep a slot's
/// rewrite (O_DIRECT) and lose the journal records appended after its last durable point (a
/// sync's fdatasync, a compaction's fsynced copy, or whatever journal pages the kernel wrote
/// back meanwhile): the restart then recovers a STORED record over another block's bytes.
/// Reads verify every slot (header, generation, checksum: never wrong bytes; a failed one
/// drops the slot from the index, `complete`), so only sharing a slot without reading it
/// relies on its record: a swap-out never shares an unverified slot (`sharedSwapSlot`), it
/// writes the block and the written slot replaces the unverified one (`submitSwap`).
/// A slot becomes verified when a read of it verifies, or when it is freed (what this engine
/// writes into it next is its own). No I/O; a bit per slot (`unverified`), O(1) each.
extension DiskTier {
    /// True while `slot` was recovered at the restart and neither read back verified nor freed.
    @inline(__always) func isUnverified(_ slot: Int32) -> Bool {
        unverified[Int(slot) >> 6] & (1 << UInt64(slot & 63)) != 0
    }

    /// Marks recovered `slot` unverified (`recover`).
    func setUnverified(_ slot: Int32) {
        unverified[Int(slot) >> 6] |= 1 << UInt64(slot & 63)
    }

    /// `slot`'s bytes are known to be what the tier says: a read verified them, or it was freed.
    @inline(__always) func verifiedSlot(_ slot: Int32) {
        unverified[Int(slot) >> 6] &= ~(1 << UInt64(slot & 63))
    }

    /// For a swap-out writing block `hash` of `fingerprint` (`submitSwap`): drops the slot the
    /// index holds for it when that slot is unverified and unpinned (`drop`: `blockRemoved`
    /// when it was the hash's last slot, a FREED record), so that the written slot can take its
    /// place. One a read pins stays for that read to verify. O(1) plus the collision links.
    func dropUnverified(hash: UInt64, fingerprint: UInt64) {
        let old = index.findEqual(hash, fingerprint: fingerprint)
        if old >= 0 && isUnverified(old) && pins[Int(old)] == 0 { drop(old) }
    }
}
