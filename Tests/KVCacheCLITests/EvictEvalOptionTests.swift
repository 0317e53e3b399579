import Testing
@testable import kvcache

/// `kvcache evict-eval`'s options, parsed and validated as on the command line: values that
/// once trapped or silently ran nothing are refused with the option or setting named.
@Suite("kvcache evict-eval options")
struct EvictEvalOptionTests {
    @Test(arguments: [
        (["--query-noise", "inf"], "noise levels must be in 0...1000 and --spike-probability in [0, 1]"),
        (["--spike-noise", "1e30"], "noise levels must be in 0...1000 and --spike-probability in [0, 1]"),
        (["--embedding-noise", "nan"], "noise levels must be in 0...1000 and --spike-probability in [0, 1]"),
        (["--synthetic", ""], "--synthetic names no trace"),
        (["--synthetic", "long-decode,chat"], "unknown synthetic trace chat"),
        (["--budgets", ""], "no budget ratio to run"),
        (["--policies", ""], "no policy to run"),
        (["--policies", "h2o", "--recent-ratio", "1e30"], "recent_ratio 1e+30 is outside 0...1"),
        (["--policies", "episodic", "--episodes", "4294967297"], "episodes 4294967297 is outside 1...64"),
        // Said "policy none: ...": the settings are every policy's, none is named.
        (["--recent-ratio", "1.5"], "recent_ratio 1.5 is outside 0...1"),
        // Once silently ignored:
        (["--synthetic", "long-decode", "--trace", "t.bin"], "--synthetic and --trace each name the traces to run; give one of them"),
        (["--write-trace", "/tmp/t.bin", "--per-head"], "--per-head applies to an evaluation; --write-trace writes the trace and runs none"),
        (["--write-trace", "/tmp/t.bin", "--json", "/tmp/r.json"], "--json applies to an evaluation; --write-trace writes the trace and runs none"),
        // Refused before the run instead of after its seconds of evaluation:
        (["--json", "/nonexistent-kvcache-dir/r.json"], "cannot write /nonexistent-kvcache-dir/r.json: No such file or directory"),
        (["--plot", "/nonexistent-kvcache-dir/r.svg"], "cannot write /nonexistent-kvcache-dir/r.svg: No such file or directory"),
    ] as [([String], String)])
    func aBadOptionIsNamed(arguments: [String], message: String) {
        let text = optionError(EvictEvalCommand.self, arguments)
        #expect(text?.hasPrefix(message) == true, "got \(text ?? "no error")")
    }

    @Test func theDefaultsAndTheLimitsAreAccepted() {
        #expect(optionError(EvictEvalCommand.self, []) == nil)
        #expect(optionError(EvictEvalCommand.self, ["--query-noise", "1000", "--recent-ratio", "1", "--episodes", "64"]) == nil)
    }
}
