import KVReport
import Testing

/// `fixed`, the number formatting of every report and plot.
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
}
