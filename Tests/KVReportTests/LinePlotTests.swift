import KVReport
import Testing

/// `SVGPlot.lines`' tick labels: as many decimals as tell neighbouring ticks apart.
@Suite("line plot ticks")
struct LinePlotTests {
    /// The texts of the tick labels: `anchor` "end" for y, "middle" for x (the x-axis ticks).
    static func ticks(_ svg: String, anchor: String) -> [String] {
        svg.split(separator: "\n").filter { $0.contains("text-anchor=\"\(anchor)\"") && !$0.contains("font-size") }.map {
            String($0.split(separator: "text-anchor=\"\(anchor)\">")[1].prefix { $0 != "<" })
        }
    }

    /// A TTFT axis of 0.002 s (a 1 ms SLO doubled) read six "0.00" ticks; each tick now differs.
    @Test func ticksOfASmallRangeAreDistinct() {
        let svg = SVGPlot.lines(title: "t", xLabel: "ttft s", yLabel: "share", series: [SVGPlot.Series(name: "a", points: [(0, 0), (0.002, 0.004)])],
                                xRange: (0, 0.002), yRange: (0, 0.004))
        let x = Self.ticks(svg, anchor: "middle"), y = Self.ticks(svg, anchor: "end")
        #expect(x.count >= 6 && Set(x.suffix(6)).count == 6, "\(x)")
        #expect(y == ["0.0000", "0.0008", "0.0016", "0.0024", "0.0032", "0.0040"], "\(y)")
    }

    /// An axis whose ticks two decimals tell apart keeps two (the committed plots do not move).
    @Test func ticksOfAUnitRangeKeepTwoDecimals() {
        let svg = SVGPlot.lines(title: "t", xLabel: "x", yLabel: "y", series: [SVGPlot.Series(name: "a", points: [(0, 0), (1, 1)])],
                                xRange: (0, 1), yRange: (0, 1))
        #expect(Self.ticks(svg, anchor: "end") == ["0.00", "0.20", "0.40", "0.60", "0.80", "1.00"])
    }
}
