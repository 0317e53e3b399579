import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The disk tier: block-sized slots in a preallocated slab file under `offload_dir`, an index
/// from block hash to slot, an LRU of slots that may be dropped (`SlotLRU`), staging buffers
/// (one slot each, aligned, registered with io_uring; which are free: `StagingBuffers`) and the
/// I/O queue.
///
/// A slot is *free*, *writing* (its bytes sit in a staging buffer until the write completes;
/// a lookup may already find it and is served from that buffer) or *stored*. A stored slot with
/// a block hash is in the index and, unless pinned (being read, or part of a swapped-out
/// sequence), in the LRU; when the tier is full the LRU's oldest is dropped. Slots without a
/// hash belong to one live sequence (a swapped-out sequence's blocks, or a record of its
/// offloaded tokens) and are freed when their last pin goes.
///
/// Writes go out from a staging buffer, so memory is free as soon as a block is copied there;
/// a write's journal record is appended after the write completed. Reads land in a staging
/// buffer, are verified (header, generation, checksum) and only then copied into memory; a
/// block read that finds no buffer free waits in `pendingReads` (never for the device).
///
/// Completions are processed by `reap`, called by the engine under its lock (no thread of its
/// own). Cost: O(1) per block plus one memcpy and one checksum of its bytes; no allocation.
/// Not thread-safe: the engine serialises calls.
///
/// KV events (tier `KVEvent.diskTier`, into the engine's queue): every change to `index` pushes
/// exactly one, in the same step: `blockStored` when a hashed slot enters it (`submitWrite`: a
/// lookup finds a block from its write's submission; `recover`, after one `allCleared`),
/// `blockRemoved` when one leaves it (`drop` for room, a failed write, a read found torn or
/// corrupt, a failed read of a slot nothing else pins). So the tier-1 events drained in order
/// give exactly the hashes `lookup` finds (`findableHashes`). Slots without a hash
/// (swapped-out sequences' own, offloaded-token records) are never in the index and never
/// announced; nor are peers' blocks. One enqueue per block, no allocation; always under the
/// engine's lock, as is every call here (a sync's fdatasyncs run without it on pinned files:
/// `beginSync`, `PinnedSync`, `endSync`).
final class DiskTier {
    let slotBytes: Int
    let payloadBytes: Int
    let capacity: Int
    /// The directory's fingerprint key (`TierIdentity`): the engine fingerprints its blocks
    /// under it, so that the fingerprints the journal keeps still match after a restart.
    let fingerprint: BlockFingerprint
    /// The key was made at this open (the directory had no identity): `recover` drops the
    /// journal's fingerprinted blocks, made under a lost key.
    let keyIsNew: Bool
    /// `offload_dir`, for the lines logged about it.
    let dir: String
    /// The slab file (internal for tests, which inject faults through it).
    let slab: OpaquePointer
    /// Tests: runs on a `kvc_engine_sync`'s thread just before its fdatasyncs, without the
    /// engine's lock (`Engine.syncOffload`).
    var beforeSync: (() -> Void)?
    let io: OpaquePointer
    unowned let memory: TierMemory
    let events: EventQueue

