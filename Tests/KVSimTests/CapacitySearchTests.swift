import Testing
@testable import KVSim

/// The effective-capacity search on constructed attainment curves: it reports the best
/// passing scale it probed, and its grid is fine enough to tell apart capacities about 1%
/// apart (the replay's policies differ by a few percent; a 2^(1/16) grid, 4.4% a step, once
/// reported x1.41 both for a policy passing up to x1.47 and for one passing up to x1.45).
@Suite struct CapacitySearchTests {
    /// A curve that holds 95% up to `crossing` and 85% above: the capacity is within 0.55%
    /// under the crossing and never above it.
    @Test(arguments: [1.45, 1.47, 0.93, 3.1])
    func theCapacityIsWithinHalfAPercentOfTheCrossing(crossing: Double) {
        let (capacity, probes) = CapacitySearch().run { $0 <= crossing ? 0.95 : 0.85 }
        #expect(capacity <= crossing && capacity >= crossing / 1.0055, "\(probes.map(\.rateScale))")
    }

    /// Two policies crossing 90% at x1.45 and x1.47 (1.4% apart) get different capacities.
    @Test func capacitiesOnePercentApartAreTold() {
        let low = CapacitySearch().run { $0 <= 1.45 ? 1 : 0 }.capacity
        let high = CapacitySearch().run { $0 <= 1.47 ? 1 : 0 }.capacity
        #expect(low < high)
    }
}
