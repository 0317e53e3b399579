extension SVGPlot {
    /// One group of bars: a name under the group and at most one value per series (nil: no
    /// bar in that series' slot).
    public struct BarGroup: Sendable {
        /// The label under the group.
        public var name: String
        /// The value of series i at index i; shorter than the series list means the rest are nil.
        public var values: [Double?]
        /// A group named `name` with `values` in series order.
        public init(name: String, values: [Double?]) {
            self.name = name
            self.values = values
        }
    }

    /// One panel of a grouped bar chart: its own heading, frame and y axis, its groups left
    /// to right.
    public struct BarPanel: Sendable {
        /// The heading above the panel.
        public var title: String
        /// The groups, left to right.
        public var groups: [BarGroup]
        /// A panel headed `title`.
        public init(title: String, groups: [BarGroup]) {
            self.title = title
            self.groups = groups
        }
    }

    /// Width in pixels of one bar's slot (the bar is a pixel narrower).
    static let barSlot = 12.0
    /// Height in pixels of a panel's plot area.
    static let barPanelHeight = 200.0

    /// Grouped bars: `panels` stacked top to bottom, all on the y range `yRange`, series i
    /// drawn in slot i of every group in the i-th palette colour (so a series lines up across
    /// groups), the series named in a legend. A bar's height is its value's share of the y
    /// range (clamped to it); each bar is a `<rect class="bar">` whose `<title>` gives group,
    /// series and value. Precondition: no group has more values than there are series and
    /// `yRange` is increasing. O(panels x groups x series).
    public static func groupedBars(title: String, yLabel: String, seriesNames: [String], panels: [BarPanel],
                                   yRange: (Double, Double)) -> String {
        precondition(yRange.1 > yRange.0, "a bar chart's y range must be increasing")
        precondition(panels.allSatisfy { $0.groups.allSatisfy { $0.values.count <= seriesNames.count } },
                     "a bar group has more values than there are series")
        let left = 70.0, right = 170.0, top = 40.0, ph = barPanelHeight
        let headingSpace = 30.0, labelSpace = 80.0, stride = headingSpace + ph + labelSpace
        let groupWidth = Double(max(1, seriesNames.count)) * barSlot + 14
        let pw = Double(max(1, panels.map(\.groups.count).max() ?? 0)) * groupWidth
        // Centred over the panels, unless they are too narrow for it: then from the left edge.
        let titleX = max(left + pw / 2, textWidth(title, size: 15) / 2 + 10)
        let w = max(left + pw + right, titleX + textWidth(title, size: 15) / 2 + 10), h = top + Double(panels.count) * stride
        let (y0, y1) = yRange
        var s = header(width: Int(w), height: Int(h))
        s += heading(title, x: titleX, y: 22)
        for (n, name) in seriesNames.enumerated() {
            s += legendEntry(n, name, x: left + pw, top: top + headingSpace, swatch: .box)
        }
        for (p, panel) in panels.enumerated() {
            let pt = top + Double(p) * stride + headingSpace, bottom = pt + ph
            func py(_ y: Double) -> Double { bottom - (min(max(y, y0), y1) - y0) / (y1 - y0) * ph }
            s += heading(panel.title, x: left + pw / 2, y: Int(pt - 8), size: 13)
            s += frame(left: left, top: pt, width: pw, height: ph)
            for i in 0...5 {
                let fy = y0 + (y1 - y0) * Double(i) / 5
                s += yTick(left: left, width: pw, y: py(fy), value: fy, step: (y1 - y0) / 5)
            }
            s += yAxisLabel(yLabel, top: pt, height: ph)
            for (g, group) in panel.groups.enumerated() {
                let gx = left + Double(g) * groupWidth + 7
                for (n, value) in group.values.enumerated() {
                    guard let value else { continue }
                    let y = py(value)
                    s += "<rect class=\"bar\" x=\"\(r(gx + Double(n) * barSlot))\" y=\"\(r(y))\" width=\"\(r(barSlot - 1))\" "
                        + "height=\"\(r(bottom - y))\" fill=\"\(color(n))\"><title>\(escape(group.name)), "
                        + "\(escape(seriesNames[n])): \(fixed(value, 3))</title></rect>\n"
                }
                let ly = r(bottom + 14)
                s += "<text x=\"\(r(gx))\" y=\"\(ly)\" transform=\"rotate(30 \(r(gx)) \(ly))\">\(escape(group.name))</text>\n"
            }
        }
        return s + footer
    }
}
