import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// Ties the disk tier to the engine's memory: copies block bytes between the engine's layout
/// and staging buffers, tracks which blocks a disk read is still filling and which sequences a
/// failed read spoiled, and holds the state of swapped-out sequences and each sequence's
/// offloaded tokens (episodic offload; their reads are handed to `records`).
///
/// Invariants: a block with a non-zero `loading` count is referenced by at least one live
/// sequence or one freed sequence whose slot waits for its reads (detached,
/// `SequenceTable.detach`: the slot keeps its blocks until they landed), so a cached block is
/// never loading, a spill never writes a block that is not yet resident, and no read lands in
/// memory that was freed or reused. A swapped-out slot's block table holds disk slots, each
/// pinned once by the sequence, and the memory blocks its swap-out kept (`SwapHolds`), each
/// referenced once by it; every record of its offloaded tokens is pinned once too.
///
/// Cost: O(1) per block besides the byte copies; all arrays allocated at creation but
/// `loadingHolders` (contiguous: only while a create shares a block still loading).
/// Not thread-safe: the engine serialises calls.
final class OffloadCoordinator: TierMemory, BlockSpiller {
    /// The tier; set right after creation (it needs this object as its memory).
    private(set) var tier: DiskTier!
    private let blocks: BlockPool
    private let sequences: SequenceTable
    private let paged: PagedMemory?
    private let contiguous: ContiguousMemory?
    private let tensors: Int
    private let tokenBytes: Int
    private let blockBytes: Int
    /// Per block: disk reads still filling it (a prefix or swap-in read fills a whole block;
    /// episodic restores fill single tokens, one count each).
    private let loading: UnsafeMutablePointer<UInt32>
    /// Contiguous layout: per block a disk read is still filling that more slots hold than the
    /// read's own (`LoadTarget.slot`), those other slots: creates that shared it while it was
    /// loading (`Engine.tieredPrefix`; `sharedWhileLoading`), at the same position (a block's
    /// bytes are its position's there). `scatter` copies into them too. An entry goes when the
    /// block's last read ended (`readEnded`); its slots hold the block until then (a sequence
    /// holding a loading block is not resident: a free detaches it, a swap-out or compaction
    /// waits, a truncation or contiguous fork waits or refuses). Empty but while creates share
    /// loading blocks (rare: a prompt whose prefix another sequence is still reading): memory
    /// O(those shares), nothing per block otherwise; before, each read of a shared block
    /// scanned all `maxSeqs` slots for its holders.
    private var loadingHolders: [Int32: [Int32]] = [:]
    /// Per sequence slot: a disk read of one of its blocks failed (torn, corrupt or I/O error);
    /// the engine then refuses every call that reaches or changes its K/V (`Engine.usableSlot`).
    let failed: UnsafeMutablePointer<Bool>
    /// Per sequence slot: why its first failed read failed (`DiskTier.lastFailure` then);
    /// meaningful only while `failed`.
    var failureReasons: [String]
    /// Per sequence slot: how many blocks at the start of its table hold bytes the cache gave
    /// it (its create's prefix hit: blocks shared from memory and blocks read from disk; a
    /// fork's, its parent's), not bytes the server computes for it. Set by create and fork; a
    /// swap-in keeps it, and so does a truncation (it needs every read landed, so only a
    /// swap-in read can fail afterwards, and what the sequence appended again below this
    /// count was computed before it was swapped out). `loadFinished` forgets past a failed
    /// block only the blocks from here on.
    let cachedBlocks: UnsafeMutablePointer<Int32>
    /// Per sequence slot: swapped out (its table holds disk slots and kept blocks, `SwapHolds`).
    let swapped: UnsafeMutablePointer<Bool>
    /// Per memory block: swapped-out tables keeping it (`SwapHolds`).
    private let keptCounts: UnsafeMutablePointer<UInt32>
    /// Scratch: one sequence's disk slots.
    let scratchSlots: UnsafeMutablePointer<Int32>
    /// The stretch of a chain the last walk found (`missingAncestors`), youngest first:
    /// `walked[i + 1]`, indexed under `walkedHashes[i + 1]` and `walkedFingerprints[i + 1]`,
    /// was the parent of `walked[i]`, a cached block the tier lacked, when it was pushed. Entries are checked again before they
    /// are returned; those below where a walk starts are stale (evicted since). Room for twice
    /// the blocks, so that moving the live part down when the end is reached is amortised O(1)
    /// per entry.
    private let walked: UnsafeMutablePointer<Int32>
    private let walkedHashes: UnsafeMutablePointer<UInt64>
    private let walkedFingerprints: UnsafeMutablePointer<UInt64>
    /// Per block: its index in `walked` when last pushed; meaningful only while it is below
    /// `walkedEnd` and that entry still names the block under the same hash and fingerprint.
    private let walkedAt: UnsafeMutablePointer<Int32>
    private var walkedEnd = 0
    /// Scratch for the gathers: a block's bytes in each tensor.
    private let scratchSources: UnsafeMutablePointer<UnsafeRawPointer?>
    /// Scratch for an offloading compaction (`Engine.offloadEvictions`): the row and token slot
    /// of each evicted row token it gathers for one record, room for the most a record holds
    /// (`recordTokens`: per head, `numLayers x blockTokens x numKVHeads`); a focus's restore
    /// (`Engine.restoreFocused`) gathers the displaced tokens' so, and in `recordWinners` the
    /// parked slot of the token that takes each one's place.
    let recordRows: UnsafeMutablePointer<Int32>
    let recordSlots: UnsafeMutablePointer<Int32>
    let recordWinners: UnsafeMutablePointer<Int32>
    /// Per sequence slot: its offloaded tokens (episodic offload), created at its first
    /// offloading compaction.
    var offloadedTokens: [OffloadedTokens?]
    /// The buffers of sequences' open records (episodic offload), at most
    /// `min(maxSeqs, offloadQueueDepth)`, outside the KV budget like the staging buffers;
    /// mapped only once a sequence can use them (`Engine.reserveOpenRecords`).
    let openRecords: OpenRecords
    /// Where offloaded-token records' reads go (the engine); set right after creation.
    unowned(unsafe) var records: RecordMemory!
    /// Offloaded-token records whose write failed on the device while sequences held them, in
    /// the order the failures were picked up; each slot pinned once more here (so that it is
    /// not reused) and still counted as a record until every sequence holding it lost its
    /// tokens (`RecordMemory.loseFailedRecordWrites`, then `DiskTier.releaseFailedRecord`).
    /// At most the tier's capacity.
    var failedRecordWrites: [Int32] = []
    /// Tokens written out, restored and lost by episodic offload; tokens in open records now.
    var tokensOffloaded: UInt64 = 0
    var tokensInOpenRecords: UInt64 = 0
    var tokensRestored: UInt64 = 0
    var tokensLost: UInt64 = 0
    /// Prompt tokens served from the disk tier, and swap-ins that read a swapped-out sequence
    /// back (not those that cancelled a pending swap-out: `SwapOutQueue.cancel`).
    var diskHitTokens: UInt64 = 0
    var swapIns: UInt64 = 0
    /// Prompt tokens found only on disk that creates left to be computed (`declinedHitTokens`).
    var declinedHitTokens: UInt64 = 0
    /// Swap-outs whose writes were submitted and whose outcome is not settled yet (their
    /// sequences are already marked swapped out, but their tables still hold memory blocks).
    /// Set right after creation (it needs the tier).
    private(set) var swapOutQueue: SwapOutQueue!

