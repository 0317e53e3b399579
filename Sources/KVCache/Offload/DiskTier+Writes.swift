import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The disk tier's writes: spills, swap-outs and records taking slots, and the slots they take.
extension DiskTier {
    /// Writes cached block `block` back to disk before it is freed (unless the tier already has
    /// it). Failures are counted and the block is simply dropped, as without a tier.
    ///
    /// Never waits: a spill takes a staging buffer only while one is free beyond the reserve
    /// (`bulkStages > 0`), after taking the writes already completed without waiting
    /// (`reapWrites`) when none is; when still none is, or when every slot of the tier is held
    /// (`isFullOfHeldSlots`), the block is dropped as without a tier and counted in
    /// `spillsSkipped`. A spill runs inside an allocation, under the engine's
    /// lock: waiting for a buffer there would stall every other thread's call behind the
    /// device, and taking the reserve would make a prompt's prefix read or a swap-in wait for
    /// cache write-backs. A cached block is only a cache entry, so like vLLM's offloading
    /// connector and LMCache when their store path is full, the store is skipped rather than
    /// the step blocked. Completed reads are not processed here (`reapWrites`): they write
    /// into memory and may spoil sequences, which the allocating call is in the middle of
    /// changing. A trim (`Engine.spillCachedBlocks`) sizes its steps by `bulkStages` and
    /// `spillSlots`, so none of its spills is skipped while its waits can make room. Cost: O(1) when a buffer is free; else O(completions taken);
    /// plus a copy and checksum of the block when it is written.
    func spill(_ block: Int32, hash: UInt64, parent: UInt64, fingerprint: UInt64) {
        guard !contains(hash, fingerprint: fingerprint) else { return }
        guard hasSpillRoom() else { return skipSpill() }
        guard let (slot, stage) = reserveSpill(hash, fingerprint: fingerprint) else { return }
        let copy = Result { () throws(KVError) in try memory.gatherCached(block, into: payload(stage)) }
        submitSpill(slot: slot, stage: stage, hash: hash, parent: parent, fingerprint: fingerprint, copy: copy, ahead: false)
    }

    /// A spill's first step (`spill`): a free slot and a staging buffer for block `hash` of
    /// `fingerprint`, beyond the reserve (`hasSpillRoom`), or nil when there is no room, the
    /// tier holds that block, or no slot can be had (counted in `spillsFailed`). The slot is in no index and
    /// no LRU until `submitSpill` writes it (or gives it back), so no lookup finds it half
    /// filled; the caller copies into `spillPayload(stage)` meanwhile. O(1), or O(completions
    /// taken).
    func reserveSpill(_ hash: UInt64, fingerprint: UInt64) -> (slot: Int32, stage: Int32)? {
        guard !contains(hash, fingerprint: fingerprint), hasSpillRoom() else { return nil }
        do throws(KVError) { return try reserve() } catch {
            stats.spillsFailed += 1
            lastFailure = error.message
            return nil
        }
    }

    /// A write-ahead's first step (`Writeback`, which copies between it and `submitSpill`
    /// outside the engine's lock): as `reserveSpill`, for a block the tier lacks, once
    /// `hasSpillRoom` said a staging buffer is free (nil otherwise); but the slot is never one
    /// whose block memory still holds (`isResident`, by the slot's hash and fingerprint): a
    /// free slot, one the slab grows by, or one of at most `dropBatch` slots dropped among the
    /// LRU's `aheadDropScan` oldest whose blocks left memory. Nil when there is no such slot: not a failure (nothing
    /// counted), the thread waits for memory or the tier to change. Dropping the LRU's oldest whatever
    /// they hold, as an eviction's spill does, made an idle engine whose cached blocks
    /// outnumber the tier's slots rewrite the same blocks forever: the thread dropped the
    /// blocks it had written itself, which memory still held, and took them again on its next
    /// pass. Cost: `takeSlotAhead`'s.
    func reserveAhead(_ hash: UInt64, fingerprint: UInt64, keeping isResident: (_ hash: UInt64, _ fingerprint: UInt64) -> Bool)
        -> (slot: Int32, stage: Int32)? {
        guard !contains(hash, fingerprint: fingerprint) && bulkStages > 0, let slot = takeSlotAhead(keeping: isResident) else { return nil }
        return (slot, takeStage(for: slot))
    }

