import Foundation
import KVCache
import KVSim
import Testing
@testable import kvcache

/// `TraceWorkload`, the requests behind `kvcache load --trace` (read by KVSim's `Trace.read`,
/// whose readers `TraceReaderTests` checks line by line).
@Suite("Trace workload (load --trace)")
struct TraceWorkloadTests {
    /// The bundled traces (traces/README.md: verbatim copies).
    static let bundledTrace = #filePath.replacingOccurrences(
        of: "Tests/KVCacheCLITests/TraceWorkloadTests.swift", with: "traces/mooncake_conversation_trace.jsonl")
    static let bundledAzure = #filePath.replacingOccurrences(
        of: "Tests/KVCacheCLITests/TraceWorkloadTests.swift", with: "traces/azure_llm_2023_conv.csv")

    /// Limits that cap nothing in the bundled trace (its longest prompt is below 2^20 tokens).
    static let noLimits = TokenLimits(maxPromptTokens: 1 << 24, maxSeqTokens: 1 << 24)

    /// Writes `text` to a fresh file named with `suffix` and returns its path.
    static func file(_ text: String, suffix: String = ".jsonl") throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kvcache-cli-\(UUID().uuidString)\(suffix)").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func theBundledTraceReadsWholeAndMatchesItsFirstLines() throws {
        let workload = try TraceWorkload(path: Self.bundledTrace, maxRequests: nil, speed: 0, limits: Self.noLimits)
        let trace = workload.trace
        let text = try String(contentsOfFile: Self.bundledTrace, encoding: .utf8)
        let lines = text.split(separator: "\n").filter { !$0.allSatisfy(\.isWhitespace) }
        #expect(workload.requestCount == lines.count)
        #expect(workload.requestCount == 12_031, "traces/README.md: 12,031 requests")

        // The first records against an independent JSON parse of the same lines.
        var first: UInt64?
        for (index, line) in lines.prefix(5).enumerated() {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let timestamp = try #require((object["timestamp"] as? NSNumber)?.uint64Value)
            first = first ?? timestamp
            #expect(trace.arrivalMilliseconds[index] == Double(timestamp - first!))
            #expect(Int(trace.inputTokens[index]) == (object["input_length"] as? NSNumber)?.intValue)
            #expect(Int(trace.outputTokens[index]) == (object["output_length"] as? NSNumber)?.intValue)
            var parent: UInt64 = 0
            let chained = try #require(object["hash_ids"] as? [NSNumber]).map { id -> UInt64 in
                parent = Trace.chainedHash(parent: parent, id: id.uint64Value)
                return parent
            }
            let start = Int(trace.hashStart[index])
            #expect(Array(trace.hashes[start..<start + trace.hashCount(index)]) == chained, "line \(index + 1)")
            let request = workload.request(index)
            #expect(request.index == index && request.promptTokens == Int(trace.inputTokens[index])
                    && request.outputTokens == Int(trace.outputTokens[index]))
        }
        #expect(workload.summary.contains("12031 requests") && workload.kind == "trace")
    }

    @Test func maxRequestsSpeedLimitsAndOutputCapShapeTheRequests() throws {
        let limits = TokenLimits(maxPromptTokens: 4000, maxSeqTokens: 4100)
        let all = try TraceWorkload(path: Self.bundledTrace, maxRequests: nil, speed: 0, limits: Self.noLimits)
        let workload = try TraceWorkload(path: Self.bundledTrace, maxRequests: 100, speed: 4, limits: limits, maxOutputTokens: 300)
        #expect(workload.requestCount == 100)
        var arrived = false
        for index in 0..<100 {
            let request = workload.request(index)
            #expect(request.arrivalNanoseconds == UInt64(all.trace.arrivalMilliseconds[index] * 1e6 / 4), "offset / speed")
            arrived = arrived || request.arrivalNanoseconds > 0
            #expect(request.promptTokens == min(Int(all.trace.inputTokens[index]), 4000))
            #expect(request.outputTokens == min(Int(all.trace.outputTokens[index]), 300, 4100 - request.promptTokens))
        }
        #expect(arrived, "the first 100 requests do not all arrive at once")
        #expect(all.request(99).arrivalNanoseconds == 0, "speed 0 is a closed loop")
        #expect((0..<100).contains { Int(all.trace.outputTokens[$0]) > 300 && workload.request($0).outputTokens == 300 },
                "some output is capped by maxOutputTokens")
        #expect(workload.summary.hasSuffix("outputs capped at 300 tokens") && !all.summary.contains("outputs capped"))
    }

    /// Equal chained hashes give equal 512-token runs and different ones different runs, so
    /// the engine's prefix cache sees exactly the trace's sharing.
    @Test func equalBlockHashesGiveEqualPromptBlocks() throws {
        let workload = try TraceWorkload(path: Self.bundledTrace, maxRequests: 2, speed: 0, limits: Self.noLimits)
        let trace = workload.trace
        let (a, b) = (workload.request(0), workload.request(1))
        let (startA, startB) = (Int(trace.hashStart[0]), Int(trace.hashStart[1]))
        #expect(trace.hashes[startA] == trace.hashes[startB], "both start with block 0")
        #expect(trace.hashes[startA + 1] != trace.hashes[startB + 1])
        let bufferA = UnsafeMutableBufferPointer<Int32>.allocate(capacity: a.promptTokens)
        let bufferB = UnsafeMutableBufferPointer<Int32>.allocate(capacity: b.promptTokens)
        defer { bufferA.deallocate(); bufferB.deallocate() }
        workload.fillPrompt(a, into: bufferA)
        workload.fillPrompt(b, into: bufferB)
        #expect(Array(bufferA[0..<512]) == Array(bufferB[0..<512]), "both start with block 0")
        #expect(Array(bufferA[512..<1024]) != Array(bufferB[512..<1024]), "their second blocks differ")
        #expect(bufferA[513] == syntheticToken(stream: TraceWorkload.tokenStream(trace.hashes[startA + 1]), position: 1))
        let last = a.promptTokens - 1
        #expect(bufferA[last] == syntheticToken(stream: TraceWorkload.tokenStream(trace.hashes[startA + trace.hashCount(0) - 1]), position: last % 512),
                "the partial last block is the start of its block's run")
    }

    /// An Azure CSV (by its suffix) is a trace too: unshared prompts, arrivals from its timestamps.
    @Test func anAzureCSVIsReadByItsSuffix() throws {
        let workload = try TraceWorkload(path: Self.bundledAzure, maxRequests: 3, speed: 1, limits: Self.noLimits)
        #expect(workload.requestCount == 3)
        let text = try String(contentsOfFile: Self.bundledAzure, encoding: .utf8)
        let rows = text.split(whereSeparator: \.isNewline).dropFirst().prefix(3).map { $0.split(separator: ",") }
        for (index, row) in rows.enumerated() {
            #expect(workload.request(index).promptTokens == Int(row[1]))
        }
        #expect(workload.request(0).arrivalNanoseconds == 0 && workload.request(2).arrivalNanoseconds > 0)
        let (a, b) = (workload.request(0), workload.request(1))
        let bufferA = UnsafeMutableBufferPointer<Int32>.allocate(capacity: a.promptTokens)
        let bufferB = UnsafeMutableBufferPointer<Int32>.allocate(capacity: b.promptTokens)
        defer { bufferA.deallocate(); bufferB.deallocate() }
        workload.fillPrompt(a, into: bufferA)
        workload.fillPrompt(b, into: bufferB)
        #expect(Array(bufferA.prefix(64)) != Array(bufferB.prefix(64)), "no prefix information: nothing shared")
    }

    /// A trace output of 0 tokens is a request that completes after its prefill: created,
    /// freed, no token decoded (it decoded one, `Trace` storing 0 as 1).
    @Test func anOutputOfZeroDecodesNothing() throws {
        let lines = (0..<6).map { #"{"timestamp": \#($0), "input_length": 100, "output_length": \#($0 % 2 == 0 ? 0 : 5), "hash_ids": [\#($0)]}"# }
        let path = try Self.file(lines.joined(separator: "\n") + "\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let workload = try TraceWorkload(path: path, maxRequests: nil, speed: 0, limits: Self.noLimits)
        #expect((0..<6).map { workload.request($0).outputTokens } == [0, 5, 0, 5, 0, 5])
        let report = try LoadReportTests.load(["--trace", path, "--layers", "1", "--kv-heads", "1", "--head-dim", "32",
                                               "--memory", "64MiB", "--max-seq-tokens", "4096", "--threads", "1", "--plots", ""]).report
        #expect(report.requests.completed == 6 && report.decodedTokens == 15)
        #expect(report.operations["append"]?.count == 15 && report.operations["create"]?.count == 6 && report.operations["free"]?.count == 6)
    }

    /// Errors are the shared reader's: file and line for a malformed line, line 0 for a file
    /// that cannot be read or holds no request.
    @Test func badTraceFilesNameFileLineAndReason() throws {
        let good = #"{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}"#
        let bad = #"{"timestamp": 1, "input_length": 100, "output_length": 5, "hash_ids": [0, 1]}"#
        let path = try Self.file(good + "\n\n" + bad + "\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = #expect(throws: TraceFormatError.self) {
            try TraceWorkload(path: path, maxRequests: nil, speed: 0, limits: Self.noLimits)
        }
        #expect(error?.description == "\(path):3: hash_ids has 2 ids, but input_length 100 needs 1 blocks of 512")
        #expect(try TraceWorkload(path: path, maxRequests: 1, speed: 0, limits: Self.noLimits).requestCount == 1,
                "reading stops at maxRequests, before the bad line")

        let empty = try Self.file("\n  \n")
        defer { try? FileManager.default.removeItem(atPath: empty) }
        let missing = "/nonexistent/kvcache-cli-trace.jsonl"
        for (file, reason) in [(empty, "holds no requests"), (missing, "cannot read the file: No such file or directory"),
                                 ("/tmp", "cannot read the file: Is a directory")] {
            let error = #expect(throws: TraceFormatError.self) {
                try TraceWorkload(path: file, maxRequests: nil, speed: 0, limits: Self.noLimits)
            }
            #expect(error?.line == 0 && error?.description == "\(file): \(reason)")
        }
    }

    /// A trace whose arrivals, at the replay speed, span more than `--duration`'s week is
    /// refused up front (a timestamp near 2^63 ms once trapped converting to nanoseconds); the
    /// same file replays as a closed loop, and a week exactly is accepted.
    @Test func arrivalsSpanningMoreThanAWeekAtTheSpeedAreRefused() throws {
        let first = #"{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}"#
        let far = #"{"timestamp": 9223372036854775000, "input_length": 600, "output_length": 5, "hash_ids": [0, 2]}"#
        let path = try Self.file(first + "\n" + far + "\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = #expect(throws: TraceFormatError.self) {
            try TraceWorkload(path: path, maxRequests: nil, speed: 1, limits: Self.noLimits)
        }
        #expect(error?.description == "\(path): its arrivals span 9.223372036854774e+15 s, at --trace-speed 1.0 more than a week (604800 s)")
        #expect(try TraceWorkload(path: path, maxRequests: nil, speed: 0, limits: Self.noLimits).requestCount == 2)
        let week = #"{"timestamp": 1209600000, "input_length": 600, "output_length": 5, "hash_ids": [0, 2]}"#
        let weekPath = try Self.file(first + "\n" + week + "\n")
        defer { try? FileManager.default.removeItem(atPath: weekPath) }
        #expect(try TraceWorkload(path: weekPath, maxRequests: nil, speed: 2, limits: Self.noLimits).request(1).arrivalNanoseconds
                == 604_800 * 1_000_000_000)
        #expect(throws: TraceFormatError.self) { try TraceWorkload(path: weekPath, maxRequests: nil, speed: 1.99, limits: Self.noLimits) }
    }
}
