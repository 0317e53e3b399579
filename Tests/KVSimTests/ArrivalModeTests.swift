import Foundation
import Testing
@testable import KVSim

/// `ArrivalMode`: the requests sharing a recorded timestamp, spread over the gap to the next
/// one (`kvcache replay`'s default) or kept as recorded.
@Suite struct ArrivalModeTests {
    /// Buckets of 1 (t = 0), 3 (t = 3000, gap 2999 to 5999), 1 (t = 5999) and a last bucket of
    /// 2 (t = 9000): the gaps are 3000, 2999 and 3001, so the last bucket spreads over their
    /// median, 3000 (the shape of the bundled Mooncake trace's 3 s buckets).
    static let text = """
    {"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}
    {"timestamp": 3000, "input_length": 10, "output_length": 1, "hash_ids": [2]}
    {"timestamp": 3000, "input_length": 10, "output_length": 1, "hash_ids": [3]}
    {"timestamp": 3000, "input_length": 10, "output_length": 1, "hash_ids": [4]}
    {"timestamp": 5999, "input_length": 10, "output_length": 1, "hash_ids": [5]}
    {"timestamp": 9000, "input_length": 10, "output_length": 1, "hash_ids": [6]}
    {"timestamp": 9000, "input_length": 10, "output_length": 1, "hash_ids": [7]}
    """

    @Test func spreadPlacesEachBucketEvenlyOverItsGap() throws {
        let read = try MooncakeTraceReader.parse(Data(Self.text.utf8), path: "t.jsonl")
        #expect(read.arrivals == .recorded)
        let spread = read.withArrivals(.spread)
        #expect(spread.arrivals == .spread)
        let third: Double = 2999.0 / 3
        let expected: [Double] = [0, 3000, 3000 + third, 3000 + 2 * third, 5999, 9000, 10_500]
        #expect(spread.arrivalMilliseconds == expected)
        #expect(spread.arrivalMilliseconds[3] < 5999 && spread.arrivalMilliseconds[2] > 3999.6)
        #expect(spread.inputTokens == read.inputTokens && spread.hashes == read.hashes, "only the arrivals move")
        #expect(spread.prefix(3).arrivals == .spread)
    }

    /// `recorded` keeps the times as read, the old behaviour: requests at one timestamp arrive
    /// together.
    @Test func recordedKeepsTheTimesAsRead() throws {
        let read = try MooncakeTraceReader.parse(Data(Self.text.utf8), path: "t.jsonl")
        let recorded = read.withArrivals(.recorded)
        #expect(recorded.arrivalMilliseconds == [0, 3000, 3000, 3000, 5999, 9000, 9000])
        #expect(recorded.arrivalMilliseconds == read.arrivalMilliseconds && recorded.arrivals == .recorded)
    }

    /// An even number of gaps: the last bucket uses the mean of the two middle ones; one
    /// distinct time has no gap, so nothing moves; distinct times never move.
    @Test func theLastBucketUsesTheMedianGap() {
        #expect(Trace.spread([0, 10, 40, 40]) == [0, 10, 40, 50])  // gaps 10, 30: median 20
        let third: Double = 4.0 / 3
        let expected: [Double] = [0, 1, 5, 9, 9 + third, 9 + 2 * third]
        #expect(Trace.spread([0, 1, 5, 9, 9, 9]) == expected)  // gaps 1, 4, 4: median 4
        #expect(Trace.spread([7, 7, 7]) == [7, 7, 7])
        #expect(Trace.spread([]) == [])
        #expect(Trace.spread([0, 0.5, 1, 2]) == [0, 0.5, 1, 2])
    }

    /// The Azure trace's timestamps are distinct, so spreading leaves them as they are.
    @Test func distinctAzureTimestampsDoNotMove() throws {
        let csv = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
            + "2023-11-16 18:15:50.9951690,396,109\n2023-11-16 18:15:51.0000000,879,5\n"
        let t = try AzureTraceReader.parse(Data((csv).utf8), path: "a.csv")
        #expect(t.withArrivals(.spread).arrivalMilliseconds == t.arrivalMilliseconds)
    }

    /// The simulator divides the spread times by the rate scale: spreading comes first.
    @Test func theRateScaleDividesTheSpreadTimes() throws {
        let spread = try MooncakeTraceReader.parse(Data(Self.text.utf8), path: "t.jsonl").withArrivals(.spread)
        var c = SimulationConfig()
        c.instances = 1
        c.rateScale = 2
        let sim = try ClusterSimulator(trace: spread, config: c)
        #expect((0..<spread.count).map { sim.arrival[$0] } == spread.arrivalMilliseconds.map { $0 / 2 })
    }
}