    /// True from the processing of a failed write (a spill, a swap-out's block, a record:
    /// the device's error, a short write, a request the queue refused) until a write submitted
    /// after it completed on disk. While it is true the writeback thread writes nothing ahead
    /// (`Writeback`), so that a failing device sees each cached block at most once rather than
    /// every block again on every pass; a call's write (an eviction's spill, a trim, a
    /// swap-out) is what tries the device again. O(1).
    var writesFailing: Bool { writeFailureGeneration != nil }

    /// Where a reserved spill's or swap-out block's payload goes (`reserveSpill`, `reserveSwap`).
    /// Pure address arithmetic: any thread may write the payload while the engine's lock is
    /// held elsewhere.
    func spillPayload(_ stage: Int32) -> UnsafeMutableRawPointer { payload(stage) }

    /// A spill's second step: writes reserved spill `slot`/`stage` of block `hash` (child of
    /// `parent`, fingerprint `fingerprint`) whose payload `copy` wrote (its checksum), counted in `blocksSpilled`, and in
    /// `blocksWrittenAhead` when `ahead` (the writeback thread's). Gives the slot and buffer
    /// back when the copy failed (`spillsFailed`, `lastFailure`) or the tier got `hash`
    /// meanwhile (a trim's spill of the same block while the thread copied it). O(1) plus the
    /// header's seal.
    func submitSpill(slot: Int32, stage: Int32, hash: UInt64, parent: UInt64, fingerprint: UInt64, copy: Result<UInt64, KVError>,
                     ahead: Bool) {
        switch copy {
        case .failure(let error):
            cancel(slot: slot, stage: stage)
            stats.spillsFailed += 1
            lastFailure = error.message
        case .success(let checksum):
            guard !contains(hash, fingerprint: fingerprint) else { return cancel(slot: slot, stage: stage) }
            submitWrite(slot: slot, stage: stage, hash: hash, parent: parent, fingerprint: fingerprint, checksum: checksum,
                        op: DiskTier.spillWrite)
            stats.blocksSpilled += 1
            if ahead { stats.blocksWrittenAhead += 1 }
        }
    }

    /// True when a spill would be written now: a staging buffer is free beyond the reserve
    /// (`bulkStages > 0`), after taking the writes already completed without waiting
    /// (`reapWrites`) when none was, and the tier is not full of held slots. O(1), or
    /// O(completions taken).
    func hasSpillRoom() -> Bool {
        if bulkStages <= 0 { reapWrites() }
        return bulkStages > 0 && !isFullOfHeldSlots
    }

    /// Counts an evicted block dropped without being written (`spillsSkipped`).
    func skipSpill() { stats.spillsSkipped += 1 }

