// Short numbers for progress lines (`fixed`, for reports, is KVReport's).

/// `x` with up to 2 decimals, trailing zeros dropped; past 2^53 (or not finite) as Swift
/// prints a `Double`.
func fmt(_ x: Double) -> String {
    let r = (x * 100).rounded() / 100
    guard r.magnitude < 0x1p53 else { return String(x) }
    if r == r.rounded() { return String(Int(r)) }
    var s = String(r)
    if let dot = s.firstIndex(of: "."), s.distance(from: dot, to: s.endIndex) > 3 { s = String(s[..<s.index(dot, offsetBy: 3)]) }
    return s
}
