/// `value` with exactly `digits` decimals, rounded half away from zero, without Foundation's
/// locale-dependent formatters (reports must read the same on every machine): no minus sign
/// on a value that rounds to zero, `nan`/`inf`/`-inf` for non-finite values, and Swift's own
/// text beyond 9e18 after scaling. O(digits).
public func fixed(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return value.isNaN ? "nan" : (value < 0 ? "-inf" : "inf") }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let negative = value < 0
    let scaled = (abs(value) * scale).rounded()
    guard scaled < 9e18 else { return String(value) }
    let n = UInt64(scaled)
    let whole = n / UInt64(scale)
    var text = (negative && n != 0 ? "-" : "") + String(whole)
    if digits > 0 {
        let frac = String(n % UInt64(scale))
        text += "." + String(repeating: "0", count: digits - frac.count) + frac
    }
    return text
}

/// `value` with at most `digits` decimals: `fixed(value, digits)` with trailing zeros, and a
/// trailing dot, dropped (0.2 with 2 digits is "0.2", 20.0 is "20"), and Swift's own text
/// where `fixed` gives it. For short numbers in progress lines and labels. O(digits).
public func trimmedFixed(_ value: Double, _ digits: Int) -> String {
    var text = fixed(value, digits)
    guard digits > 0, value.isFinite, !text.contains("e") else { return text }  // not Swift's own text
    while text.hasSuffix("0") { text.removeLast() }
    if text.hasSuffix(".") { text.removeLast() }
    return text
}