    /// Throws `io`, changing nothing, unless the `count` blocks of a swap-out (block `i` of
    /// `block(i)`'s hash, 0 for a sequence's own slot, and fingerprint) can each have a slot,
    /// counted as `reserveSwap` places them (`sharedSwapSlot`): a block the tier holds already
    /// under its hash and an equal fingerprint (0 with 0 only) is pinned where it is (leaving
    /// the LRU); the others (among them one whose hash the tier holds only under other
    /// fingerprints: counted by hash alone, a crafted colliding block pinned by another
    /// sequence passed a swap-out that then dropped cached slots and failed anyway) take free slots, cached slots
    /// dropped from the LRU, and slots the slab can still grow by (`kvm_slab_growable`: within
    /// `offload_bytes`, the process's file-size limit and the file system's free space); while
    /// the journal cannot append (tried once more here), neither cached slots nor freed ones
    /// waiting for their FREED records (`waitingSlots`) count.
    /// `writeSwap` drops LRU slots block by block, so a swap-out started without this check
    /// that then found no slot had dropped cached prefix blocks for nothing. When the blocks
    /// fit only once the writes in flight have ended (a spill's slot joins the LRU when its
    /// write ends), it waits for them first (`drain`) instead of calling the tier full. Not
    /// covered: disk space another writer takes after the check, and other traffic taking
    /// slots between the writes of a swap-out larger than the staging buffers. Cost: one index
    /// probe (and its collision links) per hashed block; a getrlimit and an fstatvfs when free
    /// and LRU slots are not enough; the wait when needed.
    func checkRoom(forSwapOut count: Int, block: (Int) -> (hash: UInt64, fingerprint: UInt64)) throws(KVError) {
        // The growth the last `room()` counted, and its nearest bound: asked only when the free
        // and cached slots fall short, so always by the time the refusal names them.
        var growable: UInt32 = 0
        var bound: UnsafePointer<CChar>?
        if journal.appendFailing { flushJournal() }  // gives back the slots waiting for it, when it appends now
        func room() -> (needed: Int, obtainable: Int) {
            var needed = 0, heldInLRU = 0
            for i in 0..<count {
                let (h, f) = block(i)
                let s = sharedSwapSlot(hash: h, fingerprint: f)
                if s < 0 { needed += 1 } else if lru.contains(s) { heldInLRU += 1 }
            }
            // While the journal cannot append, dropped and waiting slots stay unusable.
            let reusable = freeTop + (journal.appendFailing ? 0 : waitingCount + lru.count - heldInLRU)
            guard needed > reusable else { return (needed, reusable) }
            growable = kvm_slab_growable(slab, &bound)
            return (needed, reusable + Int(growable))
        }
        var (needed, obtainable) = room()
        if needed > obtainable && kvm_io_inflight(io) > 0 {
            drain()
            (needed, obtainable) = room()
        }
        guard needed <= obtainable else {
            throw KVError(.io, "offload tier full: the swap-out needs \(needed) slots and \(obtainable) can be had (free, cached "
                + "or grown: the slab has \(kvm_slab_allocated(slab)) slots and can grow by \(growable) within "
                + "\(bound.map { String(cString: $0) } ?? "offload_bytes")); "
                + (journal.appendFailing
                    ? "the journal cannot record freed slots (\(journal.lastError)), so no cached or freed slot is rewritten"
                    : "the tier's other slots hold swapped-out sequences' blocks, offloaded tokens or pending reads"))
        }
    }

    /// Writes the first `tokens` tokens of the block at `position` of live `slot` for a swap-out,
    /// under `hash` (0: the sequence's own slot) and `fingerprint`, copying it under the engine's lock
    /// (`reserveSwap`, the copy, `submitSwap`). Returns the slot, pinned. Throws `io` when no
    /// slot can be had (tier full of pinned slots, disk full); a request the queue refuses
    /// fails like a write that fails on the device.
    func writeSwap(_ block: Int32, hash: UInt64, parent: UInt64, fingerprint: UInt64, slot seqSlot: Int, position: Int,
                   tokens: Int) throws(KVError) -> Int32 {
        let (slot, stage) = try reserveSwap(hash: hash, fingerprint: fingerprint)
        guard stage >= 0 else { return slot }
        let checksum = memory.gatherLive(block, slot: seqSlot, position: position, tokens: tokens, into: payload(stage))
        return submitSwap(slot: slot, stage: stage, hash: hash, parent: parent, fingerprint: fingerprint, checksum: checksum)
    }

    /// A swap-out block's first step (`writeSwap`, or `SwapOutQueue`'s copies without the
    /// engine's lock): the slot holding `hash` and `fingerprint` already, pinned, with stage -1
    /// (nothing to write); else a free slot and a staging buffer (waiting under the lock for one when none
    /// is free, `takeStage`: callers without a wait in mind check `swapOutStages` first). The
    /// slot is in no index and no LRU and the buffer taken until `submitSwap` (or `cancel`),
    /// so no other call reuses or finds them; the caller copies the block into
    /// `spillPayload(stage)` meanwhile, with or without the lock. Throws `io` when no slot can
    /// be had. O(1) plus `takeSlot`'s drops.
    func reserveSwap(hash: UInt64, fingerprint: UInt64) throws(KVError) -> (slot: Int32, stage: Int32) {
        let found = sharedSwapSlot(hash: hash, fingerprint: fingerprint)
        if found >= 0 {
            pin(found)
            return (found, -1)
        }
        return try reserve()
    }

