import KVCache
import KVReport

/// A generated workload: Poisson arrivals (or a closed loop), prompt and output lengths from
/// `LengthDistribution`s, and a shared-prefix ratio.
///
/// Sharing model: there are `sharedPrompts` long shared texts (system prompts, few-shot
/// examples, earlier turns). Each request picks one (Zipf-like: prompt `k` with weight
/// `1 / (k + 1)`), and the first `round(sharedPrefixRatio * promptTokens)` tokens of its prompt
/// are the leading tokens of that text; the rest are unique to the request. Two requests
/// therefore share the blocks of the shorter of their shared parts, which the prefix cache
/// can serve once a block has been computed and not evicted.
///
/// Everything derives from `seed`: the same options give the same requests and tokens.
struct SyntheticWorkload: Workload {
    var requestCount: Int
    var ratePerSecond: Double
    var prompt: LengthDistribution
    var output: LengthDistribution
    var sharedPrefixRatio: Double
    var sharedPrompts: Int
    var seed: UInt64
    var limits: TokenLimits
    /// Set when the run is bounded by time rather than by `requestCount` (for the summary).
    var durationSeconds: Double?
    /// Poisson arrival times when `ratePerSecond > 0`; empty for a closed loop.
    private var arrivals: [UInt64]
    /// Cumulative Zipf weights of the shared prompts.
    private var sharedWeights: [Double]

    init(requestCount: Int, ratePerSecond: Double, prompt: LengthDistribution, output: LengthDistribution,
         sharedPrefixRatio: Double, sharedPrompts: Int, seed: UInt64, limits: TokenLimits) {
        precondition(requestCount >= 0 && sharedPrompts >= 1 && (0...1).contains(sharedPrefixRatio))
        self.requestCount = requestCount
        self.ratePerSecond = ratePerSecond
        self.prompt = prompt
        self.output = output
        self.sharedPrefixRatio = sharedPrefixRatio
        self.sharedPrompts = sharedPrompts
        self.seed = seed
        self.limits = limits
        var arrivals: [UInt64] = []
        if ratePerSecond > 0 {
            var random = SplitMix64(seed: seed ^ 0xA441_1EA1)
            arrivals.reserveCapacity(requestCount)
            var t = 0.0
            for _ in 0..<requestCount {
                t += random.exponential(mean: 1e9 / ratePerSecond)
                arrivals.append(UInt64(t))
            }
        }
        self.arrivals = arrivals
        var total = 0.0
        sharedWeights = (0..<sharedPrompts).map { k in
            total += 1 / Double(k + 1)
            return total
        }
    }

    /// The per-request generator: independent of other requests, so any thread can describe
    /// any request without coordination.
    private func random(for index: Int) -> SplitMix64 {
        SplitMix64(seed: SplitMix64.mix(seed ^ (UInt64(index) &* 0xD6E8_FEB8_6659_FD93)))
    }

    func request(_ index: Int) -> LoadRequest {
        var random = random(for: index)
        let (p, o) = limits.cap(prompt: prompt.sample(&random), output: output.sample(&random))
        return LoadRequest(index: index, arrivalNanoseconds: arrivals.isEmpty ? 0 : arrivals[index],
                           promptTokens: p, outputTokens: o)
    }

    /// Which shared text request `index` uses; the draws come after its two lengths.
    private func sharedPrompt(for index: Int) -> Int {
        var random = random(for: index)
        _ = prompt.sample(&random)
        _ = output.sample(&random)
        let u = random.unit() * sharedWeights[sharedWeights.count - 1]
        return sharedWeights.firstIndex { u <= $0 } ?? sharedPrompts - 1
    }

    func fillPrompt(_ request: LoadRequest, into buffer: UnsafeMutableBufferPointer<Int32>) {
        precondition(buffer.count >= request.promptTokens)
        let shared = Int((sharedPrefixRatio * Double(request.promptTokens)).rounded())
        let sharedStream = seed ^ 0x5348_4152_4544 &+ UInt64(sharedPrompt(for: request.index)) &* 0x1_0000_0001
        let uniqueStream = seed ^ 0x554E_4951_5545 &+ UInt64(request.index) &* 0x1_0000_0001 &+ (1 << 62)
        for i in 0..<shared {
            buffer[i] = syntheticToken(stream: sharedStream, position: i)
        }
        for i in shared..<request.promptTokens {
            buffer[i] = syntheticToken(stream: uniqueStream, position: i)
        }
    }

    var summary: String {
        let arrival = ratePerSecond > 0 ? "Poisson \(fixed(ratePerSecond, ratePerSecond < 1 ? 3 : 1)) req/s" : "closed loop"
        let count = durationSeconds.map { "\(fixed($0, 1)) s" } ?? "\(requestCount) requests"
        return "synthetic, \(count), \(arrival), prompt \(prompt), output \(output)\(caps), "
            + "shared prefix \(fixed(sharedPrefixRatio * 100, 0))% of \(sharedPrompts) prompts, seed \(seed)"
    }

    /// The limits that cut the distributions' lengths (`TokenLimits.cap`), when they can: a
    /// run whose prompts or outputs come out shorter than the distributions says why.
    private var caps: String {
        let promptCap = min(limits.maxPromptTokens, limits.maxSeqTokens)
        var text = promptCap < prompt.max ? ", prompts capped at \(promptCap) tokens" : ""
        if output.max > limits.maxSeqTokens - min(prompt.max, promptCap) {  // no overflow near Int.max
            text += ", prompt + output capped at \(limits.maxSeqTokens) tokens (max_seq_tokens)"
        }
        return text
    }

    var kind: String { "synthetic" }
}
