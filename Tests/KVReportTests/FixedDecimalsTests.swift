import KVReport
import Testing

/// `fixed`, the number formatting of every report and plot, and `trimmedFixed`, its short form.
@Suite("fixed")
struct FixedDecimalsTests {
    @Test func fixedHasExactlyTheDecimalsAsked() {
        #expect(fixed(0.05, 3) == "0.050")
        #expect(fixed(2.5, 0) == "3", "halves round away from zero")
        #expect(fixed(-1.25, 1) == "-1.3")
        #expect(fixed(-0.004, 2) == "0.00", "no minus sign on a value that rounds to zero")
        #expect(fixed(12345.6789, 2) == "12345.68")
        #expect(fixed(7, 0) == "7")
        #expect(fixed(.nan, 2) == "nan" && fixed(.infinity, 2) == "inf" && fixed(-.infinity, 2) == "-inf")
        #expect(fixed(1e20, 2) == String(1e20), "beyond UInt64 it falls back to Swift's own text")
    }

    /// The replay's progress-line numbers and evict-eval's budget labels: up to 2 decimals,
    /// and numbers an `Int` cannot hold printed as Swift prints a `Double` (a rate scale of
    /// 1e308 once trapped here).
    @Test func trimmedFixedDropsTrailingZerosAndPrintsNumbersPastIntWithoutTrapping() {
        #expect(trimmedFixed(2, 2) == "2" && trimmedFixed(1.5, 2) == "1.5" && trimmedFixed(1.234, 2) == "1.23")
        #expect(trimmedFixed(0.004, 2) == "0" && trimmedFixed(12.5, 2) == "12.5" && trimmedFixed(20, 0) == "20")
        #expect(trimmedFixed(1e300, 2) == "1e+300" && trimmedFixed(1.5e20, 2) == "1.5e+20", "Swift's own text, zeros kept")
        #expect(trimmedFixed(.infinity, 2) == "inf" && trimmedFixed(.nan, 2) == "nan")
        #expect(trimmedFixed(0x1p52, 2) == "4503599627370496", "below 2^53 still an integer")
    }
}
