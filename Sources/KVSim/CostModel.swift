/// Time of one continuous-batching step of a serving instance, from a roofline of a published
/// model and GPU profile.
///
/// Calibration (defaults): Qwen2.5-7B-Instruct, DualMap's evaluation model, on one
/// NVIDIA A100-SXM4-80GB.
/// - Model (Qwen2.5 technical report, arXiv:2412.15115, and the model's `config.json`):
///   7.61 B parameters, 28 layers, hidden size 3584, 28 query heads, 4 KV heads of 128, bf16.
///   So weights are 15.2 GB, and one token's K/V is 28 x 2 x 4 x 128 x 2 B = 57,344 B.
/// - GPU (NVIDIA A100 datasheet): 312 TFLOP/s dense BF16, 2,039 GB/s HBM2e.
/// - Assumed model FLOP utilisation 50% in prefill (typical of measured chunked prefill; an
///   assumption, stated here so that it can be changed).
///
/// Step time = `stepOverheadMilliseconds`
///           + max(weight read, linear compute + attention compute) + KV read, where
/// - linear compute = 2 x params FLOPs per token of the step (prefill chunk tokens plus one per
///   decoding sequence): `prefillMillisecondsPerToken` = 2 x 7.61e9 / (0.5 x 312e12) = 0.0976 ms;
/// - attention compute = 4 x layers x hidden FLOPs per (query, key) pair: a chunk of c tokens
///   after p cached ones has c x p + c^2 / 2 pairs: 4 x 28 x 3584 / (0.5 x 312e12) = 2.57e-6 ms per pair;
/// - weight read = 15.2e9 B / 2.039e12 B/s = 7.47 ms (decode is memory-bound);
/// - KV read = 57,344 B per context token of every decoding sequence / 2.039e12 = 2.81e-5 ms.
///
/// So a cold 8k-token prompt prefills in about 0.88 s, a 100k-token one in about 22.6 s, and a
/// decode step of 32 sequences at 12k context costs about 19 ms.
public struct CostModel: Sendable, Equatable {
    /// Fixed per-step overhead (scheduling, kernel launches).
    public var stepOverheadMilliseconds = 1.0
    /// Linear-layer compute per token of the step.
    public var prefillMillisecondsPerToken = 0.09756
    /// Attention compute per (query, key) pair.
    public var attentionMillisecondsPerPair = 2.573e-6
    /// Reading the weights once, the floor of every step.
    public var weightReadMilliseconds = 7.47
    /// Reading one context token's K/V during decode.
    public var kvReadMillisecondsPerToken = 2.81e-5

    /// The A100 / Qwen2.5-7B defaults above.
    public init() {}

    /// Milliseconds of one step computing `prefillTokens` prompt tokens with `attentionPairs`
    /// (query, key) pairs among them, and one token for each of `decodeSequences` sequences
    /// holding `decodeContextTokens` tokens in all.
    @inline(__always)
    public func stepMilliseconds(prefillTokens: Int, attentionPairs: Double, decodeSequences: Int, decodeContextTokens: Int) -> Double {
        let compute = Double(prefillTokens + decodeSequences) * prefillMillisecondsPerToken + attentionPairs * attentionMillisecondsPerPair
        return stepOverheadMilliseconds + max(weightReadMilliseconds, compute) + Double(decodeContextTokens) * kvReadMillisecondsPerToken
    }

    /// (query, key) pairs of a causal chunk of `chunk` tokens after `context` earlier ones.
    @inline(__always)
    public static func attentionPairs(chunk: Int, context: Int) -> Double {
        Double(chunk) * Double(context) + Double(chunk) * Double(chunk) / 2
    }
}
