#if canImport(Glibc)
import Glibc
#endif
import Foundation
import KVCache

/// One policy at one budget ratio, replayed over a trace as a server would drive the engine:
/// per step append the step's tokens, (episodic) register finished segments and focus a new
/// turn's query, score the step against the full cache (decode steps), observe the step's
/// attention over the tokens the cache holds, renormalised as the server's softmax over them
/// would be, then compact to `ratio * tokens so far`. The policy sees each step only after
/// it was scored: no peeking. The state is the engine's own `EvictionState` and policy
/// code, without K/V bytes; with `offload` it is a whole engine with a disk tier
/// (`EngineSubject`), whose episodic offload keeps evicted tokens on disk and restores them on
/// a focus, byte-checked.
final class EvictionRun {
    let label: String
    let config: EvictionConfig
    let ratio: Double
    let oracle: Bool
    /// Print each focus decision to standard error.
    var verbose = false
    /// The eviction state, or the engine, this run drives.
    let subject: any EvictionSubject
    private var segments = 0
    private var keep: [UInt8]
    private let layers: Int, heads: Int
    private let observed: UnsafeMutablePointer<Float>
    private var oracleScratch: [Float]
    /// Tokens so far at the last compaction (0: none yet): the policies hold `budget` of them
    /// and every token appended since when the next step is scored.
    private var compactedAt = 0
    private(set) var recall = Mean(), error = Mean(), recallAfter = Mean(), errorAfter = Mean()

    /// A run of `config` at `ratio` over traces shaped like `header`; `offload` runs a whole
    /// engine with a disk tier (throws what creating it throws), in a private directory it
    /// passes to `madeTierDirectory` as soon as it exists (`EngineSubject`).
    init(label: String, config: EvictionConfig, ratio: Double, offload: Bool = false, oracle: Bool = false, header: TraceHeader,
         madeTierDirectory: (String) -> Void = { _ in }) throws {
        self.label = label
        self.config = config
        self.ratio = ratio
        self.oracle = oracle
        layers = header.layers
        heads = header.heads
        let maxTokens = header.maxTokens
        subject = offload ? try EngineSubject(eviction: config, header: header, made: madeTierDirectory)
                          : try EvictionState(layers: layers, heads: heads, config: config, length: 0, maxCapacity: maxTokens)
        keep = [UInt8](repeating: 0, count: maxTokens)
        observed = .allocate(capacity: heads * maxTokens)
        oracleScratch = [Float](repeating: 0, count: maxTokens)
    }

    deinit { observed.deallocate() }

    func budget(_ tokens: Int) -> Int { max(1, Int((ratio * Double(tokens)).rounded(.up))) }

    /// Tokens a row of the policies holds when a step of `n` tokens is scored: the last
    /// compaction's budget plus the tokens appended since (all `n` before the first). The
    /// oracle keeps as many: it once kept `budget(n)`, a token fewer than the policies on
    /// most steps.
    func held(_ n: Int) -> Int { compactedAt == 0 ? n : min(n, budget(compactedAt) + n - compactedAt) }

    /// Appends the step's tokens and handles segments and a query (before scoring).
    func begin(_ step: TraceStep, index: Int, header: TraceHeader) throws {
        let new = step.nTokens - subject.nextPosition
        if new > 0 { try subject.append(new) }
        guard config.tracking.contains(.episodes) else { return }
        for s in header.segments where s.availableStep == index {
            try s.embedding.withUnsafeBufferPointer { try subject.addSegment(start: s.start, end: s.end, embedding: $0) }
            segments += 1
        }
        if let q = step.query, segments > 0 {
            let e = try q.withUnsafeBufferPointer { try subject.focus($0) }
            if verbose {
                FileHandle.standardError.write("\(label) \(ratio): step \(index) focuses episode \(e) of \(segments) segments\n".data(using: .utf8)!)
            }
        }
    }

