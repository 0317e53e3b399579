import Foundation
import KVCache

/// The evaluation `kvcache evict-eval` runs: every named policy at every budget ratio replays
/// one trace side by side, step by step, as a server would drive the engine (`EvictionRun`),
/// and each is scored against the full cache.
///
/// Policy names: none (full cache), streaming (4 sinks + recent), tova, h2o (raw sums),
/// h2o-norm (sums / queries that saw the token), episodic (drops evicted tokens),
/// episodic-offload (a whole engine with a disk tier: evicted tokens go to disk, a focus
/// restores the episode's set, every held byte is checked), oracle (the top tokens of the step being scored, per layer by the
/// sum over heads of each row's share of its own total, what recall averages: it peeks, an upper bound).
public struct EvictionEvaluation: Sendable {
    /// Every policy name the evaluation knows, in report order.
    public static let policyNames = ["none", "streaming", "tova", "h2o", "h2o-norm", "episodic", "episodic-offload", "oracle"]

    /// Policies to run, by name.
    public var policies: [String]
    /// Budget ratios in (0, 1]; `none` runs once at 1.
    public var ratios: [Double]
    /// H2O / episodic recent window as a fraction of the budget.
    public var recentRatio = Self.defaultRecentRatio
    /// Episodes k of the episodic policies.
    public var episodes = Self.defaultEpisodes
    /// `recentRatio`'s default: half the budget recent, half heavy hitters.
    public static let defaultRecentRatio: Float = 0.5
    /// `episodes`' default.
    public static let defaultEpisodes = 4
    /// Per-head kept sets instead of per-layer (every policy, episodic-offload included).
    public var perHead = false
    /// Seed of the synthetic value vectors.
    public var seed: UInt64 = 1
    /// Print each episodic focus decision to standard error.
    public var verbose = false

    /// An evaluation of `policies` at `ratios`. Throws `TraceError` for an unknown policy or a
    /// ratio outside (0, 1].
    public init(policies: [String], ratios: [Double]) throws {
        for p in policies where !Self.policyNames.contains(p) { throw TraceError(description: "unknown policy \(p)") }
        for r in ratios where !(r > 0 && r <= 1) { throw TraceError(description: "budget \(r) is not in (0, 1]") }
        self.policies = policies
        self.ratios = ratios
    }

    /// The engine configuration behind policy `name`, with this evaluation's settings.
    func config(_ name: String) -> EvictionConfig {
        var c: EvictionConfig
        switch name {
        case "streaming": c = EvictionConfig(.streamingLLM)
        case "tova": c = EvictionConfig(.tova)
        case "h2o": c = EvictionConfig(.heavyHitter)
        case "h2o-norm":
            c = EvictionConfig(.heavyHitter)
            c.normalizedScores = true
        case "episodic", "episodic-offload": c = EvictionConfig(.episodic)
        default: c = EvictionConfig(.none)  // none, oracle
        }
        c.episodes = episodes
        c.recentRatio = recentRatio
        c.perHead = perHead
        return c
    }

    /// Throws `TraceError` naming the first bad setting: no policy, no budget, a budget or
    /// policy given twice (it would run twice, both runs on one bar of the plot), or a setting
    /// the engine refuses (`EvictionConfig.validate()`: the recent ratio outside 0...1,
    /// episodes outside 1...64). The settings are the same for every policy (`config(_:)`
    /// changes only the policy kind, which `validate()` does not check), so they are checked
    /// once and the message names no policy. `run` checks it first, so a bad setting fails
    /// before any step, as the engine would refuse it.
    public func validate() throws {
        guard !policies.isEmpty else { throw TraceError(description: "no policy to run") }
        guard !ratios.isEmpty else { throw TraceError(description: "no budget ratio to run") }
        func firstRepeated<T: Equatable>(_ values: [T]) -> T? {
            values.indices.first { values[..<$0].contains(values[$0]) }.map { values[$0] }
        }
        if let twice = firstRepeated(ratios) { throw TraceError(description: "budget \(twice) is given twice") }
        if let twice = firstRepeated(policies) { throw TraceError(description: "policy \(twice) is given twice") }
        do {
            try config("none").validate()
        } catch {
            throw TraceError(description: error.message)
        }
    }

    /// The runs, one per policy and ratio, over a trace with `header`. `tierDirectories` is
    /// called with the runs' private tier directories so far each time one is made.
    func runs(_ header: TraceHeader, tierDirectories: ([String]) -> Void = { _ in }) throws -> [EvictionRun] {
        try validate()
        var runs: [EvictionRun] = []
        var directories: [String] = []
        for name in policies {
            for ratio in ratios where !(name == "none" && ratio != ratios.first) {
                let c = config(name)
                let run = try EvictionRun(label: name, config: c, ratio: name == "none" ? 1 : ratio,
                                      offload: name == "episodic-offload", oracle: name == "oracle", header: header) { made in
                    directories.append(made)
                    tierDirectories(directories)
                }
                run.verbose = verbose
                runs.append(run)
            }
        }
        return runs
    }

    /// Replays `source` (named `name` in the results) through every run; one result per run.
    /// `progress(done, total)` is called after each step with the steps replayed and the
    /// header's step count (the CLI's progress line). Cost: per step, O(runs x layers x heads x
    /// tokens). Throws what the source or the engine's eviction state throws (for example a
    /// malformed trace file), and `TraceError` when no decode step, or none from the trace's
    /// mark on, was there to score. `tierDirectories` is called with the private directories
    /// of the runs' disk tiers made so far (`EngineSubject`, episodic-offload) as each is made,
    /// before its engine's files are in it; the runs remove them when they end, also by a
    /// throw, before this returns: the CLI has a signal remove them too.
    public func run(_ name: String, _ source: inout some AttentionTraceSource,
                    progress: (_ done: Int, _ total: Int) -> Void = { _, _ in },
                    tierDirectories: ([String]) -> Void = { _ in }) throws -> [EvictEvalResult] {
        let header = source.header
        let runs = try runs(header, tierDirectories: tierDirectories)
        let values = ValueTable(rows: header.layers * header.heads, maxTokens: header.maxTokens, seed: seed)
        var step = TraceStep()
        var index = 0, scored = 0, scoredAfter = 0
        while try source.next(into: &step) {
            do {
                for run in runs { try run.begin(step, index: index, header: header) }
                if step.nQueries == 1 {
                    let full = values.outputs(step, rows: header.layers * header.heads)
                    let after = header.markStep.map { index >= $0 } ?? false
                    for run in runs { try run.score(step, full: full, values: values, after: after) }
                    scored += 1
                    if after { scoredAfter += 1 }
                }
                for run in runs { try run.observeAndCompact(step) }
            } catch {
                // What the engine refused (a segment past the tokens seen, a NaN embedding):
                // name the trace and step it came from.
                throw TraceError(description: "\(name), step \(index): \(error)")
            }
            index += 1
            progress(index, header.steps)
        }
        guard scored > 0 else { throw TraceError(description: "\(name): no decode step (n_queries 1) to score") }
        if let mark = header.markStep, scoredAfter == 0 {
            throw TraceError(description: "\(name): no decode step (n_queries 1) from mark_step \(mark) on to score")
        }
        return runs.map { run in
            EvictEvalResult(trace: name, policy: run.label, budget: run.ratio,
                            recall: run.recall.value, error: run.error.value,
                            recallAfterMark: header.markStep == nil ? nil : run.recallAfter.value,
                            errorAfterMark: header.markStep == nil ? nil : run.errorAfter.value)
        }
    }
}
