/// Effective request capacity: the highest rate scale at which at least `target` of the
/// requests meet the TTFT SLO.
///
/// Search: from scale 1, double while attainment holds (or halve until it does), then bisect
/// geometrically between the last passing and first failing scale `refinements` times. The
/// bracket then spans a factor of 2^(1/2^refinements): with the default 7, 2^(1/128), 0.54%,
/// so capacities about 1% apart are told apart (4 refinements, a 4.4% grid, reported x1.41
/// both for a policy passing to x1.47 and for one passing to x1.45). It assumes attainment
/// falls as the rate rises (true up to simulation noise); the answer is the best passing
/// scale probed, so it never overstates what was measured. Cost: one simulation per probe,
/// about 1 + log2(capacity) + `refinements` of them.
public struct CapacitySearch: Sendable {
    /// Attainment that counts as meeting the SLO.
    public var target = 0.9
    /// Bisection steps after bracketing (each halves the bracket's log-width).
    public var refinements = 7
    /// The lowest scale probed; below it the capacity is reported as 0.
    public var minScale = 1.0 / 64
    /// The highest scale probed; a policy passing there is reported at it.
    public var maxScale = 64.0

    /// The defaults above.
    public init() {}

    /// One probe of the search.
    public struct Probe: Sendable {
        /// The rate scale simulated.
        public var rateScale: Double
        /// The fraction of requests meeting the SLO there.
        public var attainment: Double
    }

    /// Runs the search with `measure` (rate scale -> attainment); returns the capacity (0 when
    /// even `minScale` fails) and every probe in order.
    public func run(_ measure: (Double) throws -> Double) rethrows -> (capacity: Double, probes: [Probe]) {
        var probes: [Probe] = []
        func ok(_ s: Double) throws -> Bool {
            let a = try measure(s)
            probes.append(Probe(rateScale: s, attainment: a))
            return a >= target
        }
        var lo: Double, hi: Double
        if try ok(1) {
            lo = 1
            hi = 2
            while hi <= maxScale, try ok(hi) { lo = hi; hi *= 2 }
            if hi > maxScale { return (lo, probes) }
        } else {
            hi = 1
            lo = 0.5
            while lo >= minScale, !(try ok(lo)) { hi = lo; lo /= 2 }
            if lo < minScale { return (0, probes) }
        }
        for _ in 0..<refinements {
            let mid = (lo * hi).squareRoot()
            if try ok(mid) { lo = mid } else { hi = mid }
        }
        return (lo, probes)
    }
}
