import Foundation
import Testing
@testable import kvcache

/// `kvcache io-bench`'s table and JSON: they print whatever the cells hold, without trapping,
/// and the JSON parses.
@Suite("io-bench reports")
struct IOBenchReportTests {
    /// A bench on a small temporary file in a fresh directory named `name` (threads backend).
    private func withBench(_ name: String = "kvcache-iobench", _ body: (IOBench, String) throws -> Void) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bench = try IOBench(path: dir + "/kvcache-io-bench.dat", fileBytes: 1 << 20, maxBlockBytes: 4096, maxDepth: 1, forceThreads: true)
        defer { bench.removeFile() }
        try body(bench, dir)
    }

    /// A cell that ran no time (0 bytes in 0 s: a NaN rate and best/sync ratio) prints `-`, and
    /// a rate past Int's range prints whole, where the table's integer conversion used to trap.
    @Test func aCellOfNoTimePrintsADashInsteadOfTrapping() throws {
        try withBench { bench, _ in
            let empty = IOBench.Cell(op: .read, engine: "sync", blockBytes: 4096, depth: 1, bytes: 0, seconds: 0, latenciesNanoseconds: [])
            let queue = IOBench.Cell(op: .read, engine: "queue", blockBytes: 4096, depth: 1, bytes: .max, seconds: 1e-9,
                                     latenciesNanoseconds: [1])
            let table = bench.table([empty, queue], sizes: [4096], depths: [1], ops: [.read])
            let row = try #require(table.split(separator: "\n").first { $0.hasPrefix("    4KiB") })
            #expect(row == "    4KiB         - (0.0)1.7592186044415998e+22 (0.0)         -x", "\(row)")
        }
    }

    /// The "file" value is escaped: a directory named with `"` and `\` made the JSON invalid.
    @Test func theJSONParsesWhateverTheDirectoryIsCalled() throws {
        try withBench("kvcache-iobench-\"quoted\\back") { bench, dir in
            let cell = try bench.runSync(op: .read, blockBytes: 4096, seconds: 0.01)
            let object = try JSONSerialization.jsonObject(with: Data(bench.json([cell], seconds: 0.01).utf8)) as? [String: Any]
            #expect(object?["file"] as? String == dir + "/kvcache-io-bench.dat")
        }
    }

    /// `--tier --tier-async --json`: tier cells say whether the swap-out was asynchronous, and
    /// the swap-out cell carries the call's own p50/p99 (the table's line); the help names the
    /// "tier" engine.
    @Test(arguments: [false, true]) func tierCellsSayHowTheySwappedOut(async: Bool) throws {
        try withBench { bench, dir in
            let result = try TierBench(dir: dir, payloadBytes: 64 << 10, sequenceBytes: 4 << 20, seconds: 0.01, asyncSwapOut: async).run()
            let json = bench.json([result.writeCell, result.readCell], seconds: 0.01)
            let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
            let cells = try #require(object?["cells"] as? [[String: Any]])
            #expect(cells.count == 2)
            for cell in cells { #expect(cell["engine"] as? String == "tier" && cell["async"] as? Bool == async, "\(cell)") }
            let write = try #require(cells.first { $0["op"] as? String == "write" })
            let p50 = try #require(write["call_p50_us"] as? Double), p99 = try #require(write["call_p99_us"] as? Double)
            #expect(p50 > 0 && p50 <= p99 && p99 <= (write["max_us"] as? Double ?? 0), "\(write)")
            #expect(cells.first { $0["op"] as? String == "read" }?["call_p50_us"] == nil, "a swap-in has no call apart")
        }
        #expect(IOBenchCommand.configuration.discussion.contains("\"engine\": \"sync\"|\"queue\"|\"tier\""))
    }
}