    // Per slot.
    let state: UnsafeMutablePointer<UInt8>
    let hashes: UnsafeMutablePointer<UInt64>
    let parents: UnsafeMutablePointer<UInt64>
    /// Per slot: the block's `BlockFingerprint` under `fingerprint` (0: unknown), journaled
    /// with its hash.
    let fingerprints: UnsafeMutablePointer<UInt64>
    let generations: UnsafeMutablePointer<UInt64>
    let checksums: UnsafeMutablePointer<UInt64>
    let pins: UnsafeMutablePointer<UInt32>
    let writingStage: UnsafeMutablePointer<Int32>
    /// Per slot: tokens of the offloaded-token record it holds (`writeRecord`), or 0.
    let recordTokens: UnsafeMutablePointer<Int32>
    /// A bit per slot, set for a slot the restart recovered until a read verifies it or it is
    /// freed (`DiskTier+Verification`): a power loss may have left its STORED record over
    /// another block's bytes. 64 slots per word.
    let unverified: UnsafeMutablePointer<UInt64>
    /// The LRU: the droppable slots, oldest first (exactly those stored, hashed and unpinned).
    let lru: SlotLRU
    /// Free slots a write may take: each owes the journal nothing (`pushFree`).
    let freeSlots: UnsafeMutablePointer<Int32>
    var freeTop = 0
    /// Free slots whose FREED record the journal owes (`TierJournal.owesFreed`): none is
    /// rewritten until that record is appended, then a flush gives it back to `freeSlots`
    /// (`giveBackWaitingSlots`). While appends fail (a full disk) they stay here, and the tier
    /// drops no cached slot for a write (`journalAppends`): it takes new blocks only into
    /// slots that owe nothing.
    let waitingSlots: UnsafeMutablePointer<Int32>
    var waitingCount = 0
    /// Slots by block hash: slots of one hash and different fingerprints each have an entry
    /// (`HashChains`), so a crafted block neither keeps another out of the tier nor tells
    /// whether it is there.
    let index: HashChains
    var generation: UInt64 = 0

    // Per staging buffer.
    /// Staging buffers, one slot each (`stagingBuffers`).
    var stages: Int { staging.count }
    /// Which staging buffers are free, and which one the next request takes.
    let staging: StagingBuffers
    let stagingBase: UnsafeMutableRawPointer
    let stageOp: UnsafeMutablePointer<UInt8>
    let stageSlot: UnsafeMutablePointer<Int32>
    let stageTarget: UnsafeMutablePointer<LoadTarget>
    /// Per staging buffer: the peer slot a peer read expects (`peerRead` operations only).
    let stagePeer: UnsafeMutablePointer<PeerRead>
    /// The peers (`peer_offload_dirs`), in order; peer `i`'s slab is I/O file `i + 1`.
    let peers: [PeerTier]
    /// Per peer: its reads submitted (batched, in flight, or completed and not processed yet).
    /// A peer whose slab was replaced is reopened only at 0: the thread backend's workers read
    /// the descriptor a request was submitted with, so the old one stays open until then. A
    /// read still queued (`pendingReads`) then goes to the new slab, where its verification
    /// against the old journal record refuses it (`peerStale`) unless the slot holds that block.
    var peerReadsInFlight: [Int]
    /// Staging buffers bulk transfers leave free for other traffic: an eighth of them (128 of
    /// 1024 buffers of 8 KiB slots, 60 of 481 of 68 KiB, 4 of 32 of 2 MiB). The bulk transfers
    /// are pending swap-outs' blocks (`SwapOutQueue`, which leave a trim spilling meanwhile its
    /// share: `swapOutStages`), a trim's spills (`Engine.spillCachedBlocks`) and an
    /// allocation's spills (`spill`, which are skipped rather than wait): they take a buffer
    /// only while `bulkStages > 0`, so together they keep at most the other seven eighths in
    /// flight (merged into requests of up to 1 MiB), and a prompt's prefix read, a swap-in, a
    /// swap-out's first block or an episodic record issued meanwhile finds a buffer without
    /// waiting for their writes. Fixed at creation; at least 4 with 32 buffers or more, none
    /// with fewer than 8 (a tier of fewer slots, `stagingBuffers`).
    let reservedStages: Int
    let done: UnsafeMutablePointer<kvm_io_done>
    /// Read completions an allocation's spill took from the queue (`reapWrites`) and left for
    /// the next `reap`, oldest first: processing a read writes into memory and may spoil
    /// sequences, which must not happen in the middle of an allocation. Each still holds its
    /// staging buffer. At most `stages` (each is a distinct request).
    let deferredReads: UnsafeMutablePointer<kvm_io_done>
    var deferredReadCount = 0
    /// Requests prepared but not yet submitted (each holds a staging buffer, so at most `stages`).
    let batch: UnsafeMutablePointer<kvm_io_req>
    var batchCount = 0
    /// Prefix and swap-in reads that found no staging buffer free (or older reads still
    /// queued), oldest first: submitted by `reap` as completions free buffers, never waited for
    /// under the engine's lock. At most the engine's block count (`PendingReads`).
    let pendingReads: PendingReads
    /// Largest merged request: 1 MiB, or one slot when slots are larger.
    var mergeBytes: Int { max(slotBytes, 1 << 20) }
    /// What the journal says of each slot, and the records it owes. A slot is rewritten only
    /// once its FREED record is written (`waitingSlots` until then; when the append fails, it
    /// is not rewritten at all until a later append succeeds), so that a crash never leaves a
    /// STORED record over half-rewritten bytes.
    let journal: TierJournal