    /// The stored slot a swap-out's block of `hash` and `fingerprint` is pinned in instead of
    /// being written (`reserveSwap`, `submitSwap`, and `checkRoom` counting as they place), or
    /// -1: only a slot of an EQUAL fingerprint, 0 with 0 only (`HashChains.findEqual`); never
    /// for a sequence's own slot (hash 0). A swap-out's bytes are its own and in memory, so a
    /// block the tier holds only under other fingerprints (a collision of the public hash) is
    /// written, not shared: a block of fingerprint 0 (a sequence known by its hashes alone)
    /// sharing the hash's first slot would swap back in another prompt's bytes. Lookups keep
    /// their rule (`lookup`: fingerprint 0 takes the hash's first slot). Never a slot the
    /// restart recovered that no read verified yet (`isUnverified`): after a power loss it may
    /// hold another block, and a swap-out that shared it would free the sequence's memory with
    /// its bytes nowhere; the block is written, and replaces that slot (`submitSwap`). No LRU
    /// change (the caller pins it out of the LRU). O(1) plus the hash's collision links.
    @inline(__always) private func sharedSwapSlot(hash: UInt64, fingerprint: UInt64) -> Int32 {
        let s = hash != 0 ? index.findEqual(hash, fingerprint: fingerprint) : -1
        return s >= 0 && isUnverified(s) ? -1 : s
    }

    /// A swap-out block's second step: writes reserved `slot`/`stage` (`reserveSwap`), whose
    /// payload was copied (`checksum`: computed by the copy, or nil: the seal computes it),
    /// under `hash`, and returns it pinned. When the tier got `hash` meanwhile (a swap-out of
    /// another sequence sharing the block copied it at the same time, without the lock), gives
    /// the reservation back and returns that slot, pinned, instead; only a slot of an equal
    /// fingerprint is shared (`sharedSwapSlot`). A block of a hash the tier holds with another
    /// fingerprint (a collision of the public hash) gets its own entry (`HashChains`); one of
    /// fingerprint 0 (known by its hash alone) whose hash the tier holds under others is
    /// written as the sequence's own slot (hash 0: the index keeps a block of fingerprint 0
    /// only where its hash is absent), so its swap-in reads it back unindexed. An unverified
    /// slot of the block (`sharedSwapSlot`) leaves the index and is freed (`dropUnverified`),
    /// the written one indexed instead; one a read pins stays, and the block is written as
    /// the sequence's own slot. O(1) plus the seal.
    func submitSwap(slot: Int32, stage: Int32, hash: UInt64, parent: UInt64, fingerprint: UInt64, checksum: UInt64?) -> Int32 {
        let found = sharedSwapSlot(hash: hash, fingerprint: fingerprint)
        if found >= 0 {
            cancel(slot: slot, stage: stage)
            pin(found)
            return found
        }
        pin(slot)
        if hash != 0 { dropUnverified(hash: hash, fingerprint: fingerprint) }
        let indexed = hash != 0 && (fingerprint != 0 ? index.findEqual(hash, fingerprint: fingerprint) < 0 : index.first(hash) < 0)
        let (h, p, f) = indexed ? (hash, parent, fingerprint) : (0, 0, 0)
        submitWrite(slot: slot, stage: stage, hash: h, parent: p, fingerprint: f, checksum: checksum, op: DiskTier.pinnedWrite)
        return slot
    }

    /// Writes one slot whose payload (`payloadBytes`) `fill` writes, synchronously, into the
    /// staging buffer before this returns (so the caller may reuse the source memory at once),
    /// returning its checksum when the copy computed it (else nil: computed at the seal),
    /// under `hash` (0: a sequence's own slot, never in the index). Returns the slot, pinned
    /// once for the caller; an unhashed slot is freed when its last pin goes. Throws `io` when
    /// no slot can be had (tier full of pinned slots, disk full); a request the queue refuses
    /// fails like a write that fails on the device.
    /// `recordTokens` > 0: see `writeRecord`.
    func writePinned(hash: UInt64, parent: UInt64, recordTokens tokens: Int = 0, fill: (UnsafeMutableRawPointer) -> UInt64?) throws(KVError) -> Int32 {
        let (slot, stage) = try reserve()
        let checksum = fill(payload(stage))
        pin(slot)
        // Counted before the submission: a request the queue refuses fails inside it.
        if tokens > 0 {
            recordTokens[Int(slot)] = Int32(tokens)
            stats.tokenRecords += 1
            stats.tokensOnDisk += UInt64(tokens)
        }
        submitWrite(slot: slot, stage: stage, hash: hash, parent: parent, fingerprint: 0, checksum: checksum, op: DiskTier.pinnedWrite)
        return slot
    }

