import Foundation
import KVCache
import Testing
@testable import kvcache

/// `MooncakeTrace`, the reader behind `kvcache load --trace`.
@Suite("Mooncake trace (load --trace)")
struct MooncakeTraceTests {
    /// The bundled trace (traces/README.md: a verbatim copy of Mooncake's conversation trace).
    static let bundledTrace = #filePath.replacingOccurrences(
        of: "Tests/KVCacheCLITests/MooncakeTraceTests.swift", with: "traces/mooncake_conversation_trace.jsonl")

    /// Limits that cap nothing in the bundled trace (its longest prompt is below 2^20 tokens).
    static let noLimits = TokenLimits(maxPromptTokens: 1 << 24, maxSeqTokens: 1 << 24)

    /// Writes `text` to a fresh file and returns its path.
    static func file(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kvcache-cli-\(UUID().uuidString).jsonl").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func theBundledTraceReadsWholeAndMatchesItsFirstLines() throws {
        let trace = try MooncakeTrace(path: Self.bundledTrace, maxRequests: nil, speed: 0, limits: Self.noLimits)
        let text = try String(contentsOfFile: Self.bundledTrace, encoding: .utf8)
        let lines = text.split(separator: "\n").filter { !$0.allSatisfy(\.isWhitespace) }
        #expect(trace.requestCount == lines.count)
        #expect(trace.requestCount == 12_031, "traces/README.md: 12,031 requests")
        #expect(trace.rows.allSatisfy { trace.hashIds[$0.hashIdStart] == 0 }, "README: every request starts with block 0")
        #expect(trace.hashIds.count == trace.rows.reduce(0) { $0 + $1.hashIdCount })

        // The first records against an independent JSON parse of the same lines.
        for (index, line) in lines.prefix(5).enumerated() {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let row = trace.rows[index]
            #expect(row.timestampMilliseconds == (object["timestamp"] as? NSNumber)?.uint64Value)
            #expect(row.inputLength == (object["input_length"] as? NSNumber)?.intValue)
            #expect(row.outputLength == (object["output_length"] as? NSNumber)?.intValue)
            let ids = try #require(object["hash_ids"] as? [NSNumber]).map(\.int64Value)
            #expect(Array(trace.hashIds[row.hashIdStart..<row.hashIdStart + row.hashIdCount]) == ids, "line \(index + 1)")
            #expect(row.hashIdCount == (row.inputLength + 511) / 512)
            let request = trace.request(index)
            #expect(request.index == index && request.promptTokens == row.inputLength && request.outputTokens == row.outputLength)
        }
        #expect(trace.summary.contains("12031 requests") && trace.kind == "trace")
    }

    @Test func maxRequestsSpeedAndLimitsShapeTheRequests() throws {
        let limits = TokenLimits(maxPromptTokens: 4000, maxSeqTokens: 4100)
        let all = try MooncakeTrace(path: Self.bundledTrace, maxRequests: nil, speed: 0, limits: Self.noLimits)
        let trace = try MooncakeTrace(path: Self.bundledTrace, maxRequests: 100, speed: 4, limits: limits)
        #expect(trace.requestCount == 100)
        for index in 0..<100 {
            let row = all.rows[index], request = trace.request(index)
            #expect(request.arrivalNanoseconds == row.timestampMilliseconds * 1_000_000 / 4, "timestamp / speed")
            #expect(request.promptTokens == min(row.inputLength, 4000))
            #expect(request.outputTokens == min(row.outputLength, 4100 - request.promptTokens))
        }
        #expect(all.request(99).arrivalNanoseconds == 0, "speed 0 is a closed loop")
    }

    /// Equal hash ids give equal 512-token runs and different ids different ones, so the
    /// engine's prefix cache sees exactly the trace's sharing.
    @Test func equalHashIdsGiveEqualPromptBlocks() throws {
        let trace = try MooncakeTrace(path: Self.bundledTrace, maxRequests: 2, speed: 0, limits: Self.noLimits)
        let (a, b) = (trace.request(0), trace.request(1))
        #expect(trace.hashIds[trace.rows[0].hashIdStart] == trace.hashIds[trace.rows[1].hashIdStart])
        #expect(trace.hashIds[trace.rows[0].hashIdStart + 1] != trace.hashIds[trace.rows[1].hashIdStart + 1])
        let bufferA = UnsafeMutableBufferPointer<Int32>.allocate(capacity: a.promptTokens)
        let bufferB = UnsafeMutableBufferPointer<Int32>.allocate(capacity: b.promptTokens)
        defer { bufferA.deallocate(); bufferB.deallocate() }
        trace.fillPrompt(a, into: bufferA)
        trace.fillPrompt(b, into: bufferB)
        #expect(Array(bufferA[0..<512]) == Array(bufferB[0..<512]), "both start with block 0")
        #expect(Array(bufferA[512..<1024]) != Array(bufferB[512..<1024]), "their second blocks differ")
        #expect(bufferA[513] == syntheticToken(stream: MooncakeTrace.tokenStream(trace.hashIds[1]), position: 1))
    }

    @Test func malformedLinesNameFileLineAndReason() throws {
        let good = #"{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}"#
        let cases: [(line: String, reason: String)] = [
            (#"{"timestamp": 1, "input_length": 100, "output_length": 5, "hash_ids": [0, 1]}"#,
             "hash_ids has 2 ids, but input_length 100 needs 1 blocks of 512"),
            (#"{"timestamp": 1, "output_length": 5, "hash_ids": [0]}"#, #"missing field "input_length""#),
            (#"{"timestamp": 1, "input_length": "100", "output_length": 5, "hash_ids": [0]}"#,
             #"field "input_length" has the wrong type"#),
            (#"{"timestamp": -1, "input_length": 100, "output_length": 5, "hash_ids": [0]}"#, "timestamp -1 is negative"),
            (#"{"timestamp": 1, "input_length": 0, "output_length": 5, "hash_ids": []}"#, "input_length 0 is below 1"),
            (#"{"timestamp": 1, "input_length": 10, "output_length": -5, "hash_ids": [0]}"#, "output_length -5 is negative"),
            ("not json", "not a JSON object with timestamp, input_length, output_length and hash_ids"),
        ]
        for (line, reason) in cases {
            // A blank line before the bad one: skipped, but still counted in line numbers.
            let path = try Self.file(good + "\n\n" + line + "\n")
            defer { try? FileManager.default.removeItem(atPath: path) }
            let error = #expect(throws: MooncakeTrace.FormatError.self) {
                try MooncakeTrace(path: path, maxRequests: nil, speed: 0, limits: Self.noLimits)
            }
            #expect(error?.description == "\(path):3: \(reason)")
            // Reading stops at maxRequests, before the bad line.
            #expect(try MooncakeTrace(path: path, maxRequests: 1, speed: 0, limits: Self.noLimits).requestCount == 1)
        }
        let missing = "/nonexistent/kvcache-cli-trace.jsonl"
        let error = #expect(throws: MooncakeTrace.FormatError.self) {
            try MooncakeTrace(path: missing, maxRequests: nil, speed: 0, limits: Self.noLimits)
        }
        #expect(error?.line == 0)
        #expect(error?.description.hasPrefix("\(missing): cannot read the trace") == true, "\(String(describing: error))")
    }
}
