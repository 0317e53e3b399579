#if canImport(Glibc)
import Glibc
#endif

extension SVGPlot {
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

    /// A 720x440 line plot of `series` with axis labels, ticks, a legend and optional
    /// horizontal and vertical guide lines; `logX` draws x on a log2 scale (x must be > 0).
    /// Ranges default to the points' extent; points outside the x range are dropped, y values
    /// are clamped to the y range. O(points).
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
        var s = header(width: Int(w), height: Int(h))
        s += heading(title, x: left + pw / 2, y: 22)
        s += frame(left: left, top: top, width: pw, height: ph)
        // The closest two x ticks: the first two (on a log scale the steps grow).
        let xStep = logX ? exp2(ax + (bx - ax) / 5) - exp2(ax) : (bx - ax) / 5
        for i in 0...5 {
            let fy = y0 + (by - y0) * Double(i) / 5
            s += yTick(left: left, width: pw, y: py(fy), value: fy, step: (by - y0) / 5)
            let t: Double = ax + (bx - ax) * Double(i) / 5
            let fx: Double = logX ? exp2(t) : t
            s += "<text x=\"\(r(px(fx)))\" y=\"\(top + ph + 18)\" text-anchor=\"middle\">\(label(fx, step: xStep))</text>\n"
        }
        s += xAxisLabel(xLabel, left: left, width: pw, y: h - 12)
        s += yAxisLabel(yLabel, top: top, height: ph)
        if let hLine, hLine >= y0 && hLine <= by {
            s += "<line x1=\"\(left)\" x2=\"\(left + pw)\" y1=\"\(r(py(hLine)))\" y2=\"\(r(py(hLine)))\" stroke=\"#999\" stroke-dasharray=\"5 4\"/>\n"
        }
        if let vLine, tx(vLine) >= ax && tx(vLine) <= bx {
            s += "<line x1=\"\(r(px(vLine)))\" x2=\"\(r(px(vLine)))\" y1=\"\(top)\" y2=\"\(top + ph)\" stroke=\"#999\" stroke-dasharray=\"5 4\"/>\n"
        }
        for (i, series) in series.enumerated() {
            let pts = series.points.filter { tx($0.0) >= ax && tx($0.0) <= bx }
                .map { "\(r(px($0.0))),\(r(py(min(max($0.1, y0), by))))" }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"\(color(i))\" stroke-width=\"1.8\" points=\"\(pts)\"/>\n"
            s += legendEntry(i, series.name, x: left + pw, top: top, swatch: .line)
        }
        return s + footer
    }
}
