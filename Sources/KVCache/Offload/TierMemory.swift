/// Where a verified disk read goes: `block` of the engine, held at block position `position`
/// of sequence slot `slot`, with `tokens` meaningful tokens (a full block, or a swapped-out
/// sequence's partial last block); or, when `record >= 0`, offloaded-token record `record` of
/// sequence slot `slot` (episodic offload: its tokens go where the sequence's pending restore
/// says; `block`, `position` and `tokens` are unused).
struct LoadTarget {
    var block: Int32
    var slot: Int32
    var position: Int32
    var tokens: Int32
    var record: Int32 = -1
}

/// The engine side of the disk tier: copies block bytes between memory and a staging buffer
/// laid out tensor by tensor (tensor t at `t * blockBytes`), and learns when a load ends.
protocol TierMemory: AnyObject {
    /// Copies cached block `block`'s bytes (a spill: the block is about to be freed). Returns
    /// the payload's checksum.
    func gatherCached(_ block: Int32, into out: UnsafeMutableRawPointer) throws(KVError) -> UInt64
    /// Copies the first `tokens` tokens of the block at `position` of live slot `slot`. Returns
    /// the payload's checksum when the copy computed it (`kvm_slot_gather`), else nil.
    func gatherLive(_ block: Int32, slot: Int, position: Int, tokens: Int, into out: UnsafeMutableRawPointer) -> UInt64?
    /// Writes a verified load into memory.
    func scatter(_ target: LoadTarget, from data: UnsafeRawPointer)
    /// A load ended: `ok` false when the read failed or the slot was torn or corrupt.
    func loadFinished(_ target: LoadTarget, ok: Bool)
    /// The write of offloaded-token record `slot` failed on the device while something still
    /// pins it (the slot is broken: freed when its last pin goes). Called while completions
    /// are processed, so it must only take note, pinning the slot to keep it meanwhile; once
    /// it has processed the failure (its tokens counted lost) it calls
    /// `DiskTier.releaseFailedRecord`, until which the record still counts as on disk.
    func recordWriteFailed(_ slot: Int32)
}
