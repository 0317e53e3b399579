import Testing
@testable import kvcache
import Foundation
@testable import KVEval

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
        // Once run twice, the two runs one bar in the plot:
        (["--budgets", "0.1,0.2,0.1"], "budget 0.1 is given twice"),
        (["--policies", "h2o,tova,h2o"], "policy h2o is given twice"),
        (["--synthetic", "long-decode,topic-return,long-decode"], "synthetic trace long-decode is given twice"),
        (["--policies", "h2o", "--recent-ratio", "1e30"], "recent_ratio 1e+30 is outside 0...1"),
        (["--policies", "episodic", "--episodes", "4294967297"], "episodes 4294967297 is outside 1...64"),
        // Said "policy none: ...": the settings are every policy's, none is named.
        (["--recent-ratio", "1.5"], "recent_ratio 1.5 is outside 0...1"),
        // Once silently ignored:
        (["--synthetic", "long-decode", "--trace", "t.bin"], "--synthetic and --trace each name the traces to run; give one of them"),
        (["--write-trace", "/tmp/t.bin", "--per-head"], "--per-head applies to an evaluation; --write-trace writes the trace and runs none"),
        (["--write-trace", "/tmp/t.bin", "--json", "/tmp/r.json"], "--json applies to an evaluation; --write-trace writes the trace and runs none"),
        (["--write-trace", "/tmp/t.bin", "--policies", "h2o"], "--policies applies to an evaluation; --write-trace writes the trace and runs none"),
        (["--write-trace", "/tmp/t.bin", "--budgets", "0.2"], "--budgets applies to an evaluation; --write-trace writes the trace and runs none"),
        (["--write-trace", "/tmp/t.bin", "--recent-ratio", "0.5"], "--recent-ratio applies to an evaluation; --write-trace writes the trace and runs none"),
        (["--write-trace", "/tmp/t.bin", "--episodes", "4"], "--episodes applies to an evaluation; --write-trace writes the trace and runs none"),
        (["--trace", "t.bin", "--query-noise", "1"], "--query-noise shapes the synthetic traces; --trace reads its attention from the file"),
        (["--trace", "t.bin", "--spike-probability", "0.1"], "--spike-probability shapes the synthetic traces; --trace reads its attention from the file"),
        (["--trace", "t.bin", "--spike-noise", "2"], "--spike-noise shapes the synthetic traces; --trace reads its attention from the file"),
        (["--trace", "t.bin", "--embedding-noise", "0.5"], "--embedding-noise shapes the synthetic traces; --trace reads its attention from the file"),
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
        // What each mode does read stays accepted: the generator's options and the seed for a
        // written trace, the evaluation's for a trace file.
        #expect(optionError(EvictEvalCommand.self, ["--write-trace", "/tmp/t.bin", "--seed", "3", "--query-noise", "0.5", "--synthetic", "topic-return"]) == nil)
        #expect(optionError(EvictEvalCommand.self, ["--trace", "t.bin", "--policies", "h2o", "--budgets", "0.2", "--recent-ratio", "0.25"]) == nil)
    }

    /// Options left out take the documented defaults: the README's numbers depend on them.
    @Test func leftOutOptionsTakeTheDefaults() throws {
        let e = try EvictEvalCommand.parse([]).evaluation()
        #expect(e.policies == EvictionEvaluation.policyNames)
        #expect(e.ratios == [0.1, 0.2, 0.5])
        #expect(e.recentRatio == 0.5 && e.episodes == 4 && e.seed == 1 && !e.perHead)
        let set = try EvictEvalCommand.parse(["--policies", "tova,h2o", "--budgets", "0.3", "--recent-ratio", "0.25", "--episodes", "3"]).evaluation()
        #expect(set.policies == ["tova", "h2o"] && set.ratios == [0.3] && set.recentRatio == 0.25 && set.episodes == 3)
    }

    /// `--help` lists exactly the keys `--json` writes.
    @Test func theHelpListsTheJSONKeys() throws {
        let row = EvictEvalResult(trace: "t", policy: "h2o", budget: 0.2, recall: 0.9, error: 0.1)
        let object = try #require((try JSONSerialization.jsonObject(with: Data(EvictEvalResult.json([row]).utf8)) as? [[String: Any]])?.first)
        let help = EvictEvalCommand.configuration.discussion
        let listed = try #require(help.range(of: "one object per trace, policy and budget: {").flatMap { start in
            help[start.upperBound...].range(of: "}.").map { help[start.upperBound..<$0.lowerBound] }
        })
        let keys = Set(listed.split(separator: "\"", omittingEmptySubsequences: false).enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) })
        #expect(Set(object.keys) == keys, "JSON \(Set(object.keys).symmetricDifference(keys)) differ from the help")
    }
}
