import Foundation
import KVCache
import Testing
import TestSupport
@testable import kvcache

/// A preempted request restarts from its prompt: its second create and the output tokens it
/// decodes again are the restart's work, reported under `restarts`, while prompt_tokens,
/// decoded_tokens and the prefix hit rate describe the workload: each request's first
/// admission and its output once. They used to count every create: an Azure run whose
/// requests share no block reported a 99.2 % hit rate (restarts finding their own blocks) and
/// 45 M prompt tokens for a workload of 270,000.
@Suite("kvcache load: restarts apart from the workload")
struct LoadRestartTests {
    /// The first 60 requests of the bundled Azure trace (no two share a block), prompts capped
    /// at 1024 tokens and outputs at 64, on one thread of 8 live sequences of one layer: the
    /// 16 MiB budget holds 4096 tokens, 8 live sequences need up to 8,704, so appends preempt;
    /// any one request fits, so every request completes.
    static let arguments = ["--trace", TraceWorkloadTests.bundledAzure, "--requests", "60", "--layers", "1", "--memory", "16MiB",
                            "--max-prompt-tokens", "1024", "--output-max", "64", "--threads", "1", "--batch", "8", "--plots", ""]

    @Test func preemptedRequestsCountTheirWorkloadOnceAndTheirRestartsApart() throws {
        let (runner, report) = try LoadReportTests.load(Self.arguments)
        try #require(report.requests.completed == 60, "\(report.requests)")
        try #require(report.requests.preemptions > 0, "nothing was preempted: the test shows nothing")
        let asked = (0..<60).map { runner.workload.request($0) }
        let prompts = asked.reduce(0) { $0 + $1.promptTokens }, outputs = asked.reduce(0) { $0 + $1.outputTokens }
        #expect(report.promptTokens == prompts, "each request's prompt once")
        #expect(report.decodedTokens == outputs, "each request's output once")

        // No request shares a block with another, so no first admission finds anything cached.
        let prefix = try LoadReportTests.object(report, "prefix")
        #expect(try LoadReportTests.uint(prefix, "query_tokens") == UInt64(prompts))
        #expect(try LoadReportTests.uint(prefix, "hit_tokens") == 0)
        #expect(try LoadReportTests.double(prefix, "hit_rate") == 0)

        // The restarts' work: one admission per preemption (every preempted request was admitted
        // again: all completed), and every create and append accounted for.
        let restarts = try LoadReportTests.object(report, "restarts")
        #expect(Set(restarts.keys) == ["admissions", "prompt_tokens", "hit_tokens", "recomputed_prompt_tokens", "redecoded_tokens"])
        let admissions = try LoadReportTests.uint(restarts, "admissions")
        #expect(admissions == UInt64(report.requests.preemptions))
        let again = try LoadReportTests.uint(restarts, "prompt_tokens"), hit = try LoadReportTests.uint(restarts, "hit_tokens")
        #expect(again > 0 && hit <= again)
        #expect(try LoadReportTests.uint(restarts, "recomputed_prompt_tokens") == again - hit)
        let redecoded = try LoadReportTests.uint(restarts, "redecoded_tokens")
        let operations = try LoadReportTests.object(report, "operations")
        #expect(try LoadReportTests.uint(try #require(operations["create"] as? [String: Any]), "count") == 60 + admissions)
        #expect(try LoadReportTests.uint(try #require(operations["append"] as? [String: Any]), "count") == UInt64(outputs) + redecoded,
                "one append per token decoded, first time or again")
        #expect(report.table().contains("restarts   \(admissions) admissions again after preemption: \(again) prompt tokens "
                                        + "(\(hit) from the cache, \(again - hit) recomputed), \(redecoded) tokens decoded again"),
                "\(report.table())")
    }

    /// The ttft row has one sample per request: its first prefill's. A restart's create and
    /// prefill are a restart's work; they were timed again (helper-127: 65 samples for 60
    /// requests), their short re-prefills of blocks still cached pulling the percentiles down.
    @Test func eachRequestHasOneTimeToFirstToken() throws {
        let (_, report) = try LoadReportTests.load(Self.arguments + ["--prefill-tokens-per-s", "1000000000"])
        try #require(report.requests.completed == 60, "\(report.requests)")
        try #require(report.restarts.admissions > 0, "nothing restarted: the test shows nothing")
        #expect(report.operations["ttft"]?.count == 60, "restarts \(report.restarts.admissions)")
    }

    /// With a disk tier the disk and peer hit rates share the headline's denominator: the first
    /// admissions' prompt tokens and the tokens they read from disk (`Engine.prefixSources`,
    /// per create), restarts' apart. On the Azure requests, which share no block, no first
    /// admission finds anything, while restarts find their own earlier blocks, some on disk:
    /// the report used to count those as the workload's disk hits.
    @Test func aTiersDiskHitsAreTheFirstAdmissionsAndRestartsReadTheirsApart() throws {
        let scratch = ScratchDir("load-restart"), dir = scratch.path
        defer { scratch.remove() }
        let report = try LoadReportTests.load(Self.arguments + ["--offload-dir", dir, "--offload-bytes", "256MiB"]).report
        try #require(report.requests.completed == 60 && report.requests.preemptions > 0, "\(report.requests)")
        let offload = try LoadReportTests.object(report, "offload")
        #expect(try LoadReportTests.uint(offload, "disk_hit_tokens") == 0, "no first admission shares a block")
        #expect(try LoadReportTests.double(offload, "disk_hit_rate") == 0)
        #expect(try LoadReportTests.uint(offload, "peer_hit_tokens") == 0)
        let restarts = try LoadReportTests.object(report, "restarts")
        let restartDisk = try LoadReportTests.uint(restarts, "disk_hit_tokens")
        let restartHit = try LoadReportTests.uint(restarts, "hit_tokens")
        try #require(restartDisk > 0, "no restart read its blocks back from disk: the test shows nothing")
        #expect(restartDisk <= restartHit)
        #expect(try LoadReportTests.uint(restarts, "peer_hit_tokens") == 0)
        #expect(report.table().contains("(\(restartHit) from the cache: \(restartDisk) of them from disk, "), "\(report.table())")
    }

    /// Without preemptions nothing restarts, and the worker's own count of cached tokens is the
    /// engine's (`EngineStats.prefixHitTokens`, which the report used to print).
    @Test func aRunWithoutPreemptionsRestartsNothing() throws {
        let report = try LoadReportTests.load(LoadReportTests.arguments(LoadReportTests.shapes[0])).report
        try #require(report.requests.preemptions == 0)
        let restarts = try LoadReportTests.object(report, "restarts")
        for key in ["admissions", "prompt_tokens", "hit_tokens", "recomputed_prompt_tokens", "redecoded_tokens"] {
            #expect(try LoadReportTests.uint(restarts, key) == 0, "\(key)")
        }
        #expect(report.prefix.queryTokens == UInt64(report.promptTokens))
    }
}
