#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation
import KVEval

/// `kvcache evict-eval`: replays attention traces through every eviction policy at several
/// budgets and reports how much of the full cache's attention each keeps.
struct EvictEvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evict-eval",
        abstract: "Evaluate token-eviction policies on attention traces.",
        discussion: """
        For each trace, policy and budget ratio, the trace is replayed as a server would drive \
        the engine (KVEval/EvictionRun.swift): append the step's tokens, score it against the full \
        cache, observe its attention over the tokens held, compact to ratio * tokens so far. \
        Policies never see a step before it is scored.

        Metrics, averaged over decode steps, layers and heads: attention-mass recall (the \
        fraction of the full cache's attention that falls on kept tokens) and the relative \
        attention-output error ||o - o_S|| / ||o|| with synthetic N(0,1) values (dimension \
        16). "after" columns cover the trace's marked steps (topic-return: the return turn).

        Policies: none (full cache), streaming (4 sinks + recent), tova, h2o (raw sums), \
        h2o-norm (sums / queries that saw the token), episodic (drops evicted tokens), \
        episodic-offload (the engine itself with a disk tier: evicted tokens go to disk and a \
        focus restores the episode's set, every held byte checked), oracle (top tokens of the step being scored: peeks, an upper bound). \
        H2O and episodic split the budget half recent window, half heavy hitters.

        Traces: --synthetic long-decode|topic-return (SyntheticAttention.swift documents the \
        generator) or --trace FILE (format in AttentionTrace.swift and docs/token-eviction.md); \
        --write-trace FILE stores the synthetic trace in that format, or copies the --trace \
        file (a failed write ends the command with the system's reason and removes the partial \
        file). An output (--write-trace, --json, --plot) that is the --trace file is refused.

        --json FILE writes an array, one object per trace, policy and budget: {"trace", \
        "policy", "budget" (1 for none), "recall", "output_error", "recall_after_mark", \
        "output_error_after_mark" (null without a mark; any non-finite number is null)}.
        """
    )

    @Option(help: "Synthetic traces to run: long-decode, topic-return (comma-separated; default \(Self.defaultSynthetic)).")
    var synthetic: String?

    /// The traces run without `--synthetic` or `--trace`.
    static let defaultSynthetic = "long-decode,topic-return"

    @Option(help: "A trace file to run instead of the synthetic traces.")
    var trace: String?

    @Option(help: "Write the (first) synthetic trace to this file and exit; with --trace, copy that trace (not to itself).")
    var writeTrace: String?

    @Option(help: "Policies (comma-separated; default all: \(EvictionEvaluation.policyNames.joined(separator: ","))).")
    var policies: String?

    @Option(help: "Budget ratios (comma-separated; default \(Self.defaultBudgets)).")
    var budgets: String?

    /// The budget ratios run without `--budgets`: the issue's 10 %, 20 % and 50 %.
    static let defaultBudgets = "0.1,0.2,0.5"

    @Option(help: "Seed of the synthetic generator and of the synthetic values the output error uses.")
    var seed: UInt64 = 1

    @Option(help: "Synthetic generator: standard deviation of the per-(query, key) logit noise (default \(SyntheticAttention.defaultQueryNoise)).")
    var queryNoise: Float?

    @Option(help: "Synthetic generator: probability that a (query, key) pair's noise is a spike instead (default 0).")
    var spikeProbability: Float?

    @Option(help: "Synthetic generator: standard deviation of a spike (default 0).")
    var spikeNoise: Float?

    @Option(help: "Synthetic topic-return: expected norm of Gaussian noise added to each (unit) sentence embedding (default 0).")
    var embeddingNoise: Float?

    @Option(help: "H2O / episodic recent window as a fraction of the budget, the rest heavy hitters (default \(EvictionEvaluation.defaultRecentRatio)).")
    var recentRatio: Float?

    @Option(help: "Episodes k of the episodic policy (default \(EvictionEvaluation.defaultEpisodes)).")
    var episodes: Int?

    @Flag(help: "Print every episodic focus decision to standard error.")
    var verbose = false

    @Flag(help: "Per-head kept sets instead of per-layer.")
    var perHead = false

    @Option(help: "Write the results as JSON to this file.")
    var json: String?

    @Option(help: "Write an SVG plot of recall per policy and budget to this file.")
    var plot: String?

    func validate() throws {
        if trace != nil, synthetic != nil { throw ValidationError("--synthetic and --trace each name the traces to run; give one of them") }
        if trace != nil {
            // A trace file has its attention already: the generator's options would be ignored.
            let generator = [("--query-noise", queryNoise != nil), ("--spike-probability", spikeProbability != nil),
                             ("--spike-noise", spikeNoise != nil), ("--embedding-noise", embeddingNoise != nil)]
            if let option = generator.first(where: \.1)?.0 {
                throw ValidationError("\(option) shapes the synthetic traces; --trace reads its attention from the file")
            }
        }
        if let trace {
            // The output is written after (--write-trace: while) the trace is read: over the
            // trace, it destroyed it (--write-trace truncated it before its first step was read).
            let outputs = [("--write-trace", writeTrace), ("--json", json), ("--plot", plot)]
            if let (option, path) = outputs.first(where: { $0.1.map { OutputFile.sameFile($0, trace) } ?? false }) {
                throw ValidationError("\(option) \(path!) names the file --trace reads: it would be overwritten; give another file")
            }
        }
        if writeTrace != nil {
            // Writing a trace runs no evaluation: its options would be ignored.
            let ignored = [("--policies", policies != nil), ("--budgets", budgets != nil), ("--recent-ratio", recentRatio != nil),
                           ("--episodes", episodes != nil), ("--per-head", perHead), ("--verbose", verbose),
                           ("--json", json != nil), ("--plot", plot != nil)]
            if let option = ignored.first(where: \.1)?.0 {
                throw ValidationError("\(option) applies to an evaluation; --write-trace writes the trace and runs none")
            }
        }
        _ = try evaluation()
        // Before the evaluation (seconds to minutes), not after it.
        for path in [json, plot].compactMap({ $0 }) { try OutputFile.checkWritable(path) }
    }

    /// The evaluation the options describe.
    func evaluation() throws -> EvictionEvaluation {
        // Logit noise past 1000 already drowns every logit; far past it, float32 logits overflow.
        let noiseRange: ClosedRange<Float> = 0...1000
        guard (0...1).contains(spikeProbability ?? 0), noiseRange.contains(spikeNoise ?? 0),
              noiseRange.contains(queryNoise ?? SyntheticAttention.defaultQueryNoise), noiseRange.contains(embeddingNoise ?? 0) else {
            throw ValidationError("noise levels must be in 0...1000 and --spike-probability in [0, 1]")
        }
        if trace == nil { _ = try syntheticKinds() }
        let ratios = try (budgets ?? Self.defaultBudgets).split(separator: ",").map {
            guard let r = Double($0) else { throw ValidationError("budget \($0) is not a number") }
            return r
        }
        do {
            let names = policies.map { $0.split(separator: ",").map(String.init) } ?? EvictionEvaluation.policyNames
            var e = try EvictionEvaluation(policies: names, ratios: ratios)
            if let recentRatio { e.recentRatio = recentRatio }
            if let episodes { e.episodes = episodes }
            e.perHead = perHead
            e.seed = seed
            e.verbose = verbose
            try e.validate()
            return e
        } catch let error as TraceError {
            throw ValidationError(error.description)
        }
    }

    /// The `--synthetic` traces, in order; throws `ValidationError` for an unknown name, none,
    /// or one given twice (it ran twice: duplicate rows, as a policy or budget given twice).
    func syntheticKinds() throws -> [SyntheticAttention.Kind] {
        var kinds: [SyntheticAttention.Kind] = []
        for s in (synthetic ?? Self.defaultSynthetic).split(separator: ",") {
            guard let kind = SyntheticAttention.Kind(rawValue: String(s)) else { throw ValidationError("unknown synthetic trace \(s)") }
            guard !kinds.contains(kind) else { throw ValidationError("synthetic trace \(s) is given twice") }
            kinds.append(kind)
        }
        guard !kinds.isEmpty else { throw ValidationError("--synthetic names no trace") }
        return kinds
    }

    func run() throws {
        let evaluation = try evaluation()
        var sources: [(String, any AttentionTraceSource)] = []
        if let trace {
            sources.append((trace, try TraceFileReader(path: trace)))
        } else {
            for kind in try syntheticKinds() {
                sources.append((kind.rawValue, SyntheticAttention(kind, seed: seed, queryNoise: queryNoise ?? SyntheticAttention.defaultQueryNoise,
                                                                   spikeProbability: spikeProbability ?? 0, spikeNoise: spikeNoise ?? 0,
                                                                   embeddingNoise: embeddingNoise ?? 0)))
            }
        }
        if let writeTrace {
            var (_, source) = sources[0]
            let header = source.header
            do {
                let writer = try TraceFileWriter(path: writeTrace, header: header)
                var step = TraceStep()
                while try source.next(into: &step) { try writer.write(step, layers: header.layers, heads: header.heads) }
                try writer.close()
            } catch let error as TraceError where error.leftPartialFile {
                // A partial trace would read as truncated later; the error says why now. The
                // header's own write may fail too (helper-130: a topic-return header passes
                // stdio's buffer, and its failure left the file).
                OutputFile.removePartial(writeTrace)
                throw error
            }
            print("wrote \(header.steps) steps to \(writeTrace)")
            return
        }
        var results: [EvictEvalResult] = []
        var line = ProgressLine()
        let handlers = InterruptCleanup.install()  // a signal removes the runs' tier directories
        defer { handlers.restore() }
        for (name, var source) in sources {
            let started = Date()
            let rows = try evaluation.run(name, &source, progress: { done, total in line.update("\(name): step \(done) of \(total)") },
                                          tierDirectories: InterruptCleanup.setTierDirectories)
            line.clear()
            FileHandle.standardError.write("\(name): \(source.header.steps) steps, \(rows.count) runs in \(String(format: "%.1f", Date().timeIntervalSince(started))) s\n".data(using: .utf8)!)
            results += rows
        }
        print(EvictEvalResult.table(results, perHead: perHead, seed: seed))
        if let json {
            try OutputFile.write(EvictEvalResult.json(results), to: json)
        }
        if let plot {
            try OutputFile.write(EvictEvalResult.svg(results), to: plot)
        }
    }
}