    /// `writePinned` of an offloaded-token record of `tokens` tokens (a sequence's own slot,
    /// hash 0), counted in `tokenRecords` and `tokensOnDisk` until the slot is freed
    /// (`forgetRecord`). A write that fails while nothing pins the slot frees it at once; one
    /// that fails while the slot is pinned is reported to `TierMemory.recordWriteFailed`, and
    /// the record stays counted until `releaseFailedRecord`.
    func writeRecord(tokens: Int, fill: (UnsafeMutableRawPointer) -> Void) throws(KVError) -> Int32 {
        precondition(tokens > 0)
        return try writePinned(hash: 0, parent: 0, recordTokens: tokens) { fill($0); return nil }
    }

    /// Lets go of offloaded-token record `slot`, whose write failed, once the failure was
    /// processed (every sequence holding it lost its tokens, `RecordMemory.loseFailedRecordWrites`):
    /// the record leaves `tokenRecords` and `tokensOnDisk` now, in the same locked step as its
    /// tokens joined `tokensLost`, and the pin taken for `TierMemory.recordWriteFailed` goes
    /// (the slot is freed with its last pin). Precondition: its write failed. O(1).
    func releaseFailedRecord(_ slot: Int32) {
        precondition(state[Int(slot)] == DiskTier.stored && !isDurable(slot), "releasing record slot \(slot) whose write did not fail")
        forgetRecord(slot)
        unpin(slot)
    }

    /// Stops counting `slot` as a record (freed, or its failed write processed); no-op for
    /// other slots.
    func forgetRecord(_ slot: Int32) {
        let tokens = recordTokens[Int(slot)]
        guard tokens > 0 else { return }
        recordTokens[Int(slot)] = 0
        stats.tokenRecords -= 1
        stats.tokensOnDisk -= UInt64(tokens)
    }

    func payload(_ stage: Int32) -> UnsafeMutableRawPointer {
        stagingBase + Int(stage) * slotBytes + Int(KVM_SLOT_HEADER_BYTES)
    }

    func stageBuffer(_ stage: Int32) -> UnsafeMutableRawPointer { stagingBase + Int(stage) * slotBytes }

    /// A free slot and a free staging buffer, waiting for completions and dropping the LRU's
    /// oldest slot as needed.
    private func reserve() throws(KVError) -> (Int32, Int32) {
        let slot = try takeSlot()
        return (slot, takeStage(for: slot))
    }

    /// Gives back a slot and staging buffer taken for a write that is not submitted
    /// (`reserve`, `reserveSpill`). O(1).
    func cancel(slot: Int32, stage: Int32) {
        pushFree(slot)
        staging.release(stage)
    }

    /// True when no slot can be had without failing: every slot the tier can have is allocated
    /// and held (swapped-out sequences' blocks, offloaded-token records, reads and writes in
    /// flight), none free and none cached to drop. A capacity condition, not a device error.
    /// Asked per spilled block (`hasSpillRoom`): the slab's growth is asked (two system calls)
    /// only when no slot is reusable, about once per extent while the slab grows.
    private var isFullOfHeldSlots: Bool { reusableSlots == 0 && growableSlots == 0 }

    /// Slots spills may take now without waiting for the device, each at most one: the
    /// reusable ones and those the slab may still grow by. 0 exactly when
    /// `isFullOfHeldSlots`: then a spill is skipped, and only a completion (a spill write's
    /// slot joins the LRU, a read's unpin) or an unpin makes room. A trim sizes its steps by it
    /// (`Engine.spillCachedBlocks`). O(1): a getrlimit and an fstatvfs while the slab is below
    /// `capacity`.
    var spillSlots: Int { reusableSlots + growableSlots }

    /// Free slots, those waiting for their FREED records (a flush appends them) and the LRU's
    /// (dropped for a spill). O(1).
    private var reusableSlots: Int { freeTop + waitingCount + lru.count }

    /// Slots the slab may still grow by (`kvm_slab_growable`: within `capacity`, the file-size
    /// limit and the file system's free space; before 2026-11-25 `capacity` alone, so on a
    /// tier the disk bounds a trim did not wait and its spills failed). A getrlimit and an
    /// fstatvfs while the slab is below `capacity`, else none.
    private var growableSlots: Int {
        Int(kvm_slab_allocated(slab)) < capacity ? Int(kvm_slab_growable(slab, nil)) : 0
    }

