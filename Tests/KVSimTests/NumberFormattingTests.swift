import Testing
@testable import KVSim

/// `fmt`, the replay's progress-line numbers: up to 2 decimals, and numbers an `Int` cannot
/// hold printed as Swift prints a `Double` (a rate scale of 1e308 once trapped here).
@Suite struct NumberFormattingTests {
    @Test func shortDecimalsAndNumbersPastIntPrintWithoutTrapping() {
        #expect(fmt(2) == "2" && fmt(1.5) == "1.5" && fmt(1.234) == "1.23" && fmt(0.004) == "0")
        #expect(fmt(1e300) == "1e+300" && fmt(.infinity) == "inf" && fmt(.nan) == "nan")
        #expect(fmt(0x1p52) == "4503599627370496", "below 2^53 still an integer")
    }
}
