import CKVMemory

/// How sequences' K/V memory is laid out (`KVC_LAYOUT_*`).
public enum Layout: UInt32, Sendable {
    /// vLLM-style: per-layer K and V arenas of fixed blocks; a sequence has a block table.
    case paged = 0
    /// vAttention-style: per sequence slot, layer and K|V one contiguous virtual range,
    /// backed by physical pages as the sequence grows.
    case contiguous = 1
}

/// Which disk-tier requests fault injection fails: those of `reads` and/or `writes`, after the
/// first `after` of them.
public struct OffloadFault: Equatable, Sendable {
    /// Whether the tier's read requests fail.
    public var reads: Bool
    /// Whether the tier's write requests fail.
    public var writes: Bool
    /// How many requests of the chosen kinds succeed before every later one fails with EIO.
    public var after: UInt64

    /// Fails reads and/or writes after the first `after`.
    public init(reads: Bool, writes: Bool, after: UInt64 = 0) {
        self.reads = reads
        self.writes = writes
        self.after = after
    }
}

/// The engine's shape and limits (`kvc_config`). Every field has a working default.
///
/// Within one layer's K (and V) tensor the layout is token-major,
/// `[token][kv_head][head_dim]`, `dtypeBytes` each, so one token of one tensor takes
/// `tokenBytes = numKVHeads * headDim * dtypeBytes`.
public struct EngineConfig: Equatable, Sendable {
    /// Transformer layers.
    public var numLayers: Int = 32
    /// Key/value heads per layer.
    public var numKVHeads: Int = 8
    /// Elements per head.
    public var headDim: Int = 128
    /// Bytes per element (2 for fp16/bf16).
    public var dtypeBytes: Int = 2
    /// Tokens per block: the unit of prefix caching (both layouts) and of allocation (paged).
    public var blockTokens: Int = 16
    /// Memory layout.
    public var layout: Layout = .paged
    /// Live sequences at most.
    public var maxSeqs: Int = 256
    /// Tokens one sequence may hold at most.
    public var maxSeqTokens: Int = 32768
    /// Exact physical budget for K/V bytes; the engine never commits more.
    public var memoryBytes: UInt64 = 8 << 30
    /// Physical page size, a power of two from 4 KiB to 2 MiB (2 MiB asks for huge pages).
    public var pageBytes: UInt64 = 64 << 10
    /// NUMA node to bind K/V memory to, or -1 for the default policy.
    public var numaNode: Int32 = -1
    /// Metadata only: the prefix index, LRU and capacity in blocks are real, but no memory is
    /// mapped and no K/V pointer is available (for simulation). Paged layout only.
    public var metadataOnly: Bool = false
    /// Index as scheduled (`index_on_schedule`): `createSequence` shares prefix hits as always
    /// but indexes none of the prompt's new full blocks; `schedule` indexes them as the server
    /// schedules their tokens for computation, and an `append` indexes the rest of them first
    /// (Engine+Schedule.swift). So a later prompt hits only blocks a forward pass no later than
    /// its own computes. False (default): the prompt's blocks are indexed at creation, for
    /// servers that run every created prompt in their next pass; one that chunks prefills, or
    /// preempts or cancels a request between its create and its pass, should set it, since
    /// `abort` cannot say which live sequences hit the unwritten blocks meanwhile.
    public var indexOnSchedule: Bool = false
    /// Token eviction: the policy every sequence uses unless it overrides it, and its
    /// parameters (`kvc_config`'s eviction fields). Default: none.
    public var eviction = EvictionConfig()
    /// Directory of the disk tier (`offload_dir`); nil (and `offloadBytes` 0): no disk tier.
    /// `validate` refuses one of the two set without the other.
    public var offloadDir: String? = nil
    /// Size limit of the disk tier's slab file (`offload_bytes`); at least one slot and at most
    /// 4194304 slots' bytes (`DiskTier.maxSlots`), a slot being at most 2^31 - 64 KiB bytes
    /// (`DiskTier.maxSlotBytes`), else `validate` throws `invalidArgument`.
    public var offloadBytes: UInt64 = 0
    /// Disk-tier staging buffers of one slot each (`offload_queue_depth`; requests in flight at
    /// most), 32...1024; the tier uses more when slots are small (up to 32 MiB of them). They
    /// bound the cold blocks an allocation can write back at once (the rest are skipped,
    /// `DiskTierStats.spillsSkipped`). Also caps episodic offload's open records
    /// (`OpenRecords`: at most `min(maxSeqs, offloadQueueDepth)`).
    public var offloadQueueDepth: Int = 32
    /// Other engines' offload directories this engine reads spilled blocks from
    /// (`peer_offload_dirs`), at most `maxPeers`: a prompt's block found in neither memory nor
    /// the own disk tier is looked up in their journals' indexes and read (verified) into a
    /// fresh block of this engine (`PeerTier`). Read-only: their locks are not taken and nothing
    /// is written there. Needs a disk tier of its own (its I/O queue and staging buffers carry
    /// the reads) and a `modelTag` other than 0 (so does every peer, whose tag must be this
    /// one). Empty (default): no peers, and a create costs nothing more.
    public var peerOffloadDirs: [String] = []
    /// Most entries of `peerOffloadDirs`.
    public static let maxPeers = 16
    /// The model whose K/V this engine holds (`model_tag`): any number that differs between
    /// models, weights or anything else that changes K/V for the same tokens (a LoRA adapter, a
    /// KV quantisation). A disk tier records it with the block shape (`TierIdentity`, the
    /// directory's `kvcache.identity`), so that no engine is served K/V of another model from
    /// its own directory after a restart or from a peer's: the block hash depends on the
    /// tokens only. Default 0: no model named, which a tier of one engine accepts (its
    /// restarts must then keep the model) but sharing does not: `peerOffloadDirs` needs a tag
    /// other than 0, because two models of one shape (a fine-tune and its base) that both
    /// left it at 0 would pass the identity check and serve each other's K/V.
    public var modelTag: UInt64 = 0
    /// The server's prefill speed for this model, in prompt tokens per second
    /// (`prefill_tokens_per_s`); 0 (default): unknown, and a create reads every block of its
    /// prefix it finds on disk. Otherwise a create reads its prefix's disk blocks only when
    /// the disk is expected to return them sooner than the server would compute them: the
    /// block reads already queued or in flight plus these, at the rate block reads drained
    /// lately (`ReadRate`), against their tokens at this speed. When it is not, the prefix
    /// ends at the first block found only on disk and the server computes the rest
    /// (`DiskTierStats.declinedHitTokens`). So a slow or busy device no longer makes a first
    /// token wait longer than computing it would (as far as the estimate is right), at the
    /// price of the compute a read would have saved. Finite and at least 0.
    public var prefillTokensPerSecond: Double = 0
    /// Write cold cached blocks to the disk tier ahead of their eviction, on a thread of the
    /// engine's own that copies them outside the engine's lock (`offload_writeback`;
    /// `Writeback`), instead of copying each evicted block inside the allocation that evicts
    /// it, under the lock. An eviction of a block the thread wrote or is copying then copies
    /// nothing; one the thread has not reached is spilled in the call as without it (skipped
    /// when staging buffers are short, `DiskTierStats.spillsSkipped`). Which blocks reach the
    /// disk then depends on the thread's timing. Needs a disk tier. Default false (the C ABI's
    /// zero); `kvcache load` turns it on with a tier, as a server should (docs/disk-tier.md).
    public var offloadWriteback: Bool = false
    /// Use the pread/pwrite thread pool even when io_uring works (also: environment
    /// `KVCACHE_OFFLOAD_BACKEND=threads`).
    public var offloadForceThreads: Bool = false
    /// Open the slab without O_DIRECT.
    public var offloadForceBuffered: Bool = false
    /// Fault injection: disk-tier reads and/or writes fail with EIO after the first `after` of
    /// them (nil: never; also environment `KVCACHE_OFFLOAD_FAULT=read|write|all:AFTER[@DIR]`).
    public var offloadFault: OffloadFault? = nil

