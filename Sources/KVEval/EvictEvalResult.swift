import Foundation
import KVReport

/// One row of the evaluation.
public struct EvictEvalResult: Sendable {
    /// The trace's name.
    public var trace: String
    /// The policy's name, as given to `kvcache evict-eval --policies`.
    public var policy: String
    /// The budget ratio (1 for `none`).
    public var budget: Double
    /// Attention-mass recall, averaged over decode steps, layers and heads.
    public var recall: Double
    /// Relative attention-output error, averaged the same way.
    public var error: Double
    /// Recall over the steps from the trace's mark on (nil: no mark).
    public var recallAfterMark: Double?
    /// Output error over the same steps.
    public var errorAfterMark: Double?

    /// A Markdown table, one row per result.
    public static func table(_ results: [EvictEvalResult], perHead: Bool, seed: UInt64) -> String {
        func f(_ x: Double?) -> String { x.map { fixed($0, 3) } ?? "-" }
        var lines = ["| trace | policy | budget | recall | output error | recall after mark | error after mark |",
                     "|---|---|---|---|---|---|---|"]
        for r in results {
            lines.append("| \(r.trace.replacingOccurrences(of: "|", with: "\\|")) | \(r.policy) | \(r.policy == "none" ? "100%" : percent(r.budget)) | \(f(r.recall)) | \(f(r.error)) | \(f(r.recallAfterMark)) | \(f(r.errorAfterMark)) |")
        }
        lines.append("")
        lines.append("(\(perHead ? "per-head" : "per-layer") kept sets, seed \(seed))")
        return lines.joined(separator: "\n")
    }

    /// `ratio` as a percentage with at most two decimals, trailing zeros dropped: 0.2 is
    /// "20%", 0.125 "12.5%" (whole percents alone would print 0.121 and 0.124 alike).
    static func percent(_ ratio: Double) -> String { trimmedFixed(ratio * 100, 2) + "%" }

    /// A JSON array, one object per result (non-finite numbers as null).
    public static func json(_ results: [EvictEvalResult]) -> String {
        func n(_ x: Double?) -> String { x.map { $0.isFinite ? fixed($0, 6) : "null" } ?? "null" }
        let items = results.map {
            "{\"trace\": \(jsonString($0.trace)), \"policy\": \"\($0.policy)\", \"budget\": \($0.budget), \"recall\": \(n($0.recall)), \"output_error\": \(n($0.error)), \"recall_after_mark\": \(n($0.recallAfterMark)), \"output_error_after_mark\": \(n($0.errorAfterMark))}"
        }
        return "[\n  " + items.joined(separator: ",\n  ") + "\n]\n"
    }

    /// Recall (0...1) as grouped bars (KVReport's `SVGPlot.groupedBars`): a panel per trace,
    /// a group per policy, a bar per budget in the budget's colour; `none` (the full cache)
    /// is a series of its own. Traces, policies and budgets in order of first appearance.
    /// O(results x (traces + policies + budgets)).
    public static func svg(_ results: [EvictEvalResult]) -> String {
        func firstAppearance<T: Equatable>(_ values: [T]) -> [T] { values.reduce(into: []) { if !$0.contains($1) { $0.append($1) } } }
        let traces = firstAppearance(results.map(\.trace)), policies = firstAppearance(results.map(\.policy))
        let budgets = firstAppearance(results.filter { $0.policy != "none" }.map(\.budget))
        let hasNone = policies.contains("none")
        let series = budgets.map { "budget \(percent($0))" } + (hasNone ? ["none (full cache)"] : [])
        let panels = traces.map { trace in
            SVGPlot.BarPanel(title: trace, groups: policies.map { policy in
                var values = [Double?](repeating: nil, count: series.count)
                for r in results where r.trace == trace && r.policy == policy {
                    values[policy == "none" ? budgets.count : budgets.firstIndex(of: r.budget)!] = r.recall
                }
                return SVGPlot.BarGroup(name: policy, values: values)
            })
        }
        return SVGPlot.groupedBars(title: "attention-mass recall per policy and budget", yLabel: "recall",
                                   seriesNames: series, panels: panels, yRange: (0, 1))
    }
}
