import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The KV-cache engine: sequences, their K/V memory, the prefix cache and its events.
///
/// Thread safety: every public method may be called from any thread; calls are serialised by
/// one mutex, so calls on distinct sequences from many threads proceed one after another
/// without corrupting anything. The mutex is held for the call's bookkeeping: no K/V copy but
/// the block or page a copy on write needs, and, without a disk tier, no I/O and no waiting.
/// With a disk tier, most waits for the device release it (include/kvcache.h, DISK TIER),
/// except these, which wait with it held: `syncOffload`'s drain of every request (its
/// fdatasyncs of slab and journal run without it, `PinnedSync`); a call that needs a staging
/// buffer when every one is in flight; episodic offload's record writes and reads past the
/// buffers free; a contiguous `fork` or a copy-on-write append before the sequence's own reads
/// landed; a swap-out whose start the tier refuses (it waits for every request in flight);
/// and, with writeback, an eviction, trim or compaction that must take a block being copied
/// (`BlockPool.unindex` spins in `Writeback.awaitCopy` until its copy is done, at most 8
/// blocks' copies).
///
/// Failure atomicity: a method that throws has changed nothing observable — capacity is
/// checked before any state changes, and every other sequence's bytes and the prefix cache
/// stay as they were.
///
/// Prefix caching: the prompt's full blocks are indexed at creation (so a sequence created
/// later may hit them once the server has written their K/V; within one batched forward pass
/// that holds layer by layer, as in vLLM), or, with `indexOnSchedule`, as the server schedules
/// their tokens (`schedule`, Engine+Schedule.swift); every block an append fills is indexed too.
public final class Engine: @unchecked Sendable {
    /// The most blocks one engine indexes (2^24, the block arena's limit): memory_bytes /
    /// (tensors x block bytes) above it is refused.
    public static let maxBlocks = Int(KVM_ARENA_MAX_BLOCKS)
    /// The configuration the engine was created with.
    public let config: EngineConfig
    /// The process that created the engine, and its fork generation then (`kvm_fork_watch`):
    /// where `kvm_fork_generation()` differs, this is a forked child's copy of the parent's
    /// engine (`isInherited`), whose files, ring and threads are the parent's.
    public let creatorPID: pid_t
    /// `kvm_fork_generation()` when the engine was created (`kvm_fork_watch`): a process's
    /// generation differs from it only in a forked child (`isInherited`). Constant.
    public let forkGeneration: UInt32
    /// The number naming this engine's event stream (`drainNumberedEvents`,
    /// `numberedIndexEvents`): a consumer tells a restarted engine's events (numbered from 1
    /// again) from a late or repeated batch of the engine before it, whose epoch is smaller
    /// (`EventEpoch`: the creation time in nanoseconds, increasing). Fixed for the engine's
    /// life. A forked child's inherited engine answers no call (`isInherited`), so it never
    /// speaks under its parent's epoch.
    public let eventEpoch: UInt64
    /// The engine's one lock (`kvm_lock`: a mutex that counts the calls blocked on it, so that
    /// a call working in steps hands it to them between steps, `kvm_lock_yield`).
    let mutex: UnsafeMutablePointer<kvm_lock>
    let blocks: BlockPool
    let sequences: SequenceTable
    let paged: PagedMemory?
    let contiguous: ContiguousMemory?
    /// `paged?.arena` and `contiguous?.ranges`, for the paths every call takes (`locked`'s test
    /// for fresh page groups, `blockKV`, `kv`): reading them costs no retain and release of the
    /// layout's object, as binding `paged` or `contiguous` does.
    let pagedArena: OpaquePointer?
    let contiguousRanges: OpaquePointer?
    /// `kvm_arena_tensor_bytes` of `pagedArena` (0 without): a block's V in a layer is its K
    /// plus this, so `blockKV` computes one address.
    let pagedTensorBytes: Int
    let bt: Int
    /// Per slot: the eviction state of a sequence that observes or compacts (Engine+Compaction.swift),
    /// else nil (its layers all hold `length` tokens at positions 0..<length).
    var evictionStates: [EvictionState?]
    /// The disk tier and swap state; nil without `offload_dir`.
    let offload: OffloadCoordinator?
    /// Committed bytes `reserve` asked for since the last `trim` (the most of its calls; for a
    /// call the OS refused, what was committed when it failed): memory a sequence gives back
    /// stays committed up to this (a free's, as always, and a
    /// compaction's, whose trim keeps it: `releaseBlocks`), so the reservation lasts until
    /// `trim`. 0: no reservation, a compaction's freed pages go back to the OS.
    var reservedBytes: UInt64 = 0
    /// Scratch for one call: disk slots of the prompt's blocks found in the disk tier (-1: found
    /// in a peer's, then `scratchPeer` at the same index says where).
    private let scratchDisk: UnsafeMutablePointer<Int32>
    /// Scratch for one call: the prompt's blocks found in peers' tiers; allocated only with
    /// `peerOffloadDirs`.
    private let scratchPeer: UnsafeMutablePointer<PeerRead>?
    /// Scratch for one call: the prompt's block hashes and their fingerprints (0s for a prompt
    /// given by hashes).
    private let scratchHashes: UnsafeMutablePointer<UInt64>
    private let scratchFingerprints: UnsafeMutablePointer<UInt64>
    /// Scratch for one call, `maxBlocks` block ids: a prompt's hit blocks while a sequence is
    /// created (-1 where a block is read from disk), or the fresh blocks an append takes, all
    /// of them before it changes anything.
    private let scratchBlocks: UnsafeMutablePointer<Int32>
    /// Scratch for one call: the fresh blocks `makeWritable` takes for its copies, all of them
    /// before it changes anything (an append's own are in `scratchBlocks` meanwhile).
    let scratchCopies: UnsafeMutablePointer<Int32>
    /// The private keyed fingerprint every cached block is checked against before a prompt
    /// shares it (`BlockPool.lookup`, `DiskTier.lookup`; peers' blocks under their own keys,
    /// `PeerTier.find`): the disk tier's directory key, else a random one per engine.
    let fingerprint: BlockFingerprint
    /// Scratch for one lookup, with peers: per peer, how many blocks of the prompt's
    /// fingerprint chain under that peer's key were computed and the last one (`peerFingerprint`).
    private let scratchPeerChains: UnsafeMutablePointer<(blocks: Int, last: UInt64)>?
    private var prefixQueryTokens: UInt64 = 0
    private var prefixHitTokens: UInt64 = 0
    private var sequencesCreated: UInt64 = 0

    /// Creates an engine; throws `invalidArgument` for a bad config, `outOfMemory` when the
    /// address space or mapping limit cannot fit it. Allocates all metadata up front; maps
    /// episodic offload's open-record buffers only for an episodic policy (`reserveOpenRecords`).
    /// Events: the first is one `allCleared` of the memory tier (its index starts empty, and a
    /// router that missed the restart of the instance must forget what the previous engine
    /// announced); with a disk tier, the tier's own reset and found blocks follow
    /// (`KVEvent.diskTier`). The queue holds these beside its usual capacity, so none is
    /// dropped before the first `drainEvents`.
    public init(_ config: EngineConfig) throws(KVError) {
        try config.validate()
        self.config = config
        creatorPID = getpid()
        eventEpoch = EventEpoch.next()
        forkGeneration = kvm_fork_watch()
        bt = config.blockTokens
        let maxBlocks = (config.maxSeqTokens + bt - 1) / bt
        guard config.maxSeqs * maxBlocks <= 1 << 28 else {
            throw .invalid("max_seqs x max_seq_tokens / block_tokens = \(config.maxSeqs * maxBlocks) block-table entries, over 2^28: lower max_seqs or max_seq_tokens, or raise block_tokens")
        }
        let budgetBlocks = config.memoryBytes / UInt64(config.blockBytesAllTensors)
        guard budgetBlocks <= UInt64(Engine.maxBlocks) else {
            throw .invalid("memory_bytes \(config.memoryBytes) holds \(budgetBlocks) blocks of \(config.blockBytesAllTensors) bytes, more than the \(Engine.maxBlocks) an engine indexes: raise block_tokens or lower memory_bytes")
        }
        switch (config.layout, config.metadataOnly) {
        case (_, true):
            guard budgetBlocks > 0 else { throw .invalid("memory_bytes \(config.memoryBytes) holds no block of \(config.blockBytesAllTensors) bytes") }
            paged = nil
            contiguous = nil
            blocks = try BlockPool(capacity: Int(budgetBlocks), arena: nil, eventCapacity: config.eventCapacity, eventRoom: 1)
        case (.paged, false):
            let memory = try PagedMemory(config)
            paged = memory
            contiguous = nil
            blocks = try BlockPool(capacity: memory.blocks, arena: memory.arena, eventCapacity: config.eventCapacity, eventRoom: 1)
        case (.contiguous, false):
            // The blocks of what the pool holds (memory_bytes rounded down to whole page groups
            // of every tensor), plus room for every sequence's partial block.
            let heldPerTensor = config.memoryBytes / UInt64(config.tensors) / config.pageBytes * config.pageBytes
            let logical = Int(heldPerTensor / UInt64(config.blockBytes)) + config.maxSeqs
            let memory = try ContiguousMemory(config, logicalBlocks: logical)
            paged = nil
            contiguous = memory
            blocks = try BlockPool(capacity: logical, arena: nil, eventCapacity: config.eventCapacity, eventRoom: 1)
            blocks.listener = memory
            memory.evictCached = { [unowned blocks] in blocks.evictOldest(ancestorsFirst: true) }
        }
        // The memory tier's first event, before the disk tier's (`DiskTier.recover`): a router
        // still holding what this instance's previous engine announced, restart unnoticed,
        // empties its memory view of it. The queue holds it in the room beside its usual
        // capacity (`eventRoom: 1` above), given back by the first drain that leaves at most
        // that capacity pending.
        blocks.events.push(KVEvent(kind: .allCleared, tier: KVEvent.memoryTier, blockHash: 0, parentHash: 0))
        pagedArena = paged?.arena
        pagedTensorBytes = paged.map { Int(kvm_arena_tensor_bytes($0.arena)) } ?? 0
        contiguousRanges = contiguous?.ranges
        sequences = try SequenceTable(maxSeqs: config.maxSeqs, maxBlocks: maxBlocks, blockTokens: bt)
        evictionStates = [EvictionState?](repeating: nil, count: config.maxSeqs)
        // A throwing initializer runs no `deinit` until `self` is whole (after `mutex`), so the
        // buffers allocated before are freed with `a` if a step throws before.
        let a = CheckedAllocations()
        let scratch = "the per-call scratch of max_seq_tokens / block_tokens = \(maxBlocks) blocks"
        scratchHashes = try a.allocate(count: maxBlocks, scratch)
        scratchFingerprints = try a.allocate(count: maxBlocks, scratch)
        scratchBlocks = try a.allocate(count: maxBlocks, scratch)
        scratchDisk = try a.allocate(count: maxBlocks, scratch)
        scratchCopies = try a.allocate(count: maxBlocks, scratch)
        scratchPeer = config.peerOffloadDirs.isEmpty ? nil : try a.allocate(count: maxBlocks, scratch)
        scratchPeerChains = config.peerOffloadDirs.isEmpty ? nil : try a.allocate(count: config.peerOffloadDirs.count, scratch)
        offload = config.hasDiskTier
            ? try OffloadCoordinator(config, blocks: blocks, sequences: sequences, paged: paged, contiguous: contiguous) : nil
        fingerprint = offload?.tier.fingerprint ?? .random()
        a.keep()
        mutex = .allocate(capacity: 1)
        kvm_lock_init(mutex)
        offload?.records = self
        offload?.releaseSlot = { [unowned self] slot in self.release(slot) }
        // `self` is whole: a throw runs `deinit`, which closes the tier and frees the rest.
        // After the staging buffers, so that a refusal names what did not fit.
        try reserveOpenRecords(for: config.eviction)
        if config.offloadWriteback { try offload?.startWriteback(mutex: mutex) }
        // Last: only a create that succeeds uses up the once-per-process line.
        if paged != nil { PageFit.logAdvice(config) }
    }

