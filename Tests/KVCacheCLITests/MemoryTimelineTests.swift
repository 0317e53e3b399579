import Foundation
import KVCache
import Testing
@testable import kvcache

/// `kvcache load`'s memory over time (`MemoryTimeline`): its samples from a real run agree with
/// the engine, and `--plots` draws them.
@Suite("kvcache load memory timeline")
struct MemoryTimelineTests {
    /// The polylines of an SVG document, each as its (x, y) points.
    static func polylines(_ svg: String) -> [[(Double, Double)]] {
        svg.split(separator: "\n").filter { $0.hasPrefix("<polyline") }.map { line in
            let points = line.split(separator: "points=\"")[1].prefix { $0 != "\"" }
            return points.split(separator: " ").map { pair in
                let xy = pair.split(separator: ",")
                return (Double(xy[0])!, Double(xy[1])!)
            }
        }
    }

    @Test func samplesConvertBlocksToBytesAndThePlotDrawsEachField() throws {
        var config = EngineConfig()
        config.numLayers = 2
        config.numKVHeads = 2
        config.headDim = 64
        config.dtypeBytes = 2
        config.blockTokens = 16
        config.memoryBytes = 64 << 20
        var timeline = MemoryTimeline(config: config)
        #expect(timeline.bytesPerBlock == 16 * 2 * 64 * 2 * 4, "16 tokens x 256 bytes x 4 tensors")
        var stats = EngineStats()
        stats.committedBytes = 8 << 20
        stats.blocksUsed = 100
        stats.blocksCached = 20
        timeline.record(seconds: 0.05, stats: stats, rssBytes: 30 << 20)
        stats.committedBytes = 16 << 20
        stats.blocksUsed = 50
        stats.blocksCached = 200
        timeline.record(seconds: 0.10, stats: stats, rssBytes: 40 << 20)
        let block: UInt64 = 16384, mib: UInt64 = 1 << 20
        let expected: [MemoryTimeline.Sample] = [
            MemoryTimeline.Sample(seconds: 0.05, committedBytes: 8 * mib, rssBytes: 30 * mib, usedBytes: 100 * block, cachedBytes: 20 * block),
            MemoryTimeline.Sample(seconds: 0.10, committedBytes: 16 * mib, rssBytes: 40 * mib, usedBytes: 50 * block, cachedBytes: 200 * block),
        ]
        #expect(timeline.samples == expected)

        let svg = timeline.svg(title: "t")
        for name in ["committed", "RSS", "live blocks", "cached blocks"] { #expect(svg.contains(">\(name)</text>"), "\(name)") }
        #expect(svg.contains("stroke-dasharray"), "the budget's guide line")
        let lines = Self.polylines(svg)
        try #require(lines.count == 4 && lines.allSatisfy { $0.count == 2 })
        // SVG y grows downwards: what rose is drawn higher, what fell lower.
        #expect(lines[0][1].1 < lines[0][0].1 && lines[1][1].1 < lines[1][0].1, "committed and RSS rose")
        #expect(lines[2][1].1 > lines[2][0].1 && lines[3][1].1 < lines[3][0].1, "live blocks fell, cached rose")
        // Committed 16 MiB against a 64 MiB budget (the axis runs to 1.05 x 64 MiB): a quarter
        // of the way up, within rounding.
        let top = 40.0, height = 440.0 - 40 - 55
        #expect(abs((top + height - lines[0][1].1) / height - 16.0 / (64 * 1.05)) < 0.01)
    }

    @Test func aLongRunIsThinnedButKeepsItsLastSample() {
        var timeline = MemoryTimeline(config: EngineConfig())
        var stats = EngineStats()
        for i in 0..<5001 {
            stats.committedBytes = UInt64(i) << 10
            timeline.record(seconds: Double(i) * 0.05, stats: stats, rssBytes: 0)
        }
        let lines = Self.polylines(timeline.svg(title: "t"))
        #expect(lines.count == 4)
        #expect(lines.allSatisfy { $0.count <= MemoryTimeline.maxPoints + 1 && $0.count >= MemoryTimeline.maxPoints / 2 }, "\(lines.map(\.count))")
        #expect(lines[0].last!.0 == lines[0].map(\.0).max(), "the last sample is drawn")
    }

    /// A real run (the report tests' shape, paged): every sample is a consistent snapshot of
    /// the engine, and the last is its state at the end.
    @Test func aRunsSamplesAgreeWithTheEngine() throws {
        let shape = LoadReportTests.shapes[0]
        #expect(shape.layout == "paged")
        let (runner, report) = try LoadReportTests.load(LoadReportTests.arguments(shape))
        let timeline = try #require(report.timeline)
        try #require(!timeline.samples.isEmpty)
        #expect(timeline.budgetBytes == LoadReportTests.budget)
        #expect(timeline.bytesPerBlock == UInt64(runner.config.blockBytes * runner.config.tensors))
        #expect(zip(timeline.samples, timeline.samples.dropFirst()).allSatisfy { $0.seconds <= $1.seconds })
        for s in timeline.samples {
            #expect(s.committedBytes <= LoadReportTests.budget)
            // Paged: every used or cached block sits in committed memory.
            #expect(s.usedBytes + s.cachedBytes <= s.committedBytes, "\(s)")
            #expect(s.rssBytes > 0)
        }
        let last = timeline.samples.last!
        #expect(last.seconds >= report.elapsedSeconds - 0.001)
        #expect(last.committedBytes == report.memory.committedEndBytes)
        #expect(last.rssBytes == report.memory.rssEndBytes)
        #expect(last.usedBytes == 0, "every sequence was freed")
        #expect(last.cachedBytes > 0, "their prompt blocks stay cached")
        #expect(report.timeline != nil && !report.json().contains("timeline"), "the JSON leaves the samples out")
    }

    @Test func plotsGoWhereAsked() throws {
        let dir = NSTemporaryDirectory() + "kvcache-plots-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let arguments = LoadReportTests.arguments(LoadReportTests.shapes[0])
        try LoadCommand.parse(arguments + ["--plots", dir]).run()
        let svg = try String(contentsOfFile: dir + "/memory.svg", encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("kvcache-cli load: memory, paged layout, synthetic"))
        #expect(Self.polylines(svg).count == 4)
        try FileManager.default.removeItem(atPath: dir)
        try LoadCommand.parse(arguments + ["--plots", ""]).run()
        #expect(!FileManager.default.fileExists(atPath: dir), "--plots '' writes nothing")
        #expect(try LoadCommand.parse(arguments).plots == "out/load")
    }
}
