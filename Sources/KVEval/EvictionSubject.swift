import KVCache

/// What an `EvictionRun` drives through a trace, as a server drives the engine: the engine's
/// eviction state alone (`EvictionState`: the policies' decisions without K/V bytes), or a
/// whole engine with its memory and disk tier (`EngineSubject`). Positions are original token
/// positions; rows are per layer (or per KV head in per-head mode).
protocol EvictionSubject: AnyObject {
    /// Tokens appended so far (the next token's position).
    var nextPosition: Int { get }
    /// Appends `n` tokens to every layer.
    func append(_ n: Int) throws
    /// Registers a conversation segment `[start, end)` with its embedding.
    func addSegment(start: Int, end: Int, embedding: UnsafeBufferPointer<Float>) throws
    /// Focuses the episode nearest to `query` (its tokens resident when this returns).
    func focus(_ query: UnsafeBufferPointer<Float>) throws -> Int
    /// Tokens `layer` holds.
    func length(layer: Int) throws -> Int
    /// The original positions row `row` of `layer` holds, in slot order (valid until the next call).
    func heldPositions(layer: Int, row: Int) throws -> UnsafeBufferPointer<Int32>
    /// Reports a step's attention over `layer`'s slots (`[head][slot]`).
    func observe(layer: Int, scores: UnsafePointer<Float>, nHeads: Int, nTokens: Int) throws
    /// Applies the policy down to `budget` tokens per layer.
    func compact(budget: Int) throws
}

extension EvictionState: EvictionSubject {
    func heldPositions(layer: Int, row: Int) -> UnsafeBufferPointer<Int32> { positions(layer: layer, row: row) }
}
