import Foundation
import KVCache
import KVReport
import Testing
@testable import kvcache

/// `kvcache load --draft-tokens`: speculative decoding drives `Engine.truncate` under load.
/// Acceptance 0 and 1 make every step's kept count independent of which thread runs which
/// request, so the counts are predicted exactly; 0.7 is checked against its law.
@Suite("kvcache load speculative decoding")
struct SpeculativeLoadTests {
    static let draftTokens = 3

    /// `LoadReportTests`' small run (nothing evicted, preempted or rejected) with drafts.
    static func run(layout: String, acceptance: Double) throws -> (runner: LoadRunner, report: LoadReport) {
        let shape = LoadReportTests.shapes.first { $0.layout == layout }!
        return try LoadReportTests.load(LoadReportTests.arguments(shape)
            + ["--draft-tokens", String(draftTokens), "--draft-acceptance", String(acceptance), "--write-kv"])
    }

    /// Per request: the steps its output takes and the drafts they reject, each step
    /// appending min(K + 1, remaining) tokens and keeping `kept(appended)` of them.
    static func predicted(_ outputs: [Int], kept: (Int) -> Int) -> (steps: Int, rejected: Int, truncates: Int) {
        var steps = 0, rejected = 0, truncates = 0
        for output in outputs {
            var remaining = output
            while remaining > 0 {
                let appended = min(draftTokens + 1, remaining), keep = kept(appended)
                steps += 1
                rejected += appended - keep
                if keep < appended { truncates += 1 }
                remaining -= keep
            }
        }
        return (steps, rejected, truncates)
    }

    @Test(arguments: ["paged", "contiguous"], [0.0, 1.0])
    func everyOutputTokenIsKeptOnceAndEveryRejectedDraftTruncated(layout: String, acceptance: Double) throws {
        let (runner, report) = try Self.run(layout: layout, acceptance: acceptance)
        let outputs = (0..<LoadReportTests.requests).map { runner.workload.request($0).outputTokens }
        #expect(report.requests.completed == LoadReportTests.requests && report.requests.preemptions == 0)
        #expect(report.requests.rejectedOther == 0, "\(report.firstError ?? "")")
        #expect(report.decodedTokens == outputs.reduce(0, +))
        // Acceptance 0 keeps the sampled token alone; 1 keeps every draft.
        let expected = Self.predicted(outputs) { acceptance == 0 ? 1 : $0 }
        let speculation = try #require(report.speculation)
        #expect(speculation.draftTokens == Self.draftTokens && speculation.acceptance == acceptance)
        #expect(speculation.steps == expected.steps && speculation.rejectedDraftTokens == expected.rejected)
        #expect(report.operations["append"]?.count == UInt64(expected.steps))
        #expect(report.operations["truncate"]?.count == UInt64(expected.truncates))
        if acceptance == 1 { #expect(expected.truncates == 0) } else { #expect(expected.truncates > 0) }
        // The JSON carries the section and the truncate row; the table says it.
        let top = try LoadReportTests.object(report)
        #expect(top["speculation"] != nil)
        #expect(Set(try LoadReportTests.object(report, "operations").keys) == ["create", "append", "truncate", "free"])
        #expect(report.table().contains("drafts     3 per step, acceptance \(fixed(acceptance, 2)): \(expected.steps) steps"))
        // Everything was given back: truncations left no block or page behind.
        #expect(report.memory.committedEndBytes <= report.memory.committedPeakBytes)
    }

    /// A step keeps 1 + the drafts accepted before the first rejection: with acceptance a and
    /// K drafts, P(kept > j) = a^j for j <= K, so the mean is 1 + a + ... + a^K.
    @Test func keptTokensFollowTheAcceptanceLaw() {
        let speculation = SpeculativeDecoding(draftTokens: 4, acceptance: 0.7)
        var counts = [Int](repeating: 0, count: 6)
        let draws = 200_000
        for i in 0..<draws { counts[speculation.keptTokens(stream: UInt64(i % 97), length: i)] += 1 }
        #expect(counts[0] == 0, "a step keeps at least the sampled token")
        for j in 1...4 {
            let atLeast = Double(counts[(j + 1)...].reduce(0, +)) / Double(draws)
            #expect(abs(atLeast - pow(0.7, Double(j))) < 0.01, "P(kept > \(j)) = \(atLeast)")
        }
        #expect(SpeculativeDecoding(draftTokens: 4, acceptance: 0).keptTokens(stream: 1, length: 9) == 1)
        #expect(SpeculativeDecoding(draftTokens: 4, acceptance: 1).keptTokens(stream: 1, length: 9) == 5)
    }

    /// Without --draft-tokens nothing changes: no speculation section, no truncate row.
    @Test func withoutDraftsTheReportHasNoSpeculation() throws {
        let (_, report) = try LoadReportTests.load(LoadReportTests.arguments(LoadReportTests.shapes[0]))
        #expect(report.speculation == nil && report.operations["truncate"] == nil)
        #expect(!report.table().contains("drafts"))
    }

    /// A realistic acceptance truncates in most steps and keeps between 1 and K + 1 on average.
    @Test func aRealisticAcceptanceMixesBoth() throws {
        let (runner, report) = try Self.run(layout: "paged", acceptance: 0.7)
        let outputs = (0..<LoadReportTests.requests).map { runner.workload.request($0).outputTokens }
        #expect(report.decodedTokens == outputs.reduce(0, +))
        let speculation = try #require(report.speculation)
        #expect(speculation.keptPerStep > 1.5 && speculation.keptPerStep < 3.5, "\(speculation.keptPerStep)")
        let truncates = try #require(report.operations["truncate"]?.count)
        #expect(truncates > 0 && truncates < UInt64(speculation.steps))
        #expect(speculation.rejectedDraftTokens > 0)
    }
}