    /// Events the queue holds between two drains before it drops the oldest, counted in
    /// `EngineStats.eventsDropped` (`event_capacity`; 1...16777216, default 65536), beside
    /// the events of the engine's creation (the memory tier's `allCleared`; with a disk tier,
    /// its `allCleared` and each block it found), whose room the first drain that leaves at
    /// most this many pending gives back. Size it to the events of the busiest stretch
    /// between two drains: a `blockStored` per block filled and a `blockRemoved` per
    /// eviction, so up to two per prompt token at `blockTokens` 1 under memory pressure
    /// (docs/events.md, "Sizing the queue"). Costs 24 bytes per event, allocated once at
    /// creation (resident as the ring first fills): 1.5 MiB by default, 384 MiB at most.
    /// An engine whose events nobody drains can take 1. The default does not grow with the
    /// engine's blocks: the events between drains follow the tokens a server admits per step
    /// and how often it drains, which the engine cannot know.
    public var eventCapacity = 1 << 16

    /// The defaults listed above.
    public init() {}

    /// Bytes of one token in one tensor (one layer's K or V).
    public var tokenBytes: Int { numKVHeads * headDim * dtypeBytes }
    /// Bytes of one block in one tensor.
    public var blockBytes: Int { blockTokens * tokenBytes }
    /// Tensors per sequence: K and V of every layer.
    public var tensors: Int { 2 * numLayers }
    /// Bytes of one block over every tensor (`tensors * blockBytes`): what a block takes of
    /// `memoryBytes`, and a disk slot's payload.
    public var blockBytesAllTensors: Int { tensors * blockBytes }