    /// Deferred frees released, ever: waiters compare it before and after. A deferred free is
    /// a sequence slot freed (`Engine.free`) while disk reads into its memory were still in
    /// flight (submitted, or queued for a block another sequence shares): detached
    /// (`SequenceTable.detach`: its id is gone) and holding its blocks, ranges and state until
    /// every read landed; then a call that processes completions releases it
    /// (`finishDeferredFrees`).
    private(set) var deferredFreesFinished: UInt64 = 0
    /// Releases a detached slot's blocks, ranges and state (`Engine.release`); set by the engine.
    var releaseSlot: ((Int) -> Void)!

    // Waiting for the device without the engine's lock (`awaitProgress`): at most one call
    // waits on the device itself; any others wait on `progress`, which is broadcast whenever
    // completions are processed or a waiting call leaves the device.
    private var deviceWaiter = false
    private var progressWaiters = 0
    private let progress: UnsafeMutablePointer<pthread_cond_t>
    /// I/O requests whose completions were processed, by any call.
    private(set) var completionsProcessed: UInt64 = 0

    init(_ config: EngineConfig, blocks: BlockPool, sequences: SequenceTable, paged: PagedMemory?,
         contiguous: ContiguousMemory?) throws(KVError) {
        self.blocks = blocks
        self.sequences = sequences
        self.paged = paged
        self.contiguous = contiguous
        tensors = config.tensors
        tokenBytes = config.tokenBytes
        blockBytes = config.blockBytes
        // Freed with `a` if one fails; once `self` is whole (before the tier), by `deinit`.
        let a = CheckedAllocations()
        let perBlock = "the disk tier's per-block state of \(blocks.capacity) blocks (memory_bytes / block bytes)"
        let perSequence = "the disk tier's per-sequence state (max_seqs \(config.maxSeqs))"
        loading = try a.allocate(repeating: 0, count: blocks.capacity, perBlock)
        walked = try a.allocate(count: 2 * blocks.capacity, perBlock)
        walkedHashes = try a.allocate(count: 2 * blocks.capacity, perBlock)
        walkedFingerprints = try a.allocate(count: 2 * blocks.capacity, perBlock)
        walkedAt = try a.allocate(repeating: 0, count: blocks.capacity, perBlock)
        scratchSlots = try a.allocate(count: sequences.maxBlocks, "the disk tier's scratch block table (max_seq_tokens / block_tokens: \(sequences.maxBlocks) entries)")
        failed = try a.allocate(repeating: false, count: config.maxSeqs, perSequence)
        cachedBlocks = try a.allocate(repeating: 0, count: config.maxSeqs, perSequence)
        swapped = try a.allocate(repeating: false, count: config.maxSeqs, perSequence)
        keptCounts = try a.zeroed(count: blocks.capacity, perBlock)
        scratchSources = try a.allocate(count: config.tensors, "the disk tier's scratch of num_layers x 2 tensors")
        let recordTokens = config.blockBytesAllTensors / (2 * config.headDim * config.dtypeBytes)
        let perRecord = "episodic offload's scratch of one record's \(recordTokens) head tokens (num_layers x block_tokens x num_kv_heads)"
        recordRows = try a.allocate(count: recordTokens, perRecord)
        recordSlots = try a.allocate(count: recordTokens, perRecord)
        recordWinners = try a.allocate(count: recordTokens, perRecord)
        failureReasons = Array(repeating: "", count: config.maxSeqs)
        offloadedTokens = [OffloadedTokens?](repeating: nil, count: config.maxSeqs)
        openRecords = OpenRecords(capacity: min(config.maxSeqs, config.offloadQueueDepth), payloadBytes: config.blockBytesAllTensors,
                                      maxSeqs: config.maxSeqs, numaNode: config.numaNode)
        progress = monotonicCondition()
        a.keep()
        tier = try DiskTier(config, memory: self, events: blocks.events, maxPendingReads: blocks.capacity)
        let holds = SwapHolds(counts: keptCounts, blocks: blocks, sequences: sequences, contiguous: contiguous, swapped: swapped)
        swapOutQueue = try SwapOutQueue(tier: tier, blocks: blocks, sequences: sequences, contiguous: contiguous, swapped: swapped, holds: holds)
        blocks.spiller = self
        tier.onCompletions = { [unowned self] n in self.processed(n) }
    }

