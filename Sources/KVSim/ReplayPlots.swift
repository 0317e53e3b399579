import KVReport

/// The replay's plots (`kvcache replay --plots`), line plots of KVReport's `SVGPlot`.
extension SVGPlot {
    /// The TTFT CDF (seconds, up to `maxSeconds`) of each outcome's run, with the SLO marked.
    /// At most ~400 points per run (every k-th TTFT, the last always). O(outcomes).
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
}
