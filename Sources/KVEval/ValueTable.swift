import KVCache

/// Synthetic value vectors per row (layer x head) and position: N(0, 1) coordinates from a
/// SplitMix64 stream of the seed, so outputs o = sum p_i v_i are reproducible.
struct ValueTable {
    /// Coordinates per value vector.
    static let dim = 16
    let table: [Float]
    private let maxTokens: Int

    init(rows: Int, maxTokens: Int, seed: UInt64) {
        self.maxTokens = maxTokens
        var rng = SplitMix64(seed: seed ^ 0x5641_4C55_4553)
        table = (0..<rows * maxTokens * Self.dim).map { _ in Float(rng.normal()) }
    }

    /// Index in `table` of the vector of `row` at `position`.
    @inline(__always) func base(row: Int, position: Int) -> Int { (row * maxTokens + position) * Self.dim }

    /// Full-cache outputs of a step, `[row][dim]`.
    func outputs(_ step: TraceStep, rows: Int) -> [Float] {
        var out = [Float](repeating: 0, count: rows * Self.dim)
        let n = step.nTokens
        for r in 0..<rows {
            for i in 0..<n {
                let p = step.rows[r * n + i]
                let base = (r * maxTokens + i) * Self.dim
                for j in 0..<Self.dim { out[r * Self.dim + j] += p * table[base + j] }
            }
        }
        return out
    }
}
