import Foundation
#if canImport(Glibc)
import Glibc
#endif
import TestSupport
import Testing
@testable import kvcache

/// `kvcache io-bench` when something fails: it ends with the error and leaves no test file.
/// A failure after the file was preallocated (the buffers' mapping, the queue) used to leave
/// the file (1 GiB by default) behind, and an asynchronous tier swap-out whose write failed
/// was waited for forever (only a completed swap-out counts in `swapOuts`).
@Suite("io-bench failures", .serialized)
struct IOBenchFailureTests {
    /// A fresh directory for one test, removed after it.
    private func withDirectory(_ body: (String) throws -> Void) throws {
        let scratch = ScratchDir("iobench-fail"), dir = scratch.path
        defer { scratch.remove() }
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

    /// `--tier --tier-async` with every tier write failing (`KVCACHE_OFFLOAD_FAULT`, in the
    /// child's environment only) exits 1 with the swap-out's error, as the synchronous swap-out
    /// does, and removes what it made. It used to poll forever.
    @Test(arguments: [false, true]) func aFailedTierSwapOutEndsTheRun(async: Bool) throws {
        let cli = cliPath()
        try #require(FileManager.default.isExecutableFile(atPath: cli), "build kvcache-cli first: \(cli)")
        try withDirectory { dir in
            let errorPath = dir + ".err"
            _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
            defer { try? FileManager.default.removeItem(atPath: errorPath) }
            let child = Process()
            child.executableURL = URL(fileURLWithPath: cli)
            child.arguments = ["io-bench", "--dir", dir, "--file-size", "16MiB", "--block-sizes", "64KiB", "--depths", "1",
                               "--seconds", "0.05", "--no-baseline", "--tier", "--tier-sequence-bytes", "4MiB"]
                + (async ? ["--tier-async"] : [])
            child.environment = ProcessInfo.processInfo.environment.merging(["KVCACHE_OFFLOAD_FAULT": "write:0"]) { $1 }
            child.standardOutput = FileHandle.nullDevice
            child.standardError = FileHandle(forWritingAtPath: errorPath)
            try child.run()
            let deadline = Date().addingTimeInterval(30)
            while child.isRunning && Date() < deadline { usleep(10_000) }
            if child.isRunning {
                Issue.record("io-bench still runs after 30 s: killed")
                kill(child.processIdentifier, SIGKILL)
            }
            child.waitUntilExit()
            let error = String(decoding: FileManager.default.contents(atPath: errorPath) ?? Data(), as: UTF8.self)
            #expect(child.terminationReason == .exit && child.terminationStatus == 1, "status \(child.terminationStatus): \(error)")
            #expect(error.contains("Error: io: swapping out sequence 0 failed: offload write of slot "), "\(error)")
            let left = FileManager.default.subpaths(atPath: dir) ?? ["?"]
            #expect(left.isEmpty, "left: \(left)")
        }
    }

    /// `--keep-file` with a fill that fails after the file was preallocated: the run fails and
    /// the file, written in part, is removed (a later `--skip-fill` would have timed reads of
    /// its unwritten extents). In a child process whose test thread has every `pwrite` fail with
    /// EIO (a seccomp filter of that thread only; `fallocate` still succeeds, as on a device that
    /// fails its writes): it exits 0 when the fill failed and the file is gone, 1 when the file
    /// was left, 2 when nothing failed, 5 when something else did.
    @Test func aKeptFileWhoseFillFailedIsRemoved() async {
        await #expect(processExitsWith: .exitCode(0)) {
            var template = Array((FileManager.default.temporaryDirectory.path + "/kvcache-keep-fill-XXXXXX").utf8CString)
            guard let made = mkdtemp(&template) else { exit(3) }
            let dir = String(cString: made)
            let path = dir + "/kvcache-io-bench.dat"
            Seccomp.fail(.pwrite64, errno: EIO)
            do {
                try IOBenchCommand.parse(["--dir", dir, "--file-size", "4MiB", "--block-sizes", "64KiB", "--depths", "1",
                                          "--seconds", "0.01", "--no-baseline", "--backend", "threads", "--keep-file"]).run()
            } catch {
                let left = FileManager.default.fileExists(atPath: path)
                unlink(path)
                rmdir(dir)
                guard "\(error)" == "filling \(path) failed: \(String(cString: strerror(EIO)))" else {
                    FileHandle.standardError.write(Data("not the fill's failure: \(error)\n".utf8))
                    exit(5)
                }
                exit(left ? 1 : 0)
            }
            unlink(path)
            rmdir(dir)
            exit(2)
        }
    }
}
