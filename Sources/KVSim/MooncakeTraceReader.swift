import Foundation

/// Reads a Mooncake (FAST'25) JSONL trace: one request per line,
/// `{"timestamp": ms, "input_length": n, "output_length": n, "hash_ids": [...]}`, where
/// `hash_ids` name 512-token blocks chained by prefix. Each request's ids become chained
/// `BlockHash` values (`Trace.chainedHash`), so equal id prefixes give equal hash prefixes.
///
/// Cost: one pass over the bytes with a small hand-written scanner (no JSONDecoder, no
/// allocation per line beyond the trace's arrays).
public enum MooncakeTraceReader {
    /// Tokens per `hash_ids` block.
    public static let blockTokens = 512

    /// Reads the first `maxRequests` requests (all when nil) of `path`. A malformed line (not
    /// an object with the four fields, one of them twice, a negative or mistyped value,
    /// `hash_ids.count` not `ceil(input_length / 512)`, a timestamp going back) throws
    /// `TraceFormatError` naming the file and line, or with `lenient` is skipped and counted in
    /// `skippedLines`. A UTF-8 byte order mark before the first line is skipped. A line whose
    /// hashes would pass `maxHashes` in all (`Trace.maxHashes`) throws, lenient or not.
    public static func read(path: String, maxRequests: Int? = nil, lenient: Bool = false, maxHashes: Int = Trace.hashLimit) throws -> Trace {
        let data = try TraceFormatError.contents(of: path)
        return try parse(data, path: path, maxRequests: maxRequests, lenient: lenient, maxHashes: maxHashes)
    }

    /// `read` over bytes already in memory; `path` names them in errors.
    public static func parse(_ data: Data, path: String, maxRequests: Int? = nil, lenient: Bool = false, maxHashes: Int = Trace.hashLimit) throws -> Trace {
        var trace = Trace(source: path, blockTokens: blockTokens)
        trace.maxHashes = min(maxHashes, Trace.hashLimit)
        let limit = maxRequests ?? Int.max
        var ids: [UInt64] = []
        var chained: [UInt64] = []
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let bytes = raw.bindMemory(to: UInt8.self)
            let bom = bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF
            var start = bom ? 3 : 0
            var line = 0
            var firstTimestamp: Int64? = nil
            while start < bytes.count && trace.count < limit {
                line += 1
                var end = start
                while end < bytes.count && bytes[end] != 0x0A { end += 1 }
                defer { start = end + 1 }
                var scanner = JSONLineScanner(bytes: bytes, position: start, end: end)
                if scanner.isBlank { continue }
                do {
                    ids.removeAll(keepingCapacity: true)
                    let row = try scanner.mooncakeRow(ids: &ids)
                    guard row.timestamp >= 0 else { throw LineProblem("timestamp \(row.timestamp) is negative") }
                    guard row.input >= 1 else { throw LineProblem("input_length \(row.input) is below 1") }
                    guard row.output >= 0 else { throw LineProblem("output_length \(row.output) is negative") }
                    let blocks = (row.input + blockTokens - 1) / blockTokens
                    guard ids.count == blocks else {
                        throw LineProblem("hash_ids has \(ids.count) ids, but input_length \(row.input) needs \(blocks) blocks of \(blockTokens)")
                    }
                    let first = firstTimestamp ?? row.timestamp
                    let t = Double(row.timestamp - first)
                    guard trace.arrivalMilliseconds.last.map({ $0 <= t }) ?? true else {
                        throw LineProblem("timestamp \(row.timestamp) is earlier than the line before")
                    }
                    guard trace.admits(hashes: blocks) else { throw TraceFormatError.tooManyHashes(path: path, line: line, trace: trace) }
                    firstTimestamp = first
                    chained.removeAll(keepingCapacity: true)
                    var parent: UInt64 = 0
                    for id in ids {
                        parent = Trace.chainedHash(parent: parent, id: id)
                        chained.append(parent)
                    }
                    trace.append(arrivalMilliseconds: t, input: row.input, output: row.output, blockHashes: chained)
                } catch let problem as LineProblem {
                    if lenient { trace.skippedLines += 1 } else { throw TraceFormatError(path: path, line: line, reason: problem.reason) }
                }
            }
        }
        return trace
    }
}

/// Why one line is malformed (becomes a `TraceFormatError` with the file and line).
struct LineProblem: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}

/// A minimal scanner for one flat JSON object of integer fields and one integer array, enough
/// for Mooncake lines; anything else is a format error with a reason.
struct JSONLineScanner {
    let bytes: UnsafeBufferPointer<UInt8>
    var position: Int
    let end: Int
    /// Where the line begins: columns in messages count from it (1-based).
    let lineStart: Int