    /// Whether this is a forked child's copy of the engine (see `creatorPID`). One load and
    /// compare.
    @inline(__always) public var isInherited: Bool { kvm_fork_generation() != forkGeneration }

    /// In the creating process: stops the tier's threads, drains its I/O, closes its files and
    /// frees everything. In a forked child (`isInherited`: a child's last reference going,
    /// kvc_engine_destroy there) the disk tier's coordinator is never released: its tier's
    /// drain would use the parent's io_uring ring and its close append to the parent's journal,
    /// the write-back thread is not in the child, and destroying condition variables that
    /// parent threads waited on at the fork would wait for them forever. The tier's own
    /// descriptors were closed at the fork (kvm_fork_close_add); the memory, which the
    /// coordinator keeps, is unmapped here and its memory file closed (not cut: the pages are
    /// the parent's, `kvm_pool_destroy`). Cost in a child: the unmaps and closes.
    deinit {
        if let offload, isInherited {
            _ = Unmanaged.passRetained(offload)
            paged?.unmap()
            contiguous?.unmap()
        } else {
            offload?.stopWriteback()
            offload?.close()
        }
        kvm_lock_destroy(mutex)
        mutex.deallocate()
        scratchHashes.deallocate()
        scratchFingerprints.deallocate()
        scratchBlocks.deallocate()
        scratchDisk.deallocate()
        scratchCopies.deallocate()
        scratchPeer?.deallocate()
        scratchPeerChains?.deallocate()
    }

    /// Runs `body` under the engine lock. Page groups the paged layout took meanwhile are
    /// faulted in after `body`, with the lock released (`PagedMemory.prefaultFresh`).
    @inline(__always) func locked<T>(_ body: () throws(KVError) -> T) throws(KVError) -> T {
        kvm_lock_acquire(mutex)
        defer {
            if let pagedArena, kvm_arena_fresh_count(pagedArena) > 0 { paged!.prefaultFresh(unlocking: mutex) } else { kvm_lock_release(mutex) }
        }
        return try body()
    }

    @inline(__always) func slot(_ seq: UInt64) throws(KVError) -> Int {
        let s = sequences.slot(of: seq)
        if s < 0 { throw .notFound("sequence \(seq) does not exist") }
        return s
    }

    // MARK: sequences

    /// Creates sequence `seq` holding `tokens` (at least one, at most `maxSeqTokens`). Returns
    /// how many leading tokens are already cached: the longest indexed full-block prefix,
    /// capped so at least one token remains to compute (a multiple of `blockTokens`, at most
    /// `tokens.count - 1`); the server computes K/V only for the rest. The prompt's other full
    /// blocks are indexed now or, with `indexOnSchedule`, by `schedule`. Blocks are found and
    /// indexed under the chain of `salt` (`BlockHash`; 0: none), as are the blocks appends
    /// fill: a prompt shares blocks only with prompts of the same salt (pass one per LoRA
    /// adapter or per tenant whose K/V must not be shared for equal tokens).
    /// With a disk tier, the lookup looks at each block in memory first, then in the own tier,
    /// then in peers' tiers, and stops at the first block found nowhere (`tieredPrefix`): a
    /// block in memory is shared wherever it lies in the chain, also while a disk read still
    /// fills it; blocks found only on disk are read back asynchronously (`ready` says when),
    /// and the call never waits for the device: reads that find no staging buffer
    /// free are queued, in slot order, behind older queued reads (`DiskTier.load`). With
    /// `EngineConfig.prefillTokensPerSecond` the blocks found only on disk are read only when
    /// the disk is expected to return them sooner than the server computes them
    /// (`DiskTier.readIsFaster`); otherwise the prefix ends at the first of them.
    /// `prefixSources(of:)` says afterwards how many of the returned tokens came from memory,
    /// the own tier and peers (the create stores it: one store).
    /// Throws `exists`, `invalidArgument`, `outOfMemory` (with a disk tier only once no swap-out
    /// is pending: it waits for them first, `lockedAllocating`).
    /// Cost: one hash per prompt token, one index lookup per full block (with a disk tier, one
    /// tier lookup more per block memory misses), one allocation per new block (paged) or a few
    /// mmaps per new page run (contiguous).
    public func createSequence(_ seq: UInt64, tokens: UnsafeBufferPointer<Int32>, salt: UInt64 = 0) throws(KVError) -> Int {
        try createSequence(seq, tokens: tokens, salt: salt, commitTokens: tokens.count).cachedTokens
    }

    /// Chunked admission (vLLM's `get_computed_blocks`, then `allocate_slots` for one chunk):
    /// `createSequence`'s lookup over the whole prompt `tokens`, by the same rule (so the same
    /// `cachedTokens`: at most `tokens.count - 1`, disk blocks read back asynchronously or
    /// declined as there), but the sequence holds only the cached prefix and at most
    /// `commitTokens` (>= 1) prompt tokens after it: `heldTokens` = min(`tokens.count`,
    /// `cachedTokens` + `commitTokens`), always more than `cachedTokens`. Only those are
    /// allocated (the cached blocks are shared) and only the full blocks among them are
    /// indexed (now, or with `indexOnSchedule` by `schedule`), so a prompt longer than the
    /// free memory is admitted when its cached prefix and first chunk fit. The server appends
    /// the rest of the prompt chunk by chunk (`append`, which indexes the blocks it fills but
    /// looks nothing up: blocks of the prompt past the cached prefix are computed); the
    /// sequence continues the prompt's chain, so those blocks are indexed under the same
    /// hashes as if created at once. `commitTokens` >= `tokens.count` is `createSequence`.
    /// `prefixSources(of:)` and the statistics count the lookup over the whole prompt
    /// (`prefixQueryTokens` grows by `tokens.count`). Throws as `createSequence` (capacity
    /// for the held tokens only), and `invalidArgument` for `commitTokens` < 1; a throw
    /// changes nothing. Cost: `createSequence`'s hashing and lookup of the whole prompt, the
    /// allocations of the held tokens only.
    public func createSequence(_ seq: UInt64, tokens: UnsafeBufferPointer<Int32>, salt: UInt64 = 0,
                               commitTokens: Int) throws(KVError) -> (cachedTokens: Int, heldTokens: Int) {
        let n = tokens.count
        try checkPromptLength(n)
        guard commitTokens > 0 else {
            throw .invalid("commit_tokens is \(commitTokens); a sequence holds at least one token past its cached prefix")
        }
        return try lockedAllocating { () throws(KVError) -> (cachedTokens: Int, heldTokens: Int) in
            let (root, rootFingerprint) = chainPrompt(tokens, salt: salt)
            let admitted = try create(seq, tokens: n, commit: commitTokens, full: n / bt, tailKnown: true, root: root,
                                      rootFingerprint: rootFingerprint, prompt: tokens, salt: salt) { tail, held in
                let full = held / bt
                for i in 0..<(held - full * bt) { tail[i] = tokens[full * bt + i] }
            }
            let full = admitted.heldTokens / bt
            if full > 0 {
                sequences.setPrevious(sequences.slot(of: seq), tokens: tokens.baseAddress! + (full - 1) * bt,
                                      parent: full > 1 ? scratchHashes[full - 2] : root,
                                      parentFingerprint: full > 1 ? scratchFingerprints[full - 2] : rootFingerprint)
            }
            return admitted
        }
    }

    /// Creates sequence `seq` of `tokens` tokens whose first full blocks have the chained
    /// hashes `blockHashes` (as `BlockHash.chain` computes; at most `tokens / blockTokens` of
    /// them): for simulators and gateways that know prompts by their block hashes (trace
    /// `hash_ids`), not their tokens. Only those blocks are looked up and indexed (at creation,
    /// or as scheduled); the tokens after them are unknown, so the full blocks they fill are
    /// not indexed, and neither are blocks that appends fill unless every block is given and
    /// `tokens` is a multiple of `blockTokens` (a request re-created after a recompute
    /// preemption gives its prompt's hashes for its prompt and output tokens: its output is
    /// never indexed). Same result and errors as `createSequence(_:tokens:)`, and
    /// `invalidArgument` for more hashes than full blocks or a hash of 0, which the engine
    /// reserves for "no hash" (a zeroed buffer, say): such a chain could never be indexed, and
    /// blocks appended after it would chain from 0 and pass for a prompt's first block.
    /// Its blocks carry no fingerprint (unknown, 0): its lookups take the first block indexed
    /// under each hash in every tier, whatever its fingerprint, so also a block a prompt given
    /// by tokens cached; one way: a prompt given by tokens never takes a block of fingerprint
    /// 0, and such a block is not indexed where its hash already is (`HashChains`).
    /// Cost: also one scan of the hashes.
    public func createSequence(_ seq: UInt64, blockHashes: UnsafeBufferPointer<UInt64>, tokens n: Int) throws(KVError) -> Int {
        try checkPromptLength(n)
        let known = blockHashes.count
        guard known <= n / bt else {
            throw .invalid("\(known) block hashes given for \(n) tokens of \(bt)-token blocks; expected at most \(n / bt)")
        }
        if let zero = blockHashes.firstIndex(of: 0) {
            throw .invalid("block hash \(zero) of sequence \(seq) is 0, which no block hashes to (0 means no hash); pass BlockHash.chain's values")
        }
        return try lockedAllocating { () throws(KVError) -> Int in
            if known > 0 { scratchHashes.update(from: blockHashes.baseAddress!, count: known) }
            scratchFingerprints.update(repeating: 0, count: known)  // unknown: hits go by hash alone
            return try create(seq, tokens: n, commit: n, full: known, tailKnown: known * bt == n, root: 0, rootFingerprint: 0,
                              prompt: nil, salt: 0) { tail, _ in tail.update(repeating: 0, count: n % bt) }.cachedTokens
        }
    }

