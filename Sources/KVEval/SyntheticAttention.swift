#if canImport(Glibc)
import Glibc
#endif
import Foundation
import KVCache

/// The synthetic attention generator of `kvcache evict-eval`: softmax attention over a causal
/// cache whose logits combine the phenomena reported for real LLMs, each with one fixed
/// parameter (no parameter differs between policies or budgets):
///
///     logit(query t of topic q, key i) =
///         sink(i)                         6 for position 0, 3 for positions 1...3 (sinks)
///       + 5 * exp(-(t - i) / tau_h)       locality; tau_h = 4, 8, 16, 32 by head (h mod 4)
///       + s_lh(i) * (topic(i) == q ? 1 : 0.2)     heavy hitters: s = min(8, 2 * E * m),
///                                       E ~ Exp(1) per (layer, token), m ~ U(0.5, 1.5) per
///                                       (layer, token, head): a heavy tail, so a few tokens draw most
///                                       attention, mostly from queries of their own topic
///       + (topic(i) == q ? 1.5 : 0)       topical relevance
///       + N(0, 1)                         per (query, key, layer, head) noise; optionally a
///                                       scale mixture instead: N(0, s^2), or N(0, S^2) with
///                                       probability p (`spikeProbability`, `spikeNoise`)
///
/// Traces:
/// - `long-decode`: one topic; a 512-token prompt (one prefill step) then 1536 decode steps.
/// - `topic-return`: five turns on topics A B C D A, each a 32-token user message (one
///   prefill step carrying the query embedding) and 224 decoded tokens; every finished turn
///   becomes a segment (available when the next turn starts). The embeddings are real:
///   all-MiniLM-L6-v2 sentence embeddings (dimension 384) of a written conversation
///   (`TopicReturnEmbeddings`, from `tools/topic_return/`), the user message for the query and
///   the whole turn for the segment; `embeddingNoise` adds a Gaussian vector of that expected
///   norm to each (default 0, for sensitivity sweeps). Marked: the return turn.
///
/// Everything derives from `seed` through counter-based hashing, so a trace is the same on
/// every machine and can be regenerated rather than stored.
public struct SyntheticAttention: AttentionTraceSource {
    /// The two synthetic traces.
    public enum Kind: String, CaseIterable, Sendable {
        /// One topic: a 512-token prompt, then 1536 decode steps.
        case longDecode = "long-decode"
        /// Five turns on topics A B C D A.
        case topicReturn = "topic-return"
    }

    /// Shape, segments (topic-return) and length.
    public let header: TraceHeader
    private let layers = 4, heads = 4
    private let seed: UInt64
    /// Standard deviation of the per-(query, key) logit noise: how much attention varies
    /// from one query to the next beyond the persistent structure.
    public let queryNoise: Float
    /// `queryNoise` of the documented generator (the README's numbers).
    public static let defaultQueryNoise: Float = 1
    /// Probability that a (query, key) pair draws its noise from N(0, `spikeNoise`^2) instead:
    /// sparse, large, query-specific jumps (0: none, the default).
    public let spikeProbability: Float
    /// Standard deviation of those spikes.
    public let spikeNoise: Float
    /// Per step: tokens after it, queries, and the query embedding of a new turn.
    private var plan: [(tokens: Int, queries: Int, query: [Float]?)] = []
    private var topic: [Int] = []
    /// `[layer][head][position]` heavy-hitter salience.
    private var salience: [Float] = []
    private var stepIndex = 0
    private var logits: [Float] = []

    /// The `kind` trace of `seed`; the noise levels default to the documented generator's.
    /// Precondition: noise levels >= 0, `spikeProbability` in [0, 1] (the CLI validates them).
    /// Cost: O(layers x heads x tokens) to draw the saliences; steps are computed in `next`.
    public init(_ kind: Kind, seed: UInt64, queryNoise: Float = defaultQueryNoise, spikeProbability: Float = 0, spikeNoise: Float = 0,
                embeddingNoise: Float = 0) {
        precondition(queryNoise >= 0 && spikeNoise >= 0 && embeddingNoise >= 0 && (0...1).contains(spikeProbability),
                     "noise levels are >= 0, spikeProbability in [0, 1]")
        self.seed = seed
        self.queryNoise = queryNoise
        self.spikeProbability = spikeProbability
        self.spikeNoise = spikeNoise
        var rng = SplitMix64(seed: seed)
        var embeddingRNG = SplitMix64(seed: seed ^ 0x454D_4245_4444)  // its own stream: noise leaves attention alone
        var segments: [TraceSegment] = []
        var mark: Int? = nil
        let dim = TopicReturnEmbeddings.dimension
        switch kind {
        case .longDecode:
            plan.append((512, 512, nil))
            for t in 513...2048 { plan.append((t, 1, nil)) }
            topic = [Int](repeating: 0, count: 2048)
        case .topicReturn:
            let topics = TopicReturnEmbeddings.topics.map { Int($0.asciiValue! - Character("A").asciiValue!) }
            let queries = Self.vectors(TopicReturnEmbeddings.queries, dim)
            let turns = Self.vectors(TopicReturnEmbeddings.segments, dim)
            let scale = embeddingNoise / Float(dim).squareRoot()
            func noisy(_ c: [Float]) -> [Float] { c.map { $0 + scale * Float(embeddingRNG.normal()) } }
            var n = 0
            for (turn, q) in topics.enumerated() {
                if turn == topics.count - 1 { mark = plan.count }
                if turn > 0 {
                    segments.append(TraceSegment(start: n - 256, end: n, availableStep: plan.count, embedding: noisy(turns[turn - 1])))
                }
                n += 32
                plan.append((n, 32, noisy(queries[turn])))
                for _ in 0..<224 {
                    n += 1
                    plan.append((n, 1, nil))
                }
                topic += [Int](repeating: q, count: 256)
            }
        }
        let maxTokens = plan.last!.tokens
        salience = [Float](repeating: 0, count: layers * heads * maxTokens)
        for l in 0..<layers {
            for i in 0..<maxTokens {
                let e = rng.exponential(mean: 1)
                for h in 0..<heads {
                    let m = 0.5 + rng.unit()
                    salience[(l * heads + h) * maxTokens + i] = Float(min(8, 2 * e * m))
                }
            }
        }
        header = TraceHeader(layers: layers, heads: heads, embeddingDim: kind == .topicReturn ? dim : 0, segments: segments,
                             steps: plan.count, markStep: mark, maxTokens: maxTokens)
        logits = [Float](repeating: 0, count: maxTokens)
    }