    /// Waits for every request in flight and appends their journal records; the engine calls it
    /// before it goes (completions call back into this object, which must still be whole).
    func close() {
        tier.drain()
    }

    deinit {
        tier?.onCompletions = nil
        pthread_cond_destroy(progress)
        progress.deallocate()
        loading.deallocate()
        failed.deallocate()
        cachedBlocks.deallocate()
        swapped.deallocate()
        keptCounts.deallocate()
        scratchSlots.deallocate()
        walked.deallocate()
        walkedHashes.deallocate()
        walkedFingerprints.deallocate()
        walkedAt.deallocate()
        scratchSources.deallocate()
        recordRows.deallocate()
        recordSlots.deallocate()
        recordWinners.deallocate()
    }

    /// The tier's counters with the engine-level ones filled in. O(1).
    var stats: DiskTierStats {
        var s = tier.stats
        s.prefixHitTokens = diskHitTokens
        s.declinedHitTokens = declinedHitTokens
        s.swapOutsStarted = swapOutQueue.started
        s.swapOuts = swapOutQueue.completed
        s.swapOutsCancelled = swapOutQueue.cancelled
        s.swapOutsFailed = swapOutQueue.failed
        s.swapOutsPending = UInt64(swapOutQueue.pendingCount)
        s.swapIns = swapIns
        s.tokensInOpenRecords = tokensInOpenRecords
        s.tokensOffloaded = tokensOffloaded
        s.tokensRestored = tokensRestored
        s.tokensLost = tokensLost
        return s
    }

    /// Starts reading disk slot `diskSlot` into `block` at `position` of sequence `slot`. A read
    /// that fails (on submission or on the device) completes as failed: `loadFinished` then
    /// marks the sequence failed (its `ready` reports it). Never waits: without a free staging
    /// buffer the read is queued (`DiskTier.load`), `block` loading until it lands.
    func load(_ diskSlot: Int32, block: Int32, slot: Int, position: Int, tokens: Int) {
        loading[Int(block)] += 1
        tier.load(diskSlot, into: LoadTarget(block: block, slot: Int32(slot), position: Int32(position), tokens: Int32(tokens)))
    }

    /// Starts reading peer slot `read` into `block` at `position` of sequence `slot`, as `load`
    /// does for a slot of the own tier (a stale or failed read completes as failed).
    func loadPeer(_ read: PeerRead, block: Int32, slot: Int, position: Int, tokens: Int) {
        loading[Int(block)] += 1
        tier.loadPeer(read, into: LoadTarget(block: block, slot: Int32(slot), position: Int32(position), tokens: Int32(tokens)))
    }

    /// Takes back the reads of sequence `slot` still queued for a staging buffer (`free`): a
    /// block only this sequence holds is not read at all, leaves the prefix index (its create
    /// indexed it before its bytes arrived; the disk tier keeps them) and stops loading; its
    /// disk slot is unpinned. A block another sequence shares (a create's hit on a block still
    /// loading, `Engine.tieredPrefix`) keeps its read, which lands in memory that other
    /// sequence still holds.
    /// Returns how many were cancelled. O(queued reads).
    @discardableResult
    func cancelQueuedReads(_ slot: Int) -> Int {
        tier.cancelPendingReads { target in
            guard target.record < 0 && Int(target.slot) == slot && blocks.references(target.block) == 1 else { return false }
            readEnded(target.block)
            blocks.forget(target.block)
            return true
        }
    }

    /// Counts one more (`+1`) or one fewer (`-1`) pending token read into `block` (episodic
    /// restores): `resident` is false while any is pending.
    func markLoading(_ block: Int32, _ delta: Int32) {
        precondition(delta == 1 || (delta == -1 && loading[Int(block)] > 0))
        if delta > 0 { loading[Int(block)] += 1 } else { readEnded(block) }
    }

