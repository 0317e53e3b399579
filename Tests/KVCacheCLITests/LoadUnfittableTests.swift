import Foundation
import KVCache
import Testing
@testable import kvcache

/// `rejected_unfittable` counts exactly the requests whose prompt plus output need more than the
/// whole budget, whatever else is live, rejected before their create. It was decided by reading the
/// engine's live sequences after the failure: with other sequences live, an unfittable prompt
/// was retried and counted as out of memory, and with two threads a prompt that fits could be
/// counted unfittable when the other thread had just freed its last sequence.
@Suite("kvcache load: unfittable prompts")
struct LoadUnfittableTests {
    /// 16 requests alternating 100-token prompts and 3000-token ones, 4 output tokens each.
    static func trace() throws -> String {
        var lines: [String] = []
        for i in 0..<16 {
            let input = i % 2 == 0 ? 100 : 3000
            let ids = (0..<(input + 511) / 512).map { String(i * 16 + $0) }.joined(separator: ", ")
            lines.append(#"{"timestamp": \#(i), "input_length": \#(input), "output_length": 4, "hash_ids": [\#(ids)]}"#)
        }
        return try TraceWorkloadTests.file(lines.joined(separator: "\n") + "\n")
    }

    /// One layer of one 32-element head, 2-byte elements: 128 bytes per token over K and V, so
    /// 256 KiB holds 2048 tokens in either layout (4 KiB pages): the 3000-token prompts never fit.
    static func arguments(trace: String, layout: String, threads: Int) -> [String] {
        ["--trace", trace, "--layout", layout, "--page-bytes", "4KiB", "--memory", "256KiB", "--layers", "1", "--kv-heads", "1",
         "--head-dim", "32", "--dtype-bytes", "2", "--max-seq-tokens", "4096", "--max-prompt-tokens", "4096",
         "--threads", String(threads), "--batch", "4", "--max-retries", "0", "--plots", ""]
    }

    @Test(arguments: ["paged", "contiguous"], [1, 2])
    func exactlyThePromptsLargerThanTheBudgetAreUnfittable(layout: String, threads: Int) throws {
        let trace = try Self.trace()
        defer { try? FileManager.default.removeItem(atPath: trace) }
        let report = try LoadReportTests.load(Self.arguments(trace: trace, layout: layout, threads: threads)).report
        let requests = try LoadReportTests.object(report, "requests")
        #expect(try LoadReportTests.uint(requests, "rejected_unfittable") == 8, "\(report.requests)")
        #expect(report.requests.completed + report.requests.rejectedOutOfMemory == 8, "the 100-token prompts: \(report.requests)")
        #expect(report.requests.rejectedOther == 0)
        #expect(report.firstError == "a 3000-token prompt with 4 output tokens, more than the budget holds (2048 tokens)",
                "\(report.firstError ?? "no error")")
    }

    /// A prompt that fits with an output that can never fit beside it (1000 + 1500 tokens in a
    /// 2048-token budget) is unfittable too, rejected before its create: it was created, grew
    /// until the budget ran out, preempting itself (and others) --max-retries times, and counted
    /// as out of memory. The requests that fit complete, nothing is preempted or retried.
    @Test(arguments: ["paged", "contiguous"], [1, 2])
    func aPromptWhoseOutputCanNeverFitIsUnfittable(layout: String, threads: Int) throws {
        var lines: [String] = []
        for i in 0..<8 {
            let (input, output) = i % 2 == 0 ? (100, 4) : (1000, 1500)
            let ids = (0..<(input + 511) / 512).map { String(i * 16 + $0) }.joined(separator: ", ")
            lines.append(#"{"timestamp": \#(i), "input_length": \#(input), "output_length": \#(output), "hash_ids": [\#(ids)]}"#)
        }
        let trace = try TraceWorkloadTests.file(lines.joined(separator: "\n") + "\n")
        defer { try? FileManager.default.removeItem(atPath: trace) }
        var arguments = Self.arguments(trace: trace, layout: layout, threads: threads)
        arguments[arguments.firstIndex(of: "--max-retries")! + 1] = "3"
        arguments += ["--output-max", "1500"]  // trace outputs are capped at 256 by default
        let report = try LoadReportTests.load(arguments).report
        #expect(report.requests.rejectedUnfittable == 4, "\(report.requests)")
        #expect(report.requests.completed == 4 && report.requests.rejectedOutOfMemory == 0 && report.requests.rejectedOther == 0,
                "\(report.requests)")
        #expect(report.requests.preemptions == 0 && report.requests.createRetries == 0, "\(report.requests)")
        #expect(report.firstError == "a 1000-token prompt with 1500 output tokens, more than the budget holds (2048 tokens)",
                "\(report.firstError ?? "no error")")
    }

    /// The boundary: a request whose prompt plus output is exactly the budget (1000 + 1048 of
    /// 2048 tokens) completes, and one token more (1000 + 1049) is unfittable. The decode loop
    /// appends every output token, the last one too, and with drafts never more than the output
    /// still needs, so a sequence peaks at exactly prompt + output tokens (the completion check
    /// reads that length from the engine): a bound one lower would reject a request that fits,
    /// one higher would admit one that preempts itself until `--max-retries` gives up.
    @Test(arguments: ["paged", "contiguous"], [0, 3])
    func aRequestOfExactlyTheBudgetCompletesAndOneTokenMoreIsUnfittable(layout: String, draftTokens: Int) throws {
        let lines = [(0, 1048), (1, 1049)].map { i, output in
            #"{"timestamp": \#(i), "input_length": 1000, "output_length": \#(output), "hash_ids": [\#(i * 16), \#(i * 16 + 1)]}"#
        }
        let trace = try TraceWorkloadTests.file(lines.joined(separator: "\n") + "\n")
        defer { try? FileManager.default.removeItem(atPath: trace) }
        var arguments = Self.arguments(trace: trace, layout: layout, threads: 1)
        arguments += ["--output-max", "1049", "--write-kv"]
        if draftTokens > 0 { arguments += ["--draft-tokens", String(draftTokens), "--draft-acceptance", "0.5"] }
        let report = try LoadReportTests.load(arguments).report
        #expect(report.requests.completed == 1 && report.requests.rejectedUnfittable == 1, "\(report.requests)")
        #expect(report.requests.rejectedOutOfMemory == 0 && report.requests.rejectedOther == 0, "\(report.requests)")
        #expect(report.requests.preemptions == 0 && report.requests.createRetries == 0, "\(report.requests)")
        #expect(report.firstError == "a 1000-token prompt with 1049 output tokens, more than the budget holds (2048 tokens)",
                "\(report.firstError ?? "no error")")
    }
}
