import Foundation
import Testing
@testable import kvcache

/// `kvcache io-bench` when something fails: it ends with the error and leaves no test file.
/// A failure after the file was preallocated (the buffers' mapping, the queue) used to leave
/// the file (1 GiB by default) behind.
@Suite("io-bench failures", .serialized)
struct IOBenchFailureTests {
    /// A fresh directory for one test, removed after it.
    private func withDirectory(_ body: (String) throws -> Void) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kvcache-iobench-fail-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try body(dir)
    }

    /// Buffers no address space holds (2^42 of 1 MiB: 2^62 bytes): their mapping fails after
    /// the file was made and preallocated, and the file goes with it.
    @Test func aFailedStartRemovesTheTestFile() throws {
        try withDirectory { dir in
            let path = dir + "/kvcache-io-bench.dat"
            #expect(throws: IOBenchError.self) {
                _ = try IOBench(path: path, fileBytes: 1 << 20, maxBlockBytes: 1 << 20, maxDepth: 1 << 42, forceThreads: true)
            }
            #expect(!FileManager.default.fileExists(atPath: path), "the test file was left behind")
        }
    }

    /// A kept file (`written`: an earlier run's, for --skip-fill) stays when the start fails.
    @Test func aFailedStartKeepsAnEarlierRunsFile() throws {
        try withDirectory { dir in
            let path = dir + "/kvcache-io-bench.dat"
            #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 1 << 20)))
            #expect(throws: IOBenchError.self) {
                _ = try IOBench(path: path, fileBytes: 1 << 20, maxBlockBytes: 1 << 20, maxDepth: 1 << 42, forceThreads: true,
                                written: true)
            }
            #expect(FileManager.default.fileExists(atPath: path))
        }
    }
}
