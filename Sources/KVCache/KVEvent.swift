/// A change to what the engine's prefix cache holds, with the meaning of vLLM's KV events
/// (`BlockStored`, `BlockRemoved`, `AllBlocksCleared`), so that a router can track what each
/// instance caches. Layout-compatible with `kvc_event` in `include/kvcache.h`.
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

    /// The event kind.
    public var kind: Kind
    /// The storage tier: 0 memory (the only tier so far).
    public var tier: UInt32
    /// `BlockHash` of the block (0 for `allCleared`).
    public var blockHash: UInt64
    /// `BlockHash` of its parent block; 0 for the first block of a chain.
    public var parentHash: UInt64

    /// Creates an event.
    public init(kind: Kind, tier: UInt32 = 0, blockHash: UInt64, parentHash: UInt64) {
        self.kind = kind
        self.tier = tier
        self.blockHash = blockHash
        self.parentHash = parentHash
    }
}