    /// A free slot for a write (`popFreeSlot`), else the LRU's `dropBatch` oldest are dropped
    /// (whatever they hold) and one of them is taken once the journal appended their FREED
    /// records. Throws `io` when none can be had, and drops nothing while the journal cannot
    /// append (`journalAppends`).
    private func takeSlot() throws(KVError) -> Int32 {
        if let slot = popFreeSlot() { return slot }
        guard journalAppends() else { throw journalRefusal() }
        guard lru.oldest >= 0 else {
            if isFullOfHeldSlots { lastFailure = fullTierMessage }  // kept as the reason later reports give (an episodic loss's)
            throw KVError(.io, lastFailure)
        }
        dropOldest(among: lru.count) { _ in true }
        guard let slot = popFreeSlot() else { throw journalRefusal() }
        return slot
    }

    /// Why no slot can be had when every one is held (`isFullOfHeldSlots`): what holds them,
    /// each allocated slot counted once, as an offloaded-token record (episodic offload, its
    /// write possibly in flight), else as I/O in flight (a block's write, or a read of it
    /// submitted or queued), else as a block of a swapped-out sequence (the only other pin).
    /// O(allocated slots + staging buffers + queued reads); allocates (a refusal's message).
    private var fullTierMessage: String {
        var reading = Set<Int32>()
        for stage in 0..<stages where stageOp[stage] == DiskTier.read { reading.insert(stageSlot[stage]) }
        pendingReads.forEach { if $0.read.peer < 0 { reading.insert($0.read.slot) } }
        let allocated = Int(kvm_slab_allocated(slab))
        var records = 0, io = 0
        for s in 0..<allocated {
            if recordTokens[s] > 0 {
                records += 1
            } else if state[s] == DiskTier.writing || reading.contains(Int32(s)) {
                io += 1
            }
        }
        return "offload tier full: all \(allocated) slots are held: \(records) by offloaded-token records (episodic offload), "
            + "\(allocated - records - io) by blocks of swapped-out sequences, \(io) by reads or writes in flight"
    }

    /// True unless the journal's last append failed and an append of the owed records fails
    /// again now (or failed in the `popFreeSlot` just before, which tried while slots wait):
    /// while it cannot append, a slot dropped from the LRU would only wait for its FREED
    /// record (`waitingSlots`), its cached block lost for nothing. O(1) unless appends are
    /// failing; then at most one flush.
    private func journalAppends() -> Bool {
        if journal.appendFailing && waitingCount == 0 { flushJournal() }
        return !journal.appendFailing
    }

    /// The failure of a write that found no slot but ones waiting for FREED records the
    /// journal cannot append (`lastFailure` says so).
    private func journalRefusal() -> KVError {
        lastFailure = "offload journal: \(waitingCount) freed slots are not rewritten until their FREED records are appended "
            + "(\(journal.lastError)); new blocks go only to slots that owe the journal nothing"
        return KVError(.io, lastFailure)
    }

    /// A write-ahead's slot (`reserveAhead`): a free one, else one the slab grows by
    /// (`growSlab`), else one of those `dropOldest` frees among the LRU's `aheadDropScan`
    /// oldest whose blocks memory no longer holds (`isResident` false); nil when there is
    /// none of those either. Never drops a slot whose block memory still holds. O(1) with a free
    /// slot; else a slab growth's room check and at most `aheadDropScan` calls of `isResident`.
    private func takeSlotAhead(keeping isResident: (_ hash: UInt64, _ fingerprint: UInt64) -> Bool) -> Int32? {
        if let slot = popFreeSlot() { return slot }
        guard journalAppends(), dropOldest(among: DiskTier.aheadDropScan, where: { !isResident(hashes[Int($0)], fingerprints[Int($0)]) }) > 0
        else { return nil }
        return popFreeSlot()
    }

    /// When no slot is free and the slab is smaller than `capacity`, grows it by what
    /// `kvm_slab_grow` may (an extent at most, within `offload_bytes`, the file-size limit and
    /// the file system's free space) and frees the new slots; a failed growth is kept in
    /// `lastFailure`. O(1) plus the growth (a getrlimit, an fstatvfs and a fallocate).
    private func growSlab() {
        guard freeTop == 0 && Int(kvm_slab_allocated(slab)) < capacity else { return }
        let before = Int(kvm_slab_allocated(slab))
        guard kvm_slab_grow(slab) == 0 else {
            lastFailure = kvmMessage()
            return
        }
        let after = Int(kvm_slab_allocated(slab))
        for s in stride(from: after - 1, through: before, by: -1) { pushFree(Int32(s)) }
    }