    /// Under the lock: writes the chained hashes and fingerprints of the full blocks of
    /// `tokens` under `salt` into `scratchHashes` and `scratchFingerprints`, as `create` and
    /// `plan` read them, and returns the chains' roots. Cost: one hash per token for each.
    private func chainPrompt(_ tokens: UnsafeBufferPointer<Int32>, salt: UInt64) -> (root: UInt64, rootFingerprint: UInt64) {
        let full = tokens.count / bt
        BlockHash.chain(tokens, blockTokens: bt, salt: salt, into: UnsafeMutableBufferPointer(start: scratchHashes, count: full))
        fingerprint.chain(tokens, blockTokens: bt, salt: salt, into: UnsafeMutableBufferPointer(start: scratchFingerprints, count: full))
        return (BlockHash.root(salt: salt), fingerprint.root(salt: salt))
    }

    /// The dry run of `createSequence(_:tokens:salt:commitTokens:)` (kvcache.h,
    /// kvc_prefix_admit): whether that create of a new sequence would succeed now and, after
    /// it, `reserveTokens` (>= 0) more tokens could be appended (decode room the scheduler
    /// wants), all else unchanged. It runs the create's own lookup and capacity check (`plan`),
    /// so the answer is exact: `fits` exactly when the create right after (no call between)
    /// succeeds, for `reserveTokens` 0, in both layouts, with or without a disk tier (whose
    /// hits need memory blocks to be read into). Changes nothing: no block or disk slot pinned,
    /// read or made recently used, no statistic, no event, nothing allocated; like the create
    /// (and `cachedPrefixTokens`) it processes completions first, and, like the create, when
    /// the answer is no while swap-outs or freed sequences' reads are pending, it waits for
    /// them without the lock and asks again (`lockedAllocating`). It does not check that a
    /// sequence id is free (`exists`). Throws `invalidArgument` as the create does (prompt
    /// length, `commitTokens` < 1), and for a negative `reserveTokens` or one taking the held
    /// tokens past `maxSeqTokens`. Cost: the create's hashing and lookup of the whole prompt,
    /// one reference read per cached block, contiguous one per page of the held and reserved
    /// tokens; no allocation.
    public func admission(_ tokens: UnsafeBufferPointer<Int32>, salt: UInt64 = 0, commitTokens: Int,
                          reserveTokens: Int = 0) throws(KVError) -> Admission {
        let n = tokens.count
        try checkPromptLength(n)
        guard commitTokens > 0 else {
            throw .invalid("commit_tokens is \(commitTokens); a sequence holds at least one token past its cached prefix")
        }
        guard reserveTokens >= 0 && reserveTokens <= config.maxSeqTokens else {
            throw .invalid("reserve_tokens is \(reserveTokens); at most max_seq_tokens \(config.maxSeqTokens)")
        }
        var answer = Admission(cachedTokens: 0, shortTokens: 0, refusal: nil)
        do throws(KVError) {
            try lockedAllocating { () throws(KVError) in
                _ = chainPrompt(tokens, salt: salt)
                let plan = plan(tokens: n, commit: commitTokens, reserve: reserveTokens, full: n / bt, claim: false,
                                prompt: tokens, salt: salt)
                guard plan.held + reserveTokens <= config.maxSeqTokens else {
                    throw .invalid("\(plan.held) held tokens and reserve_tokens \(reserveTokens) exceed max_seq_tokens \(config.maxSeqTokens)")
                }
                answer = Admission(cachedTokens: plan.cached * bt, shortTokens: plan.shortTokens, refusal: plan.refusal)
                if let refusal = plan.refusal { throw refusal }  // lets `lockedAllocating` wait for pending releases
            }
        } catch {
            guard error.code == .outOfMemory else { throw error }
        }
        return answer
    }

    private func checkPromptLength(_ n: Int) throws(KVError) {
        guard n > 0 else { throw .invalid("a sequence needs at least one prompt token") }
        guard n <= config.maxSeqTokens else { throw .invalid("prompt of \(n) tokens exceeds max_seq_tokens \(config.maxSeqTokens)") }
    }

    /// The body of creation, under the lock: `scratchHashes` holds the hashes of the first
    /// `full` full blocks of an `n`-token prompt (the only ones looked up; indexed where held), chained
    /// from `root` (the salt's, `BlockHash.root`), and `scratchFingerprints` their
    /// fingerprints, chained from `rootFingerprint` (0s: unknown); `prompt` its tokens under
    /// `salt`, when known (peers' fingerprints are computed from them). The sequence holds the
    /// cached prefix and at most `commit` (>= 1) tokens after it (`createSequence(_:tokens:salt:
    /// commitTokens:)`; `n` for all); `fillTail` writes the tokens of the partial last block of
    /// the held tokens (their count given), which are real when `tailKnown` (else appends are
    /// not indexed). Returns the cached and the held tokens.
    private func create(
        _ seq: UInt64, tokens n: Int, commit: Int, full: Int, tailKnown: Bool, root: UInt64, rootFingerprint: UInt64,
        prompt: UnsafeBufferPointer<Int32>?, salt: UInt64, fillTail: (UnsafeMutablePointer<Int32>, Int) -> Void
    ) throws(KVError) -> (cachedTokens: Int, heldTokens: Int) {
        if sequences.slot(of: seq) >= 0 { throw .exists("sequence \(seq) already exists") }
        let plan = plan(tokens: n, commit: commit, reserve: 0, full: full, claim: true, prompt: prompt, salt: salt)
        let (run, cached, fromDisk, fromPeers) = (plan.run, plan.cached, plan.fromDisk, plan.fromPeers)
        defer {  // pinned by tieredPrefix
            if let tier = offload?.tier { for i in run..<cached where scratchBlocks[i] < 0 && scratchDisk[i] >= 0 { tier.unpin(scratchDisk[i]) } }
        }
        if let refusal = plan.refusal { throw refusal }
        let declined = plan.declined * bt  // counted once the create succeeds, like the hit and query tokens
        // The held prompt: the cached prefix and at most `commit` tokens more; its known full
        // blocks (`indexable`) are the ones indexed. Every cached block lies in it.
        let held = plan.held, indexable = min(full, held / bt)
        let total = (held + bt - 1) / bt
        // Per position up to the last memory hit: the block shared there, or -1 (read from disk).
        let extent = plan.extent
        let hitBlocks = UnsafeBufferPointer(start: scratchBlocks, count: extent)
        let slot = sequences.open(seq)
        sequences.indexesAppends[slot] = tailKnown
        let table = sequences.table(slot)
        // Every memory hit is referenced before anything is allocated, which may evict cached blocks.
        for i in 0..<extent where scratchBlocks[i] >= 0 {
            blocks.retain(scratchBlocks[i])
            table[i] = scratchBlocks[i]
        }
        var filled = run  // table[0..<filled] is set, and the memory hits after it
        let committed = committedBytes
        do throws(KVError) {
            try contiguous?.open(slot: slot, hit: hitBlocks, hitTokens: extent * bt, tokens: held)
            while filled < total {
                if filled >= extent || scratchBlocks[filled] < 0 { table[filled] = try blocks.allocate() }
                filled += 1
            }
        } catch {
            // Only a failing system call gets here (capacity was checked): undo and report. The
            // memory hits past `filled` move down, so that the table's first entries are all set.
            var held = filled
            for i in filled..<max(filled, extent) where scratchBlocks[i] >= 0 {
                table[held] = scratchBlocks[i]
                held += 1
            }
            sequences.lengths[slot] = held * bt
            release(slot)
            giveBackCommitted(since: committed)
            throw error
        }
        sequences.lengths[slot] = held
        // Blocks read back from the disk tier hold cached K/V and are indexed now; the prompt's
        // new blocks too, or, indexing on schedule, only prepared for `schedule`. Memory hits
        // are indexed already.
        let indexedNow = config.indexOnSchedule ? cached : indexable
        var parent: UInt64 = run > 0 ? scratchHashes[run - 1] : 0
        for i in run..<indexable {
            if i >= extent || scratchBlocks[i] < 0 {
                if i < indexedNow {
                    index(table[i], hash: scratchHashes[i], parent: parent, fingerprint: scratchFingerprints[i], slot: slot, position: i)
                } else {
                    blocks.prepare(table[i], hash: scratchHashes[i], parent: parent, fingerprint: scratchFingerprints[i])
                }
            }
            parent = scratchHashes[i]
        }
        sequences.unscheduled[slot] = indexedNow..<max(indexedNow, indexable)
        sequences.lastHash[slot] = indexable > 0 ? scratchHashes[indexable - 1] : root
        sequences.lastFingerprint[slot] = indexable > 0 ? scratchFingerprints[indexable - 1] : rootFingerprint
        fillTail(sequences.tail(slot), held)
        if let offload {
            offload.failed[slot] = false
            offload.cachedBlocks[slot] = Int32(cached)
            if contiguous != nil {
                for i in 0..<extent where scratchBlocks[i] >= 0 { offload.sharedWhileLoading(scratchBlocks[i], slot: slot) }
            }
            // In disk-slot order (per file: the own slab, then each peer's), so that reads of
            // adjacent slots merge (`DiskTier.flush`): a prompt's spills take ascending slots in
            // the order they were written, not in chain order (a trim's from its last block down
            // to its first, `release`; an allocation's a few first blocks ahead of each evicted
            // last one, `OffloadCoordinator.spill`).
            if fromDisk > 0 {
                withUnsafeTemporaryAllocation(of: Int32.self, capacity: fromDisk) { buffer in
                    var order = buffer
                    var k = 0
                    for i in run..<cached where scratchBlocks[i] < 0 {
                        order[k] = Int32(i)
                        k += 1
                    }
                    order.sort { readOrder($0) < readOrder($1) }
                    for p in order {
                        let i = Int(p)
                        if scratchDisk[i] >= 0 {
                            offload.load(scratchDisk[i], block: table[i], slot: slot, position: i, tokens: bt)
                        } else {
                            offload.loadPeer(scratchPeer![i], block: table[i], slot: slot, position: i, tokens: bt)
                        }
                    }
                }
            }
            offload.diskHitTokens += UInt64((fromDisk - fromPeers) * bt)
            offload.declinedHitTokens += UInt64(declined)
            offload.tier.flush()  // the reads, and any spills this creation caused, in one submission
        }
        sequences.prefixSources[slot] = PrefixSources(
            memoryTokens: (cached - fromDisk) * bt, diskTokens: (fromDisk - fromPeers) * bt, peerTokens: fromPeers * bt)
        prefixQueryTokens += UInt64(n)
        prefixHitTokens += UInt64(cached * bt)
        sequencesCreated += 1
        return (cached * bt, held)
    }

