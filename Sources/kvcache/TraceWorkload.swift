import KVReport
import KVSim

/// The requests of a trace file for `kvcache load --trace`: a Mooncake JSONL trace or an Azure
/// LLM inference CSV, read by `Trace.read`, the reader `kvcache replay` uses, so both commands
/// take the same files and name a malformed line the same way (`TraceFormatError`).
///
/// Prompt tokens are synthesized from the trace's chained block hashes (`Trace.hashes`, one per
/// 512-token block, equal exactly when the prompts are equal up to that block): token `j` of a
/// block is `syntheticToken(stream: tokenStream(hash), position: j)`. Equal hashes give equal
/// runs, so the engine's own chain hashes see exactly the trace's sharing (with any engine
/// `block_tokens` dividing 512); the last block is partial, `input - 512 * (blocks - 1)`
/// tokens. Arrivals are the trace's offsets from its first request, divided by `speed`;
/// outputs are capped at `maxOutputTokens` (trace outputs run to 2,000 tokens); an output of
/// 0 stays 0, a request that completes after its prefill (created, then freed).
struct TraceWorkload: Workload {
    /// The trace: flat arrays, a few words per request.
    var trace: Trace
    /// Replay speed: arrival = offset / speed; 0 ignores timestamps (closed loop).
    var speed: Double
    var limits: TokenLimits
    /// `--output-max`: the longest output a request decodes.
    var maxOutputTokens: Int

    /// Reads the first `maxRequests` requests (all when nil) of the trace file at `path`.
    /// Throws `TraceFormatError` (see `Trace.read`), also when, at `speed`, its last arrival
    /// comes more than `LoadCommand.maxDurationSeconds` (a week) after its first. O(file size).
    init(path: String, maxRequests: Int?, speed: Double, limits: TokenLimits, maxOutputTokens: Int = .max) throws {
        trace = try Trace.read(path: path, maxRequests: maxRequests)
        if speed > 0, let last = trace.arrivalMilliseconds.last, !(last / 1000 / speed <= LoadCommand.maxDurationSeconds) {
            throw TraceFormatError(path: path, line: 0, reason: "its arrivals span \(last / 1000) s, at --trace-speed \(speed) more than "
                                   + "a week (\(Int(LoadCommand.maxDurationSeconds)) s)")
        }
        self.speed = speed
        self.limits = limits
        self.maxOutputTokens = maxOutputTokens
    }

    var requestCount: Int { trace.count }

    func request(_ index: Int) -> LoadRequest {
        let (p, o) = limits.cap(prompt: Int(trace.inputTokens[index]), output: min(Int(trace.outputTokens[index]), maxOutputTokens))
        let arrival = speed > 0 ? UInt64(trace.arrivalMilliseconds[index] * 1e6 / speed) : 0
        return LoadRequest(index: index, arrivalNanoseconds: arrival, promptTokens: p, outputTokens: o)
    }

    /// The token stream of the trace block whose chained hash is `hash`.
    static func tokenStream(_ hash: UInt64) -> UInt64 { 0x4D6F_6F6E_6361_6B65 ^ hash }

    func fillPrompt(_ request: LoadRequest, into buffer: UnsafeMutableBufferPointer<Int32>) {
        let i = request.index, start = Int(trace.hashStart[i]), blockTokens = trace.blockTokens
        precondition(buffer.count >= request.promptTokens && request.promptTokens <= Int(trace.inputTokens[i]))
        var position = 0
        for block in 0..<trace.hashCount(i) where position < request.promptTokens {
            let stream = Self.tokenStream(trace.hashes[start + block])
            let count = min(blockTokens, request.promptTokens - position)
            for j in 0..<count {
                buffer[position + j] = syntheticToken(stream: stream, position: j)
            }
            position += count
        }
    }

    var summary: String {
        let arrival = speed > 0 ? "timestamps at \(fixed(speed, 1))x speed" : "closed loop (timestamps ignored)"
        let outputs = maxOutputTokens < .max ? ", outputs capped at \(maxOutputTokens) tokens" : ""
        return "trace \(trace.source), \(trace.count) requests, \(arrival), prompts capped at \(limits.maxPromptTokens) tokens\(outputs)"
    }

    var kind: String { "trace" }
}