    /// Drops up to `dropBatch` of the LRU's `among` oldest slots `droppable` accepts, oldest
    /// first (several at once: their FREED records go out in one write); counts them in
    /// `slotsEvicted` and returns how many. O(`among`) calls of `droppable`.
    @discardableResult
    private func dropOldest(among: Int, where droppable: (_ slot: Int32) -> Bool) -> Int {
        var dropped = 0, seen = 0
        var slot = lru.oldest
        while slot >= 0 && seen < among && dropped < DiskTier.dropBatch {
            let next = lru.next(after: slot)
            if droppable(slot) {
                drop(slot)
                dropped += 1
            }
            seen += 1
            slot = next
        }
        stats.slotsEvicted += UInt64(dropped)
        return dropped
    }

    /// Takes the top free slot, none of which owes the journal anything; when none is, the
    /// slots waiting for their FREED records once a flush appended them (`giveBackWaitingSlots`),
    /// else one the slab grows by (`growSlab`). Nil when there is none. O(1) with a free slot;
    /// else a flush (O(waiting slots) when it appends) and a growth.
    private func popFreeSlot() -> Int32? {
        if freeTop == 0 && waitingCount > 0 { flushJournal() }
        growSlab()
        guard freeTop > 0 else { return nil }
        freeTop -= 1
        return freeSlots[freeTop]
    }

    /// Puts freed `slot` where a write may take it: on `freeSlots`, or in `waitingSlots`
    /// while the journal owes its FREED record. O(1).
    func pushFree(_ slot: Int32) {
        if journal.owesFreed(slot) {
            waitingSlots[waitingCount] = slot
            waitingCount += 1
        } else {
            freeSlots[freeTop] = slot
            freeTop += 1
        }
    }

    /// Moves the waiting slots whose FREED records are appended now to `freeSlots`, in the
    /// order they were freed (`pushFree` again: it writes a slot still waiting at or below
    /// the index read, so the list compacts in place). O(waiting slots).
    func giveBackWaitingSlots() {
        let waiting = waitingCount
        waitingCount = 0
        for i in 0..<waiting { pushFree(waitingSlots[i]) }
    }

    /// `checksum`: the payload's, when its gather computed it (nil: the seal computes it).
    private func submitWrite(slot: Int32, stage: Int32, hash: UInt64, parent: UInt64, fingerprint: UInt64, checksum: UInt64?,
                             op: UInt8) {
        generation += 1
        let s = Int(slot)
        if var checksum {
            kvm_slot_seal(stageBuffer(stage), UInt32(slot), hash, parent, generation, UInt32(payloadBytes), &checksum)
        } else {
            kvm_slot_seal(stageBuffer(stage), UInt32(slot), hash, parent, generation, UInt32(payloadBytes), nil)
        }
        state[s] = DiskTier.writing
        hashes[s] = hash
        parents[s] = parent
        fingerprints[s] = fingerprint
        generations[s] = generation
        checksums[s] = kvm_slot_checksum(stageBuffer(stage))
        writingStage[s] = stage
        stageOp[Int(stage)] = op
        stageSlot[Int(stage)] = slot
        if op == DiskTier.spillWrite { spillWritesInFlight += 1 }
        if hash != 0 {
            // Callers write a hash only after `lookup` missed it (and one of fingerprint 0 only
            // when the hash is absent), and the index has room for every slot: a refused
            // insert would announce a block no lookup finds. Announced when the hash is new:
            // the events describe a set of hashes.
            let insertion = index.insert(hash, slot, fingerprint: fingerprint)
            precondition(insertion != .refused, "disk tier: block \(hash) is indexed already")
            if insertion == .newHash {
                events.push(KVEvent(kind: .blockStored, tier: KVEvent.diskTier, blockHash: hash, parentHash: parent))
            }
        }
        queue(kvm_io_req(tag: UInt64(stage), buf: stageBuffer(stage), offset: kvm_slab_offset(slab, UInt32(slot)),
                         len: UInt32(slotBytes), op: UInt16(KVM_IO_WRITE), file: 0, buf_index: 0))
    }
}
