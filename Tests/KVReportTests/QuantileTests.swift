import KVReport
import Testing

/// `Quantile.nearestRank`: the ceil(q * n)-th smallest value, always one of the sample's.
@Suite("nearest-rank quantile")
struct QuantileTests {
    /// 1...100: the q-quantile is the value of rank ceil(100 q), i.e. 100 q itself.
    static let hundred = Array(1...100)

    @Test func theEndsAreTheSmallestAndTheLargest() {
        #expect(Quantile.nearestRank(Self.hundred, 0) == 1)
        #expect(Quantile.nearestRank(Self.hundred, 1) == 100)
    }

    @Test func theMedianAndP99AreTheirRanks() {
        #expect(Quantile.nearestRank(Self.hundred, 0.5) == 50, "rank 50 of 100, not 51")
        #expect(Quantile.nearestRank(Self.hundred, 0.99) == 99, "rank 99 of 100, not the maximum")
        #expect(Quantile.nearestRank(Self.hundred, 0.991) == 100, "ceil(99.1) = rank 100")
    }

    @Test func aRankBetweenValuesRoundsUp() {
        let ten: [Double] = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
        #expect(Quantile.nearestRank(ten, 0.25) == 30, "ceil(2.5) = rank 3")
        #expect(Quantile.nearestRank(ten, 0.5) == 50)
        #expect(Quantile.nearestRank(ten, 0.99) == 100, "ceil(9.9) = rank 10")
        #expect(Quantile.nearestRank(ten[2...], 0.5) == 60, "a slice counts from its own start")
    }

    @Test func anEmptySampleHasNoQuantileAndOneValueIsEveryQuantile() {
        #expect(Quantile.nearestRank([Double](), 0.5) == nil)
        for q in [0, 0.5, 0.99, 1.0] { #expect(Quantile.nearestRank([UInt64(7)], q) == 7, "q \(q)") }
    }
}
