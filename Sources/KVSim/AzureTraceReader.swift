import Foundation

/// Reads the Azure LLM inference trace 2023 (Splitwise, ISCA'24): CSV with header
/// `TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps like `2023-11-16 18:17:03.9799600`.
/// Arrivals are offsets from the first row. The trace has no prefix information, so every
/// request is unique: request `r`'s block `k` gets id `r << 20 | k` (no two requests share a
/// block), chained like Mooncake ids.
///
/// Cost: one pass over the bytes up to the last row asked for, as `MooncakeTraceReader`
/// (no String of the file, no allocation per line beyond the trace's arrays).
public enum AzureTraceReader {
    /// The longest prompt a row may give, in tokens (2^24: far past any model's context). Its
    /// block hashes are generated, not read, so without a bound an 81-byte row of 2^31 tokens
    /// made 4 Mi hashes (32 MiB), and a few hundred such rows overflowed the trace; the total
    /// is bounded by `maxHashes` (`Trace.read`: by the file's size).
    public static let maxContextTokens = 1 << 24

    /// Reads the first `maxRequests` rows (all when nil) of `path` with `blockTokens`-token
    /// blocks. A malformed row (wrong field count, a bad timestamp or count, time going
    /// back) throws `TraceFormatError` naming file and line, or with `lenient` is skipped and
    /// counted. A row whose hashes would pass `maxHashes` in all (`Trace.maxHashes`) throws,
    /// lenient or not.
    public static func read(path: String, blockTokens: Int = 512, maxRequests: Int? = nil, lenient: Bool = false, maxHashes: Int = Trace.hashLimit) throws -> Trace {
        try parse(TraceFormatError.contents(of: path), path: path, blockTokens: blockTokens,
                  maxRequests: maxRequests, lenient: lenient, maxHashes: maxHashes)
    }

