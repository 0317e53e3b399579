import CKVMemory

/// A disk tier's sizes at a shape: its slot, and how many of them `offload_bytes` may ask for.
extension DiskTier {
    /// Largest slot a tier moves: 2^31 - 64 KiB bytes. A slot is one read or write, and the
    /// I/O path holds its length in 32 bits (`kvm_io_req.len`, the slot header's and journal
    /// record's `payload_bytes`), io_uring reports a transfer in a signed 32-bit result, and
    /// Linux moves at most 2^31 bytes less a page in one read or write (`MAX_RW_COUNT`; pages
    /// of up to 64 KiB, as on some arm64 kernels): a request past it comes back short, which
    /// fails every write. The thread backend loops over short transfers, but io_uring, the
    /// default, cannot.
    static let maxSlotBytes = (1 << 31) - (1 << 16)

    /// Bytes of one slot holding `payloadBytes` (a block of every layer's K and V): the
    /// 4096-byte header plus the payload, rounded up to 4096. O(1).
    static func slotBytes(payloadBytes: Int) -> Int {
        (Int(KVM_SLOT_HEADER_BYTES) + payloadBytes + 4095) / 4096 * 4096
    }

    /// Checks the sizes of `config`'s disk tier (which it has: `hasDiskTier`), its shape's
    /// fields already checked (so no product here overflows: a payload is at most 2^52 bytes):
    /// a slot of at most `maxSlotBytes`, and `offload_bytes` from one slot to `maxSlots`
    /// slots. Throws `invalidArgument` naming the size and its limit. Called by
    /// `EngineConfig.validate`, so a refused engine has reserved, created and read nothing
    /// (its `offload_dir` and peers are not opened); peers' slots are this engine's size, so
    /// this bounds theirs too. O(1).
    static func checkSizes(_ config: EngineConfig) throws(KVError) {
        let slot = slotBytes(payloadBytes: config.blockBytesAllTensors)
        guard slot <= maxSlotBytes else {
            throw .invalid("offload_dir: a slot of \(slot) bytes (a block of every layer's K and V plus a 4096-byte header) is more than the \(maxSlotBytes) bytes one disk-tier read or write moves: lower block_tokens, or leave offload_dir NULL for no disk tier")
        }
        guard config.offloadBytes >= UInt64(slot) else {
            throw .invalid("offload_bytes \(config.offloadBytes) is smaller than one slot of \(slot) bytes (a block of every layer's K and V plus a 4096-byte header)")
        }
        // Refused, not capped: a server asking for a larger tier would run with a smaller one
        // and not know (memory_bytes past its block limit is refused the same way). At most
        // 2^22 slots of under 2^31 bytes: the product fits.
        let largest = UInt64(maxSlots) * UInt64(slot)
        guard config.offloadBytes <= largest else {
            throw .invalid("offload_bytes \(config.offloadBytes) is more than a tier manages at this shape: at most \(largest) bytes (\(maxSlots) slots of \(slot) bytes)")
        }
    }
}