    /// What `plan` found and decided: `tieredPrefix`'s blocks (`cached`, `run`, `fromDisk`,
    /// `fromPeers`, `declined`), the tokens the create holds (`held`), the memory hits' end
    /// (`extent`: `scratchBlocks[0..<extent]` is the block shared per position, -1 where read
    /// from disk), and, when it does not fit, the refusal and the memory missing in tokens.
    private struct CreatePlan {
        var cached = 0, run = 0, fromDisk = 0, fromPeers = 0, declined = 0, held = 0, extent = 0
        var refusal: KVError?
        var shortTokens = 0
    }

    /// A create's lookup and capacity check, under the lock: the one code `create` and its dry
    /// run (`admission`) share, so that the dry run answers exactly what the create would do now.
    /// `scratchHashes`/`scratchFingerprints` hold the prompt's chain as for `create`; the
    /// sequence would hold the cached prefix and at most `commit` tokens more (`held`), and must
    /// have room for `reserve` tokens beyond them (0 for a create). Refused (`refusal`, nothing
    /// changed but the completions processed) when no sequence slot is free (before any lookup:
    /// `shortTokens` 0), when the blocks of `held + reserve` tokens not shared from memory
    /// exceed the free and evictable blocks less the cached hits the create takes out of that
    /// pool (`revived`: indexed blocks no live sequence holds), or, contiguous, when their
    /// page groups not yet pinned exceed the budget's unpinned ones; `shortTokens` is the
    /// missing memory in tokens (blocks x `blockTokens`, or groups x the tokens a page holds,
    /// rounded up). With `claim` the lookup claims as `create` needs (`tieredPrefix`: disk slots
    /// pinned, for the caller to unpin from `run` to `cached` whether refused or not); without
    /// it only `scratchBlocks` is written. Cost: `tieredPrefix`'s, plus one reference read per
    /// cached block and, contiguous, one per page of the held tokens.
    private func plan(tokens n: Int, commit: Int, reserve: Int, full: Int, claim: Bool,
                      prompt: UnsafeBufferPointer<Int32>?, salt: UInt64) -> CreatePlan {
        var plan = CreatePlan()
        if sequences.isFull {
            plan.refusal = .outOfMemory("all \(config.maxSeqs) sequence slots (max_seqs) are in use")
            return plan
        }
        offload?.processCompletions()  // before the lookup: settled swap-outs release memory
        let found = tieredPrefix(limit: min(full, (n - 1) / bt), keep: claim ? .claims : .memoryHits, prompt: prompt,
                                 salt: salt) { (scratchHashes[$0], scratchFingerprints[$0]) }
        let (run, cached, fromDisk) = (found.run, found.cached, found.fromDisk)
        (plan.cached, plan.run, plan.fromDisk, plan.fromPeers, plan.declined) = (cached, run, fromDisk, found.fromPeers, found.declined)
        plan.held = cached * bt + min(commit, n - cached * bt)
        plan.extent = cached
        while plan.extent > run && scratchBlocks[plan.extent - 1] < 0 { plan.extent -= 1 }
        let tokens = plan.held + reserve
        var revived = 0
        for i in 0..<run where blocks.references(scratchBlocks[i]) == 0 { revived += 1 }
        for i in run..<cached where scratchBlocks[i] >= 0 && blocks.references(scratchBlocks[i]) == 0 { revived += 1 }
        let needBlocks = (tokens + bt - 1) / bt - (cached - fromDisk), freeBlocks = blocks.available - revived
        if needBlocks > freeBlocks {
            plan.refusal = .outOfMemory("prompt needs \(needBlocks) blocks\(reserve > 0 ? " (with \(reserve) tokens reserved)" : ""), \(freeBlocks) are available")
            plan.shortTokens = (needBlocks - freeBlocks) * bt
        } else if let contiguous {
            let need = contiguous.groupsNeeded(hit: UnsafeBufferPointer(start: scratchBlocks, count: plan.extent),
                                               hitTokens: plan.extent * bt, tokens: tokens)
            if !contiguous.fits(need) {
                plan.refusal = .outOfMemory("prompt needs \(need) more pages of \(config.pageBytes) bytes per tensor\(reserve > 0 ? " (with \(reserve) tokens reserved)" : "") than the budget has free")
                let missing = contiguous.pinnedGroups + need - contiguous.groups
                plan.shortTokens = (missing * contiguous.pageBytes + contiguous.tokenBytes - 1) / contiguous.tokenBytes
            }
        }
        return plan
    }

    /// The indexed block of `hash` and `fingerprint` (`BlockPool.lookup`: 0 takes the hash's
    /// first block, whatever its fingerprint) for
    /// block position `position` of a prompt, or -1. Contiguous: a block indexed at another
    /// position is a miss, since its pages are its own position's
    /// (`createSequence(_:blockHashes:tokens:)` takes any hashes; chained ones never move).
    @inline(__always) private func memoryHit(_ hash: UInt64, fingerprint: UInt64, at position: Int) -> Int32 {
        let b = blocks.lookup(hash, fingerprint: fingerprint)
        if b >= 0, let contiguous, !contiguous.holds(b, at: position) { return -1 }
        return b
    }

    /// What `tieredPrefix` keeps of a lookup: nothing (the lookups without creating), the
    /// memory hits per position in `scratchBlocks` (a create's dry run, `plan`), or everything
    /// a create needs, disk slots pinned (`create`).
    private enum PrefixKeep { case nothing, memoryHits, claims }

    /// The prefix lookup rule, the one `create` and the lookups without creating
    /// (`cachedPrefixTokens`, `cachedPrefixBlocks`) share, so that they say what a create
    /// reports. Under the lock, over at most `limit` blocks, `hash(i)` giving block i's chained
    /// hash and fingerprint (called once per block, in order; a fingerprint of 0, unknown,
    /// takes the first block of the hash, whatever its fingerprint), `prompt` the tokens under `salt` when known (peers
    /// check fingerprints under their own keys, `peerFingerprint`; without tokens, by hash
    /// alone): at each block position memory first, else the
    /// own disk tier, else the peers' tiers in order (their indexes refreshed once per call,
    /// when the lookup first reaches them); the first block found nowhere ends the chain
    /// (without a disk tier, the first memory miss). So a block cached in memory is never read
    /// from disk, wherever it lies in the chain, and one a disk read is still filling is shared
    /// too (its sequences are not ready until it landed: `OffloadCoordinator.resident`; the
    /// contiguous layout copies the landing bytes into every sequence holding it,
    /// `OffloadCoordinator.scatter`). With `EngineConfig.prefillTokensPerSecond`, when the disk
    /// is expected to return the blocks found only on disk later than the server computes
    /// them (`DiskTier.readIsFaster`), they are declined: the prefix ends at the first memory
    /// miss (`run`), and `declined` counts them. In every tier a block of the hash whose
    /// fingerprint differs (a collision of the public hash) is passed over for one of the
    /// prompt's fingerprint under the same hash (each tier indexes both, `HashChains`), so no
    /// prompt is served another's K/V and none's hits depend on another's blocks.
    ///
    /// With `keep` `.claims` (a create), it records what it found: per position the memory block in
    /// `scratchBlocks` (-1 when read from disk), the own tier's slot in `scratchDisk`, pinned and
    /// made most recently used, or -1 and the peer's location in `scratchPeer` (not pinned: the
    /// peer's slot is verified when read). Declined slots are unpinned here; the caller unpins
    /// the others once their reads are issued (a read holds its own pin, also while it is
    /// queued for a staging buffer), on every path: until then the creation's own allocations
    /// evict cached blocks, whose spills into a full tier drop its least recently used
    /// unpinned slots and reuse them at once, and a reused slot would serve another block's
    /// bytes as this prefix. Otherwise it changes nothing (no LRU order either); `.memoryHits`
    /// (a dry run, `admission`) fills `scratchBlocks` alone, which `shortfall` reads.
    /// Cost: one memory index lookup per block, one tier lookup per block missing in memory;
    /// with peers, one lookup per peer past the own tier's miss and one journal `fstat` and
    /// `stat` per peer the first time.
    @inline(__always) private func tieredPrefix(
        limit: Int, keep: PrefixKeep, prompt: UnsafeBufferPointer<Int32>?, salt: UInt64, hash: (Int) -> (UInt64, UInt64)
    ) -> (cached: Int, run: Int, fromDisk: Int, fromPeers: Int, declined: Int) {
        let claim = keep == .claims
        var i = 0, run = -1, fromDisk = 0, fromPeers = 0
        var peersRefreshed = false, chainsStarted = false
        while i < limit {
            let (h, f) = hash(i)
            let b = memoryHit(h, fingerprint: f, at: i)
            if keep != .nothing { scratchBlocks[i] = b }
            if b < 0 {
                guard let tier = offload?.tier else { break }
                if run < 0 { run = i }
                let slot = claim ? tier.lookup(h, fingerprint: f) : (tier.contains(h, fingerprint: f) ? 0 : -1)
                if slot >= 0 {
                    if claim {
                        tier.pin(slot)
                        scratchDisk[i] = slot
                    }
                } else {
                    let found = tier.findInPeers(h, refreshed: &peersRefreshed) { peer, key in
                        guard let prompt else { return 0 }
                        if !chainsStarted {
                            for p in 0..<tier.peers.count { scratchPeerChains![p] = (0, 0) }
                            chainsStarted = true
                        }
                        return peerFingerprint(peer, key: key, block: i, of: prompt, salt: salt)
                    }
                    guard let read = found else { break }
                    if claim {
                        scratchDisk[i] = -1
                        scratchPeer![i] = read
                    }
                    fromPeers += 1
                }
                fromDisk += 1
            }
            i += 1
        }
        if run < 0 { run = i }
        if fromDisk > 0, let tier = offload?.tier, config.prefillTokensPerSecond > 0,
           !tier.readIsFaster(blocks: fromDisk, tokensPerBlock: bt, prefillTokensPerSecond: config.prefillTokensPerSecond) {
            if claim { for j in run..<i where scratchBlocks[j] < 0 && scratchDisk[j] >= 0 { tier.unpin(scratchDisk[j]) } }
            return (cached: run, run: run, fromDisk: 0, fromPeers: 0, declined: fromDisk)
        }
        return (cached: i, run: run, fromDisk: fromDisk, fromPeers: fromPeers, declined: 0)
    }

