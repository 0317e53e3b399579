import Foundation

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

    /// A JSON array, one object per result (non-finite numbers as null).
    public static func json(_ results: [EvictEvalResult]) -> String {
        func n(_ x: Double?) -> String { x.map { $0.isFinite ? String(format: "%.6f", $0) : "null" } ?? "null" }
        let items = results.map {
            "{\"trace\": \"\($0.trace)\", \"policy\": \"\($0.policy)\", \"budget\": \($0.budget), \"recall\": \(n($0.recall)), \"output_error\": \(n($0.error)), \"recall_after_mark\": \(n($0.recallAfterMark)), \"output_error_after_mark\": \(n($0.errorAfterMark))}"
        }
        return "[\n  " + items.joined(separator: ",\n  ") + "\n]\n"
    }

    /// Grouped bars: per trace, per policy, one bar per budget (recall, 0...1).
    public static func svg(_ results: [EvictEvalResult]) -> String {
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