    /// One pending read of `block` ended (landed, failed or taken back): once none is left, its
    /// other holders are forgotten (`loadingHolders`). O(1).
    private func readEnded(_ block: Int32) {
        loading[Int(block)] -= 1
        if loading[Int(block)] == 0 && !loadingHolders.isEmpty { loadingHolders[block] = nil }
    }

    /// Contiguous layout only: live `slot`'s create shares `block` at the block's own position;
    /// while a disk read is filling it, `scatter` is to copy the bytes into `slot` too
    /// (`loadingHolders`). Nothing otherwise. O(1); an allocation only for a loading block.
    func sharedWhileLoading(_ block: Int32, slot: Int) {
        guard loading[Int(block)] != 0 else { return }
        loadingHolders[block, default: []].append(Int32(slot))
    }

    /// True when none of live `slot`'s blocks is still being read.
    func resident(_ slot: Int) -> Bool {
        let table = sequences.table(slot)
        for i in 0..<sequences.blockCount(slot) where loading[Int(table[i])] != 0 { return false }
        return true
    }

    /// Processes the completed requests, submits pending swap-outs' blocks as far as staging
    /// buffers are free, settles the asynchronous swap-outs that can be
    /// (`SwapOutQueue.settle`: their memory is released), loses the tokens of records whose
    /// write failed (`failedRecordWrites`) and releases the freed sequences whose reads all
    /// landed (detached slots, `finishDeferredFrees`). Never waits. Call it only where no block
    /// or page found earlier in the call is still to be used (settling frees memory) and no eviction
    /// state is between a plan and its application (losing tokens changes parked slots).
    /// Returns true when anything a waiter may wait for happened (requests completed, a
    /// swap-out ended or failed, a deferred free was released).
    @discardableResult
    func processCompletions() -> Bool {
        let reaped = tier.reap()
        let settled = swapOutQueue.settle()
        if !failedRecordWrites.isEmpty { records.loseFailedRecordWrites() }
        let freed = sequences.detachedCount > 0 && finishDeferredFrees()
        if settled || freed { notifyWaiters() }  // allocations waiting for memory
        return reaped > 0 || settled || freed
    }

    /// Releases every detached slot (a deferred free) whose reads all landed (`resident`); true
    /// when any was. Called only while some slot is detached. Cost: O(blocks of the detached
    /// slots), taken from the sequence table's list of them (`SequenceTable.detachedSlot`);
    /// before, every call that processed completions scanned all `maxSeqs` slots while one
    /// was detached.
    private func finishDeferredFrees() -> Bool {
        var released = false
        var i = sequences.detachedCount
        while i > 0 {
            i -= 1
            let slot = sequences.detachedSlot(i)
            deferredFreeSlotsExamined += 1
            guard resident(slot) else { continue }
            releaseSlot(slot)  // closes it: the last entry, examined already, moves to `i`
            deferredFreesFinished += 1
            released = true
        }
        return released
    }

    /// After an allocation found no room: while swap-outs are pending or freed sequences wait
    /// for their reads (detached slots), processes completions and waits (releasing the
    /// engine's lock `mutex`) until one of them ended (its memory released, or the swap-out
    /// failed or was cancelled). Returns true when one ended (by this call or another; the
    /// allocation may succeed now), false at once when none is pending: then nothing but those
    /// could release memory, so completions are left to a later call and the failed
    /// allocation changes nothing, counters included (kvcache.h, CONVENTIONS).
    func awaitMemoryReleased(mutex: UnsafeMutablePointer<kvm_lock>) -> Bool {
        guard swapOutQueue.hasPending || sequences.detachedCount > 0 else { return false }
        let before = swapOutQueue.ended + deferredFreesFinished
        processCompletions()
        while swapOutQueue.ended + deferredFreesFinished == before {
            guard swapOutQueue.hasPending || sequences.detachedCount > 0 else { return false }
            awaitProgress(mutex: mutex, deadlineNanoseconds: nil)
        }
        return true
    }

    /// Waits (releasing the engine's lock `mutex`) until every freed sequence whose slot waits
    /// for its reads (a detached slot) was released: `Engine.trim`, so that their memory is
    /// trimmed (their cached blocks spilled) too. Ends: their reads are in flight or queued
    /// behind reads in flight.
    func awaitDeferredFrees(mutex: UnsafeMutablePointer<kvm_lock>) {
        processCompletions()
        while sequences.detachedCount > 0 { awaitProgress(mutex: mutex, deadlineNanoseconds: nil) }
    }

    /// Tests: sequence slots `finishDeferredFrees` examined, ever.
    private(set) var deferredFreeSlotsExamined: UInt64 = 0
    /// Tests: slots besides the reader's `scatter` copied a block into (`loadingHolders`), ever.
    private(set) var scatterSlotsExamined: UInt64 = 0

    /// Tests: freed sequences whose slots wait for their reads now.
    var deferredFreeCount: Int { sequences.detachedCount }

    /// Processes completions until `slot` is resident.
    func waitResident(_ slot: Int) {
        while !resident(slot) { tier.reap(waitFor: 1) }
    }

    // MARK: waiting without the engine's lock

    private func processed(_ requests: Int) {
        completionsProcessed += UInt64(requests)
        notifyWaiters()
    }

    /// Wakes every call in `awaitProgress` so that it checks its condition again (completions
    /// were processed, or a swap-out it may wait for ended). Under the engine's lock.
    func notifyWaiters() {
        if deviceWaiter { tier.wake() }
        if progressWaiters > 0 { pthread_cond_broadcast(progress) }
    }

