import Foundation
import Testing
@testable import KVSim

@Suite struct TraceReaderTests {
    let lines = """
    {"timestamp": 0, "input_length": 1000, "output_length": 10, "hash_ids": [0, 1]}
    {"timestamp": 5, "input_length": 1500, "output_length": 20, "hash_ids": [0, 1, 2]}

    {"timestamp": 9, "input_length": 600, "output_length": 30, "hash_ids": [0, 7]}
    """

    @Test func mooncakeIdsBecomeChainedHashesSharingPrefixes() throws {
        let t = try MooncakeTraceReader.parse(Data(lines.utf8), path: "t.jsonl")
        #expect(t.count == 3)
        #expect(t.arrivalMilliseconds == [0, 5, 9])
        #expect(t.inputTokens == [1000, 1500, 600] && t.outputTokens == [10, 20, 30])
        #expect((0..<3).map(t.hashCount) == [2, 3, 2])
        #expect((0..<3).map(t.fullBlocks) == [1, 2, 1])
        let h = t.hashes
        #expect(h[0] == h[2] && h[1] == h[3], "requests 0 and 1 share blocks 0 and 1")
        #expect(h[0] == h[5] && h[1] != h[6], "request 2 shares block 0 only")
        #expect(h[0] == Trace.chainedHash(parent: 0, id: 0))
        #expect(h[1] == Trace.chainedHash(parent: h[0], id: 1))
    }

