#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
@testable import kvcache

/// `replay --plots DIR` and `load --plots DIR` write their plots after the run: a `--trace` file
/// that is one of those plots (DIR/ttft_cdf.svg, DIR/memory.svg) was replaced by the plot.
/// The command is refused before it reads the trace, and the trace is left as it was.
@Suite struct PlotsOverTraceTests {
    /// Three Mooncake requests (a shared first block), small enough for a run in a test.
    static let trace = """
        {"timestamp": 0, "input_length": 1024, "output_length": 4, "hash_ids": [0, 1]}
        {"timestamp": 1, "input_length": 1024, "output_length": 4, "hash_ids": [0, 2]}
        {"timestamp": 2, "input_length": 512, "output_length": 4, "hash_ids": [3]}

        """

    /// A new directory holding `trace` at `name`; returns the directory and the trace's path.
    static func traceAt(_ name: String) throws -> (dir: String, path: String) {
        let dir = ScratchDir("kvplots").path
        let path = dir + "/" + name
        try Data(trace.utf8).write(to: URL(fileURLWithPath: path))
        return (dir, path)
    }

    /// The trace's bytes, or "" when it is gone.
    static func contents(_ path: String) -> String {
        (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }

    @Test(arguments: ["ttft_cdf.svg", "attainment.svg"])
    func replayRefusesAPlotOverItsTrace(name: String) throws {
        let (dir, path) = try Self.traceAt(name)
        defer { unlink(path); rmdir(dir) }
        // Spelled through a link to the directory: the same file all the same.
        symlink(dir, dir + ".link")
        defer { unlink(dir + ".link") }
        let command = try ReplayCommand.parse(["--trace", path, "--plots", dir + ".link", "--policies", "round-robin"])
        #expect { try command.run() } throws: {
            "\($0)" == "--plots \(dir).link writes \(dir).link/\(name), the file --trace reads: it would be overwritten; give another directory"
        }
        #expect(Self.contents(path) == Self.trace)
    }

    @Test func loadRefusesAPlotOverItsTrace() throws {
        let (dir, path) = try Self.traceAt("memory.svg")
        defer { unlink(path); rmdir(dir) }
        let command = try LoadCommand.parse(["--trace", path, "--plots", dir, "--layers", "1", "--memory", "16MiB",
                                             "--output-max", "4", "--threads", "1", "--batch", "1"])
        #expect { try command.run() } throws: {
            "\($0)" == "--plots \(dir) writes \(dir)/memory.svg, the file --trace reads: it would be overwritten; give another directory"
        }
        #expect(Self.contents(path) == Self.trace)
    }

    /// On the command line: exit status 1 and the message on standard error (the child names
    /// its directory, removed here, and reports the trace's state if the command returned).
    @Test func theRefusalExitsWithStatus1() async {
        let result = await #expect(processExitsWith: .exitCode(1), observing: [\.standardErrorContent]) {
            let (dir, path) = try! PlotsOverTraceTests.traceAt("ttft_cdf.svg")
            FileHandle.standardError.write(Data("dir: \(dir)\n".utf8))
            KVCacheCommand.main(["replay", "--trace", path, "--plots", dir, "--policies", "round-robin", "--no-search"])
            let kept = PlotsOverTraceTests.contents(path) == PlotsOverTraceTests.trace
            FileHandle.standardError.write(Data("returned; trace \(kept ? "kept" : "overwritten")\n".utf8))
            exit(0)
        }
        let text = result.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
        if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("dir: ") }) {
            let dir = String(line.dropFirst(5))
            unlink(dir + "/ttft_cdf.svg")
            unlink(dir + "/attainment.svg")
            rmdir(dir)
        }
        #expect(text.contains("the file --trace reads: it would be overwritten; give another directory"), "\(text)")
    }
}