    /// Called with the engine's lock `mutex` held, and returns with it held; releases it while
    /// it waits until completions were processed (by this call or any other), `notifyWaiters`
    /// ran, or `deadlineNanoseconds` (CLOCK_MONOTONIC; nil: no limit) passed. It may also return
    /// early for nothing: callers loop on their own condition. The first caller waits on the
    /// device and then processes completions (`processCompletions`); callers arriving meanwhile
    /// wait on a condition variable. Processes completions first (returning when that was
    /// progress, after handing the lock to the calls blocked on it, `kvm_lock_yield`: on a fast
    /// device some write has always completed by then, and a loop of such calls held the lock
    /// throughout, helper-165), which also submits pending swap-outs' blocks and flushes
    /// batched requests, so nothing waited for is left unsubmitted (another call's reap may
    /// have freed staging buffers without submitting them).
    func awaitProgress(mutex: UnsafeMutablePointer<kvm_lock>, deadlineNanoseconds: UInt64?) {
        if processCompletions() {
            kvm_lock_yield(mutex)
            return
        }
        if !deviceWaiter {
            deviceWaiter = true
            var timeout: Int64 = -1
            if let deadlineNanoseconds {
                let now = monotonicNanoseconds()
                timeout = deadlineNanoseconds > now ? Int64((deadlineNanoseconds - now + 999) / 1000) : 0
            }
            kvm_lock_release(mutex)
            _ = tier.waitForCompletion(timeoutMicroseconds: timeout)
            kvm_lock_acquire(mutex)
            deviceWaiter = false
            processCompletions()
            // Someone waiting on `progress` takes over the device if it still has to wait.
            if progressWaiters > 0 { pthread_cond_broadcast(progress) }
        } else {
            progressWaiters += 1
            if let deadlineNanoseconds {
                timedWait(progress, kvm_lock_mutex(mutex), until: deadlineNanoseconds)
            } else {
                pthread_cond_wait(progress, kvm_lock_mutex(mutex))
            }
            progressWaiters -= 1
        }
    }

    /// Tests: whether a call waits in `awaitProgress` now (on the device or the condition).
    var waitingCalls: Int { (deviceWaiter ? 1 : 0) + progressWaiters }

    // MARK: BlockSpiller

    /// Most ancestors one eviction's spill writes ahead (`spill`): with the block itself, an
    /// eviction copies at most 9 blocks into staging buffers.
    static let ancestorsPerSpill = 8

    /// Spills `block` into the tier. With `ancestorsFirst` (an allocation's eviction, which
    /// skips when no staging buffer is free) it first writes the block's cached ancestors the
    /// tier lacks, oldest first, at most `ancestorsPerSpill` of them: the walk up its chain
    /// stops at the first ancestor the tier holds, a used one (reachable in memory), one a disk
    /// read is still filling (as the block itself is never spilled then) or one not in memory.
    /// Those ancestors stay cached, their copies on disk clean, so their own evictions later
    /// take no buffer. Then the block, if room remains; when the tier has no
    /// room for an ancestor (`DiskTier.hasSpillRoom`), the rest and the block are not written
    /// and the block counts as skipped.
    /// Why: the engine releases a sequence's blocks last first (vLLM's order, so that memory
    /// keeps prefixes: `Engine.release`), so an allocation evicts a chain's later blocks before
    /// its earlier ones. Spilled in that order while buffers were short, the later blocks
    /// took the buffers and their ancestors were skipped: the disk copies were unreachable (a
    /// prefix lookup stops at the first block found nowhere) until a prompt recomputed the
    /// gap. In chain order the buffers go to a chain's first blocks, which every prompt sharing
    /// any of it needs; the next evictions of the chain (its later blocks, one after another)
    /// write the ancestors still missing. docs/disk-tier.md, "Spilling a chain in order", has the
    /// measurements.
    /// With the writeback thread (`EngineConfig.offloadWriteback`) an allocation's eviction
    /// usually finds the block on disk already, or being copied by the thread (which writes
    /// it), and copies nothing; it pokes the thread either way. A block the thread has not
    /// reached is spilled here as without the thread, when a staging buffer is free: when the
    /// serving threads evict faster than the thread writes (no model's time between calls, or
    /// the thread short of CPU), the evicting call writes, as the kernel makes a writer write
    /// back when its flusher falls behind. Skipping those instead (the first version) dropped
    /// the peer workload's hit rates from 44-47 % to 23-28 % (docs/disk-tier.md, "When the
    /// thread falls behind").
    /// Cost: amortised O(`ancestorsPerSpill`) hash lookups (`missingAncestors`), only when the
    /// tier has room; a copy and checksum per block written.
    func spill(_ block: Int32, hash: UInt64, parent: UInt64, fingerprint: UInt64, ancestorsFirst: Bool) {
        guard loading[Int(block)] == 0 else { return }
        if ancestorsFirst, let writeback {
            writeback.poke()
            if blocks.copyTicket(block) != 0 { return }
        }
        if ancestorsFirst && parent != 0 && !tier.contains(hash, fingerprint: fingerprint) && tier.hasSpillRoom() {
            let chain = missingAncestors(of: block)
            for b in chain.reversed() {
                guard tier.hasSpillRoom() else { return tier.skipSpill() }
                tier.spill(b, hash: blocks.hash(of: b), parent: blocks.parent(of: b), fingerprint: blocks.fingerprint(of: b))
            }
        }
        tier.spill(block, hash: hash, parent: parent, fingerprint: fingerprint)
    }

