#if canImport(Glibc)
import Glibc
#endif

/// Plots as standalone SVG documents, written directly (no plotting dependency). This file
/// holds what every plot shares: the document header, the title, the frame, the y axis's
/// gridlines and tick labels, the axis labels, the palette, the legend and the escaping of
/// text; `lines` (line plots) and `groupedBars` (grouped bar charts) draw on it, and callers
/// add their own plots as extensions built on those two.
///
/// Invariant: every caller-given text (titles, labels, series and group names) is escaped,
/// so a name holding `<`, `&` or `>` cannot break the document. Numbers are written without
/// a locale (`fixed`, or Swift's own text of a Double), so a plot reads the same on every
/// machine.
public enum SVGPlot {
    /// Series colours, in order; the (i % count)-th colour draws the i-th series.
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]

    /// The colour of series `i`.
    static func color(_ i: Int) -> String { palette[i % palette.count] }

    /// The document's opening: the `svg` element (12-point sans-serif) and a white background.
    static func header(width: Int, height: Int) -> String {
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" font-family=\"sans-serif\" font-size=\"12\">\n"
            + "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    }

    /// The document's close.
    static let footer = "</svg>\n"

    /// A heading of `size` points centred on `x`, baseline at `y`.
    static func heading(_ text: String, x: Double, y: Int, size: Int = 15) -> String {
        "<text x=\"\(x)\" y=\"\(y)\" text-anchor=\"middle\" font-size=\"\(size)\">\(escape(text))</text>\n"
    }

    /// The plot area's outline.
    static func frame(left: Double, top: Double, width: Double, height: Double) -> String {
        "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(width)\" height=\"\(height)\" fill=\"none\" stroke=\"#444\"/>\n"
    }

    /// A horizontal gridline across the plot area at pixel row `y`, labelled `value` left of
    /// the area with the decimals that tell ticks `step` apart (`label`).
    static func yTick(left: Double, width: Double, y: Double, value: Double, step: Double) -> String {
        "<line x1=\"\(left)\" x2=\"\(left + width)\" y1=\"\(r(y))\" y2=\"\(r(y))\" stroke=\"#eee\"/>"
            + "<text x=\"\(left - 6)\" y=\"\(r(y + 4))\" text-anchor=\"end\">\(label(value, step: step))</text>\n"
    }

    /// The x label centred under the plot area, baseline at `y`.
    static func xAxisLabel(_ text: String, left: Double, width: Double, y: Double) -> String {
        "<text x=\"\(left + width / 2)\" y=\"\(y)\" text-anchor=\"middle\">\(escape(text))</text>\n"
    }

    /// The y label rotated along the left edge of a plot area from `top`, `height` high.
    static func yAxisLabel(_ text: String, top: Double, height: Double) -> String {
        "<text transform=\"translate(18 \(top + height / 2)) rotate(-90)\" text-anchor=\"middle\">\(escape(text))</text>\n"
    }

    /// How a legend entry shows its series: a short line (line plots) or a filled box (bars).
    enum Swatch { case line, box }

    /// The `i`-th legend entry, right of a plot area ending at `x`: a swatch in series `i`'s
    /// colour and `name`.
    static func legendEntry(_ i: Int, _ name: String, x: Double, top: Double, swatch: Swatch) -> String {
        let y = top + 14 + Double(i) * 18
        let mark = switch swatch {
        case .line:
            "<line x1=\"\(x + 12)\" x2=\"\(x + 32)\" y1=\"\(y - 4)\" y2=\"\(y - 4)\" stroke=\"\(color(i))\" stroke-width=\"2\"/>"
        case .box:
            "<rect x=\"\(x + 12)\" y=\"\(y - 10)\" width=\"20\" height=\"10\" fill=\"\(color(i))\"/>"
        }
        return mark + "<text x=\"\(x + 38)\" y=\"\(y)\">\(escape(name))</text>\n"
    }

    /// A pixel coordinate, one decimal.
    static func r(_ x: Double) -> String { fixed(x, 1) }

    /// A tick label of ticks at least `step` apart: 2 decimals below 10, 1 below 100, none
    /// above, and more when the step needs them to tell neighbours apart (up to 6: an axis of
    /// 0.01 s in steps of 0.002 reads 0.000, 0.002, ...).
    static func label(_ x: Double, step: Double) -> String {
        let byMagnitude = abs(x) >= 100 ? 0 : abs(x) >= 10 ? 1 : 2
        let byStep = step > 0 && step.isFinite ? Int((-log10(step)).rounded(.up)) : 0
        return fixed(x, min(6, max(byMagnitude, byStep)))
    }

    /// About how wide `text` is drawn at `size` px (0.6 em a character, wider than most
    /// glyphs of the default sans-serif font), so a title is given room.
    static func textWidth(_ text: String, size: Int) -> Double { Double(text.count) * Double(size) * 0.6 }

    /// `s` with `&`, `<` and `>` as XML entities, safe as element text and as an attribute
    /// value in double quotes. O(length).
    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }
}
