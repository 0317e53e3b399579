/// A snapshot of the engine's memory and prefix-cache counters (`kvc_stats`).
///
/// Invariants: `committedBytes <= budgetBytes`;
/// `blocksUsed + blocksCached <= blocksTotal`; `prefixHitTokens <= prefixQueryTokens`.
public struct EngineStats: Equatable, Sendable {
    /// The exact physical budget (`memory_bytes`).
    public var budgetBytes: UInt64 = 0
    /// Physical bytes the engine holds now (allocated pages of its pool).
    public var committedBytes: UInt64 = 0
    /// Blocks of `block_tokens` tokens the budget can hold (logical blocks in the contiguous layout).
    public var blocksTotal: UInt64 = 0
    /// Blocks referenced by live sequences (a shared block counts once), and by freed ones
    /// whose disk reads are still landing (`Engine.free`).
    public var blocksUsed: UInt64 = 0
    /// Blocks held only by the prefix index (reusable on a hit, evictable in LRU order).
    public var blocksCached: UInt64 = 0
    /// Live sequences (not freed ones whose disk reads are still landing).
    public var sequences: UInt64 = 0
    /// Prompt tokens looked up in the prefix index by sequence creations that succeeded, in
    /// total (a refused create counts nothing).
    public var prefixQueryTokens: UInt64 = 0
    /// Of those, tokens served from the index.
    public var prefixHitTokens: UInt64 = 0
    /// Sequences created since the engine started (including freed ones).
    public var sequencesCreated: UInt64 = 0
    /// Cached blocks evicted from memory to make room, since the engine started.
    public var blocksEvicted: UInt64 = 0
    /// Memory mappings the engine holds, as the kernel has them (contiguous layout; 0 in the paged one).
    public var mappings: UInt64 = 0
    /// Events dropped because the server did not drain them in time (the queue is bounded).
    public var eventsDropped: UInt64 = 0
    /// Whether the K/V memory sits in 2 MiB huge pages (`pageBytes` 2 MiB and this process's
    /// shmem may use transparent huge pages: `kvm_shmem_hugepages_refusal` of the top-level and
    /// per-size shmem_enabled and PR_GET_THP_DISABLE); false when 2 MiB pages fell back to
    /// small ones.
    public var hugePages = false
    /// The disk tier's counters (all 0 without one).
    public var disk = DiskTierStats()

    /// Creates zeroed statistics.
    public init() {}
}