    /// The oldest cached ancestors the tier lacks, at most `ancestorsPerSpill`, youngest first,
    /// of indexed `block`: of the stretch of ancestors up the chain until the first one the
    /// tier holds, one in use (reachable in memory), one a disk read is still filling, one
    /// being copied outside the lock (soon on disk) or one not in memory. Each step climbs by
    /// the parent's hash and fingerprint (`BlockPool.parentFingerprint`; 0, unknown: any block
    /// of the hash, as a lookup by hashes alone), so a block of a colliding public hash
    /// (crafted, ~2^32 steps) neither ends the walk by being on disk nor is written in the
    /// parent's place. Under the engine's lock (the eviction spill's and `Writeback`'s
    /// rounds); the result lives in the coordinator's state until the next call.
    /// The walk resumes the last one (`walked`) when `block`'s parent lies on its stretch: a
    /// chain's blocks are evicted last first, each eviction's parent the next entry, while the
    /// oldest entries are written; so it re-checks only the oldest entries it returns (dropping
    /// those the tier got or that stopped qualifying, and, at one that did, the stretch above
    /// it) and looks past the oldest for ancestors that qualify since. Entries in between are
    /// not re-checked: an ancestor in use makes every older one in use (a sequence holds its
    /// whole chain), which the re-check finds; one evicted or written since leaves the older
    /// ones as true ancestors of the parent, still written oldest first. Before, each call
    /// walked the whole stretch to write its oldest 8: ~L²/18 lookups for a freed chain of L
    /// blocks evicted last first (docs/disk-tier.md, "Spilling a chain in order").
    /// The walk never returns `block` nor a block twice: the hashes of a sequence known by
    /// hashes alone are taken as given (`Engine.append(_:tokens:blockHashes:)`), so its chain
    /// may lead back to a block (a block whose parent is its own hash); the walk stops there,
    /// also on a resumed stretch that holds `block` (cut below it). Before, it pushed the
    /// loop's blocks until the stretch held `capacity` entries, and a writeback round marked
    /// the same block twice (`BlockPool.markCopy`'s precondition).
    /// Cost: amortised O(`ancestorsPerSpill`) lookups per call, O(stretch) when the parent is
    /// on no recorded stretch; each entry is pushed once per time it qualifies.
    func missingAncestors(of block: Int32) -> UnsafeBufferPointer<Int32> {
        let parent = blocks.parent(of: block), parentFingerprint = blocks.parentFingerprint(of: block)
        let first = missingAncestor(parent, fingerprint: parentFingerprint)
        guard first >= 0 && first != block else { return UnsafeBufferPointer(start: walked, count: 0) }
        var start = Int(walkedAt[Int(first)])
        if !(start < walkedEnd && walked[start] == first && walkedHashes[start] == parent
             && walkedFingerprints[start] == parentFingerprint) {
            start = 0
            walkedEnd = 0
            push(first, hash: parent, fingerprint: parentFingerprint)
        }
        // A resumed stretch of a looped chain may hold `block` itself, above its parent: the
        // chain leads back to it there, so the stretch ends below it.
        let own = Int(walkedAt[Int(block)])
        if own > start && own < walkedEnd && walked[own] == block && walkedHashes[own] == blocks.hash(of: block)
            && walkedFingerprints[own] == blocks.fingerprint(of: block) {
            walkedEnd = own
        }
        // The oldest entries, re-checked from the oldest down: one that fails ends the stretch.
        var held = 0
        while held < OffloadCoordinator.ancestorsPerSpill && walkedEnd - held > start {
            let i = walkedEnd - held - 1
            if missingAncestor(walkedHashes[i], fingerprint: walkedFingerprints[i]) == walked[i] {
                held += 1
            } else {
                (walkedEnd, held) = (i, 0)
            }
        }
        // Up from the oldest, until the chain leads back to `block` or onto the stretch (hashes
        // given by a caller may loop), so that the stretch holds each block at most once.
        var next = blocks.parent(of: walked[walkedEnd - 1]), nextFingerprint = blocks.parentFingerprint(of: walked[walkedEnd - 1])
        while walkedEnd - start < blocks.capacity {
            let b = missingAncestor(next, fingerprint: nextFingerprint)
            guard b >= 0 && b != block else { break }
            let at = Int(walkedAt[Int(b)])
            if at >= start && at < walkedEnd && walked[at] == b && walkedHashes[at] == next && walkedFingerprints[at] == nextFingerprint {
                break
            }
            if walkedEnd == 2 * blocks.capacity {
                walkedEnd -= start
                for i in 0..<walkedEnd {
                    (walked[i], walkedHashes[i], walkedFingerprints[i]) = (walked[start + i], walkedHashes[start + i], walkedFingerprints[start + i])
                    walkedAt[Int(walked[i])] = Int32(i)
                }
                start = 0
            }
            push(b, hash: next, fingerprint: nextFingerprint)
            (next, nextFingerprint) = (blocks.parent(of: b), blocks.parentFingerprint(of: b))
        }
        let count = min(OffloadCoordinator.ancestorsPerSpill, walkedEnd - start)
        return UnsafeBufferPointer(start: walked + walkedEnd - count, count: count)
    }

