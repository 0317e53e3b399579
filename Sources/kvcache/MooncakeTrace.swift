import Foundation

/// A Mooncake (FAST'25) request trace: JSONL, one request per line,
/// `{"timestamp": ms, "input_length": n, "output_length": n, "hash_ids": [...]}`.
///
/// `hash_ids` name the prompt's 512-token blocks, chained by prefix: equal ids mean equal
/// blocks. Prompt tokens are synthesized from them (`MooncakeTrace.tokenStream`): equal ids give
/// equal 512-token runs, so the engine's own chain hashes see exactly the trace's sharing (with
/// any engine `block_tokens` dividing 512). The last block is partial:
/// `input_length - 512 * (hash_ids.count - 1)` tokens.
struct MooncakeTrace: Workload {
    /// Tokens per `hash_ids` block in the Mooncake traces.
    static let traceBlockTokens = 512

    /// One trace line.
    struct Row: Sendable {
        var timestampMilliseconds: UInt64
        var inputLength: Int
        var outputLength: Int
        /// Range of this row's ids in `hashIds`.
        var hashIdStart: Int
        var hashIdCount: Int
    }

    /// The file the trace came from (for messages).
    var path: String
    var rows: [Row]
    /// Every row's `hash_ids`, back to back (one allocation instead of one per row).
    var hashIds: [Int64]
    /// Replay speed: arrival = timestamp / speed; 0 ignores timestamps (closed loop).
    var speed: Double
    var limits: TokenLimits

    /// A line that is not a well-formed request, named by file and 1-based line number.
    struct FormatError: Error, CustomStringConvertible {
        var path: String
        var line: Int
        var reason: String
        var description: String { line > 0 ? "\(path):\(line): \(reason)" : "\(path): \(reason)" }
    }

    private struct Line: Decodable {
        var timestamp: Int64
        var input_length: Int
        var output_length: Int
        var hash_ids: [Int64]
    }

    /// Reads the first `maxRequests` requests (all when nil) of the JSONL file at `path`. Blank
    /// lines are skipped. Throws `FormatError` for the first malformed line: not JSON, a
    /// missing or mistyped field, a negative value, or `hash_ids.count` differing from
    /// `ceil(input_length / 512)`; and an error naming `path` when it cannot be read.
    init(path: String, maxRequests: Int?, speed: Double, limits: TokenLimits) throws {
        self.path = path
        self.speed = speed
        self.limits = limits
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw FormatError(path: path, line: 0, reason: "cannot read the trace (\(error.localizedDescription))")
        }
        var rows: [Row] = []
        var hashIds: [Int64] = []
        let decoder = JSONDecoder()
        var lineNumber = 0
        var lineStart = data.startIndex
        let limit = maxRequests ?? Int.max
        while lineStart < data.endIndex, rows.count < limit {
            lineNumber += 1
            let lineEnd = data[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? data.endIndex
            let bytes = data[lineStart..<lineEnd]
            lineStart = lineEnd < data.endIndex ? lineEnd + 1 : lineEnd
            if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            func fail(_ reason: String) -> FormatError { FormatError(path: path, line: lineNumber, reason: reason) }
            let line: Line
            do {
                line = try decoder.decode(Line.self, from: bytes)
            } catch let DecodingError.keyNotFound(key, _) {
                throw fail("missing field \"\(key.stringValue)\"")
            } catch let DecodingError.typeMismatch(_, context) {
                throw fail("field \"\(context.codingPath.map(\.stringValue).joined(separator: "."))\" has the wrong type")
            } catch {
                throw fail("not a JSON object with timestamp, input_length, output_length and hash_ids")
            }
            guard line.timestamp >= 0 else { throw fail("timestamp \(line.timestamp) is negative") }
            guard line.input_length >= 1 else { throw fail("input_length \(line.input_length) is below 1") }
            guard line.output_length >= 0 else { throw fail("output_length \(line.output_length) is negative") }
            let blocks = (line.input_length + Self.traceBlockTokens - 1) / Self.traceBlockTokens
            guard line.hash_ids.count == blocks else {
                throw fail("hash_ids has \(line.hash_ids.count) ids, but input_length \(line.input_length) needs \(blocks) blocks of \(Self.traceBlockTokens)")
            }
            rows.append(Row(timestampMilliseconds: UInt64(line.timestamp), inputLength: line.input_length,
                            outputLength: line.output_length, hashIdStart: hashIds.count, hashIdCount: blocks))
            hashIds.append(contentsOf: line.hash_ids)
        }
        self.rows = rows
        self.hashIds = hashIds
    }

    var requestCount: Int { rows.count }

    func request(_ index: Int) -> LoadRequest {
        let row = rows[index]
        let (p, o) = limits.cap(prompt: row.inputLength, output: row.outputLength)
        let arrival = speed > 0 ? UInt64(Double(row.timestampMilliseconds) * 1e6 / speed) : 0
        return LoadRequest(index: index, arrivalNanoseconds: arrival, promptTokens: p, outputTokens: o)
    }

    /// The token stream of trace block `hashId`: token `j` of the block is
    /// `syntheticToken(stream: tokenStream(hashId), position: j)`.
    static func tokenStream(_ hashId: Int64) -> UInt64 {
        0x4D6F_6F6E_6361_6B65 ^ UInt64(bitPattern: hashId)
    }

    func fillPrompt(_ request: LoadRequest, into buffer: UnsafeMutableBufferPointer<Int32>) {
        let row = rows[request.index]
        precondition(buffer.count >= request.promptTokens && request.promptTokens <= row.inputLength)
        var position = 0
        for block in 0..<row.hashIdCount where position < request.promptTokens {
            let stream = Self.tokenStream(hashIds[row.hashIdStart + block])
            let count = min(Self.traceBlockTokens, request.promptTokens - position)
            for j in 0..<count {
                buffer[position + j] = syntheticToken(stream: stream, position: j)
            }
            position += count
        }
    }

    var summary: String {
        let arrival = speed > 0 ? "timestamps at \(fixed(speed, 1))x speed" : "closed loop (timestamps ignored)"
        return "Mooncake trace \(path), \(rows.count) requests, \(arrival), prompts capped at \(limits.maxPromptTokens) tokens"
    }

    var kind: String { "trace" }
}
