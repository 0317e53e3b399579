#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
@testable import kvcache

/// `kvcache evict-eval --write-trace FILE` fails when the trace was not written whole: it once
/// printed "wrote 1537 steps" over a full disk and left the truncated file to be read later.
@Suite struct EvictEvalWriteTraceTests {
    /// `/dev/full` refuses every write (ENOSPC); the device is not the command's to remove.
    @Test func aFullDiskFailsTheCommandWithTheSystemsReason() throws {
        let command = try EvictEvalCommand.parse(["--write-trace", "/dev/full", "--synthetic", "long-decode"])
        #expect { try command.run() } throws: { "\($0)" == "cannot write /dev/full: No space left on device" }
        var st = stat()
        #expect(stat("/dev/full", &st) == 0 && st.st_mode & S_IFMT == S_IFCHR)
    }

    /// In a child process: `--write-trace` of synthetic trace `kind` to a regular file under a
    /// file-size limit of `bytes` (RLIMIT_FSIZE: EFBIG past it, SIGXFSZ ignored); prints on
    /// standard error what the command said and whether the file was left, then exits 0.
    static func writeTraceUnderFileLimit(bytes: rlim_t, kind: String) -> Never {
        signal(SIGXFSZ, SIG_IGN)
        var limit = rlimit(rlim_cur: bytes, rlim_max: bytes)
        guard setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &limit) == 0 else { exit(1) }
        let path = "/tmp/kvattn-fsize-\(getpid()).bin"
        var report = "succeeded"
        do {
            let command = try EvictEvalCommand.parse(["--write-trace", path, "--synthetic", kind])
            try command.run()
        } catch {
            report = "\(error)".replacingOccurrences(of: path, with: "PATH")
        }
        report += access(path, F_OK) == 0 ? "; left" : "; removed"
        unlink(path)
        FileHandle.standardError.write("report: \(report)\n".data(using: .utf8)!)
        exit(0)
    }

    /// A regular file that stops taking bytes past 64 KiB fails the command, and the partial
    /// trace is removed.
    @Test func aFailedWriteRemovesThePartialTrace() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            EvictEvalWriteTraceTests.writeTraceUnderFileLimit(bytes: 1 << 16, kind: "long-decode")
        }
        let text = result.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
        #expect(text.contains("report: cannot write PATH: File too large; removed\n"), "\(text)")
    }

    /// The same when the header itself fails (64 bytes: topic-return's segment embeddings pass
    /// stdio's buffer, so the writer's creation writes and fails): the file was left
    /// (helper-130), the removal covering only the steps.
    @Test func aFailedHeaderWriteRemovesThePartialTrace() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            EvictEvalWriteTraceTests.writeTraceUnderFileLimit(bytes: 64, kind: "topic-return")
        }
        let text = result.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
        #expect(text.contains("report: cannot write PATH: File too large; removed\n"), "\(text)")
    }
}

/// An output of `evict-eval` that is its `--trace` file is refused before the trace is read:
/// `--trace X --write-trace X` truncated X, then failed reading it ("step 0: truncated rows").
@Suite struct EvictEvalOutputOverTraceTests {
    /// A trace written by `--write-trace`, in a new directory; returns the directory and the path.
    static func writtenTrace() throws -> (dir: String, path: String) {
        let dir = ScratchDir("kvattn-same").path
        let path = dir + "/ld.trace"
        try EvictEvalCommand.parse(["--synthetic", "long-decode", "--write-trace", path]).run()
        return (dir, path)
    }

    @Test func anOutputThatIsTheTraceIsRefusedAndTheTraceKept() throws {
        let (dir, path) = try Self.writtenTrace()
        defer { unlink(dir + "/link"); unlink(path); rmdir(dir) }
        var before = stat()
        #expect(stat(path, &before) == 0)
        symlink(path, dir + "/link")
        for (option, output) in [("--write-trace", path), ("--write-trace", dir + "/../" + (dir as NSString).lastPathComponent + "/ld.trace"),
                                 ("--json", dir + "/link"), ("--plot", path)] {
            let message = optionError(EvictEvalCommand.self, ["--trace", path, option, output])
            #expect(message == "\(option) \(output) names the file --trace reads: it would be overwritten; give another file", "\(option) \(output)")
        }
        var after = stat()
        #expect(stat(path, &after) == 0 && after.st_size == before.st_size)
        // Another file is a copy: the trace is read whole and written there.
        #expect(optionError(EvictEvalCommand.self, ["--trace", path, "--write-trace", dir + "/copy"]) == nil)
    }
}
