import Foundation
import Testing
@testable import KVEval

/// The attention trace file format (`AttentionTrace.swift`): a written trace reads back step
/// for step, and a file that breaks what the evaluation relies on is refused with the step and
/// field named, before anything is allocated for it or scored.
@Suite struct TraceFileTests {
    @Test func aWrittenTraceReadsBackStepForStep() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kvattn-\(UUID().uuidString).bin").path
        defer { unlink(path) }
        var synthetic = SyntheticAttention(.topicReturn, seed: 2)
        let writer = try TraceFileWriter(path: path, header: synthetic.header)
        var step = TraceStep()
        var written: [TraceStep] = []
        while try synthetic.next(into: &step) {
            try writer.write(step, layers: synthetic.header.layers, heads: synthetic.header.heads)
            if written.count < 40 || step.query != nil {
                var copy = step
                copy.rows = Array(step.rows.prefix(synthetic.header.layers * synthetic.header.heads * step.nTokens))
                written.append(copy)
            } else {
                written.append(TraceStep())
            }
        }
        try writer.close()
        let reader = try TraceFileReader(path: path)
        #expect(reader.header == synthetic.header)
        var read = TraceStep()
        for expected in written {
            #expect(try reader.next(into: &read))
            guard expected.nTokens > 0 else { continue }
            #expect(read.nTokens == expected.nTokens && read.nQueries == expected.nQueries && read.query == expected.query)
            #expect(Array(read.rows.prefix(expected.rows.count)) == expected.rows)
        }
        #expect(try !reader.next(into: &read))
    }

    @Test func aBadTraceFileIsRejectedWithWhatIsWrong() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kvattn-bad-\(UUID().uuidString).bin").path
        defer { unlink(path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data("NOTATRACE".utf8)))
        #expect(throws: TraceError.self) { try TraceFileReader(path: path) }
        do {
            _ = try TraceFileReader(path: path)
        } catch {
            #expect("\(error)".contains("not a KVATTN01 attention trace"))
        }
        // A valid header alone: its steps are missing.
        let synthetic = SyntheticAttention(.longDecode, seed: 1)
        let writer = try TraceFileWriter(path: path, header: synthetic.header)
        try writer.close()
        #expect { try TraceFileReader(path: path) } throws: { "\($0)".contains(" bytes cannot hold the header's 1537 steps of 4 x 4 rows") }
        #expect(throws: TraceError.self) { try TraceFileReader(path: path + ".missing") }
        let dir = FileManager.default.temporaryDirectory.path
        #expect { try TraceFileReader(path: dir) } throws: { "\($0)" == "cannot open \(dir): Is a directory" }
    }

    /// A 2-layer, 2-head trace of `steps` (n_tokens, n_queries, rows or nil for valid rows:
    /// each query's row sums to 1) written as `header` says, read back to the first error.
    private func readError(layers: Int = 2, heads: Int = 2, segments: [TraceSegment] = [], markStep: Int? = nil,
                           maxTokens: Int? = nil, trailing: [UInt8] = [], _ steps: [(Int, Int, [Float]?)]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kvattn-err-\(UUID().uuidString).bin").path
        defer { unlink(path) }
        let header = TraceHeader(layers: layers, heads: heads, embeddingDim: segments.first?.embedding.count ?? 0, segments: segments,
                                 steps: steps.count, markStep: markStep, maxTokens: maxTokens ?? steps.map(\.0).max() ?? 0)
        let writer = try TraceFileWriter(path: path, header: header)
        for (n, q, rows) in steps {
            var step = TraceStep()
            step.nTokens = n
            step.nQueries = q
            step.rows = rows ?? [Float](repeating: Float(q) / Float(n), count: layers * heads * n)
            try writer.write(step, layers: layers, heads: heads)
        }
        try writer.close()
        if !trailing.isEmpty, let handle = FileHandle(forWritingAtPath: path) {
            handle.seekToEndOfFile()
            handle.write(Data(trailing))
            handle.closeFile()
        }
        do {
            let reader = try TraceFileReader(path: path)
            var step = TraceStep()
            while try reader.next(into: &step) {}
        } catch let error as TraceError {
            // Every error names the file; the checks below read what follows the name.
            let named = path + ": "
            return error.description.hasPrefix(named) ? String(error.description.dropFirst(named.count)) : "unnamed: " + error.description
        }
        return "read"
    }

    /// A prompt of 8 and decode steps to `n`: valid n_tokens and n_queries.
    private func decode(to n: Int) -> [(Int, Int, [Float]?)] { [(8, 8, nil)] + (9...max(9, n)).map { ($0, 1, nil) } }

    @Test func aValidTraceReadsToTheEndAndARowMaySumToLessThanItsQueries() throws {
        #expect(try readError(decode(to: 12)) == "read")
        #expect(try readError(decode(to: 9) + [(10, 1, [Float](repeating: 0.05, count: 40))]) == "read", "an attention sink outside the cache")
    }

    /// Bytes past the header's last step were ignored (a wrong n_steps, or rows of another
    /// shape, went unnoticed); a segment's NaN embedding was caught only by an episodic policy.
    @Test func trailingBytesAndNonFiniteEmbeddingsAreRefused() throws {
        #expect(try readError(trailing: [1, 2, 3, 4], decode(to: 10))
                == "bytes after the last of the header's 3 steps (n_steps, or layers and heads, wrong?)")
        let nan = TraceSegment(start: 0, end: 4, availableStep: 0, embedding: [1, .nan])
        #expect(try readError(segments: [nan], decode(to: 10)) == "segment 0's embedding is not finite")
    }

    @Test func stepsMustGrowByTheirQueries() throws {
        // Shrinking, standing still or jumping: n_tokens is not the previous plus n_queries.
        for (bad, previous) in [((9, 1), 10), ((10, 1), 10), ((40, 1), 10), ((8, 9), 0)] as [((Int, Int), Int)] {
            let steps = previous == 0 ? [(bad.0, bad.1, nil)] : decode(to: previous) + [(bad.0, bad.1, nil)]
            let index = previous == 0 ? 0 : previous - 7
            let maxTokens = steps.map(\.0).max()!  // a step reaches it: the file holds its rows
            #expect(try readError(steps) == "step \(index): n_tokens \(bad.0), n_queries \(bad.1), has_query 0 out of range "
                    + "(n_tokens must be the previous step's \(previous) plus n_queries, at most max_tokens \(maxTokens); "
                    + "rows of other layers or heads than the header's 2 x 2 read so)")
        }
    }

    @Test func rowsMustBeFiniteProbabilitiesSummingToAtMostTheirQueries() throws {
        var nan = [Float](repeating: 0.1, count: 40)
        nan[10 + 3] = .nan  // layer 0, head 1, position 3
        #expect(try readError(decode(to: 9) + [(10, 1, nan)]) == "step 2: layer 0, head 1, position 3: nan is not a probability")
        var negative = [Float](repeating: 0.1, count: 40)
        negative[35] = -0.5
        #expect(try readError(decode(to: 9) + [(10, 1, negative)]) == "step 2: layer 1, head 1, position 5: -0.5 is not a probability")
        // A row of zeros: no attention on the cache to recall (it scored 0 and 0, as if perfect).
        #expect(try readError(decode(to: 9) + [(10, 1, [Float](repeating: 0, count: 40))])
                == "step 2: layer 0, head 0 sums to 0: no attention on the cached tokens")
        let over = try readError(decode(to: 9) + [(10, 1, [Float](repeating: 0.2, count: 40))])
        #expect(over.hasPrefix("step 2: layer 0, head 0 sums to 2.0") && over.hasSuffix(", more than its 1 queries' 1 each"), "\(over)")
    }

    /// A 52-byte file (one step of one token) declaring max_tokens 2^24 passed the size check,
    /// and the evaluation sized its values and every policy for 2^24 tokens (1.8 GB, 27 s)
    /// though no step the file could hold reaches it. The file must now hold a step of
    /// max_tokens besides the least its other steps take; one that does reads.
    @Test func aMaxTokensTheFileCannotReachIsRefusedOnOpening() throws {
        #expect(try readError(layers: 1, heads: 1, maxTokens: 1 << 24, [(1, 1, nil)])
                == "52 bytes cannot hold the header's 1 steps of 1 x 1 rows with one of max_tokens 16777216 "
                + "(at least 67108912 bytes: step i has i + 1 tokens or more): truncated, or n_steps or max_tokens wrong")
        #expect(try readError(layers: 2, heads: 2, maxTokens: 200, decode(to: 10)).hasPrefix("504 bytes cannot hold"),
                "3 steps of 8, 9, 10 tokens (36 + 3 x 12 + 16 x 27 bytes); one of 200 and two more take 3320")
        #expect(try readError(layers: 2, heads: 2, maxTokens: 10, decode(to: 10)) == "read")
    }

    /// A header alone (36 bytes) declaring max_tokens 2^24 was opened, and the evaluation made
    /// its 1 GiB of values before the first step read as truncated. A file shorter than its
    /// steps of 1, 2, 3 ... tokens need is now refused on opening; one exactly that long reads.
    @Test func aFileShorterThanItsStepsNeedIsRefusedOnOpening() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kvattn-short-\(UUID().uuidString).bin").path
        defer { unlink(path) }
        let header = TraceHeader(layers: 1, heads: 1, embeddingDim: 0, segments: [], steps: 1, markStep: nil, maxTokens: 1 << 24)
        try TraceFileWriter(path: path, header: header).close()
        #expect { try TraceFileReader(path: path) } throws: {
            "\($0)" == "\(path): 36 bytes cannot hold the header's 1 steps of 1 x 1 rows with one of max_tokens 16777216 "
                + "(at least 67108912 bytes: step i has i + 1 tokens or more): truncated, or n_steps or max_tokens wrong"
        }
        #expect(try readError(layers: 1, heads: 1, [(1, 1, nil)]) == "read", "36 + 12 + 4 bytes: the least a 1-step trace takes")
        // Long enough by the count, cut in the last step's rows: read up to them.
        let writer = try TraceFileWriter(path: path, header: TraceHeader(layers: 1, heads: 1, embeddingDim: 0, segments: [], steps: 2, markStep: nil, maxTokens: 8))
        var step = TraceStep()
        (step.nTokens, step.nQueries, step.rows) = (4, 4, [1, 1, 1, 1])
        try writer.write(step, layers: 1, heads: 1)
        (step.nTokens, step.nQueries, step.rows) = (8, 4, [Float](repeating: 0.5, count: 8))
        try writer.write(step, layers: 1, heads: 1)
        try writer.close()
        truncate(path, 36 + 12 + 16 + 12 + 28)  // the least is 36 + 12 + 4 + 12 + 32 (a step of max_tokens 8)
        let reader = try TraceFileReader(path: path)
        #expect(try reader.next(into: &step))
        #expect { try reader.next(into: &step) } throws: { "\($0)" == "\(path): step 1: truncated rows" }
    }

    @Test func aHeaderTheEvaluationCannotHoldIsRefusedBeforeAnyAllocation() throws {
        // 1024 x 1024 x 2^24 cells once asked for 64 GiB and trapped.
        #expect(try readError(layers: 1024, heads: 1024, maxTokens: 1 << 24, [(1, 1, [Float](repeating: 1, count: 1 << 20))]).hasSuffix(
            "layers x heads x max_tokens = 17592186044416 is more than 16777216 (the evaluation keeps 16 values per cell)"))
        #expect(try readError(markStep: 5, decode(to: 10)).contains("mark_step 5"))
        #expect(try readError(maxTokens: 0, []).contains("steps 0"))
        let segment = TraceSegment(start: 6, end: 4, availableStep: 0, embedding: [1, 0])
        #expect(try readError(segments: [segment], decode(to: 10)).hasSuffix(
            "segment 0 [6, 4) available at step 0 is empty, past max_tokens 10 or after the last step"))
        let late = TraceSegment(start: 0, end: 4, availableStep: 3, embedding: [1, 0])
        #expect(try readError(segments: [late], decode(to: 10)).hasSuffix("segment 0 [0, 4) available at step 3 is empty, past max_tokens 10 or after the last step"))
    }
}