    /// The fingerprint of block `block` of `prompt` under `salt` and peer `peer`'s `key`,
    /// continuing the chain `scratchPeerChains[peer]` holds (started at (0, 0) per lookup;
    /// blocks are asked in order), so a lookup computes each peer's chain once: O(tokens
    /// newly covered).
    private func peerFingerprint(_ peer: Int, key: BlockFingerprint, block: Int, of prompt: UnsafeBufferPointer<Int32>,
                                 salt: UInt64) -> UInt64 {
        var (done, last) = scratchPeerChains![peer]
        if done == 0 { last = key.root(salt: salt) }
        while done <= block {
            last = key.block(parent: last, tokens: UnsafeBufferPointer(rebasing: prompt[done * bt..<(done + 1) * bt]))
            done += 1
        }
        scratchPeerChains![peer] = (done, last)
        return last
    }

    /// Sort key of `tieredPrefix`'s disk block at position `i` for submission: own slots first in slot order,
    /// then each peer's slots in slot order.
    @inline(__always) private func readOrder(_ i: Int32) -> Int64 {
        let slot = scratchDisk[Int(i)]
        if slot >= 0 { return Int64(slot) }
        let read = scratchPeer![Int(i)]
        return Int64(read.peer + 1) << 32 | Int64(read.slot)
    }

    /// Appends `tokens` (may be empty: no-op) to `seq`, indexing every block they fill, after
    /// the prompt's blocks not scheduled yet (`indexOnSchedule`: an append means everything
    /// before it was scheduled). A partly filled block shared with a fork is copied first
    /// (copy on write).
    /// Throws `notFound`, `invalidArgument` (past `maxSeqTokens`; a swapped-out sequence), `io`
    /// (a failed disk read spoiled the sequence, `usableSlot`), `outOfMemory` (nothing appended;
    /// only once no swap-out is pending: it waits for them first, `lockedAllocating`; or a
    /// sequence with token-eviction state cannot grow it, `EvictionState.reserve`).
    /// Cost: O(tokens); a block allocation per `blockTokens` tokens and, contiguous, a mapping
    /// per page crossed. No heap allocation, except that an append taking a sequence with
    /// token-eviction state past its state's capacity (1024, 2048, ... slots) reallocates
    /// the state: O(rows x capacity), amortised (kvcache.h "Memory outside memory_bytes").
    public func append(_ seq: UInt64, tokens: UnsafeBufferPointer<Int32>) throws(KVError) {
        let n = tokens.count
        if n == 0 {
            _ = try locked { () throws(KVError) in try slot(seq) }
            return
        }
        try lockedAllocating { () throws(KVError) in
            try appendLocked(try usableSlot(seq), seq, count: n, tokens: tokens, blockHashes: nil)
        }
    }

    /// Grows `seq` by `tokens` tokens known by the chained hashes of its blocks, as
    /// `createSequence(_:blockHashes:tokens:)` creates one: for simulators and gateways that
    /// know prompts by their block hashes (trace `hash_ids`) and allocate a prompt's blocks
    /// chunk by chunk as a server schedules them (vLLM's `allocate_slots` for a chunk's
    /// `num_new_tokens`), so that a long prompt under chunked prefill holds only the blocks of
    /// its scheduled chunks. `blockHashes` is the sequence's chain from its first block
    /// (`blockHashes[i]` is block i's hash, chained from `blockHashes[i - 1]`), as long as the
    /// caller knows it: every full block the growth completes at a position below
    /// `blockHashes.count` is indexed under its hash (a chain's first block with parent 0, as
    /// at creation), or, with `indexOnSchedule`, prepared for `schedule` as a created prompt's
    /// new blocks are; blocks past the chain are not indexed. The engine does not check the
    /// hashes of blocks it already holds against the chain: pass the one the sequence was
    /// created from. Afterwards appends index the blocks they fill when the sequence ends on a
    /// block boundary with every block's hash given, as after such a creation; otherwise not
    /// (their tokens' predecessors are unknown). Same allocation, copy on write, order
    /// (prompt blocks not scheduled yet are indexed first) and errors as
    /// `append(_:tokens:)`, and `invalidArgument` for a negative count or a hash of 0,
    /// `unsupported` for a sequence with token-eviction state (its positions are not block
    /// positions once compacted). Cost: as `append` for as many tokens, plus a scan of the
    /// hashes.
    public func append(_ seq: UInt64, tokens n: Int, blockHashes: UnsafeBufferPointer<UInt64>) throws(KVError) {
        guard n >= 0 else { throw .invalid("cannot append \(n) tokens to sequence \(seq)") }
        if let zero = blockHashes.firstIndex(of: 0) {
            throw .invalid("block hash \(zero) of sequence \(seq) is 0, which no block hashes to (0 means no hash); pass BlockHash.chain's values")
        }
        if n == 0 {
            _ = try locked { () throws(KVError) in try slot(seq) }
            return
        }
        try lockedAllocating { () throws(KVError) in
            let slot = try usableSlot(seq)
            if evictionStates[slot] != nil {
                throw KVError(.unsupported, "sequence \(seq) has token-eviction state: its positions are not block positions; append its tokens instead")
            }
            try appendLocked(slot, seq, count: n, tokens: nil, blockHashes: blockHashes)
        }
    }

    /// The body of both appends, under the lock: appends `n` tokens to live, usable `slot`
    /// (sequence `seq`), `tokens` (hashed and indexed as they fill blocks, if the sequence
    /// indexes appends), or, without them, unknown tokens whose filled blocks take their hashes
    /// from `blockHashes` (the chain from block 0). Changes nothing when it throws.
    private func appendLocked(_ slot: Int, _ seq: UInt64, count n: Int, tokens: UnsafeBufferPointer<Int32>?,
                              blockHashes: UnsafeBufferPointer<UInt64>?) throws(KVError) {
        var length = sequences.lengths[slot]
        guard n <= config.maxSeqTokens - length else {
            throw .invalid("appending \(n) tokens to sequence \(seq) of \(length) would exceed max_seq_tokens \(config.maxSeqTokens)")
        }
        let table = sequences.table(slot)
        // After a compaction with adaptive budgets a layer may be shorter than the
        // sequence: its appends land in blocks (pages) below `length`, which a fork may
        // share. Those are made the sequence's own first (all of them, before any change),
        // as a partly filled last block is copied on write otherwise.
        let state = evictionStates[slot]
        if let state, n > EvictionState.positionLimit - state.nextPosition {
            throw .invalid("appending \(n) tokens to sequence \(seq) at position \(state.nextPosition) would pass position 2^31 - 1, the last token eviction records")
        }
        // The eviction state grows first (a growth changes no observable state): refused
        // whole when its memory cannot be had.
        try state?.reserve(appending: n)
        let shortest = state?.shortestLength ?? length
        // The block the next token goes in, and the tokens it already holds.
        let next = sequences.blockIndex(length), offset = length - next * bt
        let copyOnWrite = shortest == length && offset != 0 && blocks.references(table[next]) > 1
        let newBlocks = sequences.blocks(holding: length + n) - sequences.blocks(holding: length) + (copyOnWrite ? 1 : 0)
        if newBlocks > 0 && blocks.available < newBlocks {
            throw .outOfMemory("appending \(n) tokens needs \(newBlocks) blocks, \(blocks.available) are available")
        }
        let groups = contiguous?.groupsNeeded(slot: slot, growingTo: length + n) ?? 0
        if let contiguous, !contiguous.fits(groups) {
            throw .outOfMemory("appending \(n) tokens needs \(groups) more pages than the budget has free")
        }
        // The copied block may still be arriving from disk: wait before any change, and
        // refuse when its read failed (a spoiled sequence changes nothing).
        if copyOnWrite { try awaitUsable(slot) }
        // Every new block first, so that a failing system call (capacity was checked: only
        // committing memory can fail) leaves nothing changed: no block half-filled, none
        // indexed for K/V the server will not write. Then the short layers' blocks are made
        // the sequence's own, which changes nothing when it throws, so the new blocks and
        // pages are given back then. (Before, found by helper-119: `makeWritable` ran first,
        // and a failing allocation here left its copies made.)
        var fresh = 0
        // Only a call that takes blocks, pages or copies can commit (a decode step within its
        // block and page takes none: it reads no pool counter).
        let mayCommit = newBlocks > 0 || groups > 0 || shortest < length
        let committed = mayCommit ? committedBytes : 0
        do throws(KVError) {
            while fresh < newBlocks {
                scratchBlocks[fresh] = try blocks.allocate()
                fresh += 1
            }
            try contiguous?.grow(slot: slot, to: length + n)
            if let state, shortest < length {
                try makeWritable(slot: slot, state: state, length: length, appendsFrom: shortest) { _ in }
            }
        } catch {
            for i in 0..<fresh { blocks.release(scratchBlocks[i]) }
            contiguous?.release(slot: slot, past: length)
            contiguous?.releaseUnpinned(slot: slot)
            if mayCommit { giveBackCommitted(since: committed) }
            throw error
        }
        indexScheduled(slot: slot, below: .max)  // appending means the prompt was scheduled
        fresh = 0
        if copyOnWrite {
            let shared = table[next]
            paged?.copy(from: shared, to: scratchBlocks[0], tokens: offset)
            blocks.release(shared)
            table[next] = scratchBlocks[0]
            fresh = 1
        }
        let tail = sequences.tail(slot)
        if let blockHashes {
            // Unknown tokens, block by block: the full blocks they complete take the caller's
            // hashes (prepared for `schedule` when indexing on schedule, as a created prompt's
            // are); the partial last block's tokens are unknown (0).
            let end = length + n
            for i in (length + bt - 1) / bt..<(end + bt - 1) / bt {
                table[i] = scratchBlocks[fresh]
                fresh += 1
            }
            if end % bt != 0 {
                let from = max(length, end / bt * bt) - end / bt * bt
                (tail + from).update(repeating: 0, count: end % bt - from)
            }
            let completed = length / bt..<end / bt, hashed = completed.clamped(to: 0..<blockHashes.count)
            for position in hashed {  // fingerprints unknown (0): the tokens are
                let parent = position > 0 ? blockHashes[position - 1] : 0
                if config.indexOnSchedule {
                    blocks.prepare(table[position], hash: blockHashes[position], parent: parent, fingerprint: 0)
                } else {
                    index(table[position], hash: blockHashes[position], parent: parent, fingerprint: 0, slot: slot, position: position)
                }
            }
            if config.indexOnSchedule && !hashed.isEmpty { sequences.unscheduled[slot] = hashed }
            length = end
            let full = end / bt
            sequences.indexesAppends[slot] = end % bt == 0 && blockHashes.count >= full
            sequences.lastHash[slot] = full > 0 && blockHashes.count >= full ? blockHashes[full - 1] : 0
            sequences.lastFingerprint[slot] = 0
            sequences.previousKnown[slot] = false
        } else if let tokens {
            var position = next, inBlock = offset
            for t in tokens {
                if inBlock == 0 {
                    table[position] = scratchBlocks[fresh]
                    fresh += 1
                }
                tail[inBlock] = t
                inBlock += 1
                if inBlock == bt {
                    if sequences.indexesAppends[slot] {
                        let parent = sequences.lastHash[slot], parentFingerprint = sequences.lastFingerprint[slot]
                        let block = UnsafeBufferPointer(start: tail, count: bt)
                        let hash = BlockHash.block(parent: parent, tokens: block)
                        let blockFingerprint = fingerprint.block(parent: parentFingerprint, tokens: block)
                        // A chain's first block records parent 0, as at creation, its salt's root aside.
                        index(table[position], hash: hash, parent: position == 0 ? 0 : parent, fingerprint: blockFingerprint, slot: slot,
                              position: position)
                        sequences.lastHash[slot] = hash
                        sequences.lastFingerprint[slot] = blockFingerprint
                        sequences.setPrevious(slot, tokens: tail, parent: parent, parentFingerprint: parentFingerprint)
                    }
                    position += 1
                    inBlock = 0
                }
            }
            length += n
        }
        sequences.lengths[slot] = length
        if let state {
            makeRoomForAppend(slot: slot, state: state, n: n)
            state.appendReserved(n)
        }
        offload?.tier.flush()  // spills the appends caused
    }

