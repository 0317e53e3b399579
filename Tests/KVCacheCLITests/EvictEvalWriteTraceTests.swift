#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
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

    /// A regular file that stops taking bytes (RLIMIT_FSIZE: EFBIG past 64 KiB, in a child
    /// process) fails the command, and the partial trace is removed. The child prints what it
    /// saw on standard error.
    @Test func aFailedWriteRemovesThePartialTrace() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            signal(SIGXFSZ, SIG_IGN)
            var limit = rlimit(rlim_cur: 1 << 16, rlim_max: 1 << 16)
            guard setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &limit) == 0 else { exit(1) }
            let path = "/tmp/kvattn-fsize-\(getpid()).bin"
            var report = "succeeded"
            do {
                let command = try EvictEvalCommand.parse(["--write-trace", path, "--synthetic", "long-decode"])
                try command.run()
            } catch {
                report = "\(error)".replacingOccurrences(of: path, with: "PATH")
            }
            report += access(path, F_OK) == 0 ? "; left" : "; removed"
            unlink(path)
            FileHandle.standardError.write("report: \(report)\n".data(using: .utf8)!)
            exit(0)
        }
        let text = result.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
        #expect(text.contains("report: cannot write PATH: File too large; removed\n"), "\(text)")
    }
}
