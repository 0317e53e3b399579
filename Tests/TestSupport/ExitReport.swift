#if canImport(Glibc)
import Glibc
#endif
import Testing

/// The problem report of an exit test's child: it writes each problem it found to stderr as a
/// line starting with its suite's prefix and exits 0 (an abort or a trap fails the exit test
/// itself), and the parent reads those lines back from the captured stderr. The children's
/// checks run where a limit (RLIMIT_AS, RLIMIT_NOFILE) is process-wide, so not in the runner.
public enum ExitReport {
    /// Writes `problems` to stderr, one "`prefix`problem" line each, and exits 0. Writes with
    /// `write(2)`: no buffered stream is left unflushed.
    public static func exit(_ prefix: String, _ problems: [String]) -> Never {
        let text = problems.map { "\(prefix)\($0)\n" }.joined()
        _ = text.withCString { write(2, $0, strlen($0)) }
        Glibc.exit(0)
    }

    /// The lines of `stderr` that start with `prefix`, joined by newlines: "" when the child
    /// reported nothing.
    public static func problems(_ prefix: String, in stderr: [UInt8]) -> String {
        String(decoding: stderr, as: UTF8.self).split(separator: "\n").filter { $0.hasPrefix(prefix) }.joined(separator: "\n")
    }

    /// Expects the exit test's child to have reported no `prefix` line. A nil `result` (the exit
    /// test's own expectation failed, already recorded) expects nothing more.
    public static func expectNothingReported(_ prefix: String, _ result: ExitTest.Result?,
                                             sourceLocation: SourceLocation = #_sourceLocation) {
        guard let result else { return }
        let report = problems(prefix, in: result.standardErrorContent)
        #expect(report.isEmpty, Comment(rawValue: report), sourceLocation: sourceLocation)
    }
}
