#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation
import KVCache

/// `kvcache evict-eval`: replays attention traces through every eviction policy at several
/// budgets and reports how much of the full cache's attention each keeps.
struct EvictEvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evict-eval",
        abstract: "Evaluate token-eviction policies on attention traces.",
        discussion: """
        For each trace, policy and budget ratio, the trace is replayed as a server would drive \
        the engine (EvictEvalRunner.swift): append the step's tokens, score it against the full \
        cache, observe its attention over the tokens held, compact to ratio * tokens so far. \
        Policies never see a step before it is scored.

        Metrics, averaged over decode steps, layers and heads: attention-mass recall (the \
        fraction of the full cache's attention that falls on kept tokens) and the relative \
        attention-output error ||o - o_S|| / ||o|| with synthetic N(0,1) values (dimension \
        16). "after" columns cover the trace's marked steps (topic-return: the return turn).

        Policies: none (full cache), streaming (4 sinks + recent), tova, h2o (raw sums), \
        h2o-norm (sums / queries that saw the token), episodic (drops evicted tokens), \
        episodic-offload (evicted tokens go to a modelled disk tier and a focus restores the \
        episode's set), oracle (top tokens of the step being scored: peeks, an upper bound). \
        H2O and episodic split the budget half recent window, half heavy hitters.

        Traces: --synthetic long-decode|topic-return (SyntheticAttention.swift documents the \
        generator) or --trace FILE (format in AttentionTrace.swift and the README); \
        --write-trace FILE stores the synthetic trace in that format.
        """
    )

    @Option(help: "Synthetic traces to run: long-decode, topic-return (comma-separated).")
    var synthetic: String = "long-decode,topic-return"

    @Option(help: "A trace file to run instead of the synthetic traces.")
    var trace: String?

    @Option(help: "Write the (first) synthetic trace to this file and exit.")
    var writeTrace: String?

    @Option(help: "Policies (comma-separated).")
    var policies: String = "none,streaming,tova,h2o,h2o-norm,episodic,episodic-offload,oracle"

    @Option(help: "Budget ratios (comma-separated).")
    var budgets: String = "0.1,0.2,0.5"

    @Option(help: "Generator seed.")
    var seed: UInt64 = 1

    @Option(help: "Synthetic generator: standard deviation of the per-(query, key) logit noise.")
    var queryNoise: Float = 1

    @Option(help: "Synthetic topic-return: standard deviation per coordinate of embedding noise (dimension 16).")
    var embeddingNoise: Float = 0.3

    @Option(help: "H2O / episodic recent window as a fraction of the budget (the rest is heavy hitters).")
    var recentRatio: Float = 0.5

    @Option(help: "Episodes k of the episodic policy.")
    var episodes: Int = 4

    @Flag(help: "Print every episodic focus decision to standard error.")
    var verbose = false

        @Flag(help: "Per-head kept sets instead of per-layer.")
    var perHead = false

    @Option(help: "Write the results as JSON to this file.")
    var json: String?

    @Option(help: "Write an SVG plot of recall per policy and budget to this file.")
    var plot: String?

    func validate() throws {
        for b in budgets.split(separator: ",") {
            guard let r = Double(b), r > 0, r <= 1 else { throw ValidationError("budget \(b) is not in (0, 1]") }
        }
        for p in policies.split(separator: ",") where Self.config(String(p), episodes: episodes) == nil && p != "oracle" && p != "episodic-offload" {
            throw ValidationError("unknown policy \(p)")
        }
    }

    static func config(_ name: String, episodes: Int) -> EvictionConfig? {
        var c: EvictionConfig
        switch name {
        case "none": c = EvictionConfig(.none)
        case "streaming": c = EvictionConfig(.streamingLLM)
        case "tova": c = EvictionConfig(.tova)
        case "h2o": c = EvictionConfig(.heavyHitter)
        case "h2o-norm":
            c = EvictionConfig(.heavyHitter)
            c.normalizedScores = true
        case "episodic", "episodic-offload": c = EvictionConfig(.episodic)
        case "oracle": c = EvictionConfig(.none)
        default: return nil
        }
        c.episodes = episodes
        return c
    }

    func run() throws {
        let ratios = budgets.split(separator: ",").map { Double($0)! }
        let names = policies.split(separator: ",").map(String.init)
        var sources: [(String, any AttentionTraceSource)] = []
        if let trace {
            sources.append((trace, try TraceFileReader(path: trace)))
        } else {
            for s in synthetic.split(separator: ",") {
                guard let kind = SyntheticAttention.Kind(rawValue: String(s)) else { throw ValidationError("unknown synthetic trace \(s)") }
                sources.append((kind.rawValue, SyntheticAttention(kind, seed: seed, queryNoise: queryNoise, embeddingNoise: embeddingNoise)))
            }
        }
        if let writeTrace {
            var (_, source) = sources[0]
            let header = source.header
            let writer = try TraceFileWriter(path: writeTrace, header: header)
            var step = TraceStep()
            while try source.next(into: &step) { writer.write(step, layers: header.layers, heads: header.heads) }
            writer.close()
            print("wrote \(header.steps) steps to \(writeTrace)")
            return
        }
        var results: [EvictEvalResult] = []
        for (traceName, var source) in sources {
            let header = source.header
            var runs: [EvictionRun] = []
            for name in names {
                for ratio in ratios where !(name == "none" && ratio != ratios.first) {
                    var c = Self.config(name, episodes: episodes)!
                    c.recentRatio = recentRatio
                    c.perHead = perHead && name != "episodic-offload"
                    runs.append(EvictionRun(label: name, config: c, ratio: name == "none" ? 1 : ratio,
                                            offload: name == "episodic-offload", oracle: name == "oracle", header: header))
                    runs.last!.verbose = verbose
                }
            }
            let values = ValueTable(rows: header.layers * header.heads, maxTokens: header.maxTokens, seed: seed)
            var step = TraceStep()
            var index = 0
            let started = Date()
            while try source.next(into: &step) {
                for run in runs { try run.begin(step, index: index, header: header) }
                if step.nQueries == 1 {
                    let full = values.outputs(step, rows: header.layers * header.heads)
                    let after = header.markStep.map { index >= $0 } ?? false
                    for run in runs { run.score(step, full: full, values: values, after: after) }
                }
                for run in runs { try run.observeAndCompact(step) }
                index += 1
            }
            FileHandle.standardError.write("\(traceName): \(header.steps) steps, \(runs.count) runs in \(String(format: "%.1f", Date().timeIntervalSince(started))) s\n".data(using: .utf8)!)
            for run in runs {
                results.append(EvictEvalResult(trace: traceName, policy: run.label, budget: run.ratio,
                                               recall: run.recall.value, error: run.error.value,
                                               recallAfterMark: header.markStep == nil ? nil : run.recallAfter.value,
                                               errorAfterMark: header.markStep == nil ? nil : run.errorAfter.value))
            }
        }
        print(EvictEvalResult.table(results, perHead: perHead, seed: seed))
        if let json {
            try EvictEvalResult.json(results).write(toFile: json, atomically: true, encoding: .utf8)
        }
        if let plot {
            try EvictEvalResult.svg(results).write(toFile: plot, atomically: true, encoding: .utf8)
        }
    }
}