    /// The last I/O failure's message (spills fail quietly; swap-outs report it).
    var lastFailure = ""

    var stats = DiskTierStats()

    /// While `writesFailing`: the generation of the last write submitted when a failure was
    /// processed; a success of a write of a later generation clears it. A write submitted
    /// before it that completes after (a batch's requests finish in any order) says nothing
    /// of the device now.
    var writeFailureGeneration: UInt64?

    /// Trims spilling now (`Engine.spillCachedBlocks`: counted from its start to its return,
    /// its waits without the lock included), to which `swapOutStages` leaves a share.
    var trimsSpilling = 0

    /// Spill writes (trims' and allocations') submitted whose completion was not processed yet.
    var spillWritesInFlight = 0

    /// How fast block reads drain lately (`readIsFaster`).
    var readRate = ReadRate()

    /// Called (under the engine's lock) after every reap that processed requests, with how
    /// many: lets the engine wake the calls that wait for completions without its lock.
    var onCompletions: ((Int) -> Void)?

    static let free: UInt8 = 0, writing: UInt8 = 1, stored: UInt8 = 2
    /// Staging buffer operations: a pinned write is a swap-out block or an offloaded-token record.
    static let idle: UInt8 = 0, spillWrite: UInt8 = 1, pinnedWrite: UInt8 = 2, read: UInt8 = 3, peerRead: UInt8 = 4
    /// Most slots one tier manages (per-slot metadata is 103-127 bytes and a bit, ~200 at a restart's
    /// peak: docs/disk-tier.md, "Restart at millions of slots").
    static let maxSlots = 1 << 22
    /// Slots dropped from the LRU at once when the tier is full.
    static let dropBatch = 16
    /// The LRU's oldest slots a write-ahead (`reserveAhead`) looks at for ones to drop.
    static let aheadDropScan = 64
    /// Staging memory aimed for when slots are small (more than `offloadQueueDepth` buffers).
    static let stagingTargetBytes = 32 << 20

    /// Staging buffers of a tier of `slots` slots of `slotBytes`: at least `queueDepth`, and
    /// enough small slots for `stagingTargetBytes` in flight (at most 1024), so that small
    /// slots still make deep queues of large (merged) requests; but never more than the
    /// slots: each request in flight is a slot's (a write into it, a read of it), so more
    /// would only be resident memory outside the budget (a 1 MiB tier of 85 slots took 1,024,
    /// 12 MiB). O(1).
    static func stagingBuffers(queueDepth: Int, slotBytes: Int, slots: Int) -> Int {
        min(slots, max(queueDepth, min(1024, stagingTargetBytes / slotBytes)))
    }

