/// One request of a load test: when it arrives, and how many prompt and output tokens it has.
struct LoadRequest: Sendable {
    /// Its position in the workload (also names its deterministic token streams).
    var index: Int
    /// Arrival time after the start of the run; 0 for every request of a closed loop.
    var arrivalNanoseconds: UInt64
    /// Prompt tokens, after capping to the run's limits (at least 1).
    var promptTokens: Int
    /// Tokens to decode after the prompt, one `append` each, after capping (may be 0).
    var outputTokens: Int
}

/// Caps that keep every request inside the engine's `max_seq_tokens`.
struct TokenLimits: Sendable {
    /// A prompt is truncated to this many tokens (`--max-prompt-tokens`).
    var maxPromptTokens: Int
    /// Prompt plus output never exceed this (`--max-seq-tokens`).
    var maxSeqTokens: Int

    /// `(prompt, output)` capped: prompt to `1...maxPromptTokens`, output so that the sum
    /// stays within `maxSeqTokens`.
    func cap(prompt: Int, output: Int) -> (prompt: Int, output: Int) {
        let p = max(1, min(prompt, maxPromptTokens, maxSeqTokens))
        return (p, max(0, min(output, maxSeqTokens - p)))
    }
}

/// A source of requests for `kvcache load`: synthetic or a trace. Requests are described,
/// not materialized: prompt tokens are synthesized on demand from the request index, so a
/// workload of millions of long prompts costs a few words per request.
protocol Workload: Sendable {
    /// Requests at most (the run may stop earlier, at `--duration`).
    var requestCount: Int { get }
    /// Request `index`, `0 <= index < requestCount`.
    func request(_ index: Int) -> LoadRequest
    /// Writes the `request.promptTokens` tokens of `request`'s prompt into the front of
    /// `buffer` (which holds at least that many). Deterministic: equal shared parts give equal
    /// tokens, so the engine's prefix cache sees the workload's sharing.
    func fillPrompt(_ request: LoadRequest, into buffer: UnsafeMutableBufferPointer<Int32>)
    /// One line saying what the workload is, for the report.
    var summary: String { get }
    /// Short name for JSON: `synthetic` or `trace`.
    var kind: String { get }
}
