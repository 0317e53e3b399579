import KVCache
import KVReport
import KVSim

/// The memory of a `kvcache load` run over time, as the run's sampler saw it (every
/// `LoadRunner.sampleIntervalNanoseconds`): what the engine commits against its budget, what
/// the process holds resident, and the K/V bytes of the blocks live sequences use and of the
/// blocks only the prefix index keeps. Drawn by `svg()` (`load --plots`), so that a reader sees
/// whether RSS follows the live tokens; not part of the JSON report.
///
/// Invariant: samples are in time order. Cost: one sample per interval (a few dozen bytes), so
/// an hour's run holds ~72,000 samples.
struct MemoryTimeline: Sendable {
    /// One reading of the engine's and the process's memory.
    struct Sample: Sendable, Equatable {
        /// Seconds since the run's clock started.
        var seconds: Double
        /// `EngineStats.committedBytes`.
        var committedBytes: UInt64
        /// The process's `VmRSS` (the engine's memory and everything else the process holds).
        var rssBytes: UInt64
        /// K/V bytes of the blocks live sequences reference (`blocksUsed`, a shared block once).
        var usedBytes: UInt64
        /// K/V bytes of the blocks only the prefix index holds (`blocksCached`).
        var cachedBytes: UInt64
    }

    /// The engine's budget (`EngineStats.budgetBytes`), drawn as a guide line.
    var budgetBytes: UInt64 = 0
    /// K/V bytes of one block in every tensor of a sequence (`EngineConfig.blockBytesAllTensors`).
    var bytesPerBlock: UInt64 = 0
    /// The readings, oldest first.
    private(set) var samples: [Sample] = []

    /// An empty timeline for an engine of `config`.
    init(config: EngineConfig) {
        budgetBytes = config.memoryBytes
        bytesPerBlock = UInt64(config.blockBytesAllTensors)
    }

    /// Appends a reading taken `seconds` into the run. Precondition: not earlier than the last.
    mutating func record(seconds: Double, stats: EngineStats, rssBytes: UInt64) {
        precondition(samples.last.map { $0.seconds <= seconds } ?? true, "memory samples out of time order")
        samples.append(Sample(seconds: seconds, committedBytes: stats.committedBytes, rssBytes: rssBytes,
                              usedBytes: stats.blocksUsed * bytesPerBlock, cachedBytes: stats.blocksCached * bytesPerBlock))
    }

    /// Most points a line of `svg()` draws: a longer run's samples are thinned to every k-th
    /// (the last always drawn), which keeps an hour's plot under a megabyte.
    static let maxPoints = 2000

    /// The timeline as a standalone SVG line plot in MiB against seconds, one line per field of
    /// `Sample`, the budget as a dashed guide line. O(samples).
    func svg(title: String) -> String {
        let stride = max(1, (samples.count + Self.maxPoints - 1) / Self.maxPoints)
        var drawn = Swift.stride(from: 0, to: samples.count, by: stride).map { samples[$0] }
        if let last = samples.last, drawn.last != last { drawn.append(last) }
        func line(_ name: String, _ value: (Sample) -> UInt64) -> SVGPlot.Series {
            SVGPlot.Series(name: name, points: drawn.map { ($0.seconds, Double(value($0)) / 1_048_576) })
        }
        let series = [
            line("committed", \.committedBytes), line("RSS", \.rssBytes),
            line("live blocks", \.usedBytes), line("cached blocks", \.cachedBytes),
        ]
        let budget = Double(budgetBytes) / 1_048_576
        let top = max(budget, series.flatMap(\.points).map(\.1).max() ?? 0)
        return SVGPlot.lines(title: title, xLabel: "seconds", yLabel: "MiB", series: series,
                             yRange: (0, top * 1.05), hLine: budget)
    }
}