    /// Opens (or reopens) the tier in `config.offloadDir`, replaying its journal, after opening
    /// the peers of `config.peerOffloadDirs` (`PeerTier.openAll`; a refused peer throws before
    /// the own directory is touched), and after claiming the directory for this engine's model
    /// and shape (`TierIdentity.claim`). `config` is validated (`EngineConfig.validate`, which
    /// checks the slot and `offload_bytes`: `checkSizes`). Throws `invalidArgument` (a
    /// directory or peer of another model tag or shape, the own directory or a duplicate as a
    /// peer), `outOfMemory` (no descriptor left for one of its files or its I/O
    /// queue: `KVError.file`) or `io` (the directory or files cannot be used, a peer without
    /// tier files). Allocates all metadata, `offloadQueueDepth` staging buffers and a queue of
    /// `maxPendingReads` reads waiting for a buffer (the engine's block count) up front.
    init(_ config: EngineConfig, memory: TierMemory, events: EventQueue, maxPendingReads: Int) throws(KVError) {
        payloadBytes = config.blockBytesAllTensors
        slotBytes = DiskTier.slotBytes(payloadBytes: payloadBytes)
        // `config.validate()` checked the sizes (`checkSizes`): 1 to `maxSlots` slots, each
        // within `maxSlotBytes`, so every length below fits the I/O path's 32 bits.
        capacity = Int(config.offloadBytes / UInt64(slotBytes))
        // The per-slot arrays, before anything is opened: freed with `a` on any throw below.
        let a = CheckedAllocations()
        let perSlot = "the disk tier's per-slot state of \(capacity) slots (offload_bytes / slot bytes)"
        state = try a.allocate(repeating: DiskTier.free, count: capacity, perSlot)
        hashes = try a.allocate(repeating: 0, count: capacity, perSlot)
        parents = try a.allocate(repeating: 0, count: capacity, perSlot)
        fingerprints = try a.allocate(repeating: 0, count: capacity, perSlot)
        generations = try a.allocate(repeating: 0, count: capacity, perSlot)
        checksums = try a.allocate(repeating: 0, count: capacity, perSlot)
        pins = try a.allocate(repeating: 0, count: capacity, perSlot)
        writingStage = try a.allocate(count: capacity, perSlot)
        recordTokens = try a.allocate(repeating: 0, count: capacity, perSlot)
        unverified = try a.allocate(repeating: 0, count: (capacity + 63) / 64, perSlot)
        freeSlots = try a.allocate(count: capacity, perSlot)
        waitingSlots = try a.allocate(count: capacity, perSlot)
        lru = try SlotLRU(capacity: capacity)
        index = try HashChains(ids: capacity, fingerprints: fingerprints, "the disk tier's \(capacity) slots (offload_bytes / slot bytes)")
        pendingReads = try PendingReads(capacity: max(1, maxPendingReads))
        // Before anything is opened: a mistyped variable is refused, not run without its effect.
        let threadsByEnvironment = try DiskTier.environmentForcesThreads(DiskTier.environment("KVCACHE_OFFLOAD_BACKEND"))
        let faultByEnvironment = try DiskTier.environmentFault(DiskTier.environment("KVCACHE_OFFLOAD_FAULT"), dir: config.offloadDir!)
        let forceThreads = config.offloadForceThreads || threadsByEnvironment
        let fault = config.offloadFault ?? faultByEnvironment
        peers = try PeerTier.openAll(config, slotBytes: slotBytes, payloadBytes: payloadBytes)
        dir = config.offloadDir!
        self.memory = memory
        self.events = events
        var slabConfig = kvm_slab_config()
        slabConfig.slot_bytes = UInt64(slotBytes)
        slabConfig.max_bytes = UInt64(capacity) * UInt64(slotBytes)
        slabConfig.extent_slots = UInt32(max(1, min(64, (256 << 20) / slotBytes)))
        slabConfig.force_buffered = config.offloadForceBuffered ? 1 : 0
        var s: OpaquePointer?
        let rc = config.offloadDir!.withCString { dir -> Int32 in
            slabConfig.dir = dir
            return kvm_slab_open(&slabConfig, &s)
        }
        if rc < 0 { throw .file(rc, otherwise: -rc == EINVAL ? .invalidArgument : .io) }
        slab = s!
        // Under the directory's lock, before the journal is replayed (and compacted): a
        // directory of another model or shape is refused untouched.
        do throws(KVError) {
            (fingerprint, keyIsNew) = try TierIdentity(config).claim(dir: config.offloadDir!)
        } catch {
            kvm_slab_close(slab)
            throw error
        }
        // Only now, the directory being this engine's, may a smaller tier cut the file (before,
        // a refused engine truncated its owner's slab: helper-133).
        kvm_slab_fit(slab)

        let stages = DiskTier.stagingBuffers(queueDepth: config.offloadQueueDepth, slotBytes: slotBytes, slots: capacity)
        staging = StagingBuffers(count: stages)
        reservedStages = stages / 8
        let stagingBytes = stages * slotBytes
        guard let mapped = kvm_io_alloc_buffers(UInt64(stagingBytes), config.numaNode) else {
            kvm_slab_close(slab)
            throw .outOfMemory("offload: staging buffers: \(kvmMessage())")
        }
        stagingBase = mapped
        // One registered buffer over every staging buffer, so that a request spanning several
        // adjacent ones (merged by `flush`) is still a fixed-buffer request.
        var buffers = [iovec(iov_base: mapped, iov_len: stagingBytes)]
        let files = [kvm_slab_fd(slab)] + peers.map(\.fd)
        var ioConfig = kvm_io_config()
        ioConfig.depth = UInt32(stages)  // merged requests use fewer entries
        ioConfig.threads = 4
        ioConfig.force_threads = forceThreads ? 1 : 0
        if let fault {
            ioConfig.fault_ops = DiskTier.faultOps(fault)
            ioConfig.fault_after = fault.after
        }
        ioConfig.n_files = UInt32(files.count)
        var q: OpaquePointer?
        let ioRC = buffers.withUnsafeMutableBufferPointer { b -> Int32 in
            files.withUnsafeBufferPointer { f -> Int32 in
                ioConfig.buffers = UnsafePointer(b.baseAddress)
                ioConfig.n_buffers = UInt32(b.count)
                ioConfig.files = f.baseAddress
                return kvm_io_create(&ioConfig, &q)
            }
        }
        if ioRC < 0 {
            kvm_io_free_buffers(mapped, UInt64(stagingBytes))
            kvm_slab_close(slab)
            throw .file(ioRC)
        }
        io = q!
        stats.backend = UInt32(kvm_io_backend(io))
        stats.registeredBuffers = UInt32(kvm_io_registered_buffers(io))
        stats.direct = UInt32(kvm_slab_direct(slab))
        stats.capacitySlots = UInt64(capacity)
        stats.slotBytes = UInt64(slotBytes)

        stageOp = .allocate(capacity: stages)
        stageOp.initialize(repeating: DiskTier.idle, count: stages)
        stageSlot = .allocate(capacity: stages)
        stageTarget = .allocate(capacity: stages)
        stagePeer = .allocate(capacity: stages)
        peerReadsInFlight = [Int](repeating: 0, count: peers.count)
        done = .allocate(capacity: stages)
        deferredReads = .allocate(capacity: stages)
        batch = .allocate(capacity: stages)
        journal = TierJournal(slab: slab, slots: capacity, batchRecords: stages * 2 + 16, payloadBytes: payloadBytes,
                              hashes: hashes, parents: parents, fingerprints: fingerprints, generations: generations,
                              checksums: checksums)
        a.keep()  // fully initialized: a throw from here on runs `deinit`, which frees them
        try recover()
    }