    /// Indexes a just-filled block (`BlockPool.insert`: beside any block of `hash` and another
    /// fingerprint; not when one of its fingerprint is there, when it is recorded as that one's
    /// duplicate instead, `BlockPool.recordDuplicate`); the contiguous layout makes it hold its
    /// pages. Its parent is the block before it in `slot`'s table, whose fingerprint (indexed or
    /// prepared: every caller indexes a table's blocks in order) is recorded as the parent's, so
    /// walks up the chain follow this sequence's blocks. O(1).
    func index(_ block: Int32, hash: UInt64, parent: UInt64, fingerprint: UInt64, slot: Int, position: Int) {
        let parentFingerprint = position > 0 ? blocks.prepared(sequences.table(slot)[position - 1]).fingerprint : 0
        if blocks.insert(block, hash: hash, parent: parent, fingerprint: fingerprint, parentFingerprint: parentFingerprint) {
            contiguous?.retainPages(block: block, slot: slot, position: position)
        } else {
            blocks.recordDuplicate(block, hash: hash, fingerprint: fingerprint, slot: slot, position: position)
        }
    }

    /// Creates `child` holding all of `parent`'s tokens. Paged: the block table is shared with
    /// reference counts; a partly filled last block is copied by whichever side appends first.
    /// Contiguous: whole pages are mapped shared, the boundary page copied. With a disk tier the
    /// child shares the parent's `ready` verdict: paged, a disk read of the parent's still in
    /// flight that fails fails the child too (contiguous, the fork waits for the parent's
    /// reads, and one that failed refuses the fork); and it inherits the parent's episodically
    /// offloaded tokens (its eviction state keeps them as candidates, its own pins hold their
    /// records: a later `focus` of the child restores them whatever the parent does), at
    /// O(those records) cost; the parent's
    /// open record, if any, is copied into a buffer of the child's, not written (a write only
    /// when every open-record buffer is owned: the least recently appended one's goes out).
    /// Indexing on schedule, the child inherits the parent's unscheduled prompt blocks (shared):
    /// whichever of the two schedules (or appends past) a block first indexes it. The child's
    /// `prefixSources` are its parent's (it made no prompt lookup of its own).
    /// Throws `notFound`, `exists`, `invalidArgument` (a swapped-out parent), `io` (a parent a
    /// failed disk read spoiled, `usableSlot`), `outOfMemory` (also when the child's copy of
    /// the parent's token-eviction state cannot be allocated; then nothing changed; only once
    /// no swap-out is pending: it waits for them first, `lockedAllocating`).
    public func fork(parent: UInt64, child: UInt64) throws(KVError) {
        try lockedAllocating { () throws(KVError) in
            let from = try usableSlot(parent)
            if sequences.slot(of: child) >= 0 { throw .exists("sequence \(child) already exists") }
            if sequences.isFull { throw .outOfMemory("all \(config.maxSeqs) sequence slots (max_seqs) are in use") }
            let length = sequences.lengths[from]
            if let contiguous, !contiguous.fits(contiguous.groupsNeededForFork(tokens: length)) {
                throw .outOfMemory("forking needs a page the budget does not have free")
            }
            if contiguous != nil { try awaitUsable(from) }  // the fork copies the boundary page
            settleRestores(from)  // the child copies the state, whose pending restores may yet be undone
            // The child's eviction state is allocated before any change (filled last, below).
            var childState: EvictionState?
            if let state = evictionStates[from] { childState = try EvictionState(shapeOf: state) }
            let to = sequences.open(child)
            if let contiguous {
                let committed = committedBytes
                do throws(KVError) { try contiguous.fork(parent: from, child: to, tokens: length) } catch {
                    contiguous.close(slot: to)
                    sequences.close(to)
                    giveBackCommitted(since: committed)
                    throw error
                }
            }
            let count = sequences.blockCount(from)
            let source = sequences.table(from), target = sequences.table(to)
            for i in 0..<count {
                blocks.retain(source[i])
                target[i] = source[i]
            }
            sequences.lengths[to] = length
            sequences.copyChain(from: from, to: to)
            sequences.unscheduled[to] = sequences.unscheduled[from]
            sequences.prefixSources[to] = sequences.prefixSources[from]  // the child reports its parent's create
            // The child holds the parent's blocks, so a read of them that fails later fails it
            // too (`loadFinished`); a failed parent is refused (`usableSlot`), and the slot's flag
            // may be left from a previous, freed owner.
            if let offload {
                offload.failed[to] = false
                offload.cachedBlocks[to] = offload.cachedBlocks[from]
            }
            // Before the state copy: taking an open-record buffer may write a record out, and a
            // write the tier refuses drops its tokens from the owner's state.
            inheritOffloadedTokens(from: from, to: to)
            if let childState { childState.copy(from: evictionStates[from]!) }
            evictionStates[to] = childState
            sequencesCreated += 1
        }
    }

    /// Frees `seq`; its indexed blocks stay cached (LRU) until memory is needed. With a disk
    /// tier it waits for a synchronous `swapOut` of it in progress (without the lock), and takes
    /// back its reads still queued for a staging buffer (`OffloadCoordinator.cancelQueuedReads`:
    /// nothing lands in its freed memory, those blocks leave the index); it never waits for the
    /// device. When reads into its memory are still in flight (submitted, or queued for a block
    /// another sequence shares, or episodic record reads), `seq` is gone at once (its id may be
    /// reused, `slot(of:)` no longer finds it, it is not counted in `EngineStats.sequences`)
    /// but its slot keeps its blocks, ranges and state (`SequenceTable.detach`) until they
    /// landed: the first call that processes completions afterwards releases them
    /// (`OffloadCoordinator.processCompletions`), so nothing lands in freed or reused memory
    /// and the memory is counted used until then (an allocation out of memory meanwhile waits
    /// for it without the lock, `lockedAllocating`). A pending `swapOutAsync` of it is cancelled
    /// (`SwapOutQueue.cancel`): the memory is released now, its own disk slots when their
    /// writes complete. A failed asynchronous swap-out not reported yet is forgotten.
    ///
    /// `computedTokens`: the server wrote K/V only below this token (slot) — a request cancelled
    /// or failed before its prefill finished; the prefix `createSequence` reported cached counts
    /// as computed (a smaller value takes those valid blocks out of the index too).
    /// `createSequence` (and appends) indexed its blocks before they were computed, so the
    /// blocks it holds from the one holding that token on leave the prefix index
    /// (`blockRemoved`) instead of staying cached with bytes nobody wrote. Another live
    /// sequence that hit them meanwhile keeps them (it was scheduled to read what this one
    /// would compute: the server must not run it on them either). Ignored
    /// for a swapped-out sequence (it was computed before it was preempted), also while its
    /// asynchronous swap-out is pending. Prompt blocks not
    /// scheduled yet (`indexOnSchedule`) were never indexed and are freed either way.
    /// Throws `notFound` (also on a double free), `invalidArgument` (`computedTokens` beyond the
    /// sequence's length; nothing changed). Cost: O(blocks of seq).
    public func free(_ seq: UInt64, computedTokens: Int? = nil) throws(KVError) {
        try locked { () throws(KVError) in
            let slot = try slotAfterSwapOut(seq)
            if let computed = computedTokens, computed < 0 || computed > sequences.lengths[slot] {
                throw .invalid("computed_tokens \(computed) is beyond the \(sequences.lengths[slot]) tokens of sequence \(seq)")
            }
            var swappedOut = false  // a pending `swapOutAsync` too: swapped out for every caller
            if let offload {
                offload.processCompletions()
                _ = offload.swapOutQueue.takeFailure(slot)
                swappedOut = offload.swapped[slot]
                if offload.swapOutQueue.cancel(slot) { offload.notifyWaiters() }
                if offload.swapped[slot] { return releaseSwapped(slot) }
                offload.cancelQueuedReads(slot)
            }
            if let computed = computedTokens, !swappedOut {
                let table = sequences.table(slot)
                for i in computed / bt..<max(computed / bt, sequences.blockCount(slot)) { blocks.forget(table[i]) }
            }
            if let offload, !offload.resident(slot) {
                // Reads in flight land in this slot's memory: it stays held until they did.
                discardOpenRecord(slot)
                sequences.detach(slot)
                return
            }
            release(slot)
            offload?.writeback?.poke()  // its blocks may be cold enough to write ahead
        }
    }

