#if canImport(Glibc)
import Glibc
#endif

/// Line plots as standalone SVG documents, written directly (no plotting dependency): the
/// TTFT CDF per policy and SLO attainment against rate scale per policy.
public enum SVGPlot {
    /// One named series of (x, y) points, drawn in order.
    public struct Series: Sendable {
        /// The legend entry.
        public var name: String
        /// (x, y) points, drawn in order.
        public var points: [(Double, Double)]
        /// A series named `name`.
        public init(name: String, points: [(Double, Double)]) {
            self.name = name
            self.points = points
        }
    }

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]

    /// A 720x440 plot of `series` with axis labels, ticks, a legend and optional horizontal
    /// and vertical guide lines; `logX` draws x on a log2 scale (x must be > 0).
    public static func lines(title: String, xLabel: String, yLabel: String, series: [Series],
                             xRange: (Double, Double)? = nil, yRange: (Double, Double)? = nil,
                             logX: Bool = false, hLine: Double? = nil, vLine: Double? = nil) -> String {
        let w = 720.0, h = 440.0, left = 70.0, right = 170.0, top = 40.0, bottom = 55.0
        let pw = w - left - right, ph = h - top - bottom
        let tx: (Double) -> Double = logX ? { log2(max($0, 1e-12)) } : { $0 }
        let all = series.flatMap(\.points)
        let x0 = xRange?.0 ?? all.map(\.0).min() ?? 0, x1 = xRange?.1 ?? all.map(\.0).max() ?? 1
        let y0 = yRange?.0 ?? all.map(\.1).min() ?? 0, y1 = yRange?.1 ?? all.map(\.1).max() ?? 1
        let ax = tx(x0), bx = tx(x1) > tx(x0) ? tx(x1) : tx(x0) + 1
        let by = y1 > y0 ? y1 : y0 + 1
        func px(_ x: Double) -> Double { left + (tx(x) - ax) / (bx - ax) * pw }
        func py(_ y: Double) -> Double { top + ph - (y - y0) / (by - y0) * ph }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(left + pw / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(escape(title))</text>\n"
        s += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(pw)\" height=\"\(ph)\" fill=\"none\" stroke=\"#444\"/>\n"
        for i in 0...5 {
            let fy = y0 + (by - y0) * Double(i) / 5
            s += "<line x1=\"\(left)\" x2=\"\(left + pw)\" y1=\"\(r(py(fy)))\" y2=\"\(r(py(fy)))\" stroke=\"#eee\"/>"
            s += "<text x=\"\(left - 6)\" y=\"\(r(py(fy) + 4))\" text-anchor=\"end\">\(label(fy))</text>\n"
            let t: Double = ax + (bx - ax) * Double(i) / 5
            let fx: Double = logX ? exp2(t) : t
            s += "<text x=\"\(r(px(fx)))\" y=\"\(top + ph + 18)\" text-anchor=\"middle\">\(label(fx))</text>\n"
        }
        s += "<text x=\"\(left + pw / 2)\" y=\"\(h - 12)\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        s += "<text transform=\"translate(18 \(top + ph / 2)) rotate(-90)\" text-anchor=\"middle\">\(escape(yLabel))</text>\n"
        if let hLine, hLine >= y0 && hLine <= by {
            s += "<line x1=\"\(left)\" x2=\"\(left + pw)\" y1=\"\(r(py(hLine)))\" y2=\"\(r(py(hLine)))\" stroke=\"#999\" stroke-dasharray=\"5 4\"/>\n"
        }
        if let vLine, tx(vLine) >= ax && tx(vLine) <= bx {
            s += "<line x1=\"\(r(px(vLine)))\" x2=\"\(r(px(vLine)))\" y1=\"\(top)\" y2=\"\(top + ph)\" stroke=\"#999\" stroke-dasharray=\"5 4\"/>\n"
        }
        for (i, series) in series.enumerated() {
            let color = palette[i % palette.count]
            let pts = series.points.filter { tx($0.0) >= ax && tx($0.0) <= bx }
                .map { "\(r(px($0.0))),\(r(py(min(max($0.1, y0), by))))" }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.8\" points=\"\(pts)\"/>\n"
            let ly = top + 14 + Double(i) * 18
            s += "<line x1=\"\(left + pw + 12)\" x2=\"\(left + pw + 32)\" y1=\"\(ly - 4)\" y2=\"\(ly - 4)\" stroke=\"\(color)\" stroke-width=\"2\"/>"
            s += "<text x=\"\(left + pw + 38)\" y=\"\(ly)\">\(escape(series.name))</text>\n"
        }
        return s + "</svg>\n"
    }

    /// The TTFT CDF (seconds, up to `maxSeconds`) of each outcome's run, with the SLO marked.
    public static func ttftCDF(_ outcomes: [Replay.Outcome], maxSeconds: Double) -> String {
        let series = outcomes.map { o -> Series in
            let t = o.result.ttftSorted, n = Double(o.result.requests)
            var pts: [(Double, Double)] = [(0, 0)]
            let stride = max(1, t.count / 400)
            var i = 0
            while i < t.count {
                pts.append((t[i] / 1000, Double(i + 1) / n))
                i += stride
            }
            if let last = t.last { pts.append((last / 1000, Double(t.count) / n)) }
            return Series(name: o.result.policy, points: pts)
        }
        let slo = outcomes.first.map { $0.result.ttftSLOMilliseconds / 1000 }
        return lines(title: "TTFT CDF at rate x\(fixed(outcomes.first?.result.rateScale ?? 1, 2))", xLabel: "TTFT (s)",
                     yLabel: "fraction of requests", series: series, xRange: (0, maxSeconds), yRange: (0, 1), vLine: slo)
    }

    /// SLO attainment against rate scale (log2 axis) from each outcome's capacity probes,
    /// with the 90% target marked.
    public static func attainment(_ outcomes: [Replay.Outcome], target: Double) -> String {
        let series = outcomes.map { o in
            Series(name: o.result.policy, points: o.probes.sorted { $0.rateScale < $1.rateScale }.map { ($0.rateScale, $0.attainment * 100) })
        }
        let scales = outcomes.flatMap { $0.probes.map(\.rateScale) }
        return lines(title: "TTFT SLO attainment against request rate", xLabel: "rate scale (x trace rate, log2)",
                     yLabel: "requests meeting the TTFT SLO (%)", series: series,
                     xRange: (scales.min() ?? 0.5, scales.max() ?? 2), yRange: (0, 100), logX: true, hLine: target * 100)
    }

    static func r(_ x: Double) -> String { fixed(x, 1) }
    static func label(_ x: Double) -> String { abs(x) >= 100 ? fixed(x, 0) : abs(x) >= 10 ? fixed(x, 1) : fixed(x, 2) }
    static func escape(_ s: String) -> String {
        s.replacingOccurrences("&", "&amp;").replacingOccurrences("<", "&lt;").replacingOccurrences(">", "&gt;")
    }
}

extension String {
    /// Every occurrence of `target` replaced by `replacement` (no Foundation needed).
    func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
