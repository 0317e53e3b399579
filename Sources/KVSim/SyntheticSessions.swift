#if canImport(Glibc)
import Glibc
#endif
import KVCache

/// A synthetic multi-turn chat workload with shared system prompts, for when no trace fits.
///
/// `sessions` conversations start as a Poisson process of `sessionsPerSecond`; each picks one
/// of `systemPrompts` shared system prompts (Zipf weights 1/(k+1)) of `systemPromptTokens`,
/// then runs `turns` turns (uniform in 1...maxTurns) separated by exponential think times of
/// mean `thinkSeconds`. Turn t's prompt is the system prompt, the whole history (earlier
/// questions and answers) and a new question of `questionTokens` (exponential mean, >= 1);
/// answers are `answerTokens` (exponential mean, >= 1). Block ids are derived so that a turn
/// shares its history's blocks with the previous turn and the system prompt's blocks with
/// every session using it: exactly the sharing a prefix cache can exploit.
///
/// Deterministic for a seed (SplitMix64).
public struct SyntheticSessions: Sendable {
    /// Conversations.
    public var sessions = 2000
    /// Conversation starts per second (Poisson).
    public var sessionsPerSecond = 1.0
    /// Distinct shared system prompts (Zipf popularity).
    public var systemPrompts = 8
    /// Tokens of each system prompt.
    public var systemPromptTokens = 2048
    /// Turns per conversation at most (uniform in 1...maxTurns).
    public var maxTurns = 8
    /// Mean think time between a turn's answer and the next question.
    public var thinkSeconds = 30.0
    /// Mean tokens of a new question.
    public var questionTokens = 600
    /// Mean tokens of an answer.
    public var answerTokens = 300
    /// Tokens per block of the generated hashes.
    public var blockTokens = 512
    /// The generator's seed.
    public var seed: UInt64 = 1

    /// The defaults listed above.
    public init() {}

    /// Generates the trace (arrivals sorted). Cost: O(total blocks).
    public func generate() -> Trace {
        var rng = SplitMix64(seed: seed)
        struct Turn { var time: Double; var session: Int; var turn: Int; var tokens: Int; var output: Int; var system: Int }
        var turns: [Turn] = []
        var start = 0.0
        let zipf = (0..<systemPrompts).map { 1.0 / Double($0 + 1) }
        let zipfTotal = zipf.reduce(0, +)
        for s in 0..<sessions {
            start += rng.exponential(mean: 1 / sessionsPerSecond)
            var u = rng.unit() * zipfTotal, system = 0
            while system < systemPrompts - 1 && u > zipf[system] { u -= zipf[system]; system += 1 }
            let count = 1 + Int(rng.next() % UInt64(maxTurns))
            var t = start, history = systemPromptTokens
            for k in 0..<count {
                let q = max(1, Int(rng.exponential(mean: Double(questionTokens))))
                let a = max(1, Int(rng.exponential(mean: Double(answerTokens))))
                turns.append(Turn(time: t, session: s, turn: k, tokens: history + q, output: a, system: system))
                history += q + a
                t += rng.exponential(mean: thinkSeconds) + Double(a) * 0.02
            }
        }
        turns.sort { $0.time != $1.time ? $0.time < $1.time : $0.session < $1.session }
        var trace = Trace(source: "synthetic sessions (seed \(seed))", blockTokens: blockTokens)
        var hashes: [UInt64] = []
        let systemBlocks = systemPromptTokens / blockTokens
        for turn in turns {
            hashes.removeAll(keepingCapacity: true)
            var parent: UInt64 = 0
            for k in 0..<(turn.tokens + blockTokens - 1) / blockTokens {
                // System-prompt blocks are shared by every session with that prompt; later
                // blocks belong to the session (a turn extends the previous turn's blocks).
                let id: UInt64 = k < systemBlocks ? UInt64(turn.system) << 48 | UInt64(k)
                    : 1 << 63 | UInt64(turn.session) << 24 | UInt64(k)
                parent = Trace.chainedHash(parent: parent, id: id)
                hashes.append(parent)
            }
            let first = turns.first!.time
            trace.append(arrivalMilliseconds: (turn.time - first) * 1000, input: turn.tokens, output: turn.output, blockHashes: hashes)
        }
        return trace
    }
}