    /// True when `offloadDir` and `offloadBytes` configure a disk tier.
    public var hasDiskTier: Bool { offloadBytes > 0 && !(offloadDir ?? "").isEmpty }

    /// Checks every field and their combination; throws `invalidArgument` naming the field.
    public func validate() throws(KVError) {
        func check(_ ok: Bool, _ message: @autoclosure () -> String) throws(KVError) {
            if !ok { throw .invalid(message()) }
        }
        try check((1...1024).contains(numLayers), "num_layers \(numLayers) is outside 1...1024")
        try check((1...1024).contains(numKVHeads), "num_kv_heads \(numKVHeads) is outside 1...1024")
        try check((1...4096).contains(headDim), "head_dim \(headDim) is outside 1...4096")
        try check([1, 2, 4, 8].contains(dtypeBytes), "dtype_bytes \(dtypeBytes) is not 1, 2, 4 or 8")
        try check((1...65536).contains(blockTokens), "block_tokens \(blockTokens) is outside 1...65536")
        try check((1...65536).contains(maxSeqs), "max_seqs \(maxSeqs) is outside 1...65536")
        try check((1...(1 << 24)).contains(maxSeqTokens), "max_seq_tokens \(maxSeqTokens) is outside 1...16777216")
        try check(pageBytes >= 4096 && pageBytes <= 2 << 20 && pageBytes & (pageBytes - 1) == 0,
                  "page_bytes \(pageBytes) is not a power of two from 4096 to 2097152")
        try check(numaNode >= -1, "numa_node \(numaNode) is below -1")
        try check(!(metadataOnly && layout == .contiguous), "metadata-only engines use the paged layout")
        try check(memoryBytes > 0, "memory_bytes is 0")
        try eviction.validate()
        try check((1...(1 << 24)).contains(eventCapacity), "event_capacity \(eventCapacity) is outside 1...16777216")
        try check((32...1024).contains(offloadQueueDepth), "offload_queue_depth \(offloadQueueDepth) is outside 32...1024")
        try check(prefillTokensPerSecond.isFinite && prefillTokensPerSecond >= 0,
                  "prefill_tokens_per_s \(prefillTokensPerSecond) is not a finite number of tokens per second, 0 or more")
        if hasDiskTier {
            try check(!metadataOnly, "a metadata-only engine has no bytes to offload; leave offload_dir NULL")
        } else {
            try check(!offloadWriteback, "offload_writeback needs a disk tier (offload_dir and offload_bytes) to write to")
        }
        if !peerOffloadDirs.isEmpty {
            try check(hasDiskTier, "peer_offload_dirs needs a disk tier of this engine's own (offload_dir and offload_bytes): its I/O queue reads the peers' blocks")
            try check(modelTag != 0,
                      "peer_offload_dirs needs a model_tag other than 0: tiers of two models of the same shape that both leave it at 0 would serve each other's K/V")
            try check(peerOffloadDirs.count <= EngineConfig.maxPeers,
                      "peer_offload_dirs lists \(peerOffloadDirs.count) directories, more than \(EngineConfig.maxPeers)")
            for dir in peerOffloadDirs {
                try check(!dir.isEmpty, "peer_offload_dirs has an empty entry")
                // The tier's own rule, before any file is opened (reading the identity first
                // failed with ENAMETOOLONG: io, the message cut inside the path).
                try KVCache.check(kvm_slab_check_dir_length(dir, "a directory of peer_offload_dirs"))
            }
        }
        // Half a disk tier is a mistake, not a choice: the server would run without the tier it
        // meant to configure and learn it only from a refused swap-out.
        if let dir = offloadDir, !dir.isEmpty {
            try check(offloadBytes > 0, "offload_dir '\(dir.prefix(256))' is set but offload_bytes is 0: give the disk tier a size, or leave offload_dir NULL for none")
            // Before any memory is reserved, any file created or any peer read.
            try DiskTier.checkSizes(self)
        } else {
            try check(offloadBytes == 0, "offload_bytes \(offloadBytes) is set but offload_dir is not: name the disk tier's directory, or leave offload_bytes 0 for none")
        }
    }
}