    deinit {
        drain()
        flushJournal()
        if journal.owedCount > 0 {
            kvm_log("offload journal in '\(dir)': \(journal.owedCount) records could not be appended at close (\(journal.lastError)); "
                    + "a restart will not find the blocks they describe")
        }
        kvm_io_destroy(io)
        kvm_slab_close(slab)
        kvm_io_free_buffers(stagingBase, UInt64(stages * slotBytes))
        for p in [hashes, parents, fingerprints, generations, checksums] { p.deallocate() }
        state.deallocate()
        pins.deallocate()
        writingStage.deallocate()
        recordTokens.deallocate()
        unverified.deallocate()
        freeSlots.deallocate()
        waitingSlots.deallocate()
        stageOp.deallocate()
        stageSlot.deallocate()
        stageTarget.deallocate()
        stagePeer.deallocate()
        done.deallocate()
        deferredReads.deallocate()
        batch.deallocate()
    }

    /// The value of environment variable `name` (read without Foundation), or nil.
    private static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }

    /// `KVCACHE_OFFLOAD_BACKEND`: "threads" forces the pread/pwrite thread pool; unset, empty
    /// or "uring": io_uring where it works. Throws `invalidArgument` for anything else.
    static func environmentForcesThreads(_ value: String?) throws(KVError) -> Bool {
        switch value {
        case nil, "", "uring": return false
        case "threads": return true
        case let other?: throw .invalid("KVCACHE_OFFLOAD_BACKEND=\(other) is not a backend: set threads or uring, or unset it")
        }
    }

    /// `KVCACHE_OFFLOAD_FAULT`: "OPS:N" (every tier) or "OPS:N@DIR" (only the tier in `dir`
    /// when it is the directory DIR names, however spelled: a trailing slash, "//", "..", a
    /// relative path or a symbolic link; compared by device and inode; nil for another), OPS
    /// read, write or all; unset or empty: nil. Throws `invalidArgument` for anything else,
    /// whatever its directory, and for a DIR that is not an existing directory, so that a
    /// mistyped rehearsal fails loudly instead of running without faults. Cost: two `stat`s.
    static func environmentFault(_ value: String?, dir: String) throws(KVError) -> OffloadFault? {
        guard let value, !value.isEmpty else { return nil }
        let parts = value.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        let spec = parts[0].split(separator: ":", omittingEmptySubsequences: false)
        let ops: (reads: Bool, writes: Bool)? = switch spec.first {
        case "read": (true, false)
        case "write": (false, true)
        case "all": (true, true)
        default: nil
        }
        guard let ops, spec.count == 2, let after = UInt64(spec[1]), parts.count == 1 || !parts[1].isEmpty else {
            throw .invalid("KVCACHE_OFFLOAD_FAULT=\(value) is not OPS:N or OPS:N@DIR (OPS read, write or all; N the requests that succeed first)")
        }
        let fault = OffloadFault(reads: ops.reads, writes: ops.writes, after: after)
        guard parts.count == 2 else { return fault }
        let target = String(parts[1])
        var want = stat(), own = stat()
        let found = stat(target, &want) == 0
        guard found, want.st_mode & S_IFMT == S_IFDIR else {
            let reason = String(cString: strerror(found ? ENOTDIR : errno))
            throw .invalid("KVCACHE_OFFLOAD_FAULT=\(value) names no directory: \(target): \(reason)")
        }
        return stat(dir, &own) == 0 && own.st_dev == want.st_dev && own.st_ino == want.st_ino ? fault : nil
    }

    /// `kvm_io_config.fault_ops` of `fault`: a bit per failing operation.
    private static func faultOps(_ fault: OffloadFault) -> UInt32 {
        (fault.reads ? 1 << UInt32(KVM_IO_READ) : 0) | (fault.writes ? 1 << UInt32(KVM_IO_WRITE) : 0)
    }

    /// Tests: replaces the fault injection (`EngineConfig.offloadFault`) from the next request
    /// submitted on (`kvm_io_set_faults`): nil fails nothing; `after` counts from this call.
    /// Requests already submitted keep their outcome. Under the engine's lock. O(1).
    func setFault(_ fault: OffloadFault?) {
        kvm_io_set_faults(io, fault.map(DiskTier.faultOps) ?? 0, fault?.after ?? 0)
    }

    /// Why the tier runs a fallback (thread pool, buffered I/O), or "".
    var fallbackReason: String {
        [String(cString: kvm_io_fallback_reason(io)), String(cString: kvm_slab_fallback_reason(slab))].filter { !$0.isEmpty }.joined(separator: "; ")
    }

    /// Requests in flight, or completed and not processed yet (`deferredReads`). Not 0 while a
    /// read is queued for a staging buffer (see `reap`), so waiting for it ends; unless the
    /// queue refused a submission, whose buffers free at once: the next `reap` submits more.
    var inflight: Int { Int(kvm_io_inflight(io)) + deferredReadCount }
}
