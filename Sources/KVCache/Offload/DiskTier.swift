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
    private let keyIsNew: Bool
    /// `offload_dir`, for the lines logged about it.
    let dir: String
    /// The slab file (internal for tests, which inject faults through it).
    let slab: OpaquePointer
    /// Tests: runs on a `kvc_engine_sync`'s thread just before its fdatasyncs, without the
    /// engine's lock (`Engine.syncOffload`).
    var beforeSync: (() -> Void)?
    private let io: OpaquePointer
    private unowned let memory: TierMemory
    private let events: EventQueue

    // Per slot.
    private let state: UnsafeMutablePointer<UInt8>
    private let hashes: UnsafeMutablePointer<UInt64>
    private let parents: UnsafeMutablePointer<UInt64>
    /// Per slot: the block's `BlockFingerprint` under `fingerprint` (0: unknown), journaled
    /// with its hash.
    private let fingerprints: UnsafeMutablePointer<UInt64>
    private let generations: UnsafeMutablePointer<UInt64>
    private let checksums: UnsafeMutablePointer<UInt64>
    private let pins: UnsafeMutablePointer<UInt32>
    private let writingStage: UnsafeMutablePointer<Int32>
    /// Per slot: tokens of the offloaded-token record it holds (`writeRecord`), or 0.
    private let recordTokens: UnsafeMutablePointer<Int32>
    /// The LRU: the droppable slots, oldest first (exactly those stored, hashed and unpinned).
    private let lru: SlotLRU
    /// Free slots a write may take: each owes the journal nothing (`pushFree`).
    private let freeSlots: UnsafeMutablePointer<Int32>
    private var freeTop = 0
    /// Free slots whose FREED record the journal owes (`TierJournal.owesFreed`): none is
    /// rewritten until that record is appended, then a flush gives it back to `freeSlots`
    /// (`giveBackWaitingSlots`). While appends fail (a full disk) they stay here, and the tier
    /// drops no cached slot for a write (`journalAppends`): it takes new blocks only into
    /// slots that owe nothing.
    private let waitingSlots: UnsafeMutablePointer<Int32>
    private var waitingCount = 0
    /// Slots by block hash: slots of one hash and different fingerprints each have an entry
    /// (`HashChains`), so a crafted block neither keeps another out of the tier nor tells
    /// whether it is there.
    private let index: HashChains
    private var generation: UInt64 = 0

    // Per staging buffer.
    /// Staging buffers, one slot each: max(`offloadQueueDepth`, min(1024, 32 MiB / `slotBytes`)).
    private var stages: Int { staging.count }
    /// Which staging buffers are free, and which one the next request takes.
    private let staging: StagingBuffers
    private let stagingBase: UnsafeMutableRawPointer
    private let stageOp: UnsafeMutablePointer<UInt8>
    private let stageSlot: UnsafeMutablePointer<Int32>
    private let stageTarget: UnsafeMutablePointer<LoadTarget>
    /// Per staging buffer: the peer slot a peer read expects (`peerRead` operations only).
    private let stagePeer: UnsafeMutablePointer<PeerRead>
    /// The peers (`peer_offload_dirs`), in order; peer `i`'s slab is I/O file `i + 1`.
    let peers: [PeerTier]
    /// Per peer: its reads submitted (batched, in flight, or completed and not processed yet).
    /// A peer whose slab was replaced is reopened only at 0: the thread backend's workers read
    /// the descriptor a request was submitted with, so the old one stays open until then. A
    /// read still queued (`pendingReads`) then goes to the new slab, where its verification
    /// against the old journal record refuses it (`peerStale`) unless the slot holds that block.
    private var peerReadsInFlight: [Int]
    /// Staging buffers bulk transfers leave free for other traffic: an eighth of them (128 of
    /// 1024 buffers of 8 KiB slots, 60 of 481 of 68 KiB, 4 of 32 of 2 MiB). The bulk transfers
    /// are pending swap-outs' blocks (`SwapOutQueue`, which leave a trim spilling meanwhile its
    /// share: `swapOutStages`), a trim's spills (`Engine.spillCachedBlocks`) and an
    /// allocation's spills (`spill`, which are skipped rather than wait): they take a buffer
    /// only while `bulkStages > 0`, so together they keep at most the other seven eighths in
    /// flight (merged into requests of up to 1 MiB), and a prompt's prefix read, a swap-in, a
    /// swap-out's first block or an episodic record issued meanwhile finds a buffer without
    /// waiting for their writes. Fixed at creation; at least 4.
    let reservedStages: Int
    private let done: UnsafeMutablePointer<kvm_io_done>
    /// Read completions an allocation's spill took from the queue (`reapWrites`) and left for
    /// the next `reap`, oldest first: processing a read writes into memory and may spoil
    /// sequences, which must not happen in the middle of an allocation. Each still holds its
    /// staging buffer. At most `stages` (each is a distinct request).
    private let deferredReads: UnsafeMutablePointer<kvm_io_done>
    private var deferredReadCount = 0
    /// Requests prepared but not yet submitted (each holds a staging buffer, so at most `stages`).
    private let batch: UnsafeMutablePointer<kvm_io_req>
    private var batchCount = 0
    /// Prefix and swap-in reads that found no staging buffer free (or older reads still
    /// queued), oldest first: submitted by `reap` as completions free buffers, never waited for
    /// under the engine's lock. At most the engine's block count (`PendingReads`).
    private let pendingReads: PendingReads
    /// Largest merged request: 1 MiB, or one slot when slots are larger.
    private var mergeBytes: Int { max(slotBytes, 1 << 20) }
    /// What the journal says of each slot, and the records it owes. A slot is rewritten only
    /// once its FREED record is written (`waitingSlots` until then; when the append fails, it
    /// is not rewritten at all until a later append succeeds), so that a crash never leaves a
    /// STORED record over half-rewritten bytes.
    private let journal: TierJournal

    /// The last I/O failure's message (spills fail quietly; swap-outs report it).
    private(set) var lastFailure = ""

    private(set) var stats = DiskTierStats()

    private static let free: UInt8 = 0, writing: UInt8 = 1, stored: UInt8 = 2
    /// Staging buffer operations: a pinned write is a swap-out block or an offloaded-token record.
    private static let idle: UInt8 = 0, spillWrite: UInt8 = 1, pinnedWrite: UInt8 = 2, read: UInt8 = 3, peerRead: UInt8 = 4
    /// Most slots one tier manages (per-slot metadata is ~60 bytes).
    static let maxSlots = 1 << 22
    /// Slots dropped from the LRU at once when the tier is full.
    static let dropBatch = 16
    /// The LRU's oldest slots a write-ahead (`reserveAhead`) looks at for ones to drop.
    static let aheadDropScan = 64
    /// Staging memory aimed for when slots are small (more than `offloadQueueDepth` buffers).
    static let stagingTargetBytes = 32 << 20

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

        // At least the queue depth, and enough small slots for 32 MiB in flight, so that small
        // slots still make deep queues of large (merged) requests.
        let stages = max(config.offloadQueueDepth, min(1024, DiskTier.stagingTargetBytes / slotBytes))
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

    // MARK: restart

    /// Replays the journal: every slot whose latest valid record says STORED (and that lies
    /// inside the preallocated file) is indexed again; the journal is compacted to those
    /// records. A compaction that fails (no space for the new journal beside the old) is
    /// logged and the old journal kept: what the replay found stands, and FREED records for
    /// the slots it did not take are owed (`TierJournal.stale`). A torn or corrupt record is
    /// skipped, not the end of the replay: the slot's previous record wins instead, and a read
    /// verifies that slot's bytes against it as any other (`kvm_slot_verify`: a slot
    /// rewritten since is a miss). What it cannot use (`kvm_journal_skipped`, and STORED
    /// records past the slab file) is counted (`DiskTierStats.journalRecordsDropped`, a
    /// partial record at the end as one) and, when anything, logged on stderr with `dir` and
    /// each reason: the compaction forgets it for good.
    /// Events (after the memory tier's `allCleared`, `Engine.init`): one `allCleared` of the
    /// disk tier, then a `blockStored` per block indexed, each after its ancestors the tier
    /// holds (a router building a prefix tree needs parents first; slots are in no such
    /// order: a trim spills a freed chain tail first), so that a router still holding what
    /// this directory's previous engine announced (it may not see the restart: the events
    /// carry no instance epoch) ends with exactly what this one can find. The queue grows to
    /// hold them beside its usual capacity (`EventQueue.grow`): nothing drains it before the
    /// engine is created. The recovered slots enter the LRU in the order they were written
    /// (their records' generations), the oldest to be dropped first. Cost: O(slots log slots)
    /// time, O(slots) scratch.
    private func recover() throws(KVError) {
        let allocated = Int(kvm_slab_allocated(slab))
        let latest = UnsafeMutablePointer<kvm_journal_record>.allocate(capacity: max(1, capacity))
        defer { latest.deallocate() }
        var skipped = kvm_journal_skipped()
        let top = kvm_slab_journal_replay(slab, latest, UInt32(capacity), &skipped)
        if top < 0 { throw KVError(.io, kvmMessage()) }
        generation = UInt64(top)
        var unusable: UInt64 = 0, underLostKey: UInt64 = 0
        var recovered: [Int32] = []
        for slot in 0..<capacity {
            let r = latest[slot]
            let stored = r.magic == KVM_JOURNAL_MAGIC && r.kind == UInt32(KVM_JOURNAL_STORED)
            let fits = slot < allocated && r.payload_bytes == UInt32(payloadBytes)
            if stored && !fits { unusable += 1 }
            // (A hash and fingerprint another slot already holds is the same block: found
            // there; another fingerprint of the hash gets its own entry, `HashChains`.) A block
            // fingerprinted under a lost key (the identity was gone: a new key) could never
            // match again, and its hash would keep the block out of the tier: dropped.
            let lostKey = keyIsNew && r.fingerprint != 0
            if stored && fits && lostKey { underLostKey += 1 }
            guard stored && fits && !lostKey && r.block_hash != 0 && index.find(r.block_hash, fingerprint: r.fingerprint) < 0 else {
                if stored { journal.stale(Int32(slot)) }  // until the compaction forgets it
                latest[slot].magic = 0
                continue
            }
            state[slot] = DiskTier.stored
            hashes[slot] = r.block_hash
            parents[slot] = r.parent_hash
            fingerprints[slot] = r.fingerprint
            generations[slot] = r.generation
            checksums[slot] = r.checksum
            index.insert(r.block_hash, Int32(slot), fingerprint: r.fingerprint)  // not refused: `find` missed it
            journal.recovered(Int32(slot))
            recovered.append(Int32(slot))
            stats.storedSlots += 1
            stats.recoveredSlots += 1
        }
        // Oldest first, as the engine before the restart would drop them: in the order the
        // slots were written (their generations; hits are not journaled). Not slot order: once
        // slots are reused the lowest often hold the newest blocks.
        recovered.sort { generations[Int($0)] < generations[Int($1)] }
        for slot in recovered { lru.append(slot) }
        let reasons: [(count: UInt64, why: String)] = [
            (skipped.unreadable, "torn or corrupt"),
            (skipped.torn_tail_bytes > 0 ? 1 : 0, "torn tail of \(skipped.torn_tail_bytes) bytes"),
            (skipped.generation, "with a generation at or past 2^63, no engine's"),
            (skipped.outside, "past offload_bytes"),
            (unusable, "past the slab file"),
            (underLostKey, "fingerprinted under the key of a lost \(TierIdentity.fileName)"),
        ]
        stats.journalRecordsDropped = reasons.reduce(0) { $0 + $1.count }
        if stats.journalRecordsDropped > 0 {
            // Once per start, for the operator: the blocks were cached, not lost data, but a
            // restart that forgets them costs recomputation.
            let why = reasons.filter { $0.count > 0 }.map { "\($0.count) \($0.why)" }.joined(separator: ", ")
            kvm_log("offload journal in '\(dir)': \(stats.journalRecordsDropped) records dropped (\(why)); \(stats.recoveredSlots) blocks recovered")
        }
        try events.grow(by: Int(stats.recoveredSlots) + 1, "for the \(stats.recoveredSlots) blocks the disk tier found, offload_bytes")
        events.push(KVEvent(kind: .allCleared, tier: KVEvent.diskTier, blockHash: 0, parentHash: 0))
        forEachIndexedParentsFirst { events.push($0) }
        // Compacted to the records of the slots taken, as while the tier runs. On failure the
        // old journal stands (its replay is what the tier now holds); the slots whose STORED
        // records the tier did not take owe FREED records, appended before they are
        // rewritten (they wait in `waitingSlots`). Logged, not refused: a tier that filled its
        // disk must reopen.
        let compaction = journal.compact()
        if compaction < 0 {
            kvm_log("offload journal in '\(dir)' was not compacted (\(journal.lastError)); the tier opens on it as replayed")
        } else if compaction == 1 {
            kvm_log("offload journal in '\(dir)' was compacted, but \(journal.lastError): a power loss may bring back the old one")
        }
        for slot in stride(from: allocated - 1, through: 0, by: -1) where state[slot] == DiskTier.free { pushFree(Int32(slot)) }
    }

    /// Calls `body` with a `blockStored` (tier `KVEvent.diskTier`, hash, parent) per hash the
    /// index holds (its first slot's, stored or being written: slots of a colliding hash are
    /// listed once, as the events announce a hash once), each after its ancestors the tier
    /// holds (`HashChains.forEachParentsFirst`). Changes nothing.
    /// Cost: O(slots) time, two hash lookups per slot with a hash, 8 bytes per slot of scratch.
    private func forEachIndexedParentsFirst(_ body: (KVEvent) -> Void) {
        index.forEachParentsFirst(ids: capacity, hashes: hashes, parents: parents, tier: KVEvent.diskTier, body)
    }

    /// The tier's index as events, appended to `out`: one `allCleared` of the disk tier, then
    /// `forEachIndexedParentsFirst`'s `blockStored`s; applied after every tier-1 event pushed
    /// so far, they leave a view of exactly what `lookup` finds. Changes nothing.
    /// Cost: O(slots) time, 8 bytes per slot of scratch, 24 bytes of `out` per indexed block.
    func appendIndexed(to out: inout [KVEvent]) {
        out.reserveCapacity(out.count + 1 + index.hashCount)
        out.append(KVEvent(kind: .allCleared, tier: KVEvent.diskTier, blockHash: 0, parentHash: 0))
        forEachIndexedParentsFirst { out.append($0) }
    }

    // MARK: lookup

    /// The slot holding block `hash` (stored, or still being written) whose fingerprint is
    /// `fingerprint` (0: the hash's first slot, whatever its fingerprint, for a prompt known by
    /// its hashes alone; as `BlockPool.lookup`), or -1. Moves it to the LRU's young end. O(1)
    /// expected (`HashChains.find`).
    func lookup(_ hash: UInt64, fingerprint: UInt64) -> Int32 {
        let slot = index.find(hash, fingerprint: fingerprint)
        if slot >= 0 { lru.touch(slot) }
        return slot
    }

    /// True when the tier holds block `hash` with fingerprint `fingerprint` (as `lookup`, no
    /// LRU change). O(1).
    func contains(_ hash: UInt64, fingerprint: UInt64) -> Bool { index.find(hash, fingerprint: fingerprint) >= 0 }

    /// Block hash, parent hash and fingerprint of a slot (0 for a swapped-out sequence's own slot).
    func hash(of slot: Int32) -> UInt64 { hashes[Int(slot)] }
    func parent(of slot: Int32) -> UInt64 { parents[Int(slot)] }
    func fingerprint(of slot: Int32) -> UInt64 { fingerprints[Int(slot)] }

    /// Holds `slot` against reuse (a swapped-out sequence refers to it, or a read is pending).
    func pin(_ slot: Int32) {
        pins[Int(slot)] += 1
        lru.remove(slot)
    }

    /// Releases a pin; an unpinned hashed stored slot rejoins the LRU, an unpinned slot
    /// without a hash (a swapped sequence's own) is freed.
    func unpin(_ slot: Int32) {
        let s = Int(slot)
        precondition(pins[s] > 0, "unpin of an unpinned slot")
        pins[s] -= 1
        guard pins[s] == 0 else { return }
        if hashes[s] == 0 {
            if state[s] == DiskTier.stored { release(slot) }
        } else if state[s] == DiskTier.stored {
            lru.append(slot)
        }
    }

    // MARK: writes

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

    /// While `writesFailing`: the generation of the last write submitted when a failure was
    /// processed; a success of a write of a later generation clears it. A write submitted
    /// before it that completes after (a batch's requests finish in any order) says nothing
    /// of the device now.
    private var writeFailureGeneration: UInt64?

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
    /// their rule (`lookup`: fingerprint 0 takes the hash's first slot). No LRU change (the
    /// caller pins it out of the LRU). O(1) plus the hash's collision links.
    @inline(__always) private func sharedSwapSlot(hash: UInt64, fingerprint: UInt64) -> Int32 {
        hash != 0 ? index.findEqual(hash, fingerprint: fingerprint) : -1
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
    /// only where its hash is absent), so its swap-in reads it back unindexed.
    /// O(1) plus the seal.
    func submitSwap(slot: Int32, stage: Int32, hash: UInt64, parent: UInt64, fingerprint: UInt64, checksum: UInt64?) -> Int32 {
        let found = sharedSwapSlot(hash: hash, fingerprint: fingerprint)
        if found >= 0 {
            cancel(slot: slot, stage: stage)
            pin(found)
            return found
        }
        pin(slot)
        let indexed = hash != 0 && (fingerprint != 0 || index.first(hash) < 0)
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
    private func forgetRecord(_ slot: Int32) {
        let tokens = recordTokens[Int(slot)]
        guard tokens > 0 else { return }
        recordTokens[Int(slot)] = 0
        stats.tokenRecords -= 1
        stats.tokensOnDisk -= UInt64(tokens)
    }

    private func payload(_ stage: Int32) -> UnsafeMutableRawPointer {
        stagingBase + Int(stage) * slotBytes + Int(KVM_SLOT_HEADER_BYTES)
    }

    private func stageBuffer(_ stage: Int32) -> UnsafeMutableRawPointer { stagingBase + Int(stage) * slotBytes }

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
    private func pushFree(_ slot: Int32) {
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
    private func giveBackWaitingSlots() {
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

    // MARK: reads

    /// Reads `slot` into memory at `target` (verified before it is copied), pinning it until the
    /// read ended. A slot still being written is served from its staging buffer at once. Never
    /// fails here: a read that cannot be submitted completes as failed (`flush`), and its target
    /// hears of it then.
    ///
    /// A block read (`target.record < 0`: a prompt's prefix hit, a swap-in) never waits for
    /// the device: when no staging buffer is free, or older reads are still queued, it joins
    /// `pendingReads` and a later `reap` submits it (FIFO, so the earliest request's blocks go
    /// first and a create's reads, queued in slot order, still merge), its slot pinned
    /// meanwhile; `cancelPendingReads` takes it back. An offloaded-token record read
    /// (episodic `focus`) still takes a buffer at once, waiting under the engine's lock
    /// (`takeStage`: behind the queued reads) when none is free. Cost: O(1), plus O(queued
    /// reads submitted) when buffers freed since.
    func load(_ slot: Int32, into target: LoadTarget) {
        let s = Int(slot)
        if state[s] == DiskTier.writing {
            memory.scatter(target, from: payload(writingStage[s]))
            memory.loadFinished(target, ok: true)
            stats.blocksLoaded += 1
            return
        }
        pin(slot)
        issue(PendingReads.Entry(read: PeerRead(peer: -1, slot: slot, hash: 0, parent: 0, generation: 0, checksum: 0), target: target))
    }

    /// Reads peer slot `read` (found by `findInPeers`) into memory at `target`, verified
    /// against what the peer's journal said when it was looked up: a slot the peer rewrote since
    /// (or a failed read) completes as failed (`TierMemory.loadFinished` with `ok` false) and
    /// counts in `peerStale`; a verified one counts in `peerHits`. Nothing of this tier is
    /// pinned: the peer's slot is not ours to hold. Queued like `load`'s block reads when no
    /// buffer is free (the expected record travels with it). Cost as `load`.
    func loadPeer(_ read: PeerRead, into target: LoadTarget) {
        issue(PendingReads.Entry(read: read, target: target))
    }

    /// Submits `entry` now when a staging buffer is free and no older read is queued (or when it
    /// is a record read, which waits for one), else queues it. See `load`.
    private func issue(_ entry: PendingReads.Entry) {
        submitPendingReads()
        if entry.target.record >= 0 || (pendingReads.isEmpty && staging.freeCount > 0) {
            submitRead(entry)
        } else {
            pendingReads.push(entry)
        }
    }

    /// Submits the oldest queued reads while staging buffers are free (into the batch; the
    /// caller flushes). O(reads submitted).
    private func submitPendingReads() {
        while staging.freeCount > 0 && !pendingReads.isEmpty { submitRead(pendingReads.pop()) }
    }

    /// Takes a staging buffer for `entry` (waiting only when none is free: record reads) and
    /// batches its read: of the own slab when `entry.read.peer < 0` (its slot pinned by `load`),
    /// else of that peer's.
    private func submitRead(_ entry: PendingReads.Entry) {
        let read = entry.read, own = read.peer < 0
        let stage = takeStage(for: read.slot)
        stageOp[Int(stage)] = own ? DiskTier.read : DiskTier.peerRead
        stageSlot[Int(stage)] = read.slot
        stageTarget[Int(stage)] = entry.target
        stagePeer[Int(stage)] = read
        if !own { peerReadsInFlight[Int(read.peer)] += 1 }
        if entry.target.record < 0 { readRate.submitted(now: monotonicNanoseconds()) }
        let offset = own ? kvm_slab_offset(slab, UInt32(read.slot)) : UInt64(read.slot) * UInt64(slotBytes)
        queue(kvm_io_req(tag: UInt64(stage), buf: stageBuffer(stage), offset: offset,
                         len: UInt32(slotBytes), op: UInt16(KVM_IO_READ), file: UInt16(read.peer + 1), buf_index: 0))
    }

    /// Takes back the queued (not yet submitted) reads for which `cancel` returns true: called
    /// once per queued read, oldest first, with its target; when it returns true it has undone
    /// its own side of the read (the memory block's loading count), and the tier unpins the
    /// slot the read held (own reads). Nothing of a cancelled read lands. Returns how many.
    /// Cost: O(queued reads).
    @discardableResult
    func cancelPendingReads(where cancel: (LoadTarget) -> Bool) -> Int {
        pendingReads.remove { entry in
            guard cancel(entry.target) else { return false }
            if entry.read.peer < 0 { unpin(entry.read.slot) }
            return true
        }
    }

    /// Reads queued for a staging buffer (`load`), not submitted yet. Tests: read by the tests only.
    var pendingReadCount: Int { pendingReads.count }

    /// Block `hash` in the first peer whose index holds it, or nil (at once without peers: the
    /// one check a create's own-tier miss makes). The first call of a lookup (`refreshed`
    /// false) brings every peer's index up to date first (`PeerTier.refresh`: one `fstat` each,
    /// and the journal records appended since; a peer whose slab was replaced is opened anew
    /// once none of its reads is in flight, `PeerTier.reopen`, and its new slab replaces the old
    /// one in the I/O queue's file table) and sets `refreshed`. A peer holding `hash` under
    /// another fingerprint is passed over (`PeerTier.find`: `fingerprint(peer, key)` is the
    /// prompt's fingerprint under peer `peer`'s key). O(peers), plus the fingerprints asked.
    func findInPeers(_ hash: UInt64, refreshed: inout Bool, fingerprint: (Int, BlockFingerprint) -> UInt64) -> PeerRead? {
        guard !peers.isEmpty else { return nil }
        if !refreshed {
            for (i, peer) in peers.enumerated() {
                peer.refresh()
                if peer.replaced && peerReadsInFlight[i] == 0 {
                    peer.reopen { fd in kvm_io_replace_file(io, UInt32(i + 1), fd) == 0 }
                    peer.refresh()
                }
            }
            refreshed = true
        }
        for (i, peer) in peers.enumerated() {
            if let read = peer.find(hash, peer: Int32(i), fingerprint: { fingerprint(i, $0) }) { return read }
        }
        return nil
    }

    // MARK: staging buffers

    /// A free staging buffer for a request on `slot` (`StagingBuffers.take`: the next after the
    /// previous request's when `slot` follows its slot, else the lowest), waiting for completions
    /// under the engine's lock while none is (writes and record reads only: block reads queue
    /// instead, `load`). O(stages / 64), plus the waits.
    private func takeStage(for slot: Int32) -> Int32 {
        while true {
            if let stage = staging.take(for: slot) { return stage }
            reap(waitFor: 1)
        }
    }

    /// Staging buffers in all.
    var stagingBuffers: Int { stages }

    /// True when a staging buffer is free now: a write (a swap-out's first block) takes one
    /// without waiting for the device (`takeStage`). O(1).
    var hasFreeStage: Bool { staging.freeCount > 0 }

    /// Staging buffers a bulk transfer may take now without waiting: those free beyond
    /// `reservedStages` and beyond the reads queued for one (`pendingReads`, which go first)
    /// (0 or less: none; it leaves the rest to a later call, or waits without the engine's
    /// lock). O(1).
    var bulkStages: Int { staging.freeCount - reservedStages - pendingReads.count }

    /// Staging buffers pending swap-outs may take now (`SwapOutQueue`): `bulkStages`, except
    /// while a trim is spilling (`trimsSpilling > 0`). Then they leave free the buffers still
    /// owed to spills: half the bulk area (`stages - reservedStages`) less the spill writes in
    /// flight. A trim waits for buffers without the engine's lock, and every call that
    /// processes completions hands the buffers they freed to pending swap-outs first
    /// (`SwapOutQueue.settle`) before the trim looks; without the share the trim would wait for
    /// as long as swap-outs keep blocks unsubmitted (a stream of them: indefinitely). With it,
    /// the buffers each completion frees go to the trim up to its half, the rest to the
    /// swap-outs, so both hold about half the bulk area in flight while both want buffers
    /// (the trim takes whatever is free when it looks, so it may hold more while the swap-outs
    /// have nothing left to submit). O(1).
    var swapOutStages: Int {
        guard trimsSpilling > 0 else { return bulkStages }
        return bulkStages - max(0, (stages - reservedStages) / 2 - spillWritesInFlight)
    }

    /// Trims spilling now (`Engine.spillCachedBlocks`: counted from its start to its return,
    /// its waits without the lock included), to which `swapOutStages` leaves a share.
    var trimsSpilling = 0

    /// Spill writes (trims' and allocations') submitted whose completion was not processed yet.
    private(set) var spillWritesInFlight = 0

    /// How fast block reads drain lately (`readIsFaster`).
    private var readRate = ReadRate()

    /// A create reads its prefix's disk blocks regardless of the estimate when no block read
    /// ran for this long, so that an estimate from a busy moment is measured again: 1 s.
    static let readProbeNanoseconds: UInt64 = 1_000_000_000

    /// Whether reading `blocks` more blocks of `tokensPerBlock` tokens is expected to make
    /// them resident sooner than a prefill of `prefillTokensPerSecond` (> 0) computes them:
    /// (block reads queued or in flight + `blocks`) slots at the recent read rate
    /// (`ReadRate`), against the tokens at the prefill's rate. True while no rate is known
    /// and when no block read ran for `readProbeNanoseconds` (a probe). O(1).
    func readIsFaster(blocks: Int, tokensPerBlock: Int, prefillTokensPerSecond: Double) -> Bool {
        guard let rate = readRate.bytesPerSecond,
              let idle = readRate.idleNanoseconds(now: monotonicNanoseconds()),
              idle < DiskTier.readProbeNanoseconds else { return true }
        let readSeconds = Double((readRate.inFlight + pendingReads.count + blocks) * slotBytes) / rate
        return readSeconds <= Double(blocks * tokensPerBlock) / prefillTokensPerSecond
    }

    // MARK: submission

    /// Adds a request to the batch; a full batch (a quarter of the depth) is submitted at once.
    private func queue(_ request: kvm_io_req) {
        batch[batchCount] = request
        batchCount += 1
        if batchCount * 4 >= stages { flush() }
    }

    /// Submits every batched request with one system call. A request the queue refuses
    /// completes at once with the error (its write or read fails the usual way).
    /// Requests for adjacent slots from adjacent staging buffers merge into one request of up
    /// to `mergeBytes` (a tag then names the first buffer and the count: `first | count << 32`).
    func flush() {
        guard batchCount > 0 else { return }
        var n = 0
        for i in 0..<batchCount {
            let r = batch[i]
            if n > 0 {
                let last = batch[n - 1]
                if last.op == r.op && last.file == r.file && last.offset + UInt64(last.len) == r.offset && last.buf! + Int(last.len) == r.buf!
                    && Int(last.len) + Int(r.len) <= mergeBytes {
                    batch[n - 1].len += r.len
                    batch[n - 1].tag += 1 << 32
                    continue
                }
            }
            batch[n] = r
            batch[n].tag = r.tag | 1 << 32
            n += 1
        }
        batchCount = 0
        stats.requestsSubmitted += UInt64(n)
        let accepted = Int(max(0, kvm_io_submit(io, batch, UInt32(n))))
        if accepted < n {
            lastFailure = "offload: submitting I/O failed: \(kvmMessage())"
            for i in accepted..<n { completeRequest(tag: batch[i].tag, result: -Int64(EIO)) }
            flushJournal()
        }
    }

    /// Completes every slot of a (possibly merged) request: all succeed or all fail.
    private func completeRequest(tag: UInt64, result: Int64) {
        let first = Int32(truncatingIfNeeded: tag & 0xFFFF_FFFF), count = Int(tag >> 32)
        let ok = result == Int64(count * slotBytes)
        for i in 0..<count {
            complete(stage: first + Int32(i), result: ok ? Int64(slotBytes) : (result < 0 ? result : -Int64(EIO)))
        }
    }

    // MARK: completions

    /// Processes completed requests, the reads `reapWrites` deferred first: waits until at
    /// least `waitFor` (capped at those in flight) completed, or `timeoutMicroseconds` passed
    /// (negative: no limit); never waits when it processed deferred reads. Returns how many.
    /// Submits queued reads (`pendingReads`, oldest first) into the buffers free before and
    /// after, so while any is queued a request is in flight (a buffer is taken only by one).
    @discardableResult
    func reap(waitFor: Int = 0, timeoutMicroseconds: Int64 = -1) -> Int {
        submitPendingReads()
        flush()
        let deferred = deferredReadCount
        for i in 0..<deferred { completeRequest(tag: deferredReads[i].tag, result: deferredReads[i].result) }
        deferredReadCount = 0
        let n = Int(max(0, kvm_io_reap(io, done, UInt32(stages), UInt32(deferred > 0 ? 0 : waitFor), timeoutMicroseconds)))
        guard n + deferred > 0 else { return 0 }
        for i in 0..<n { completeRequest(tag: done[i].tag, result: done[i].result) }
        // The buffers just freed go to queued reads first (oldest first), before pending
        // swap-outs' blocks (`SwapOutQueue.settle`, after this) or spills.
        submitPendingReads()
        flush()
        flushJournal()
        onCompletions?(n + deferred)
        return n + deferred
    }

    /// For an allocation's spill that finds no staging buffer free beyond the reserve: takes
    /// the requests completed on the device without waiting and processes the writes among
    /// them, whose buffers are free at once; the reads are kept for the next `reap`
    /// (`deferredReads`). Safe in the middle of an allocation: a write's completion changes
    /// only the tier (its slot becomes stored, or, failed, leaves the index and is freed unless
    /// pinned), and every slot a call holds across an allocation is pinned (a create's prefix,
    /// `Engine.tieredPrefix`; swapped-out sequences'; records). Submits nothing (a request the
    /// queue refused would complete at once, reads included). O(completions); on io_uring no
    /// system call.
    private func reapWrites() {
        let n = Int(max(0, kvm_io_reap(io, done, UInt32(stages), 0, 0)))
        var writes = 0
        for i in 0..<n {
            let op = stageOp[Int(done[i].tag & 0xFFFF_FFFF)]
            if op == DiskTier.read || op == DiskTier.peerRead {
                deferredReads[deferredReadCount] = done[i]
                deferredReadCount += 1
            } else {
                completeRequest(tag: done[i].tag, result: done[i].result)
                writes += 1
            }
        }
        guard writes > 0 else { return }
        flushJournal()
        onCompletions?(writes)
    }

    /// Tests: completions the device posted that nothing has taken yet.
    var readyCompletions: Int { Int(kvm_io_ready(io)) }

    // MARK: waiting without the engine's lock

    /// Called (under the engine's lock) after every reap that processed requests, with how
    /// many: lets the engine wake the calls that wait for completions without its lock.
    var onCompletions: ((Int) -> Void)?

    /// Waits until a completion can be reaped, `wake` is called, or `timeoutMicroseconds`
    /// passes (negative: no limit); reaps nothing. The one call that may run without the
    /// engine's lock (one thread at a time), beside other threads' calls. False: timed out.
    func waitForCompletion(timeoutMicroseconds: Int64) -> Bool { kvm_io_wait(io, timeoutMicroseconds) != 0 }

    /// Ends the `waitForCompletion` in progress (or the next one) at once. Any thread.
    func wake() { kvm_io_wake(io) }

    /// Tests: holds (or releases) every request of the thread backend in flight. False on
    /// io_uring, which cannot hold requests. Any thread (the backend has its own lock).
    func pauseIO(_ paused: Bool) -> Bool { kvm_io_pause(io, paused ? 1 : 0) == 0 }

    /// Tests: the next `count` hand-overs of requests to the kernel fail as a short-of-memory
    /// io_uring_enter does, leaving them in the ring (`kvm_io_fail_submits`). False on the
    /// thread backend. Under the engine's lock.
    func failSubmits(_ count: UInt32) -> Bool { kvm_io_fail_submits(io, count) == 0 }

    /// Tests: slots pinned (by swapped-out sequences, offloaded-token records or pending reads),
    /// and stored slots without a block hash (a sequence's own, freed with its last pin).
    var pinnedAndUnhashedSlots: (pinned: Int, unhashed: Int) {
        var pinned = 0, unhashed = 0
        for s in 0..<capacity {
            if pins[s] > 0 { pinned += 1 }
            if state[s] == DiskTier.stored && hashes[s] == 0 { unhashed += 1 }
        }
        return (pinned, unhashed)
    }

    /// Tests: the block hashes `lookup` finds (every hash's first slot), and how many hashes
    /// the index holds (equal to the set's size: nothing else is in it).
    /// O(capacity); allocates.
    var findableHashes: (hashes: Set<UInt64>, indexed: Int) {
        var found = Set<UInt64>()
        for s in 0..<capacity where state[s] != DiskTier.free && hashes[s] != 0 && index.first(hashes[s]) == Int32(s) {
            found.insert(hashes[s])
        }
        return (found, index.hashCount)
    }

    /// True while `slot`'s write is in flight.
    func isWriting(_ slot: Int32) -> Bool { state[Int(slot)] == DiskTier.writing }

    private func complete(stage: Int32, result: Int64) {
        let op = stageOp[Int(stage)]
        let slot = stageSlot[Int(stage)]
        let s = Int(slot)
        let ok = result == Int64(slotBytes)
        // Formatted only for a failure's message: a completion that succeeds allocates nothing.
        func reason() -> String { result < 0 ? String(cString: strerror(Int32(-result))) : "short transfer of \(result) of \(slotBytes) bytes" }
        stageOp[Int(stage)] = DiskTier.idle
        staging.release(stage)
        if op == DiskTier.spillWrite { spillWritesInFlight -= 1 }
        if op == DiskTier.peerRead { peerReadsInFlight[Int(stagePeer[Int(stage)].peer)] -= 1 }
        if (op == DiskTier.read || op == DiskTier.peerRead) && stageTarget[Int(stage)].record < 0 {
            readRate.completed(slotBytes, now: monotonicNanoseconds())
        }
        switch op {
        case DiskTier.spillWrite, DiskTier.pinnedWrite:
            guard state[s] == DiskTier.writing && writingStage[s] == stage else { return }
            if ok {
                if let failed = writeFailureGeneration, generations[s] > failed { writeFailureGeneration = nil }
                stats.bytesWritten += UInt64(slotBytes)
                state[s] = DiskTier.stored
                stats.storedSlots += 1
                if hashes[s] != 0 {
                    if pins[s] == 0 { lru.append(slot) }
                    journal.stored(slot)
                    if journal.isBatchFull { flushJournal() }
                } else if pins[s] == 0 {
                    release(slot)  // a sequence's own slot, already read back or discarded
                }
            } else {
                lastFailure = "offload write of slot \(s) failed: \(reason())"
                writeFailureGeneration = generation
                if op == DiskTier.spillWrite {
                    stats.spillsFailed += 1
                    stats.spillWritesFailed += 1
                } else {
                    stats.writesFailed += 1
                }
                // A record something still pins stays counted (`tokenRecords`, `tokensOnDisk`)
                // until the failure is processed (`releaseFailedRecord`); any other leaves the
                // counters when `markBroken` frees it.
                let isRecord = recordTokens[s] > 0
                if hashes[s] != 0 { unindex(slot) }
                // A failed write's slot is given up once nothing refers to it; generation 0
                // marks it so that the swap-out waiting on it sees the failure.
                state[s] = DiskTier.stored
                stats.storedSlots += 1
                generations[s] = 0
                markBroken(slot)
                if isRecord && pins[s] > 0 { memory.recordWriteFailed(slot) }
            }
        case DiskTier.read, DiskTier.peerRead:
            // One path for both: verified against what the index said (the own tier's arrays,
            // or the peer's journal record captured at lookup), copied into memory only then.
            let target = stageTarget[Int(stage)], fromPeer = op == DiskTier.peerRead
            let expected = fromPeer ? stagePeer[Int(stage)]
                : PeerRead(peer: -1, slot: slot, hash: hashes[s], parent: parents[s], generation: generations[s], checksum: checksums[s])
            let valid = ok && verified(stage, slot: slot, hash: expected.hash, generation: expected.generation, checksum: expected.checksum)
                && (fromPeer || state[s] == DiskTier.stored)
            if !ok {
                lastFailure = (fromPeer ? "read of slot \(s) of peer '\(peers[Int(expected.peer)].dir)'" : "offload read of slot \(s)")
                    + " failed: \(reason())"
            }
            if valid { memory.scatter(target, from: payload(stage)) }
            if fromPeer {
                // Not ours to free or pin: a refused read only leaves the peer's index.
                if valid {
                    stats.peerHits += 1
                    stats.peerHitTokens += UInt64(target.tokens)
                } else {
                    stats.peerStale += 1
                    peers[Int(expected.peer)].forget(expected)
                }
            } else if valid {
                stats.blocksLoaded += 1
            } else {
                stats.loadsFailed += 1
                // Bytes found bad (the transfer completed, the check failed) leave the tier. A
                // failed transfer (an I/O error, a short read, a refused submission) says
                // nothing about the bytes: the slot leaves the tier only when this read alone
                // held it; one a swapped-out sequence, an offloaded-token record or another
                // read still pins stays as it is, for that holder's own read to verify (it
                // was given up, and a healthy swapped-out sequence spoiled with it, before).
                if ok || pins[s] == 1 {
                    if hashes[s] != 0 {
                        unindex(slot)
                        hashes[s] = 0
                    }
                    markBroken(slot)
                }
            }
            memory.loadFinished(target, ok: valid)
            if !fromPeer { unpin(slot) }  // the read's pin
        default:
            preconditionFailure("completion for an idle staging buffer")
        }
    }

    /// True when the slot read into `stage` holds what was expected: header, generation and
    /// payload checksum (`kvm_slot_verify`); else `lastFailure` says why. Counts the bytes read.
    private func verified(_ stage: Int32, slot: Int32, hash: UInt64, generation: UInt64, checksum: UInt64) -> Bool {
        stats.bytesRead += UInt64(slotBytes)
        guard kvm_slot_verify(stageBuffer(stage), UInt32(slot), hash, generation, checksum, UInt32(payloadBytes)) == 0 else {
            lastFailure = kvmMessage()
            return false
        }
        return true
    }

    /// A slot whose bytes are known bad: freed when its last pin goes (hash 0 slots are freed
    /// on unpin). A pinned one (a swapped-out sequence's) is journaled FREED at once, so that a
    /// restart before that unpin does not find, and announce, a block known corrupt.
    private func markBroken(_ slot: Int32) {
        hashes[Int(slot)] = 0
        lru.remove(slot)
        guard state[Int(slot)] == DiskTier.stored else { return }
        if pins[Int(slot)] == 0 {
            release(slot)
        } else {
            journal.freed(slot)
            if journal.isBatchFull { flushJournal() }
        }
    }

    /// True when `slot`'s write completed and nothing has found its bytes bad.
    func isDurable(_ slot: Int32) -> Bool { state[Int(slot)] == DiskTier.stored && generations[Int(slot)] != 0 }

    /// Waits for every request in flight and processes it.
    func drain() {
        reap()  // the deferred reads, if any
        while kvm_io_inflight(io) > 0 { reap(waitFor: 1) }
    }

    /// Drops hashed stored slot `slot` from the tier (LRU eviction).
    private func drop(_ slot: Int32) {
        let s = Int(slot)
        lru.remove(slot)
        unindex(slot)
        hashes[s] = 0
        release(slot)
    }

    /// Takes hashed `slot` out of the index, announcing `blockRemoved` when it was the last
    /// slot of its hash (the events describe a set of hashes). O(1) expected.
    private func unindex(_ slot: Int32) {
        let s = Int(slot)
        if index.remove(hashes[s], slot) {
            events.push(KVEvent(kind: .blockRemoved, tier: KVEvent.diskTier, blockHash: hashes[s], parentHash: parents[s]))
        }
    }

    /// Returns a stored, unpinned, unindexed slot to the free list.
    private func release(_ slot: Int32) {
        let s = Int(slot)
        precondition(pins[s] == 0 && state[s] == DiskTier.stored)
        state[s] = DiskTier.free
        hashes[s] = 0
        forgetRecord(slot)
        journal.freed(slot)
        stats.storedSlots -= 1
        pushFree(slot)
        if journal.isBatchFull { flushJournal() }
    }

    // MARK: journal

    /// Appends the records the journal owes (`TierJournal.flush`), giving the slots whose
    /// FREED records it appended back to `freeSlots`. A failed append loses
    /// none: it is counted (`journalAppendsFailed`, `lastFailure`) and the next flush (the
    /// next call that processes completions, or `sync`) tries them again; meanwhile the blocks
    /// are served in this run, a restart would not find those not journaled yet, and the
    /// slots owing FREED records stay in `waitingSlots`, not rewritten.
    private func flushJournal() {
        let owed = journal.owedCount
        guard owed > 0 else { return }
        let appended = journal.flush()
        if waitingCount > 0 && journal.owedCount < owed { giveBackWaitingSlots() }
        guard appended else {
            stats.journalAppendsFailed = journal.appendsFailed
            lastFailure = journal.lastError
            return
        }
        guard let (compaction, bytes) = journal.compactIfLong(), compaction != 0 else { return }
        lastFailure = journal.lastError
        if compaction < 0 {  // the old journal stands
            kvm_log("offload journal in '\(dir)' (\(bytes) bytes) was not compacted: \(journal.lastError)")
        }
    }

    /// Starts a `kvc_engine_sync` (`Engine.syncOffload`): drains the requests in flight, appends
    /// the journal records owed and pins the files (`PinnedSync`), whose fdatasyncs then run
    /// without the engine's lock, or, with no descriptor left to pin them, under it
    /// (`PinnedSync.needsTheLock`). Cost: `drain`'s and the flush's, one dup.
    func beginSync() -> PinnedSync {
        drain()
        flushJournal()
        var files = kvm_slab_files()
        kvm_slab_pin_files(slab, &files)
        return PinnedSync(slab: slab, files: files, directoryOwed: journal.directorySyncOwed, renames: journal.renames,
                          unjournaled: journal.owedCount, journalError: journal.lastError)
    }

    /// Ends a `kvc_engine_sync` whose `PinnedSync.sync` ran: throws `io` when its fdatasyncs
    /// failed, when the slab or journal is no longer the file at its path (offload_dir removed
    /// or moved, or a file replaced: `kvm_slab_check_files`, checked after the fdatasyncs), when
    /// the directory's owed fsync failed (tried again by the next sync), or when journal records
    /// could not be appended (a full disk): blocks stored before it would not survive a restart.
    /// The directory's fsync ends `directorySyncOwed` unless a compaction meanwhile owes another.
    func endSync(_ pinned: PinnedSync) throws(KVError) {
        if let failure = pinned.filesFailure { throw KVError(.io, failure) }
        if kvm_slab_check_files(slab) < 0 { throw KVError(.io, kvmMessage()) }
        if pinned.directoryOwed {
            if let failure = pinned.directoryFailure {
                throw KVError(.io, "offload journal: \(failure); its compaction's rename may not survive a "
                    + "power loss, which would bring back the old journal without the blocks stored since; later calls try again")
            }
            journal.directorySynced(renames: pinned.renames)
        }
        guard pinned.unjournaled == 0 else {
            throw KVError(.io, "offload journal: \(pinned.unjournaled) records could not be appended (\(pinned.journalError)); "
                + "the blocks they describe would not be found after a restart; later calls try again")
        }
    }
}
