import KVCache

/// A KV store shared by every instance of the cluster, after LMCache's cross-instance
/// mechanism: instances store the prefix KV they compute into it, and a request admitted
/// anywhere loads the blocks that follow its instance's own cached prefix from it, paying load
/// time instead of recompute. So even a cache-oblivious router gets cross-instance reuse.
///
/// The index is a real metadata-only `KVCache.Engine` whose block budget is the tier's
/// capacity, never a copy of its logic: `store` creates a sequence of the chain's blocks and
/// frees it at once, so the blocks stay cached in the engine's prefix index and its LRU evicts
/// the coldest when a store needs room (a chain's later blocks before its earlier ones, as the
/// engine frees them last first); storing blocks already held only refreshes their recency.
/// `lookup` is the engine's read-only `cachedPrefixBlocks`.
///
/// What is modelled: stores at prefill (LMCache's store path runs as the forward pass computes
/// a chunk; the simulator stores a prompt's full blocks below its computed tokens at the end of
/// every step that computed some, so nothing is found before it was computed), asynchronously
/// and free for the serving step (LMCache offloads in the background; write bandwidth is not
/// charged). Loads are synchronous: `ClusterSimulator` adds `loadMilliseconds` of every load to
/// the step that admits the request (LMCache's default, non-layerwise retrieval completes
/// before the forward pass), so one load delays that whole batch, not only its request.
/// Not modelled: network contention between instances loading at once (each has its own link
/// at `loadGigabytesPerSecond`), and routers do not know the tier (they see instance engines).
///
/// Cost: `store` and `lookup` are O(blocks of the chain) and allocate nothing.
final class SharedTier {
    /// The tier's index: metadata-only, one sequence at a time, capacity = the tier's.
    let engine: Engine
    /// Blocks the tier holds at most.
    let capacityBlocks: Int
    /// Milliseconds to load one token's K/V: its bytes (the engine's shape) over the bandwidth.
    let loadMillisecondsPerToken: Double

    /// A tier of `config` for blocks shaped like `engine` (block tokens, K/V bytes per token).
    /// Throws `invalidArgument` with the reason when `config` is invalid
    /// (`SharedTierConfig.validate`) or holds more blocks than one engine indexes (the
    /// engine's message, prefixed with the tier's capacity).
    init(_ config: SharedTierConfig, engine shape: EngineConfig) throws(KVError) {
        try config.validate(blockBytes: UInt64(shape.blockBytesAllTensors))
        var c = shape
        c.memoryBytes = config.capacityBytes
        c.maxSeqs = 1
        c.indexOnSchedule = false
        c.metadataOnly = true
        c.offloadDir = nil
        c.offloadBytes = 0
        do {
            engine = try Engine(c)
        } catch {
            // The tier is an engine of that capacity: say which option its limit refused.
            throw KVError(error.code, "shared tier capacity \(config.capacityBytes) B: \(error.message)")
        }
        capacityBlocks = Int(engine.stats().blocksTotal)
        loadMillisecondsPerToken = Double(shape.tokenBytes * shape.tensors) / (config.loadGigabytesPerSecond * 1e6)
    }

    /// Leading blocks of `hashes` the tier holds (read-only: recency is refreshed by `store`).
    func lookup(_ hashes: UnsafeBufferPointer<UInt64>) -> Int { engine.cachedPrefixBlocks(hashes) }

    /// Stores the chain `hashes` (a prompt's leading full blocks), or as much of its head as
    /// the tier can hold: blocks not held yet are indexed, evicting the least recently used,
    /// and every block of it becomes most recently used. The sequence created holds one token
    /// more than the chain (the engine reports a hit on every block only when a token is left
    /// to compute, and only hit blocks are refreshed), so one block of the capacity is the
    /// store's scratch for that token: the tier caches at most `capacityBlocks - 1` blocks.
    func store(_ hashes: UnsafeBufferPointer<UInt64>) {
        let count = min(hashes.count, capacityBlocks - 1)
        guard count > 0 else { return }
        let chain = UnsafeBufferPointer(rebasing: hashes[0..<count])
        let bt = engine.config.blockTokens
        do {
            _ = try engine.createSequence(0, blockHashes: chain, tokens: count * bt + 1)
            try engine.free(0)
        } catch {
            // Within capacity, with the only sequence slot free and nonzero hashes (a trace's
            // chains) creation cannot fail: anything else is a simulator bug.
            preconditionFailure("shared tier store failed: \(error)")
        }
    }

    /// Milliseconds to load `tokens` tokens' K/V from the tier.
    @inline(__always)
    func loadMilliseconds(tokens: Int) -> Double { Double(tokens) * loadMillisecondsPerToken }
}
