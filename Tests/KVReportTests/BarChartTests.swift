import KVReport
import Testing

/// `SVGPlot.groupedBars`: one bar per value, its height the value's share of the y range, its
/// series' slot and colour in every group, and names that cannot break the document.
@Suite("grouped bar chart")
struct BarChartTests {
    /// A drawn bar: its attributes and the text of its tooltip.
    struct Bar {
        var x, y, width, height: Double
        var fill: String
        var title: String
    }

    /// The `<rect class="bar">` elements of `svg`, in document order.
    static func bars(_ svg: String) -> [Bar] {
        svg.split(separator: "\n").filter { $0.hasPrefix("<rect class=\"bar\"") }.map { line in
            func attribute(_ name: String) -> String {
                String(line.split(separator: " \(name)=\"")[1].prefix { $0 != "\"" })
            }
            let title = line.split(separator: "<title>")[1].split(separator: "</title>")[0]
            return Bar(x: Double(attribute("x"))!, y: Double(attribute("y"))!, width: Double(attribute("width"))!,
                       height: Double(attribute("height"))!, fill: attribute("fill"), title: String(title))
        }
    }

    static let chart = SVGPlot.groupedBars(
        title: "recall", yLabel: "recall", seriesNames: ["10%", "50%", "full"],
        panels: [
            SVGPlot.BarPanel(title: "trace A", groups: [
                SVGPlot.BarGroup(name: "p", values: [0.5, 0.25, nil]),
                SVGPlot.BarGroup(name: "q", values: [nil, nil, 1]),
            ]),
            SVGPlot.BarPanel(title: "trace B", groups: [SVGPlot.BarGroup(name: "p", values: [1.5, -0.1])]),
        ],
        yRange: (0, 1))

    @Test func oneBarPerValueWithItsShareOfThePanelsHeight() throws {
        let bars = Self.bars(Self.chart)
        try #require(bars.count == 5, "nil values draw nothing")
        #expect(bars.map(\.height) == [100, 50, 200, 200, 0], "0.5, 0.25 and 1 of a 200-pixel panel; 1.5 and -0.1 clamped")
        #expect(bars.map(\.title) == ["p, 10%: 0.500", "p, 50%: 0.250", "q, full: 1.000", "p, 10%: 1.500", "p, 50%: -0.100"])
        // Every bar stands on its panel's baseline: the first panel's, then the second's.
        let bases = bars.map { $0.y + $0.height }
        #expect(bases[0] == bases[1] && bases[1] == bases[2] && bases[3] == bases[4] && bases[3] > bases[0])
    }

    @Test func aSeriesKeepsItsSlotAndColourInEveryGroup() {
        let bars = Self.bars(Self.chart)
        #expect(bars.map(\.fill) == ["#1f77b4", "#d62728", "#2ca02c", "#1f77b4", "#d62728"])
        let slot = bars[1].x - bars[0].x
        #expect(slot > bars[0].width && bars[0].width > 0, "side by side, not overlapping")
        #expect(bars[3].x == bars[0].x && bars[4].x == bars[1].x, "the same series, the same place in the next panel")
        #expect(bars[2].x > bars[1].x + slot, "the third series' slot, in the second group")
        for (i, name) in ["10%", "50%", "full"].enumerated() {
            #expect(Self.chart.contains("fill=\"\(bars[i].fill)\"/><text") && Self.chart.contains(">\(name)</text>"), "legend \(name)")
        }
    }

    @Test func namesAreEscapedWhereverTheyAreDrawn() {
        let name = "a<b&c>\"d"
        let svg = SVGPlot.groupedBars(title: name, yLabel: name, seriesNames: [name],
                                      panels: [SVGPlot.BarPanel(title: name, groups: [SVGPlot.BarGroup(name: name, values: [0.5])])],
                                      yRange: (0, 1))
        #expect(!svg.contains("a<b"), "no raw markup from a name")
        #expect(svg.split(separator: "a&lt;b&amp;c&gt;&quot;d", omittingEmptySubsequences: false).count - 1 == 7,
                "title, panel title, y label, legend, the tooltip's group and series, the group label")
    }
}

/// A chart too narrow for its title (one policy, one budget: evict-eval --plot) widens to hold
/// it: the title was centred on the panels and began left of the view.
@Suite("grouped bar chart title")
struct BarChartTitleTests {
    @Test func aNarrowChartHoldsItsTitle() throws {
        let title = "evict-eval: attention-mass recall by policy and budget"
        let svg = SVGPlot.groupedBars(title: title, yLabel: "recall", seriesNames: ["20%"],
                                      panels: [SVGPlot.BarPanel(title: "long-decode", groups: [SVGPlot.BarGroup(name: "h2o", values: [0.9])])],
                                      yRange: (0, 1))
        let width = try #require(Double(svg.split(separator: "width=\"")[1].prefix { $0 != "\"" }))
        let line = try #require(svg.split(separator: "\n").first { $0.contains(">\(title)<") })
        let x = try #require(Double(line.split(separator: "x=\"")[1].prefix { $0 != "\"" }))
        let half = Double(title.count) * 15 * 0.6 / 2
        #expect(x - half >= 0 && x + half <= width, "title centred at \(x), about \(2 * half) px wide, in a view \(width) px wide")
    }
}