    /// `read` over bytes already in memory; `path` names them in errors. Lines end at "\n",
    /// "\r\n" or "\r" (any other byte, a form feed or a Unicode line separator included, is
    /// part of its row); a UTF-8 byte order mark before the first line (spreadsheets write
    /// one) is skipped; spaces and tabs around a field are not part of it. Stops after the
    /// `maxRequests`-th request.
    public static func parse(_ data: Data, path: String, blockTokens: Int = 512, maxRequests: Int? = nil, lenient: Bool = false, maxHashes: Int = Trace.hashLimit) throws -> Trace {
        var trace = Trace(source: path, blockTokens: blockTokens)
        trace.maxHashes = min(maxHashes, Trace.hashLimit)
        let limit = maxRequests ?? Int.max
        var first: Double? = nil
        var hashes: [UInt64] = []
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let bytes = raw.bindMemory(to: UInt8.self)
            let bom = bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF
            var start = bom ? 3 : 0
            var lineNumber = 0
            while start < bytes.count && trace.count < limit {
                lineNumber += 1
                var end = start
                while end < bytes.count && bytes[end] != 0x0A && bytes[end] != 0x0D { end += 1 }
                defer { start = end + (end + 1 < bytes.count && bytes[end] == 0x0D && bytes[end + 1] == 0x0A ? 2 : 1) }
                let line = UnsafeBufferPointer(rebasing: bytes[start..<end])
                if trimmed(line).isEmpty { continue }  // blank, as the JSONL reader has it
                // The header as the dataset spells it, or as a spreadsheet re-saved it.
                if lineNumber == 1 && line.count >= 10 && zip(line, "TIMESTAMP,".utf8).allSatisfy({ $0 & 0xDF == $1 || $0 == $1 }) { continue }
                do {
                    var c1 = -1, c2 = -1, fieldCount = 1
                    for i in line.indices where line[i] == 0x2C {
                        fieldCount += 1
                        if c1 < 0 { c1 = i } else if c2 < 0 { c2 = i }
                    }
                    guard fieldCount == 3 else { throw LineProblem("expected 3 fields (TIMESTAMP,ContextTokens,GeneratedTokens), found \(fieldCount)") }
                    let stamp = UnsafeBufferPointer(rebasing: line[..<c1]), context = UnsafeBufferPointer(rebasing: line[(c1 + 1)..<c2])
                    let generated = UnsafeBufferPointer(rebasing: line[(c2 + 1)...])
                    guard let seconds = parseTimestamp(stamp) else { throw LineProblem("TIMESTAMP \"\(text(stamp))\" is not YYYY-MM-DD HH:MM:SS[.fraction]") }
                    guard let input = digits(trimmed(context)), (1...maxContextTokens).contains(input) else {
                        throw LineProblem("ContextTokens \"\(text(context))\" is not an integer in 1...\(maxContextTokens)")
                    }
                    guard let output = digits(trimmed(generated)), (0...Int(Int32.max)).contains(output) else {
                        throw LineProblem("GeneratedTokens \"\(text(generated))\" is not an integer in 0...\(Int32.max)")
                    }
                    let origin = first ?? seconds
                    let t = (seconds - origin) * 1000
                    guard trace.arrivalMilliseconds.last.map({ $0 <= t }) ?? true else { throw LineProblem("TIMESTAMP goes back in time") }
                    first = origin
                    let blocks = (input + blockTokens - 1) / blockTokens
                    guard trace.admits(hashes: blocks) else { throw TraceFormatError.tooManyHashes(path: path, line: lineNumber, trace: trace) }
                    hashes.removeAll(keepingCapacity: true)
                    var parent: UInt64 = 0
                    for k in 0..<blocks {
                        parent = Trace.chainedHash(parent: parent, id: UInt64(trace.count) << 20 | UInt64(k))
                        hashes.append(parent)
                    }
                    trace.append(arrivalMilliseconds: t, input: input, output: output, blockHashes: hashes)
                } catch let problem as LineProblem {
                    if lenient { trace.skippedLines += 1 } else { throw TraceFormatError(path: path, line: lineNumber, reason: problem.reason) }
                }
            }
        }
        return trace
    }

    /// Seconds since 1970-01-01 (UTC, proleptic Gregorian) of `YYYY-MM-DD HH:MM:SS[.fraction]`
    /// (every piece one or more ASCII digits, one space between date and time; spaces and
    /// tabs around it allowed), years 1...9999, a day the month has (2023-02-31 is nil, not
    /// March 3rd); nil for anything else ("2023--11--16 18::15::50.9" too).
    static func parseTimestamp(_ field: UnsafeBufferPointer<UInt8>) -> Double? {
        let s = trimmed(field)
        var i = 0
        func number() -> Int? {
            let from = i
            while i < s.count && s[i] >= 0x30 && s[i] <= 0x39 { i += 1 }
            return digits(UnsafeBufferPointer(rebasing: s[from..<i]))
        }
        func skip(_ c: UInt8) -> Bool {
            guard i < s.count && s[i] == c else { return false }
            i += 1
            return true
        }
        guard let y = number(), skip(0x2D), let mo = number(), skip(0x2D), let d = number(), skip(0x20),
              let h = number(), skip(0x3A), let mi = number(), skip(0x3A) else { return nil }
        let secondsStart = i
        guard number() != nil, !skip(0x2E) || number() != nil, i == s.count,
              let sec = Double(text(UnsafeBufferPointer(rebasing: s[secondsStart...]))),
              (1...9999).contains(y), (1...12).contains(mo), (1...31).contains(d), (0...23).contains(h), (0...59).contains(mi), sec < 60
        else { return nil }
        let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
        guard d <= [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][mo - 1] else { return nil }
        // Days from civil (Howard Hinnant's algorithm).
        let yy = mo <= 2 ? y - 1 : y
        let era = (yy >= 0 ? yy : yy - 399) / 400
        let yoe = yy - era * 400
        let doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146097 + doe - 719468
        return Double(days * 86400 + h * 3600 + mi * 60) + sec
    }

    /// The value of `s` when it is only ASCII digits (no sign, no space, no hex or exponent
    /// form, which `Int(_:)` and `Double(_:)` accept) and fits an Int; else nil.
    static func digits(_ s: UnsafeBufferPointer<UInt8>) -> Int? {
        guard !s.isEmpty else { return nil }
        var v = 0
        for c in s {
            guard c >= 0x30 && c <= 0x39 else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int(c - 0x30))
            guard !o1 && !o2 else { return nil }
            v = a
        }
        return v
    }

    /// `s` without the spaces and tabs around it.
    static func trimmed(_ s: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        var from = 0, to = s.count
        while from < to && (s[from] == 0x20 || s[from] == 0x09) { from += 1 }
        while to > from && (s[to - 1] == 0x20 || s[to - 1] == 0x09) { to -= 1 }
        return UnsafeBufferPointer(rebasing: s[from..<to])
    }

    /// `s` as text, for messages (invalid UTF-8 replaced).
    static func text(_ s: UnsafeBufferPointer<UInt8>) -> String { String(decoding: s, as: UTF8.self) }
}
