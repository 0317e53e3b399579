/// A change to what the engine's prefix cache holds, with the meaning of vLLM's KV events
/// (`BlockStored`, `BlockRemoved`, `AllBlocksCleared`), so that a router can track what each
/// instance caches. The fields and layout of `kvc_event` in `include/kvcache.h` (`kind` stored
/// as its 4-byte raw value, then `tier` and the two hashes: 24 bytes, 8-aligned;
/// `EventABITests` checks it), so that `kvc_drain_events` copies the queue's events as they
/// are (at most two ranges), with no conversion per event.
public struct KVEvent: Equatable, Sendable {
    /// What happened; raw values are the C ABI's `KVC_EVENT_*` constants.
    public enum Kind: UInt32, Sendable {
        /// A full block entered the prefix index of `tier`.
        case blockStored = 1
        /// A block left the prefix index of `tier`.
        case blockRemoved = 2
        /// Every block of `tier` left the index at once; hashes are 0.
        case allCleared = 3
    }

    /// `kind.rawValue`: `kvc_event.kind`, the first stored field.
    private var rawKind: UInt32
    /// The storage tier: `memoryTier` or `diskTier`.
    public var tier: UInt32
    /// `BlockHash` of the block (0 for `allCleared`).
    public var blockHash: UInt64
    /// `BlockHash` of its parent block; 0 for the first block of a chain.
    public var parentHash: UInt64

    /// The event kind.
    public var kind: Kind {
        get { Kind(rawValue: rawKind)! }  // only `init` and this setter store it
        set { rawKind = newValue.rawValue }
    }

    /// `tier` of the engine's memory prefix index (`KVC_TIER_MEMORY`). The engine's first event
    /// is one `allCleared` of this tier (`Engine.init`: the index starts empty), so a router
    /// applying an instance's events in order forgets what a previous engine of that instance
    /// announced, whether or not it noticed the restart; the tier-0 events then give exactly
    /// the hashes the index holds.
    public static let memoryTier: UInt32 = 0
    /// `tier` of the engine's own disk tier, `offload_dir` (`KVC_TIER_DISK`): a block is stored
    /// there from the moment a lookup by its hash can find it (its write submitted) until it
    /// cannot (dropped for room, its write failed, a read found it bad). The tier's first
    /// event is one `allCleared` (right after the memory tier's), then a `blockStored` for
    /// every block it found again in its journal (`DiskTier`); so the tier-1 events, applied
    /// in order, give exactly the hashes the tier can find. Never a peer's tier
    /// (`peer_offload_dirs`): its own engine tells.
    public static let diskTier: UInt32 = 1

    /// Creates an event.
    public init(kind: Kind, tier: UInt32 = memoryTier, blockHash: UInt64, parentHash: UInt64) {
        rawKind = kind.rawValue
        self.tier = tier
        self.blockHash = blockHash
        self.parentHash = parentHash
    }
}