    /// The cached block indexed under `hash` and `fingerprint` (`BlockPool.lookup`) when it
    /// qualifies for `missingAncestors` (the tier lacks it; unused, not loading, not being
    /// copied), else -1. O(1).
    private func missingAncestor(_ hash: UInt64, fingerprint: UInt64) -> Int32 {
        ancestorsExamined += 1
        guard hash != 0 && !tier.contains(hash, fingerprint: fingerprint) else { return -1 }
        let b = blocks.lookup(hash, fingerprint: fingerprint)
        guard b >= 0 && blocks.references(b) == 0 && loading[Int(b)] == 0 && blocks.copyTicket(b) == 0 else { return -1 }
        return b
    }

    private func push(_ block: Int32, hash: UInt64, fingerprint: UInt64) {
        walked[walkedEnd] = block
        walkedHashes[walkedEnd] = hash
        walkedFingerprints[walkedEnd] = fingerprint
        walkedAt[Int(block)] = Int32(walkedEnd)
        walkedEnd += 1
    }

    /// Tests: ancestors `missingAncestors` looked at (one tier and one index lookup each), ever.
    private(set) var ancestorsExamined: UInt64 = 0

    /// True while a disk read is filling `block`.
    func isLoading(_ block: Int32) -> Bool { loading[Int(block)] != 0 }

    /// Copies indexed `block`'s bytes into slot payload `out` and returns their checksum,
    /// taking the tensors' addresses through `sources` (one per tensor; the caller's own, so
    /// that `Writeback` may call this outside the engine's lock while the block is marked,
    /// `BlockPool.markCopy`: it reads only that block's bytes, its own layout metadata and, in
    /// the contiguous layout, the pool file at the block's groups). Paged: one pass
    /// (`kvm_slot_gather`); contiguous: page reads, then a checksum pass. Throws `io` when a
    /// page read fails.
    func copyCached(_ block: Int32, into out: UnsafeMutableRawPointer, sources: UnsafeMutablePointer<UnsafeRawPointer?>) throws(KVError) -> UInt64 {
        if let paged {
            for t in 0..<tensors { sources[t] = UnsafeRawPointer(paged.address(block, tensor: t)) }
            return kvm_slot_gather(out, sources, UInt32(tensors), UInt64(blockBytes))
        }
        try contiguous!.readBlock(block, into: out)
        return kvm_slot_payload_checksum(out, UInt32(tier.payloadBytes))
    }

    // MARK: writeback

    /// The thread writing cold blocks ahead of eviction (`EngineConfig.offloadWriteback`), or nil.
    private(set) var writeback: Writeback?

    /// Starts the writeback thread, which takes the engine's lock `mutex`. Once, after the
    /// engine is whole.
    /// Throws `outOfMemory` when the thread cannot be created (`Writeback.init`).
    func startWriteback(mutex: UnsafeMutablePointer<kvm_lock>) throws(KVError) {
        precondition(writeback == nil)
        writeback = try Writeback(self, blocks: blocks, mutex: mutex, tensors: tensors)
    }

    /// Stops the writeback thread (a batch it is copying given up) and waits for it to end.
    /// Without the engine's lock. No-op without one.
    func stopWriteback() {
        writeback?.stop()
        writeback = nil
    }

    func awaitCopy(_ ticket: UInt64) { writeback!.awaitCopy(ticket) }

    // MARK: TierMemory

    func gatherCached(_ block: Int32, into out: UnsafeMutableRawPointer) throws(KVError) -> UInt64 {
        try copyCached(block, into: out, sources: scratchSources)
    }

    func gatherLive(_ block: Int32, slot: Int, position: Int, tokens: Int, into out: UnsafeMutableRawPointer) -> UInt64? {
        copyLive(block, slot: slot, position: position, tokens: tokens, into: out, sources: scratchSources)
    }

    /// Copies the first `tokens` tokens of block `block` at `position` of live slot `slot` into
    /// `out`, taking the tensors' addresses through `sources` (one per tensor; the caller's own,
    /// so that a swap-out may copy a batch outside the engine's lock, `copySwapOutBatch`: it
    /// reads only the block's bytes, through the fixed addresses of the paged pool or of the
    /// slot's pinned pages). A whole block is copied and checksummed in one pass
    /// (`kvm_slot_gather`); a partial one (a swap-out's last block) is copied, its checksum left
    /// to the seal (nil).
    func copyLive(_ block: Int32, slot: Int, position: Int, tokens: Int, into out: UnsafeMutableRawPointer,
                  sources: UnsafeMutablePointer<UnsafeRawPointer?>) -> UInt64? {
        let bytes = tokens * tokenBytes
        for t in 0..<tensors {
            sources[t] = UnsafeRawPointer(paged?.address(block, tensor: t) ?? contiguous!.base(slot, tensor: t) + position * blockBytes)
        }
        if bytes == blockBytes { return kvm_slot_gather(out, sources, UInt32(tensors), UInt64(blockBytes)) }
        for t in 0..<tensors { (out + t * blockBytes).copyMemory(from: sources[t]!, byteCount: bytes) }
        return nil
    }

