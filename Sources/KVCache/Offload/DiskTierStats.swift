/// Counters of the disk tier, in `EngineStats`.
public struct DiskTierStats: Equatable, Sendable {
    /// Slots the tier may use (`offload_bytes / slot_bytes`), and bytes of one slot.
    public var capacitySlots: UInt64 = 0
    /// Bytes of one slot (a block's K/V and its header).
    public var slotBytes: UInt64 = 0
    /// Slots holding a block now (prefix blocks and swapped-out sequences' blocks).
    public var storedSlots: UInt64 = 0
    /// Bytes written to and read from the slab (whole slots, headers included); reads of
    /// peers' slabs count in `bytesRead` too.
    public var bytesWritten: UInt64 = 0
    /// Bytes read, as `bytesWritten` counts them (own slab and peers').
    public var bytesRead: UInt64 = 0
    /// Cached blocks whose write to the tier was submitted instead of dropping them (when
    /// evicted, or, still cached, ahead of an evicted descendant: `OffloadCoordinator.spill`;
    /// by a trim; by the writeback thread), counted at the submission: the writes that then
    /// failed are included (`spillWritesFailed`), so `blocksSpilled - spillWritesFailed`
    /// blocks were written or are being written.
    public var blocksSpilled: UInt64 = 0
    /// Spills that could not be written: no slot could be had (the slab could not grow, for a
    /// full disk or the file-size limit, and no stored block was left to drop, or the journal
    /// could not append the FREED records of the slots freed for them), the copy into
    /// the staging buffer failed (a page read of the contiguous layout), or the write failed
    /// (`spillWritesFailed`).
    public var spillsFailed: UInt64 = 0
    /// Of `blocksSpilled` (and of `spillsFailed`), the writes that failed: the device's error,
    /// a short write, or a request the queue refused. Each failed block left the tier's index
    /// (a `blockRemoved` event followed its `blockStored`). The C ABI's
    /// `kvc_stats.disk_spills_failed` is this counter, not `spillsFailed`.
    public var spillWritesFailed: UInt64 = 0
    /// Of `blocksSpilled`, those the writeback thread submitted ahead of their eviction
    /// (`EngineConfig.offloadWriteback`, `Writeback`), failed ones included: copied outside the
    /// engine's lock, so the allocation that later evicts them copies nothing. The thread never
    /// drops a slot whose block memory holds (`DiskTier.reserveAhead`) and writes nothing while
    /// writes fail (`DiskTier.writesFailing`), so an idle engine writes each cached block at
    /// most once, however few slots the tier has.
    public var blocksWrittenAhead: UInt64 = 0
    /// Cached blocks an allocation evicted and did not write back because no staging buffer
    /// was free beyond the reserve (`DiskTier.spill`), or because every slot of the tier is
    /// held (swapped-out sequences' blocks, offloaded-token records, I/O in flight; nothing
    /// cached to drop): dropped exactly as without a tier, rather than waiting for the device
    /// under the engine's lock; with the writeback thread (`blocksWrittenAhead`) the same, among
    /// the evicted blocks it had not written or begun copying. Not an error (not in
    /// `spillsFailed`): the block was only a cache entry; a later prompt recomputes it. A
    /// trim's blocks count only when every slot is held by other than spill writes
    /// (`Engine.spillCachedBlocks` waits for those).
    public var spillsSkipped: UInt64 = 0
    /// Writes of swapped-out sequences' blocks and of offloaded-token records that failed on
    /// the device or were refused by the queue (spills count in `spillsFailed`). A swap-out
    /// with a failed write counts once in `swapOutsFailed`, however many of its writes failed.
    public var writesFailed: UInt64 = 0
    /// Journal appends that failed (a full disk, an I/O error, the file-size limit), each a
    /// write of up to a batch of records. No record is lost to one: each stays owed and is
    /// appended by a later call that processes completions (or `syncOffload`, which throws
    /// `io` while any is owed); until then a restart would not find the blocks it describes.
    public var journalAppendsFailed: UInt64 = 0
    /// Blocks read back (prefix hits and swap-ins), and reads that failed or were rejected as
    /// torn or corrupt (each a miss).
    public var blocksLoaded: UInt64 = 0
    /// Block reads that failed or were rejected as torn or corrupt (each a miss).
    public var loadsFailed: UInt64 = 0
    /// Blocks dropped from the disk tier to make room.
    public var slotsEvicted: UInt64 = 0
    /// I/O requests submitted (fewer than slots moved when adjacent slots merged).
    public var requestsSubmitted: UInt64 = 0
    /// Blocks found again in the journal when the engine started.
    public var recoveredSlots: UInt64 = 0
    /// Journal records the engine's start could not use, whose blocks it forgot (their slots
    /// are reused): each whole record that is torn or corrupt (skipped: the replay goes on,
    /// the slot's previous record winning; a crash tears at most the records being appended),
    /// a partial record at the journal's end (a torn tail: one), records whose checksum holds
    /// but whose generation is at or past 2^63 (no engine's: forged or foreign),
    /// records of slots past the capacity (`offloadBytes` made smaller), and a slot's latest
    /// record saying stored that lies past the slab file or holds a payload of another size.
    /// Logged on stderr when not 0.
    public var journalRecordsDropped: UInt64 = 0
    /// Prompt tokens `createSequence` found in the disk tier (part of `prefixHitTokens`).
    public var prefixHitTokens: UInt64 = 0
    /// Prompt tokens `createSequence` found only on disk (own tier or peers') and did not
    /// read, because the server's prefill (`EngineConfig.prefillTokensPerSecond`) was
    /// expected to compute them sooner (`DiskTier.readIsFaster`): the prefix ended at the
    /// first of them. Not in `prefixHitTokens`.
    public var declinedHitTokens: UInt64 = 0
    /// Swap-outs (`swapOut` and `swapOutAsync`) started: their sequence swapped out for every
    /// caller and their first write submitted (one that throws before is not started). Every
    /// one started ends exactly once, so that at any snapshot
    /// `swapOutsStarted == swapOuts + swapOutsCancelled + swapOutsFailed + swapOutsPending`.
    public var swapOutsStarted: UInt64 = 0
    /// Swap-outs completed: every write on disk, memory released.
    public var swapOuts: UInt64 = 0
    /// Pending swap-outs cancelled by a swap-in or free of their sequence (`swapOutAsync`
    /// only: nothing was read back, the memory was never released).
    public var swapOutsCancelled: UInt64 = 0
    /// Swap-outs that failed after they started: a write failed, or the tier refused a later
    /// block (disk full, tier full of pinned slots); the sequence stayed resident, unchanged.
    public var swapOutsFailed: UInt64 = 0
    /// Swap-outs started and not ended yet (their memory is still committed).
    public var swapOutsPending: UInt64 = 0
    /// Swapped-out sequences read back in (not the cancelled swap-outs: `swapOutsCancelled`).
    public var swapIns: UInt64 = 0
    /// Episodic offload: records (slots) holding sequences' evicted tokens now, each counted
    /// once however many sequences hold it (a fork shares its parent's); part of
    /// `storedSlots` once the write's completion is processed (as every slot's), never prefix
    /// hits. Counted from the write's submission (before `storedSlots`) until the slot is
    /// freed (its last holder let go), or, when its write failed, until the engine processed
    /// the failure: in the same locked step as the record's tokens join `tokensLost` (every
    /// sequence holding it loses them in that step), so no snapshot has them in neither, nor
    /// in both. Open records are not counted.
    ///
    /// A *token* in these counters is the unit a sequence keeps or evicts: a token of one row
    /// of its kept sets. Per layer (the default) that is one layer's token (its K and V, every
    /// KV head: `2 x tokenBytes`); per head (`eviction_per_head`) one KV head's part of one
    /// layer's token (`2 x tokenBytes / numKVHeads`), so a per-head sequence that evicts a
    /// position from every head of a layer counts `numKVHeads` tokens. Either way a record
    /// holds `payloadBytes` of them, and a count times its token's bytes is the bytes moved.
    public var tokenRecords: UInt64 = 0
    /// Episodic offload: offloaded tokens (as above) whose K/V those records hold, each
    /// record's tokens counted once (times a token's bytes: their payload on disk). A token restored
    /// into memory or dropped by one sequence stays counted while its record is held (its bytes
    /// stay on disk, maybe still a candidate of a fork), until the record's slot is freed.
    public var tokensOnDisk: UInt64 = 0
    /// Episodic offload: tokens (as above) copied into open records (memory buffers, not
    /// written yet; see `OpenRecords`; a fork's copy of its parent's counts too), not in
    /// `tokensOnDisk` until their record is written out.
    /// Like `tokensOnDisk`, a token restored from the buffer stays counted until its record is
    /// written out or discarded (its bytes are still there).
    public var tokensInOpenRecords: UInt64 = 0
    /// Episodic offload: tokens (as above) evicted to the tier (counted when copied into an open
    /// record or written out: an open record a free discards stays counted, neither written nor
    /// lost), read back into memory, and lost (their record could not be written, or its read
    /// failed or was torn or corrupt: dropped, never served; a write that fails on the device
    /// counts its record's tokens, in each sequence holding it, as soon as the engine processes the
    /// failure, when the record leaves `tokenRecords` and `tokensOnDisk`).
    public var tokensOffloaded: UInt64 = 0
    /// Episodic offload: tokens read back into memory (as above).
    public var tokensRestored: UInt64 = 0
    /// Episodic offload: tokens lost (as above: never served).
    public var tokensLost: UInt64 = 0
    /// Peer tiers (`peer_offload_dirs`): blocks read from a peer's slab, verified and served
    /// (each then an ordinary cached block of this engine), and peer reads refused: the slot no
    /// longer held what the peer's journal said when it was looked up (freed and rewritten
    /// since, torn), or the read failed (the peer's file gone or truncated). A refused read is a
    /// miss, never served. `peerHitTokens`: prompt tokens of the peer blocks verified and
    /// served, counted with `peerHits` when the read completes (a refused or cancelled read
    /// adds nothing). `EngineStats.prefixHitTokens` counts peer blocks at creation instead
    /// (what `createSequence` returned, refused reads included: those count in `peerStale`);
    /// this struct's `prefixHitTokens` is the own tier's.
    public var peerHits: UInt64 = 0
    /// Peer reads refused (as above): each a miss.
    public var peerStale: UInt64 = 0
    /// Prompt tokens of the peer blocks verified and served (as above).
    public var peerHitTokens: UInt64 = 0
    /// 0 io_uring, 1 the pread/pwrite thread pool; 1 when the slab is O_DIRECT.
    public var backend: UInt32 = 0
    /// 1 when the slab is opened O_DIRECT, 0 when buffered (the fallback).
    public var direct: UInt32 = 0
    /// 1 when io_uring runs with the staging buffers registered, 0 when their registration
    /// was refused (RLIMIT_MEMLOCK, usually: pinned per request instead) or on the thread pool.
    public var registeredBuffers: UInt32 = 0

    /// The I/O path as `kvc_stats.disk_io_mode` says it: 0 no tier (no slots), 1 io_uring
    /// with registered buffers, 2 io_uring with buffers pinned per request, 3 the thread pool.
    public var ioMode: UInt64 {
        if capacitySlots == 0 { return 0 }
        if backend == 1 { return 3 }
        return registeredBuffers == 1 ? 1 : 2
    }

    /// Zeroed counters.
    public init() {}
}