    /// Drops `slot`'s references to its blocks and closes it. Its blocks are released last
    /// first, as vLLM frees a request's blocks: indexed ones join the LRU tail in that order,
    /// so a prompt's later blocks are evicted before its earlier ones, which more prompts share
    /// and without which the later ones can never be hit (the chain is looked up from its
    /// first block). On the bundled Mooncake trace at block level (`Engine trace-replay`'s
    /// check) the engine then hits exactly what vLLM's algorithm hits (first block first:
    /// 0.37% fewer prompt tokens). With a disk tier, an allocation that then evicts such a chain
    /// spills its first blocks ahead of its last ones (`OffloadCoordinator.spill`). O(blocks).
    func release(_ slot: Int) {
        let table = sequences.table(slot)
        for i in (0..<sequences.blockCount(slot)).reversed() { blocks.release(table[i]) }
        contiguous?.close(slot: slot)
        sequences.close(slot)
        releaseOffloadedTokens(slot)
        evictionStates[slot] = nil
    }

    /// Tokens `seq` holds; after a compaction, the longest layer's (`layerLength` gives each
    /// layer's). Throws `notFound`.
    public func length(_ seq: UInt64) throws(KVError) -> Int {
        try locked { () throws(KVError) -> Int in sequences.lengths[try slot(seq)] }
    }

    // MARK: memory access

    func checkLayer(_ layer: Int) throws(KVError) {
        guard layer >= 0 && layer < config.numLayers else { throw .invalid("layer \(layer) is outside 0..<\(config.numLayers)") }
    }

    /// Contiguous layout: base of `seq`'s K and V ranges in `layer` (token `i` at
    /// `i * tokenBytes`; valid for the first `length` tokens, and for tokens appended later).
    /// Throws `notFound`, `invalidArgument` (layer; a swapped-out sequence), `io` (a failed
    /// disk read spoiled the sequence, `usableSlot`), `unsupported` (paged layout).
    public func kv(_ seq: UInt64, layer: Int) throws(KVError) -> (k: UnsafeMutableRawPointer, v: UnsafeMutableRawPointer) {
        guard let ranges = contiguousRanges else {
            throw KVError(.unsupported, "per-sequence K/V ranges exist only in the contiguous layout; use the block table")
        }
        try checkLayer(layer)
        return try locked { () throws(KVError) in
            let s = try usableSlot(seq)
            return (ContiguousMemory.base(in: ranges, s, tensor: 2 * layer), ContiguousMemory.base(in: ranges, s, tensor: 2 * layer + 1))
        }
    }

    /// Paged layout (and metadata-only engines): writes `seq`'s block ids into `into` (as many
    /// as fit) and returns the full count, `ceil(length / blockTokens)`.
    /// Throws `notFound`, `invalidArgument` (a swapped-out sequence), `io` (a failed disk read
    /// spoiled the sequence, `usableSlot`), `unsupported` (contiguous layout).
    public func blockTable(_ seq: UInt64, into: UnsafeMutableBufferPointer<Int32>) throws(KVError) -> Int {
        guard contiguous == nil else { throw KVError(.unsupported, "block tables exist only in the paged layout; use the per-layer K/V ranges") }
        return try locked { () throws(KVError) -> Int in
            let s = try usableSlot(seq)
            let count = sequences.blockCount(s)
            let table = sequences.table(s)
            for i in 0..<min(count, into.count) { into[i] = table[i] }
            return count
        }
    }

    /// Paged layout: K and V base of `block` in `layer` (token `i` of the block at
    /// `i * tokenBytes`). The block must be held by a sequence or cached.
    /// Throws `invalidArgument` (block or layer out of range, or a free block),
    /// `unsupported` (contiguous or metadata-only). Cost: the lock and one arena address (V is
    /// K plus `pagedTensorBytes`).
    public func blockKV(_ block: Int32, layer: Int) throws(KVError) -> (k: UnsafeMutableRawPointer, v: UnsafeMutableRawPointer) {
        guard let arena = pagedArena else { throw KVError(.unsupported, "block K/V exists only in the paged layout with memory") }
        try checkLayer(layer)
        return try locked { () throws(KVError) in
            guard block >= 0 && Int(block) < blocks.capacity else { throw .invalid("block \(block) is outside 0..<\(blocks.capacity)") }
            guard blocks.isLive(block) else { throw .invalid("block \(block) is free: no sequence or cache holds it") }
            let k = PagedMemory.address(in: arena, block, tensor: 2 * layer)
            return (k, k + pagedTensorBytes)
        }
    }

    /// Paged layout: `layer`'s K blocks as one array and its V blocks as another: block `b`'s
    /// K at `k + b * stride` and V at `v + b * stride`, for every block id (`blockKV`'s
    /// addresses), fixed for the engine's life (the arena is one mapping made at creation,
    /// `kvm_arena_stride`). `stride` is the block's bytes in a tensor when blocks fill their
    /// page groups exactly (every power-of-two shape), a whole group's when at most one block
    /// fits a group (blocks larger than half a page, padded to whole pages). Throws `unsupported` (contiguous, metadata-only, or
    /// blocks padded within their groups: several blocks to a group that they do not fill, no
    /// single stride), `invalidArgument` (layer). Cost: arithmetic, no lock.
    public func layerKVLayout(layer: Int) throws(KVError) -> (k: UnsafeMutableRawPointer, v: UnsafeMutableRawPointer, stride: Int) {
        guard let arena = pagedArena else { throw KVError(.unsupported, "block arrays exist only in the paged layout with memory") }
        try checkLayer(layer)
        let stride = Int(kvm_arena_stride(arena))
        guard stride > 0 else {
            throw KVError(.unsupported, "blocks of \(config.blockBytes) bytes per tensor are padded within page groups of \(config.pageBytes) bytes: no single block stride (use kvc_block_kv per block, or a block size that divides page_bytes)")
        }
        let k = PagedMemory.address(in: arena, 0, tensor: 2 * layer)
        return (k, k + pagedTensorBytes, stride)
    }

    // MARK: engine

    /// Returns every page not holding live-sequence data to the OS; cached prefix blocks are
    /// dropped (with `blockRemoved` events, or one `allCleared` when the index empties). With a
    /// disk tier they are written back first (spilled), so later prompts find them on disk; the
    /// spills are a bulk transfer that leaves staging buffers to other traffic and waits for
    /// more without the lock (`spillCachedBlocks`); first it waits, without the lock, for the
    /// reads of freed sequences whose memory waits for them (`free`), so that their memory is
    /// trimmed too. Then it releases the free memory in steps (`releaseFreeMemory`) down to the
    /// reservations made since it began (it forgets older ones first). Between
    /// steps (of spilling, releasing, and whenever its waits processed completions) calls
    /// blocked on the lock run (`kvm_lock_yield`): before, a trim held it for 0.25-0.6 s
    /// (helper-165).
    public func trim() throws(KVError) {
        try locked { () throws(KVError) in
            // Before the first step hands the lock over: a reservation made meanwhile (or by a
            // reserve this trim interrupts, which records it again each step) stays.
            reservedBytes = 0
            if let offload {
                offload.awaitDeferredFrees(mutex: mutex)
                spillCachedBlocks(offload)
            } else {
                blocks.dropCached()
            }
            contiguous?.unmapAllUnpinned()
            releaseFreeMemory()
        }
    }

    /// Most bytes one step of `releaseFreeMemory` gives back (at least one page group): about
    /// 1.6 ms of hole punching on this machine kind (0.2 s per GiB).
    static let trimStepBytes: UInt64 = 8 << 20

    /// `trim`'s release of every free committed page group, under the lock, lowest first, in
    /// steps of at most `trimStepBytes`, handing the lock to calls blocked on it between steps
    /// (`kvm_lock_yield`), as `reserve` runs in steps. Groups such calls take stay; so does a
    /// reservation one made (`reservedBytes`). Ends when a step releases nothing. Cost per
    /// step: the pool's trim (an O(groups / 64) word scan from the lowest group, a punch per
    /// tensor per run released).
    private func releaseFreeMemory() {
        guard let pool = paged?.pool ?? contiguous?.pool else { return }
        let unit = kvm_pool_group_bytes(pool) * UInt64(config.tensors)
        let step = max(1, Engine.trimStepBytes / unit) * unit
        while true {
            let committed = kvm_pool_committed_bytes(pool)
            let keep = max(reservedBytes, committed > step ? committed - step : 0)
            let released = paged?.trim(keeping: keep) ?? contiguous?.trimFree(keeping: keep) ?? 0
            if released == 0 { return }
            kvm_lock_yield(mutex)
        }
    }

    /// Physical bytes the K/V memory holds (0 without memory). O(1).
    var committedBytes: UInt64 { paged?.committedBytes ?? contiguous?.committedBytes ?? 0 }

    /// Gives back what a call that failed committed: free page groups go until `before` (the
    /// committed bytes when the call began) or the reservation (`reservedBytes`), whichever is
    /// more, stay committed; nothing is unmapped. For the failure path of a call that takes
    /// memory in several commit batches: its undo frees what it took, but the batches committed
    /// before the failing one stayed committed, unused until `trim` (found by helper-119).
    /// Cost: a pool trim (failure paths only).
    func giveBackCommitted(since before: UInt64) {
        let keep = max(before, reservedBytes)
        paged?.trim(keeping: keep)
        contiguous?.trimFree(keeping: keep)
    }