    /// An output of 0 tokens is read as 0 in both formats (it was stored as 1, so `kvcache load`
    /// decoded a token the trace does not have); the simulator still generates the first token
    /// that ends the prefill (`SimulatorTests`).
    @Test func anOutputOfZeroTokensIsReadAsZero() throws {
        let jsonl = try MooncakeTraceReader.parse(Data(#"{"timestamp": 0, "input_length": 10, "output_length": 0, "hash_ids": [4]}"#.utf8),
                                                  path: "t.jsonl")
        #expect(jsonl.outputTokens == [0])
        let csv = try AzureTraceReader.parse(Data(("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,0\n").utf8), path: "a.csv")
        #expect(csv.outputTokens == [0])
        #expect(jsonl.prefix(1).outputTokens == [0])
    }

    @Test func aMalformedLineNamesFileAndLine() {
        let bad = lines + "\n{\"timestamp\": 10, \"input_length\": 100, \"output_length\": 1, \"hash_ids\": [0, 1]}\n"
        do {
            _ = try MooncakeTraceReader.parse(Data(bad.utf8), path: "t.jsonl")
            Issue.record("accepted a line whose hash_ids do not match input_length")
        } catch let e as TraceFormatError {
            #expect(e.description.hasPrefix("t.jsonl:5: hash_ids has 2 ids"))
        } catch { Issue.record("\(error)") }
        for (text, reason) in [("not json", "expected '{'"), ("{\"timestamp\": 1}", "missing field \"input_length\""),
                               ("{\"timestamp\": \"x\", \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [0]}", "expected an integer")] {
            do {
                _ = try MooncakeTraceReader.parse(Data(text.utf8), path: "b.jsonl")
                Issue.record("accepted \(text)")
            } catch let e as TraceFormatError {
                #expect(e.line == 1 && e.reason.contains(reason), "\(e)")
            } catch { Issue.record("\(error)") }
        }
    }

    @Test func mooncakeValuesOutOfRangeAreMalformed() {
        for (text, reason) in [(#"{"timestamp": -1, "input_length": 100, "output_length": 5, "hash_ids": [0]}"#, "timestamp -1 is negative"),
                               (#"{"timestamp": 1, "input_length": 0, "output_length": 5, "hash_ids": []}"#, "input_length 0 is below 1"),
                               (#"{"timestamp": 1, "input_length": 10, "output_length": -5, "hash_ids": [0]}"#, "output_length -5 is negative")] {
            do {
                _ = try MooncakeTraceReader.parse(Data(text.utf8), path: "v.jsonl")
                Issue.record("accepted \(text)")
            } catch let e as TraceFormatError {
                #expect(e.description == "v.jsonl:1: \(reason)")
            } catch { Issue.record("\(error)") }
        }
    }

    /// `Trace.read` picks the reader by the file's suffix and refuses a file without requests.
    @Test func traceReadPicksTheFormatBySuffixAndRefusesAnEmptyTrace() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/kvsim-read-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let csv = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
        try Data(lines.utf8).write(to: URL(fileURLWithPath: dir + "/t.jsonl"))
        try Data(csv.utf8).write(to: URL(fileURLWithPath: dir + "/a.csv"))
        try Data("garbage\n\n".utf8).write(to: URL(fileURLWithPath: dir + "/bad.jsonl"))
        #expect(try Trace.read(path: dir + "/t.jsonl").inputTokens == [1000, 1500, 600])
        #expect(try Trace.read(path: dir + "/t.jsonl", maxRequests: 2).count == 2)
        #expect(try Trace.read(path: dir + "/a.csv").inputTokens == [374])
        try Data(csv.utf8).write(to: URL(fileURLWithPath: dir + "/upper.CSV"))
        #expect(try Trace.read(path: dir + "/upper.CSV").inputTokens == [374], "the suffix in any case")
        try Data(csv.replacingOccurrences(of: "TIMESTAMP", with: "timestamp").utf8).write(to: URL(fileURLWithPath: dir + "/lower.csv"))
        #expect(try Trace.read(path: dir + "/lower.csv").inputTokens == [374], "a header in lower case is a header")
        #expect(try Trace.read(path: dir + "/bad.jsonl", maxRequests: 0).count == 0, "none asked for: none is fine")
        for (lenient, reason) in [(false, "bad.jsonl:1: expected '{' at column 1"), (true, "bad.jsonl: holds no requests (1 malformed lines skipped)")] {
            do {
                _ = try Trace.read(path: dir + "/bad.jsonl", lenient: lenient)
                Issue.record("read a trace without requests")
            } catch let e as TraceFormatError {
                #expect(e.description.hasSuffix(reason), "\(e)")
            }
        }
    }

    /// A column in a message counts from the start of its line (it counted from the file's).
    @Test func aMalformedLineNamesItsLineAndColumn() throws {
        let text = "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}\n"
            + "{\"timestamp\": 5, \"input_length\": \"10\", \"output_length\": 1, \"hash_ids\": [1]}\n"
        #expect {
            _ = try MooncakeTraceReader.parse(Data(text.utf8), path: "t.jsonl", lenient: false)
        } throws: { error in
            "\(error)".hasSuffix("t.jsonl:2: expected an integer at column 34")
        }
    }

    @Test func lenientReadingSkipsAndCountsMalformedLines() throws {
        let bad = "garbage\n" + lines + "\n{\"timestamp\": 1}\n"
        let t = try MooncakeTraceReader.parse(Data(bad.utf8), path: "t.jsonl", lenient: true)
        #expect(t.count == 3 && t.skippedLines == 2)
    }

    @Test func theBundledMooncakeTraceReadsWhole() throws {
        let path = #filePath.replacingOccurrences(of: "Tests/KVSimTests/TraceReaderTests.swift", with: "traces/mooncake_conversation_trace.jsonl")
        let t = try MooncakeTraceReader.read(path: path)
        #expect(t.count == 12_031)
        #expect(t.hashes.count == 288_500)
        #expect(t.arrivalMilliseconds.last == 3_536_999)
        #expect(Set(t.hashes).count == 182_790 + 0, "distinct ids map to distinct chained hashes")
        #expect(Set((0..<t.count).map { t.hashes[Int(t.hashStart[$0])] }).count == 1, "every request starts with block 0")
    }

    @Test func azureRowsGetOffsetsAndUniqueBlocks() throws {
        let csv = """
        TIMESTAMP,ContextTokens,GeneratedTokens
        2023-11-16 18:15:46.6805900,374,44
        2023-11-16 18:15:50.9951690,396,109
        2023-11-16 18:16:00.0000000,1024,1
        """
        let t = try AzureTraceReader.parse(Data((csv).utf8), path: "a.csv", blockTokens: 512)
        #expect(t.count == 3)
        #expect(abs(t.arrivalMilliseconds[1] - 4314.579) < 0.01)
        #expect(abs(t.arrivalMilliseconds[2] - 13319.41) < 0.01)
        #expect(t.hashes.count == 1 + 1 + 2)
        #expect(Set(t.hashes).count == 4, "no prefix information: no block is shared")
        do {
            _ = try AzureTraceReader.parse(Data((csv + "\n2023-11-16 18:16:01,12\n").utf8), path: "a.csv")
            Issue.record("accepted a row with two fields")
        } catch let e as TraceFormatError { #expect(e.line == 5 && e.reason.contains("3 fields")) }
        #expect(try AzureTraceReader.parse(Data((csv + "\nbad,row,here\n").utf8), path: "a.csv", lenient: true).skippedLines == 1)
        // The published file has Windows line ends.
        let crlf = try AzureTraceReader.parse(Data((csv.replacingOccurrences(of: "\n", with: "\r\n")).utf8), path: "a.csv")
        #expect(crlf.count == 3 && crlf.arrivalMilliseconds == t.arrivalMilliseconds)
    }

    /// A request whose hashes would pass the trace's cap is refused, lenient or not, naming its
    /// line: `hashStart` is Int32, so past 2^31 hashes in all `Trace.append` trapped (a 3 MB
    /// Azure file of 2^24-token rows got there). The cap is lowered here to reach it.
    @Test func aTraceRefusesHashesPastItsCap() throws {
        let csv = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,374,44\n2023-11-16 18:15:50,396,109\n2023-11-16 18:16:00,1024,1\n"
        #expect(try AzureTraceReader.parse(Data((csv).utf8), path: "a.csv", maxHashes: 4).hashes.count == 4)
        let jsonl = (0..<3).map { #"{"timestamp": \#($0), "input_length": 1000, "output_length": 1, "hash_ids": [\#($0), 7]}"# }.joined(separator: "\n")
        #expect(try MooncakeTraceReader.parse(Data(jsonl.utf8), path: "m.jsonl", maxHashes: 6).hashes.count == 6)
        for lenient in [false, true] {
            do {
                _ = try AzureTraceReader.parse(Data((csv).utf8), path: "a.csv", lenient: lenient, maxHashes: 3)
                Issue.record("read 4 hashes under a cap of 3")
            } catch let e as TraceFormatError { #expect(e.line == 4 && e.reason.contains("more than 3 block hashes"), "\(e)") }
            do {
                _ = try MooncakeTraceReader.parse(Data(jsonl.utf8), path: "m.jsonl", lenient: lenient, maxHashes: 5)
                Issue.record("read 6 hashes under a cap of 5")
            } catch let e as TraceFormatError { #expect(e.line == 3 && e.reason.contains("more than 5 block hashes"), "\(e)") }
        }
        #expect(try AzureTraceReader.parse(Data((csv).utf8), path: "a.csv", maxHashes: Int.max).maxHashes == Trace.hashLimit)
    }

    /// Values that once trapped (a year whose day count overflows, a length whose block count
    /// overflows or does not fit the trace's 32-bit lengths) or were misread (signed, hex or
    /// exponent numbers; a 60th second) are malformed rows, named.
    @Test func azureValuesOutOfRangeAreMalformed() {
        let header = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.0,374,44\n"
        for (row, reason) in [("9223372036854775807-01-01 00:00:00.0,374,44", "TIMESTAMP \"9223372036854775807-01-01 00:00:00.0\" is not YYYY-MM-DD HH:MM:SS[.fraction]"),
                              ("-9223372036854775807-01-01 00:00:00,374,4", "TIMESTAMP \"-9223372036854775807-01-01 00:00:00\" is not YYYY-MM-DD HH:MM:SS[.fraction]"),
                              ("2023-11-16 18:15:47.0,9223372036854775807,44", "ContextTokens \"9223372036854775807\" is not an integer in 1...16777216"),
                              // Generated hashes: a prompt past 2^24 tokens is not a row (2^31
                              // tokens made 4 Mi hashes from 81 bytes of file).
                              ("2023-11-16 18:15:47.0,16777217,44", "ContextTokens \"16777217\" is not an integer in 1...16777216"),
                              // Signs, hex and exponent forms, which Int and Double accept.
                              ("2023-11-16 18:15:47.0,+300,44", "ContextTokens \"+300\" is not an integer in 1...16777216"),
                              ("2023-11-16 18:15:47.0,300,+5", "GeneratedTokens \"+5\" is not an integer in 0...2147483647"),
                              ("+2023-11-16 18:15:47.0,374,44", "TIMESTAMP \"+2023-11-16 18:15:47.0\" is not YYYY-MM-DD HH:MM:SS[.fraction]"),
                              ("2023-11-16 18:15:0x1p3,374,44", "TIMESTAMP \"2023-11-16 18:15:0x1p3\" is not YYYY-MM-DD HH:MM:SS[.fraction]"),
                              ("2023-11-16 18:15:1e1,374,44", "TIMESTAMP \"2023-11-16 18:15:1e1\" is not YYYY-MM-DD HH:MM:SS[.fraction]"),
                              ("2023-11-16 18:15:60.5,374,44", "TIMESTAMP \"2023-11-16 18:15:60.5\" is not YYYY-MM-DD HH:MM:SS[.fraction]"),
                              ("2023-11-16 18:15:47.0,374,2147483648", "GeneratedTokens \"2147483648\" is not an integer in 0...2147483647"),
                              // A day the month lacks was read as a day of the next month.
                              ("2023-02-29 00:00:00,374,44", "TIMESTAMP \"2023-02-29 00:00:00\" is not YYYY-MM-DD HH:MM:SS[.fraction]"),
                              ("2023-11-31 00:00:00,374,44", "TIMESTAMP \"2023-11-31 00:00:00\" is not YYYY-MM-DD HH:MM:SS[.fraction]")] {
            do {
                _ = try AzureTraceReader.parse(Data((header + row + "\n").utf8), path: "v.csv")
                Issue.record("accepted \(row)")
            } catch let e as TraceFormatError {
                #expect(e.description == "v.csv:3: \(reason)")
            } catch { Issue.record("\(error)") }
        }
        let widest = try? AzureTraceReader.parse(Data((header + "9999-12-31 23:59:59.9,16777216,2147483647\n").utf8), path: "v.csv")
        #expect(widest?.count == 2 && widest?.inputTokens.last == 1 << 24 && widest?.hashCount(1) == 32_768)
        let leapDay = try? AzureTraceReader.parse(Data((header + "2024-02-29 00:00:00,374,44\n\t\n").utf8), path: "v.csv")
        #expect(leapDay?.count == 2 && leapDay?.skippedLines == 0, "a leap day is a day; a line of a tab is blank")
    }

    /// A TIMESTAMP with empty date or time pieces ("2023--11--16 18::15::50.9") read as the
    /// one without them (the pieces were split dropping empty ones), and lines were split at
    /// every Unicode line break (form feed, VT, NEL, U+2028), so a row holding one counted as
    /// two and every later error named the line after the one grep and editors show. Lines
    /// end at "\n", "\r\n" or "\r" only; anything else is part of its row.
    @Test func azureLinesEndOnlyAtLineEndsAndTimestampsKeepEveryPiece() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/kvsim-azure-lines-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let header = "TIMESTAMP,ContextTokens,GeneratedTokens\n", first = "2023-11-16 18:15:46.5,374,44\n"
        func error(_ text: String) throws -> String? {
            let path = dir + "/t.csv"
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            do { _ = try Trace.read(path: path) } catch let e as TraceFormatError {
                return e.description.hasPrefix(path) ? String(e.description.dropFirst(path.count)) : e.description
            }
            return nil
        }
        for ts in ["2023--11--16 18::15::50.9", "2023-11-16 :18:15:55.1", "2023-11-16 18:15::55.1", "-2023-11-16 18:15:55.1",
                   "2023-11-16  18:15:55.1", "2023-11-16 18:15:55.1 1"] {
            #expect(try error(header + first + ts + ",396,109\n") == ":3: TIMESTAMP \"\(ts)\" is not YYYY-MM-DD HH:MM:SS[.fraction]")
        }
        #expect(try error(header + first + " 2023-11-16 18:15:55.1\t,396,109\n") == nil, "space around the field is not part of it")
        for separator in ["\u{0B}", "\u{0C}", "\u{85}", "\u{2028}"] {
            let text = header + "2023-11-16 18:15:46.5,374,4" + separator + "4\n2023-11-16 18:15:48.5,37x4,44\n"
            #expect(try error(text) == ":2: GeneratedTokens \"4\(separator)4\" is not an integer in 0...2147483647", "U+\(String(separator.unicodeScalars.first!.value, radix: 16))")
        }
        for end in ["\n", "\r\n", "\r"] {
            let text = [header, first, "2023-11-16 18:15:47.5,374,44\n", "2023-11-16 18:15:48.5,37x4,44\n"].joined().replacingOccurrences(of: "\n", with: end)
            #expect(try error(text) == ":4: ContextTokens \"37x4\" is not an integer in 1...16777216", "\(Array(end.utf8))")
        }
    }

    /// A 780 KB Azure file of 20,000 rows at the longest context (32,768 hashes each) made
    /// `Trace.read` take 5.4 GB of hashes and abort: nothing bounded them by the file. They
    /// are now at most one per byte of the file (at least `Trace.minHashBudget`), and the row
    /// passing that is refused by file and line, lenient or not (here under a lowered floor,
    /// so nothing large is made).
    @Test func traceReadBoundsTheHashesByTheFilesSize() throws {
        #expect(Trace.hashBudget(fileBytes: 780_040) == 1 << 24)
        #expect(Trace.hashBudget(fileBytes: 100_000_000) == 100_000_000)
        #expect(Trace.hashBudget(fileBytes: Int.max) == Trace.hashLimit)
        let dir = FileManager.default.temporaryDirectory.path + "/kvsim-budget-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/long.csv"
        let rows = (0..<3).map { "2023-11-16 18:15:4\($0).5,16777216,1\n" }.joined()
        try Data(("TIMESTAMP,ContextTokens,GeneratedTokens\n" + rows).utf8).write(to: URL(fileURLWithPath: path))
        for lenient in [false, true] {
            #expect {
                try Trace.read(path: path, lenient: lenient, minHashBudget: 40_000)
            } throws: {
                "\($0)" == "\(path):3: the requests so far and this one need more than 40000 block hashes in all; read fewer requests or use larger blocks"
            }
        }
        #expect(try Trace.read(path: path, maxRequests: 1, minHashBudget: 40_000).hashes.count == 32_768)
        // A Mooncake line spends 2 bytes or more on each hash: any floor reads it.
        try Data(lines.utf8).write(to: URL(fileURLWithPath: dir + "/t.jsonl"))
        #expect(try Trace.read(path: dir + "/t.jsonl", minHashBudget: 1).count == 3)
    }

    /// The Azure reader decoded the whole file to a String and split it into Substrings
    /// before its first row (100 MB of blank lines took 4 GB and aborted; `--requests 10` of a
    /// 90 MB file took 4.3 s and 331 MB). It now scans the bytes line by line, as the Mooncake
    /// reader does, and stops at the last row asked for: what follows is not read at all.
    @Test func theAzureReaderScansBytesAndStopsAtTheLastRowAskedFor() throws {
        var data = Data("TIMESTAMP,ContextTokens,GeneratedTokens\r\n2023-11-16 18:15:46.5,374,44\r\n2023-11-16 18:15:47.5,396,109\r\n".utf8)
        data.append(contentsOf: [0xFF, 0xFE, 0x00, 0x0A])  // not a row
        let two = try AzureTraceReader.parse(data, path: "s.csv", maxRequests: 2)
        #expect(two.inputTokens == [374, 396] && two.outputTokens == [44, 109] && two.arrivalMilliseconds == [0, 1000])
        #expect { try AzureTraceReader.parse(data, path: "s.csv") } throws: {
            "\($0)" == "s.csv:4: expected 3 fields (TIMESTAMP,ContextTokens,GeneratedTokens), found 1"
        }
        #expect(try AzureTraceReader.parse(data, path: "s.csv", lenient: true).skippedLines == 1)
    }

    /// A UTF-8 byte order mark before the first line, as spreadsheets and some editors save
    /// one, is not part of the header or the first row (both readers refused the file).
    @Test func aByteOrderMarkIsSkipped() throws {
        let bom = "\u{FEFF}"
        let csv = try AzureTraceReader.parse(Data((bom + "TIMESTAMP,ContextTokens,GeneratedTokens\r\n2023-11-16 18:15:46.6805900,374,44\r\n").utf8), path: "b.csv")
        #expect(csv.count == 1 && csv.inputTokens == [374] && csv.outputTokens == [44])
        let headless = try AzureTraceReader.parse(Data((bom + "2023-11-16 18:15:46.6805900,374,44\n").utf8), path: "b.csv")
        #expect(headless.count == 1 && headless.arrivalMilliseconds == [0])
        let jsonl = try MooncakeTraceReader.parse(Data((bom + lines).utf8), path: "b.jsonl")
        #expect(jsonl.count == 3 && jsonl.inputTokens == [1000, 1500, 600])
        #expect(jsonl.hashes == (try MooncakeTraceReader.parse(Data(lines.utf8), path: "t.jsonl")).hashes)
        // Only at the start of the file: elsewhere it is a malformed line.
        #expect {
            _ = try MooncakeTraceReader.parse(Data((lines + "\n" + bom + lines).utf8), path: "b.jsonl")
        } throws: { error in
            "\(error)" == "b.jsonl:5: expected '{' at column 1"
        }
    }

    /// A field given twice is malformed, named with its line: `hash_ids` twice was read as the
    /// two lists back to back, and a second timestamp or length replaced the first.
    @Test func aFieldGivenTwiceIsMalformed() {
        for (text, field) in [(#"{"timestamp": 10, "input_length": 1024, "output_length": 1, "hash_ids": [0], "hash_ids": [1]}"#, "hash_ids"),
                              (#"{"timestamp": 10, "timestamp": 12, "input_length": 512, "output_length": 1, "hash_ids": [0]}"#, "timestamp"),
                              (#"{"timestamp": 10, "input_length": 512, "output_length": 1, "input_length": 600, "hash_ids": [0, 1]}"#, "input_length"),
                              (#"{"output_length": 1, "timestamp": 10, "input_length": 512, "output_length": 2, "hash_ids": [0]}"#, "output_length")] {
            #expect {
                _ = try MooncakeTraceReader.parse(Data((lines + "\n" + text + "\n").utf8), path: "d.jsonl")
            } throws: { error in
                "\(error)" == "d.jsonl:5: field \"\(field)\" appears twice"
            }
        }
        #expect((try? MooncakeTraceReader.parse(Data(#"{"timestamp": 0, "input_length": 512, "output_length": 1, "hash_ids": [0], "x": 1, "x": 2}"#.utf8),
                                                 path: "d.jsonl"))?.count == 1, "an ignored field may repeat")
    }

    @Test func theBundledAzureTraceReadsWhole() throws {
        let path = #filePath.replacingOccurrences(of: "Tests/KVSimTests/TraceReaderTests.swift", with: "traces/azure_llm_2023_conv.csv")
        let t = try AzureTraceReader.read(path: path)
        #expect(t.count == 19_366)
        #expect(abs(t.arrivalMilliseconds.last! / 1000 - 3502) < 1, "58.4 minutes of arrivals")
    }

    @Test func syntheticSessionsShareSystemPromptsAndHistory() {
        var g = SyntheticSessions()
        g.sessions = 50
        g.systemPrompts = 2
        let a = g.generate(), b = g.generate()
        #expect(a.hashes == b.hashes && a.arrivalMilliseconds == b.arrivalMilliseconds, "deterministic for a seed")
        #expect(a.count >= 50)
        let firsts = Set((0..<a.count).map { a.hashes[Int(a.hashStart[$0])] })
        #expect(firsts.count == 2, "every prompt starts with one of the 2 system prompts")
        #expect(zip(a.arrivalMilliseconds, a.arrivalMilliseconds.dropFirst()).allSatisfy { $0 <= $1 })
    }
}
