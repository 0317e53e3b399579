import Foundation

/// Reads the Azure LLM inference trace 2023 (Splitwise, ISCA'24): CSV with header
/// `TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps like `2023-11-16 18:17:03.9799600`.
/// Arrivals are offsets from the first row. The trace has no prefix information, so every
/// request is unique: request `r`'s block `k` gets id `r << 20 | k` (no two requests share a
/// block), chained like Mooncake ids.
public enum AzureTraceReader {
    /// The longest prompt a row may give, in tokens (2^24: far past any model's context). Its
    /// block hashes are generated, not read, so without a bound an 81-byte row of 2^31 tokens
    /// made 4 Mi hashes (32 MiB), and a few hundred such rows overflowed the trace.
    public static let maxContextTokens = 1 << 24

    /// Reads the first `maxRequests` rows (all when nil) of `path` with `blockTokens`-token
    /// blocks. A malformed row (wrong field count, a bad timestamp or count, time going
    /// back) throws `TraceFormatError` naming file and line, or with `lenient` is skipped and
    /// counted. A row whose hashes would pass `maxHashes` in all (`Trace.maxHashes`) throws,
    /// lenient or not.
    public static func read(path: String, blockTokens: Int = 512, maxRequests: Int? = nil, lenient: Bool = false, maxHashes: Int = Trace.hashLimit) throws -> Trace {
        let data = try TraceFormatError.contents(of: path)
        return try parse(String(decoding: data, as: UTF8.self), path: path, blockTokens: blockTokens,
                         maxRequests: maxRequests, lenient: lenient, maxHashes: maxHashes)
    }

    /// `read` over text in memory; `path` names it in errors. A UTF-8 byte order mark before
    /// the first line (spreadsheets write one) is skipped.
    public static func parse(_ text: String, path: String, blockTokens: Int = 512, maxRequests: Int? = nil, lenient: Bool = false, maxHashes: Int = Trace.hashLimit) throws -> Trace {
        var trace = Trace(source: path, blockTokens: blockTokens)
        trace.maxHashes = min(maxHashes, Trace.hashLimit)
        var first: Double? = nil
        var lineNumber = 0
        var hashes: [UInt64] = []
        let body = text.unicodeScalars.first == "\u{FEFF}" ? Substring(text.unicodeScalars.dropFirst()) : Substring(text)
        // "\r\n" is one Character, so splitting on newline Characters handles both line ends.
        for line in body.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            lineNumber += 1
            if trace.count >= (maxRequests ?? Int.max) { break }
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }  // blank, as the JSONL reader has it
            // The header as the dataset spells it, or as a spreadsheet re-saved it.
            if lineNumber == 1 && line.uppercased().hasPrefix("TIMESTAMP,") { continue }
            do {
                let fields = line.split(separator: ",", omittingEmptySubsequences: false)
                guard fields.count == 3 else { throw LineProblem("expected 3 fields (TIMESTAMP,ContextTokens,GeneratedTokens), found \(fields.count)") }
                guard let seconds = parseTimestamp(fields[0]) else { throw LineProblem("TIMESTAMP \"\(fields[0])\" is not YYYY-MM-DD HH:MM:SS[.fraction]") }
                guard let input = digits(fields[1].trimmingCharacters(in: .whitespaces)), (1...maxContextTokens).contains(input) else {
                    throw LineProblem("ContextTokens \"\(fields[1])\" is not an integer in 1...\(maxContextTokens)")
                }
                guard let output = digits(fields[2].trimmingCharacters(in: .whitespaces)), (0...Int(Int32.max)).contains(output) else {
                    throw LineProblem("GeneratedTokens \"\(fields[2])\" is not an integer in 0...\(Int32.max)")
                }
                let start = first ?? seconds
                let t = (seconds - start) * 1000
                guard trace.arrivalMilliseconds.last.map({ $0 <= t }) ?? true else { throw LineProblem("TIMESTAMP goes back in time") }
                first = start
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
        return trace
    }

    /// Seconds since 1970-01-01 (UTC, proleptic Gregorian) of `YYYY-MM-DD HH:MM:SS[.fraction]`,
    /// years 1...9999, a day the month has (2023-02-31 is nil, not March 3rd); nil for
    /// anything else.
    static func parseTimestamp(_ s: Substring) -> Double? {
        let parts = s.trimmingCharacters(in: .whitespaces).split(separator: " ")
        guard parts.count == 2 else { return nil }
        let date = parts[0].split(separator: "-"), time = parts[1].split(separator: ":")
        let secondParts = time.count == 3 ? time[2].split(separator: ".", omittingEmptySubsequences: false) : []
        guard date.count == 3, time.count == 3, let y = digits(date[0]), let mo = digits(date[1]), let d = digits(date[2]),
              let h = digits(time[0]), let mi = digits(time[1]), (1...2).contains(secondParts.count),
              digits(secondParts[0]) != nil, secondParts.count == 1 || digits(secondParts[1]) != nil, let sec = Double(time[2]),
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
    static func digits<S: StringProtocol>(_ s: S) -> Int? {
        guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        return Int(s)
    }
}