    /// `base64`'s little-endian float32s as vectors of `dim`.
    private static func vectors(_ base64: String, _ dim: Int) -> [[Float]] {
        let bytes = [UInt8](Data(base64Encoded: base64)!)
        let all = stride(from: 0, to: bytes.count, by: 4).map {
            Float(bitPattern: UInt32(bytes[$0]) | UInt32(bytes[$0 + 1]) << 8 | UInt32(bytes[$0 + 2]) << 16 | UInt32(bytes[$0 + 3]) << 24)
        }
        return stride(from: 0, to: all.count, by: dim).map { Array(all[$0..<$0 + dim]) }
    }

    /// 16 uniform bits for (query, key, row), independent of `noise`'s: a spike when below
    /// `spikeProbability * 65536`.
    @inline(__always)
    private func spike(_ t: Int, _ i: Int, _ row: Int) -> UInt32 {
        UInt32(truncatingIfNeeded: SplitMix64.mix(seed ^ 0x5350_494B_45 ^ (UInt64(t) &* 0xD6E8_FEB8_6659_FD93)
                                                  ^ (UInt64(i) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(row) << 48)) & 0xFFFF)
    }

    /// Approximately N(0, 1) noise for (query, key, row): Irwin-Hall of four 16-bit uniforms
    /// of one hash, scaled to unit variance.
    @inline(__always)
    private func noise(_ t: Int, _ i: Int, _ row: Int) -> Float {
        let z = SplitMix64.mix(seed ^ (UInt64(t) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(i) &* 0xC2B2_AE3D_27D4_EB4F) ^ (UInt64(row) &* 0x1656_67B1_9E37_79F9))
        let s = Float(z & 0xFFFF) + Float((z >> 16) & 0xFFFF) + Float((z >> 32) & 0xFFFF) + Float(z >> 48)
        return (s / 65536 - 2) * 1.7320508
    }

    /// Computes the next step's rows (softmax per query, summed over the step's queries).
    /// Cost: O(layers x heads x queries x tokens).
    public mutating func next(into step: inout TraceStep) throws -> Bool {
        guard stepIndex < plan.count else { return false }
        let (n, q, query) = plan[stepIndex]
        stepIndex += 1
        step.nTokens = n
        step.nQueries = q
        step.query = query
        let count = layers * heads * n
        if step.rows.count < count { step.rows = [Float](repeating: 0, count: count) }
        let maxTokens = header.maxTokens
        let spikes = UInt32((spikeProbability * 65536).rounded())
        var scratch: [Float] = []
        swap(&scratch, &logits)
        defer { swap(&scratch, &logits) }
        step.rows.withUnsafeMutableBufferPointer { rows in
            scratch.withUnsafeMutableBufferPointer { logit in
                salience.withUnsafeBufferPointer { sal in
                    for l in 0..<layers {
                        for h in 0..<heads {
                            let r = l * heads + h
                            let out = rows.baseAddress! + r * n
                            out.update(repeating: 0, count: n)
                            let tau = Float(4 << (h % 4))
                            for t in (n - q)..<n {
                                let qt = topic[t]
                                var top = -Float.infinity
                                for i in 0...t {
                                    var x: Float = i == 0 ? 6 : (i < 4 ? 3 : 0)
                                    x += 5 * expf(-Float(t - i) / tau)
                                    let same = topic[i] == qt
                                    x += sal[r * maxTokens + i] * (same ? 1 : 0.2) + (same ? 1.5 : 0)
                                    x += noise(t, i, r) * (spikes > 0 && spike(t, i, r) < spikes ? spikeNoise : queryNoise)
                                    logit[i] = x
                                    top = max(top, x)
                                }
                                var z: Float = 0
                                for i in 0...t {
                                    let e = expf(logit[i] - top)
                                    logit[i] = e
                                    z += e
                                }
                                for i in 0...t { out[i] += logit[i] / z }
                            }
                        }
                    }
                }
            }
        }
        return true
    }
}