    /// The positions row `head` of `layer` holds now, as a mask over positions, into `keep`.
    private func keptMask(layer: Int, head: Int, step: TraceStep, rows: UnsafePointer<Float>) throws {
        let n = step.nTokens
        if oracle {
            // The top tokens of this very step's attention, as many as the policies hold: of
            // the head's row per head (it once summed the layer's heads there too, and a
            // per-head TOVA beat it), else of the sum over the layer's heads of each row's
            // share of its own total, what recall averages (it once summed the raw rows, and
            // on rows summing below 1 every policy beat it).
            for i in 0..<n { oracleScratch[i] = 0 }
            for h in config.perHead ? head..<head + 1 : 0..<heads {
                let p = rows + (layer * heads + h) * n
                var total: Float = 0
                for i in 0..<n { total += p[i] }
                for i in 0..<n { oracleScratch[i] += p[i] / total }
            }
            // A plain sort, not the engine's `Selection`: the upper bound does not share the
            // code it bounds.
            let k = held(n)
            let threshold = oracleScratch.prefix(n).sorted(by: >)[k - 1]
            var left = k
            for i in 0..<n { keep[i] = oracleScratch[i] > threshold ? 1 : 0; left -= Int(keep[i]) }
            for i in 0..<n where left > 0 && keep[i] == 0 && oracleScratch[i] == threshold { keep[i] = 1; left -= 1 }
            return
        }
        for i in 0..<n { keep[i] = 0 }
        for p in try subject.heldPositions(layer: layer, row: config.perHead ? head : 0) { keep[Int(p)] = 1 }
    }

    /// Scores a decode step: attention-mass recall and relative output error per layer and
    /// head, given the full-cache outputs `full` (`[row][valueDim]`, unnormalised) and values.
    /// Both are of the row's own total: a row may sum below 1 (attention outside the cache),
    /// and the full cache scores recall 1 and error 0 (recall was the raw kept mass, and the
    /// full output was not renormalised as the kept one is).
    func score(_ step: TraceStep, full: [Float], values: ValueTable, after: Bool) throws {
        let n = step.nTokens
        try step.rows.withUnsafeBufferPointer { rowsBuffer in
            let rows = rowsBuffer.baseAddress!
            var o = [Float](repeating: 0, count: ValueTable.dim)
            for l in 0..<layers {
                for h in 0..<heads {
                    if h == 0 || config.perHead { try keptMask(layer: l, head: h, step: step, rows: rows) }
                    let r = l * heads + h
                    let p = rows + r * n
                    var mass: Float = 0, total: Float = 0
                    for i in 0..<n { total += p[i] }
                    for j in 0..<ValueTable.dim { o[j] = 0 }
                    for i in 0..<n where keep[i] == 1 {
                        mass += p[i]
                        let v = values.base(row: r, position: i)
                        for j in 0..<ValueTable.dim { o[j] += p[i] * values.table[v + j] }
                    }
                    var diff: Float = 0, norm: Float = 0
                    for j in 0..<ValueTable.dim {
                        let f = full[r * ValueTable.dim + j] / total
                        let d = f - (mass > 0 ? o[j] / mass : 0)
                        diff += d * d
                        norm += f * f
                    }
                    let e = norm > 0 ? sqrt(diff / norm) : 0
                    recall.add(Double(mass / total))
                    error.add(Double(e))
                    if after {
                        recallAfter.add(Double(mass / total))
                        errorAfter.add(Double(e))
                    }
                }
            }
        }
    }

    /// Observes the step over the held tokens, then compacts for the next step.
    func observeAndCompact(_ step: TraceStep) throws {
        let n = step.nTokens
        defer { compactedAt = n }
        guard !oracle else { return }
        try step.rows.withUnsafeBufferPointer { rowsBuffer in
            let rows = rowsBuffer.baseAddress!
            for l in 0..<layers {
                let len = try subject.length(layer: l)
                var pos = try subject.heldPositions(layer: l, row: 0)
                for h in 0..<heads {
                    if config.perHead && h > 0 { pos = try subject.heldPositions(layer: l, row: h) }
                    let p = rows + (l * heads + h) * n
                    let out = observed + h * len
                    var held: Float = 0
                    for i in 0..<len { out[i] = p[Int(pos[i])]; held += out[i] }
                    // The server's softmax over the held tokens: each query's row sums to 1.
                    let scale = held > 0 ? Float(step.nQueries) / held : 0
                    for i in 0..<len { out[i] *= scale }
                }
                try subject.observe(layer: l, scores: observed, nHeads: heads, nTokens: len)
            }
        }
        try subject.compact(budget: budget(n))
    }
}

/// A running mean.
struct Mean {
    private(set) var sum: Double = 0
    private(set) var count = 0
    mutating func add(_ x: Double) { sum += x; count += 1 }
    var value: Double { count > 0 ? sum / Double(count) : .nan }
}
