// Number formatting for reports and progress lines, without Foundation's locale-dependent
// formatters (reports must read the same on every machine).

/// `x` with exactly `digits` decimals.
public func fixed(_ x: Double, _ digits: Int) -> String {
    guard x.isFinite else { return "-" }
    var p = 1.0
    for _ in 0..<digits { p *= 10 }
    let v = (x * p).rounded()
    let negative = v < 0
    let whole = Int(abs(v)) / Int(p), frac = Int(abs(v)) % Int(p)
    var s = (negative ? "-" : "") + String(whole)
    if digits > 0 {
        let f = String(frac)
        s += "." + String(repeating: "0", count: digits - f.count) + f
    }
    return s
}

/// `x` with up to 2 decimals, trailing zeros dropped.
func fmt(_ x: Double) -> String {
    let r = (x * 100).rounded() / 100
    if r == r.rounded() { return String(Int(r)) }
    var s = String(r)
    if let dot = s.firstIndex(of: "."), s.distance(from: dot, to: s.endIndex) > 3 { s = String(s[..<s.index(dot, offsetBy: 3)]) }
    return s
}