    /// Commits memory ahead of need, up to `bytes` committed in all (capped at the budget), so
    /// that later creates and appends do not pay for its first use (on this machine kind about
    /// 0.35 s per GiB to commit and 0.8 s per GiB to fault in). Paged: page groups are taken into
    /// the arena, committed and faulted in, the faulting with the lock released; so are the
    /// groups committed earlier but not taken yet (the rest of a commit batch of up to 8,
    /// which `bytes` already counts), whatever `bytes` is. Contiguous:
    /// groups are committed; their pages fault in when a sequence maps and writes them. Like
    /// vLLM's allocation at start-up, but optional: until `trim`, which gives unused reserved
    /// memory back, resident memory no longer follows live tokens. Returns the committed bytes
    /// afterwards. Throws `unsupported` (metadata-only engine), or `outOfMemory` when the OS
    /// refuses a commit (`checkCommit`; what was reserved before it stays). Cost: the commits
    /// and faults, in steps of at most 64 page groups; calls blocked on the lock run between
    /// steps (`kvm_lock_yield`). A `trim` among them forgets the reservation and releases what
    /// was committed: each step records it again (`reservedBytes`), and commits it again.
    public func reserve(bytes: UInt64) throws(KVError) -> UInt64 {
        guard let pool = paged?.pool ?? contiguous?.pool else {
            throw KVError(.unsupported, "a metadata-only engine has no memory to reserve")
        }
        let target = min(bytes, config.memoryBytes)
        let stepBytes = kvm_pool_group_bytes(pool) * UInt64(config.tensors)
        while true {
            let progressed = try locked { () throws(KVError) -> Bool in
                // Every step: a trim between two steps forgot it (helper-168).
                reservedBytes = max(reservedBytes, target)
                let committed = kvm_pool_committed_bytes(pool)
                // Paged: committed groups the arena has not taken (every used group is committed).
                let idle = paged == nil ? 0 : committed / stepBytes - UInt64(kvm_pool_groups(pool) - kvm_pool_free_groups(pool))
                guard committed < target || idle > 0 else { return false }
                let need = committed < target ? (target - committed + stepBytes - 1) / stepBytes : 0
                let groups = UInt32(min(64, max(need, idle)))
                let got = paged.map { kvm_arena_reserve($0.arena, groups) } ?? kvm_pool_precommit(pool, groups)
                do throws(KVError) { try checkCommit(got) } catch {
                    // Reserved is what got committed, not the target: a later refused call
                    // gives back down to it (`giveBackCommitted`), a compaction trims to it.
                    reservedBytes = min(reservedBytes, kvm_pool_committed_bytes(pool))
                    throw error
                }
                if got > 0 { kvm_lock_yield(mutex) }  // an unlock and lock may not let a waiter in
                return got > 0
            }
            if !progressed { return stats().committedBytes }
        }
    }

    /// The most tokens one sequence can hold while nothing else is live: the budget's blocks
    /// and, contiguous, its pages (each sequence maps whole pages of its own range). A create
    /// of a longer prompt (an append past it) runs out of memory however much is freed: a
    /// property of the configuration (`kvcache load` rejects requests whose prompt and output
    /// exceed it as unfittable, before their create). O(1), no lock (fixed
    /// at creation).
    public var sequenceTokenCapacity: Int {
        let blockTokens = blocks.capacity * bt
        guard let contiguous else { return blockTokens }
        return min(blockTokens, contiguous.groups * contiguous.pageBytes / config.tokenBytes)
    }

    /// A consistent snapshot of the counters.
    public func stats() -> EngineStats {
        kvm_lock_acquire(mutex)
        defer { kvm_lock_release(mutex) }
        var s = EngineStats()
        s.budgetBytes = config.memoryBytes
        s.committedBytes = committedBytes
        s.blocksTotal = UInt64(blocks.capacity)
        s.blocksUsed = UInt64(blocks.usedCount)
        s.blocksCached = UInt64(blocks.cachedCount)
        s.sequences = UInt64(sequences.count)
        s.prefixQueryTokens = prefixQueryTokens
        s.prefixHitTokens = prefixHitTokens
        s.sequencesCreated = sequencesCreated
        s.blocksEvicted = blocks.evictedCount
        s.mappings = contiguous?.mappings ?? 0
        s.hugePages = (paged?.pool ?? contiguous?.pool).map { kvm_pool_hugepages($0) != 0 } ?? false
        s.eventsDropped = blocks.events.dropped
        if let offload { s.disk = offload.stats }
        return s
    }

    /// KV events dropped so far because the event queue was full (`EngineStats.eventsDropped`),
    /// alone: for a consumer that checks for a gap after every drain (KVSim's simulator).
    /// Cost: one uncontended lock and one load; `stats()` fills the whole `EngineStats`
    /// snapshot, disk-tier counters included, under the same lock.
    public var eventsDropped: UInt64 {
        kvm_lock_acquire(mutex)
        defer { kvm_lock_release(mutex) }
        return blocks.events.dropped
    }

    /// Blocks held by sequences (`EngineStats.blocksUsed`), alone: for a load report after
    /// every step (KVSim's simulator). Cost: one uncontended lock and one load.
    public var blocksUsed: UInt64 {
        kvm_lock_acquire(mutex)
        defer { kvm_lock_release(mutex) }
        return UInt64(blocks.usedCount)
    }

    /// Moves up to `into.count` pending events, oldest first, into `into` (whose memory may be
    /// uninitialised); returns how many. The first an engine gives is its memory tier's
    /// `allCleared` (`init`).
    public func drainEvents(into: UnsafeMutableBufferPointer<KVEvent>) -> Int {
        drainNumberedEvents(into: into).count
    }

    /// `drainEvents`, with the number of the first event moved: `into[i]` is event
    /// `firstSequence + i` of this engine's stream (`eventEpoch`), numbered from 1 in push
    /// order. Events the full queue dropped keep their numbers, so the next batch after a drop
    /// starts past the last one drained: a consumer sees the gap. With nothing pending,
    /// `firstSequence` is the number the next event gets. Cost: `drainEvents`'.
    public func drainNumberedEvents(into: UnsafeMutableBufferPointer<KVEvent>) -> (count: Int, firstSequence: UInt64) {
        kvm_lock_acquire(mutex)
        defer { kvm_lock_release(mutex) }
        let first = blocks.events.firstPending
        return (blocks.events.drain(into: into), first)
    }

    /// The address range holding the engine's K/V (empty for metadata-only engines): what a
    /// resident-memory measurement of the engine looks at. Tests: no caller in the package
    /// but the tests (resident-memory checks); the C ABI does not expose it.
    public var memoryRegion: (start: UInt, bytes: UInt) { paged?.region ?? contiguous?.region ?? (0, 0) }

    /// How many leading tokens of `tokens` `createSequence` would report cached now, by the
    /// create's own lookup (`tieredPrefix`: at each block memory, then the disk tier, then
    /// peers' tiers, whose indexes it brings up to date; with
    /// `EngineConfig.prefillTokensPerSecond`, without the disk blocks the create would decline),
    /// without creating anything or changing any LRU order. With a disk tier it first processes
    /// completions, as `createSequence` does (a settled swap-out's blocks leave memory for the
    /// disk tier). `salt` as for `createSequence`.
    /// Cost: one hash per token and one memory lookup per full block, plus for each block
    /// memory misses one tier lookup (and one per peer past the own tier's miss, plus one
    /// journal `fstat` and `stat` per peer), plus the completions processed.
    public func cachedPrefixTokens(_ tokens: UnsafeBufferPointer<Int32>, salt: UInt64 = 0) -> Int {
        cachedPrefixSources(tokens, salt: salt).cachedTokens
    }

    /// `cachedPrefixTokens` split by where the create would find each block, as
    /// `prefixSources(of:)` reports it after that create: memory, the own disk tier, peers'
    /// tiers (`PrefixSources`; disk blocks the create would decline, `prefillTokensPerSecond`,
    /// in none). The read-only lookup a server makes before it admits a prompt (kvcache.h,
    /// kvc_prefix_lookup): changes nothing but what `cachedPrefixTokens` does (completions
    /// processed, peers' indexes refreshed), no statistic either. Cost: `cachedPrefixTokens`'.
    public func cachedPrefixSources(_ tokens: UnsafeBufferPointer<Int32>, salt: UInt64 = 0) -> PrefixSources {
        let n = tokens.count
        guard n > 1 else { return .zero }
        var parent = BlockHash.root(salt: salt), parentFingerprint = fingerprint.root(salt: salt)
        let found = cachedPrefixBlocks(limit: (n - 1) / bt, prompt: tokens, salt: salt) { hit in
            let block = UnsafeBufferPointer(rebasing: tokens[hit * bt..<(hit + 1) * bt])
            parent = BlockHash.block(parent: parent, tokens: block)
            parentFingerprint = fingerprint.block(parent: parentFingerprint, tokens: block)
            return (parent, parentFingerprint)
        }
        return PrefixSources(memoryTokens: (found.cached - found.fromDisk) * bt,
                             diskTokens: (found.fromDisk - found.fromPeers) * bt, peerTokens: found.fromPeers * bt)
    }

    /// How many leading blocks of the hash chain `blockHashes` (as `BlockHash.chain` computes)
    /// `createSequence(_:blockHashes:tokens:)` would find cached now (the create's own lookup,
    /// as `cachedPrefixTokens`), without creating anything and without touching the LRU order:
    /// for stores queried by hash chain (KVSim's `SharedTier`). Unlike `createSequence` it does
    /// not keep a token to compute: every block may count. Cost: one lookup per block found, plus one (and, with a
    /// disk tier, the completions processed first, as `cachedPrefixTokens`).
    public func cachedPrefixBlocks(_ blockHashes: UnsafeBufferPointer<UInt64>) -> Int {
        cachedPrefixBlocks(limit: blockHashes.count, prompt: nil, salt: 0) { (blockHashes[$0], 0) }.cached
    }

    /// Under the lock: how many leading blocks, of at most `limit`, a create would report
    /// cached now, and how many of them from disk and of those from peers, `hash(i)` giving
    /// block i's chained hash: `create`'s own lookup (`tieredPrefix`), without claiming anything. Completions are processed first, as `create`
    /// does before its lookup: a swap-out they settle evicts its blocks (now on disk) from
    /// memory, and a failed read takes its block out of the index.
    private func cachedPrefixBlocks(limit: Int, prompt: UnsafeBufferPointer<Int32>?, salt: UInt64,
                                    hash: (Int) -> (UInt64, UInt64)) -> (cached: Int, fromDisk: Int, fromPeers: Int) {
        kvm_lock_acquire(mutex)
        defer { kvm_lock_release(mutex) }
        offload?.processCompletions()
        let found = tieredPrefix(limit: limit, keep: .nothing, prompt: prompt, salt: salt, hash: hash)
        return (found.cached, found.fromDisk, found.fromPeers)
    }
}

extension Engine {
    /// `createSequence` for an array of tokens.
    @discardableResult
    public func createSequence(_ seq: UInt64, tokens: [Int32], salt: UInt64 = 0) throws(KVError) -> Int {
        try tokens.withUnsafeBufferPointer { (b) throws(KVError) -> Int in try createSequence(seq, tokens: b, salt: salt) }
    }

    /// `append` for an array of tokens.
    public func append(_ seq: UInt64, tokens: [Int32]) throws(KVError) {
        try tokens.withUnsafeBufferPointer { (b) throws(KVError) in try append(seq, tokens: b) }
    }

    /// `cachedPrefixTokens` for an array of tokens.
    public func cachedPrefixTokens(_ tokens: [Int32]) -> Int {
        tokens.withUnsafeBufferPointer { cachedPrefixTokens($0) }
    }
}
