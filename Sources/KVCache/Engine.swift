// PUBLIC API CONTRACT (implementation in progress by the lead; signatures are fixed).
/// The KV-cache engine: sequences, their K/V memory, the prefix cache and its events.
public final class Engine: @unchecked Sendable {
    /// The configuration the engine was created with.
    public let config: EngineConfig

    /// Creates an engine; throws `invalidArgument` for a bad config, `outOfMemory` when the
    /// address space or mapping limit cannot fit it.
    public init(_ config: EngineConfig) throws(KVError) { self.config = config; fatalError("unimplemented") }

    /// Creates sequence `seq` holding `tokens` (at least one). Returns how many leading tokens
    /// are already cached (a multiple of `blockTokens`, at most `tokens.count - 1`); the server
    /// computes K/V only for the rest. Throws `exists`, `invalidArgument`, `outOfMemory`.
    public func createSequence(_ seq: UInt64, tokens: UnsafeBufferPointer<Int32>) throws(KVError) -> Int { fatalError() }

    /// Appends `tokens` (may be empty: no-op) to `seq`. Throws `notFound`, `outOfMemory`
    /// (nothing appended), `invalidArgument` (past `maxSeqTokens`).
    public func append(_ seq: UInt64, tokens: UnsafeBufferPointer<Int32>) throws(KVError) { fatalError() }

    /// Creates `child` sharing all of `parent`'s tokens (copy on write). Throws `notFound`, `exists`, `outOfMemory`.
    public func fork(parent: UInt64, child: UInt64) throws(KVError) { fatalError() }

    /// Frees `seq`; its full blocks stay in the prefix cache. Throws `notFound` (also on double free).
    public func free(_ seq: UInt64) throws(KVError) { fatalError() }

    /// Tokens `seq` holds. Throws `notFound`.
    public func length(_ seq: UInt64) throws(KVError) -> Int { fatalError() }

    /// Contiguous layout: base of `seq`'s K and V ranges in `layer` (token `i` at `i * tokenBytes`).
    /// Throws `notFound`, `invalidArgument` (layer), `unsupported` (paged layout).
    public func kv(_ seq: UInt64, layer: Int) throws(KVError) -> (k: UnsafeMutableRawPointer, v: UnsafeMutableRawPointer) { fatalError() }

    /// Paged layout: writes `seq`'s block ids into `into` (as many as fit) and returns the full
    /// count. Throws `notFound`, `unsupported` (contiguous layout).
    public func blockTable(_ seq: UInt64, into: UnsafeMutableBufferPointer<Int32>) throws(KVError) -> Int { fatalError() }

    /// Paged layout: K and V base of `block` in `layer` (token `i` of the block at `i * tokenBytes`).
    /// Throws `invalidArgument` (block or layer out of range), `unsupported` (contiguous / metadata-only).
    public func blockKV(_ block: Int32, layer: Int) throws(KVError) -> (k: UnsafeMutableRawPointer, v: UnsafeMutableRawPointer) { fatalError() }

    /// Returns every page not holding live-sequence data to the OS; cached prefix blocks are dropped.
    public func trim() throws(KVError) { fatalError() }

    /// A consistent snapshot of the counters.
    public func stats() -> EngineStats { fatalError() }

    /// Moves up to `into.count` pending events, oldest first, into `into`; returns how many.
    public func drainEvents(into: UnsafeMutableBufferPointer<KVEvent>) -> Int { fatalError() }
}

extension Engine {
    /// `createSequence` for an array of tokens.
    @discardableResult
    public func createSequence(_ seq: UInt64, tokens: [Int32]) throws(KVError) -> Int {
        try tokens.withUnsafeBufferPointer { (b) throws(KVError) -> Int in try createSequence(seq, tokens: b) }
    }

    /// `append` for an array of tokens.
    public func append(_ seq: UInt64, tokens: [Int32]) throws(KVError) {
        try tokens.withUnsafeBufferPointer { (b) throws(KVError) in try append(seq, tokens: b) }
    }
}