/// One row of the evaluation.
struct EvictEvalResult {
    var trace: String
    var policy: String
    var budget: Double
    var recall: Double
    var error: Double
    var recallAfterMark: Double?
    var errorAfterMark: Double?

    static func table(_ results: [EvictEvalResult], perHead: Bool, seed: UInt64) -> String {
        func f(_ x: Double?) -> String { x.map { String(format: "%.3f", $0) } ?? "-" }
        var lines = ["| trace | policy | budget | recall | output error | recall after mark | error after mark |",
                     "|---|---|---|---|---|---|---|"]
        for r in results {
            lines.append("| \(r.trace) | \(r.policy) | \(r.policy == "none" ? "100%" : "\(Int((r.budget * 100).rounded()))%") | \(f(r.recall)) | \(f(r.error)) | \(f(r.recallAfterMark)) | \(f(r.errorAfterMark)) |")
        }
        lines.append("")
        lines.append("(\(perHead ? "per-head" : "per-layer") kept sets, seed \(seed))")
        return lines.joined(separator: "\n")
    }

    static func json(_ results: [EvictEvalResult]) -> String {
        func n(_ x: Double?) -> String { x.map { $0.isFinite ? String(format: "%.6f", $0) : "null" } ?? "null" }
        let items = results.map {
            "{\"trace\": \"\($0.trace)\", \"policy\": \"\($0.policy)\", \"budget\": \($0.budget), \"recall\": \(n($0.recall)), \"output_error\": \(n($0.error)), \"recall_after_mark\": \(n($0.recallAfterMark)), \"output_error_after_mark\": \(n($0.errorAfterMark))}"
        }
        return "[\n  " + items.joined(separator: ",\n  ") + "\n]\n"
    }

    /// Grouped bars: per trace, per policy, one bar per budget (recall, 0...1).
    static func svg(_ results: [EvictEvalResult]) -> String {
        let traces = results.map(\.trace).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let policies = results.map(\.policy).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let budgets = results.filter { $0.policy != "none" }.map(\.budget).reduce(into: [Double]()) { if !$0.contains($1) { $0.append($1) } }
        let colors = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2"]
        let bar = 10, groupGap = 14, panelHeight = 220, left = 50, top = 30
        let groupWidth = max(1, budgets.count) * bar + groupGap
        let width = left + policies.count * groupWidth + 20
        var svg = ["<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(traces.count * (panelHeight + 80) + 40)\" font-family=\"sans-serif\" font-size=\"10\">"]
        for (t, trace) in traces.enumerated() {
            let y0 = top + t * (panelHeight + 80)
            svg.append("<text x=\"\(left)\" y=\"\(y0 - 10)\" font-size=\"12\">attention-mass recall: \(trace) (bars: budgets \(budgets.map { "\(Int($0 * 100))%" }.joined(separator: ", ")))</text>")
            for tick in stride(from: 0.0, through: 1.0, by: 0.25) {
                let y = y0 + panelHeight - Int(tick * Double(panelHeight))
                svg.append("<line x1=\"\(left)\" x2=\"\(width - 10)\" y1=\"\(y)\" y2=\"\(y)\" stroke=\"#ddd\"/><text x=\"\(left - 30)\" y=\"\(y + 3)\">\(tick)</text>")
            }
            for (p, policy) in policies.enumerated() {
                let x0 = left + p * groupWidth + groupGap / 2
                for r in results where r.trace == trace && r.policy == policy {
                    let b = policy == "none" ? 0 : budgets.firstIndex(of: r.budget) ?? 0
                    let h = Int(r.recall * Double(panelHeight))
                    svg.append("<rect x=\"\(x0 + b * bar)\" y=\"\(y0 + panelHeight - h)\" width=\"\(bar - 1)\" height=\"\(h)\" fill=\"\(colors[b % colors.count])\"/>")
                }
                svg.append("<text x=\"\(x0)\" y=\"\(y0 + panelHeight + 12)\" transform=\"rotate(30 \(x0) \(y0 + panelHeight + 12))\">\(policy)</text>")
            }
        }
        svg.append("</svg>")
        return svg.joined(separator: "\n")
    }
}
