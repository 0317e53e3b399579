import Foundation
import KVReport
import Testing
@testable import kvcache

/// `kvcache io-bench`'s latency percentiles: nearest rank (`Quantile.nearestRank`) over the
/// sorted latencies of a cell, as in its table and JSON.
@Suite("io-bench percentiles")
struct IOBenchQuantileTests {
    @Test func aCellsPercentilesAreNearestRanksInMicroseconds() {
        let cell = IOBench.Cell(op: .read, engine: "sync", blockBytes: 4096, depth: 1, bytes: 0, seconds: 1,
                                latenciesNanoseconds: (1...100).map { UInt64($0) * 1000 })
        #expect(cell.percentileMicroseconds(0.5) == 50, "rank 50 of 100 (the old floor(n p) index gave 51)")
        #expect(cell.percentileMicroseconds(0.99) == 99, "rank 99 of 100 (the old index gave the maximum)")
        #expect(cell.percentileMicroseconds(1) == 100 && cell.percentileMicroseconds(0) == 1)
        let empty = IOBench.Cell(op: .read, engine: "sync", blockBytes: 4096, depth: 1, bytes: 0, seconds: 1, latenciesNanoseconds: [])
        #expect(empty.percentileMicroseconds(0.99) == 0)
    }

    /// A real (short) synchronous run on a temporary file: its latencies come back sorted and
    /// the JSON's p50/p99/max are their nearest ranks.
    @Test func aRealRunsJSONReportsTheNearestRanksOfItsSortedLatencies() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kvc-iobench-\(getpid()).dat").path
        let bench = try IOBench(path: path, fileBytes: 1 << 20, maxBlockBytes: 4096, maxDepth: 2, forceThreads: true)
        defer { bench.removeFile() }
        try bench.fill()
        let cell = try bench.runSync(op: .read, blockBytes: 4096, seconds: 0.05)
        let ns = cell.latenciesNanoseconds
        try #require(ns.count > 10)
        #expect(ns == ns.sorted())
        let json = bench.json([cell], seconds: 0.05)
        for (key, q) in [("p50_us", 0.5), ("p99_us", 0.99), ("max_us", 1.0)] {
            let expected = fixed(Double(Quantile.nearestRank(ns, q)!) / 1000, 3)
            #expect(json.contains("\"\(key)\":\(expected)"), "\(key) \(expected) in \(json)")
        }
    }
}