    /// Copies `batch` of swapping-out slot `slot` into its staging buffers (`SwapOutQueue.Copy`),
    /// setting each copy's checksum. Called without the engine's lock (`Engine.copySwapOutBatch`):
    /// reads only the blocks' bytes and writes only the batch's reserved buffers. Cost: one copy
    /// and checksum per block; no allocation beyond `tensors` pointers on the stack.
    func copySwapOutBatch(slot: Int, _ batch: UnsafeMutableBufferPointer<SwapOutQueue.Copy>) {
        withUnsafeTemporaryAllocation(of: UnsafeRawPointer?.self, capacity: tensors) { sources in
            for j in batch.indices where batch[j].stage >= 0 {
                let c = batch[j]
                batch[j].checksum = copyLive(c.block, slot: slot, position: c.position, tokens: c.tokens,
                                             into: tier.spillPayload(c.stage), sources: sources.baseAddress!)
            }
        }
    }

    /// Paged: into the block. Contiguous: into the range of every slot holding the block (at
    /// its position: a chained hash has one), the one that read it and any whose create hit it
    /// while it was loading (`loadingHolders`), live or detached (swapped-out slots hold no
    /// loading block: a swap-out waits for its reads). Cost: one copy per holder, found
    /// without a scan.
    func scatter(_ target: LoadTarget, from data: UnsafeRawPointer) {
        if target.record >= 0 { return records.scatterRecord(target, from: data) }
        let bytes = Int(target.tokens) * tokenBytes, position = Int(target.position)
        guard let contiguous else {
            for t in 0..<tensors { paged!.address(target.block, tensor: t).copyMemory(from: data + t * blockBytes, byteCount: bytes) }
            return
        }
        func copy(into slot: Int) {
            for t in 0..<tensors {
                (contiguous.base(slot, tensor: t) + position * blockBytes).copyMemory(from: data + t * blockBytes, byteCount: bytes)
            }
        }
        copy(into: Int(target.slot))
        guard !loadingHolders.isEmpty, let holders = loadingHolders[target.block] else { return }
        for slot in holders {
            scatterSlotsExamined += 1
            copy(into: Int(slot))
        }
    }

    func recordWriteFailed(_ slot: Int32) {
        tier.pin(slot)
        failedRecordWrites.append(slot)
    }

    /// A read ended (`ok` false: failed, torn or corrupt), after `scatter` when it landed.
    /// Cost: O(1) when it landed; a failed one scans every slot's table for the block's
    /// holders, O(maxSeqs + their blocks) per failed read: a failure path, left so because
    /// `loadingHolders` names only the holders the contiguous layout's scatter needs (paged,
    /// a fork or a swap-in shares a loading block too, and a hit by hashes may lie at another
    /// position).
    func loadFinished(_ target: LoadTarget, ok: Bool) {
        if target.record >= 0 { return records.recordFinished(target, ok: ok) }
        readEnded(target.block)
        guard !ok else { return }
        // Every live sequence holding the block is spoiled; the block leaves the index so that
        // nobody else is served its bytes. So do the blocks past the prefix hit of those
        // sequences (from `cachedBlocks`): their create indexed them before the server computed
        // them, and a failed sequence is freed without being computed (any other holder of them
        // holds the failed block too, by the chain, and is spoiled with it). The blocks between
        // the failed one and the end of the hit stay indexed: blocks shared from memory
        // (`Engine.tieredPrefix`; other sequences computed them) and blocks read from disk
        // (their own reads verify them; a failed one leaves here on its own) hold valid bytes
        // that do not depend on the failed block's, and a later prompt that recomputes the
        // failed block finds them again. Indexing on schedule, the blocks past the hit are still
        // unscheduled: they never will be.
        blocks.forget(target.block)
        for slot in 0..<sequences.maxSeqs where sequences.lengths[slot] > 0 && !swapped[slot] {
            let table = sequences.table(slot), count = sequences.blockCount(slot)
            guard let i = (0..<count).first(where: { table[$0] == target.block }) else { continue }
            if !failed[slot] { failureReasons[slot] = tier.lastFailure }
            failed[slot] = true
            var j = max(i + 1, Int(cachedBlocks[slot]))
            while j < count {
                blocks.forget(table[j])
                j += 1
            }
            sequences.unscheduled[slot] = 0..<0
        }
    }
}

/// The engine side of offloaded-token records (episodic offload): a verified record read is
/// copied into the sequence's memory, and a read's end settles the tokens it restored.
protocol RecordMemory: AnyObject {
    /// Copies the tokens `target`'s record restores from its verified payload into memory.
    func scatterRecord(_ target: LoadTarget, from data: UnsafeRawPointer)
    /// A record read ended: `ok` false when it failed or was torn or corrupt (nothing was
    /// copied; the record's tokens are lost, now, or with the record when its write failed).
    func recordFinished(_ target: LoadTarget, ok: Bool)
    /// Loses the tokens of each record in `OffloadCoordinator.failedRecordWrites` for every
    /// sequence holding it, all in one step once none of them has restores pending, and lets
    /// go of its slot (`DiskTier.releaseFailedRecord`: it leaves the on-disk counters in that
    /// same step).
    func loseFailedRecordWrites()
}
