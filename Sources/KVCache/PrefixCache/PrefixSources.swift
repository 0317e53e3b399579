/// Where a sequence's cached prompt tokens came from at its create (`Engine.prefixSources`):
/// the split of the count `createSequence` returned, by the tier that supplied each block.
///
/// Invariants: every field is a multiple of `blockTokens`, none is negative, and
/// `cachedTokens` (their sum) is exactly what the sequence's `createSequence` returned. Tokens
/// found on disk that the engine declined to read (`EngineConfig.prefillTokensPerSecond`,
/// `DiskTierStats.declinedHitTokens`) are not cached and in no field. A block is counted where
/// the create found it, memory first (`Engine.createSequence`): a block in memory is a memory
/// hit wherever it lies in the chain, also while a disk read of it is still filling it for
/// another sequence.
///
/// It describes the create, not later history: a swap-out and swap-in, a truncation (also below
/// the cached prefix) or appends leave it as it was. A fork's child reports its parent's (the
/// child holds the parent's blocks, prefix included, and was created by no prompt lookup).
/// A freed or aborted sequence has none (`notFound`).
public struct PrefixSources: Equatable, Hashable, Sendable {
    /// Tokens of blocks found in this engine's memory (shared, no copy, no read).
    public var memoryTokens: Int
    /// Tokens of blocks read back from this engine's own disk tier (`offload_dir`).
    public var diskTokens: Int
    /// Tokens of blocks read from peers' disk tiers (`peer_offload_dirs`).
    public var peerTokens: Int

    /// Creates a split from its three parts.
    public init(memoryTokens: Int, diskTokens: Int, peerTokens: Int) {
        self.memoryTokens = memoryTokens
        self.diskTokens = diskTokens
        self.peerTokens = peerTokens
    }

    /// No token cached (the value before any create, and a create that hit nothing).
    public static let zero = PrefixSources(memoryTokens: 0, diskTokens: 0, peerTokens: 0)

    /// All cached tokens: memory, own disk tier and peers together (`createSequence`'s return).
    public var cachedTokens: Int { memoryTokens + diskTokens + peerTokens }

    /// Tokens read from any disk (own tier and peers): what the sequence waits for before it is
    /// `ready`. Tests: no caller in the package but the tests.
    public var readTokens: Int { diskTokens + peerTokens }
}

extension Engine {
    /// Where live sequence `seq`'s cached prompt tokens came from at its create: memory, its own
    /// disk tier, peers' tiers (`PrefixSources`; they sum to what `createSequence` returned). Valid
    /// while `seq` exists, swapped out or not; a fork's child reports its parent's. Without a
    /// disk tier every cached token is a memory hit. Throws `notFound` for a sequence that does
    /// not exist (never created, freed, aborted). Changes nothing. Cost: one uncontended lock
    /// and one lookup; the create pays one store for it.
    public func prefixSources(of seq: UInt64) throws(KVError) -> PrefixSources {
        try locked { () throws(KVError) -> PrefixSources in sequences.prefixSources[try slot(seq)] }
    }
}