    /// A scanner of the line `bytes[position..<end]`.
    init(bytes: UnsafeBufferPointer<UInt8>, position: Int, end: Int) {
        self.bytes = bytes
        self.position = position
        self.end = end
        lineStart = position
    }

    /// The 1-based column of `position` in its line.
    var column: Int { position - lineStart + 1 }

    var isBlank: Bool {
        var i = position
        while i < end {
            let c = bytes[i]
            if c != 0x20 && c != 0x09 && c != 0x0D { return false }
            i += 1
        }
        return true
    }

    mutating func skipSpace() {
        while position < end, bytes[position] == 0x20 || bytes[position] == 0x09 || bytes[position] == 0x0D { position += 1 }
    }

    mutating func expect(_ c: UInt8) throws {
        skipSpace()
        guard position < end, bytes[position] == c else { throw LineProblem("expected '\(Character(UnicodeScalar(c)))' at column \(column)") }
        position += 1
    }

    mutating func peek() -> UInt8? {
        skipSpace()
        return position < end ? bytes[position] : nil
    }

    mutating func key() throws -> String {
        try expect(0x22)
        let s = position
        while position < end && bytes[position] != 0x22 { position += 1 }
        guard position < end else { throw LineProblem("unterminated string") }
        let k = String(decoding: UnsafeBufferPointer(rebasing: bytes[s..<position]), as: UTF8.self)
        position += 1
        return k
    }

    mutating func integer() throws -> Int64 {
        skipSpace()
        var negative = false
        if position < end && bytes[position] == 0x2D { negative = true; position += 1 }
        var v: Int64 = 0, digits = 0
        while position < end, bytes[position] >= 0x30 && bytes[position] <= 0x39 {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int64(bytes[position] - 0x30))
            guard !o1 && !o2 else { throw LineProblem("number too large") }
            v = a
            digits += 1
            position += 1
        }
        guard digits > 0 else { throw LineProblem("expected an integer at column \(column)") }
        if position < end, bytes[position] == 0x2E || bytes[position] == 0x65 || bytes[position] == 0x45 {
            throw LineProblem("expected an integer, found a fraction or exponent")
        }
        return negative ? -v : v
    }

    /// Parses `{"timestamp":..,"input_length":..,"output_length":..,"hash_ids":[..]}` in any
    /// key order; unknown integer fields are ignored. One of the four twice is an error naming
    /// it (neither value is more the request's than the other).
    mutating func mooncakeRow(ids: inout [UInt64]) throws -> (timestamp: Int64, input: Int, output: Int) {
        try expect(0x7B)
        var timestamp: Int64?, input: Int64?, output: Int64?, sawIds = false
        if peek() == 0x7D { throw LineProblem("missing field \"timestamp\"") }
        while true {
            let k = try key()
            let repeated = switch k {
            case "hash_ids": sawIds
            case "timestamp": timestamp != nil
            case "input_length": input != nil
            case "output_length": output != nil
            default: false
            }
            guard !repeated else { throw LineProblem("field \"\(k)\" appears twice") }
            try expect(0x3A)
            switch k {
            case "hash_ids":
                try expect(0x5B)
                if peek() == 0x5D { position += 1 } else {
                    while true {
                        let v = try integer()
                        guard v >= 0 else { throw LineProblem("hash id \(v) is negative") }
                        ids.append(UInt64(v))
                        if peek() == 0x2C { position += 1; continue }
                        try expect(0x5D)
                        break
                    }
                }
                sawIds = true
            case "timestamp": timestamp = try integer()
            case "input_length": input = try integer()
            case "output_length": output = try integer()
            default:
                guard peek() == 0x2D || (peek().map { $0 >= 0x30 && $0 <= 0x39 } ?? false) else { throw LineProblem("field \"\(k)\" has the wrong type") }
                _ = try integer()
            }
            if peek() == 0x2C { position += 1; continue }
            try expect(0x7D)
            break
        }
        skipSpace()
        guard position == end else { throw LineProblem("trailing characters after the object") }
        guard let timestamp else { throw LineProblem("missing field \"timestamp\"") }
        guard let input else { throw LineProblem("missing field \"input_length\"") }
        guard let output else { throw LineProblem("missing field \"output_length\"") }
        guard sawIds else { throw LineProblem("missing field \"hash_ids\"") }
        guard input <= Int64(Int32.max), output <= Int64(Int32.max) else { throw LineProblem("length too large") }
        return (timestamp, Int(input), Int(output))
    }
}
