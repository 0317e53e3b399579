import Testing
@testable import kvcache

/// `ByteCount` (`--memory`, `--page-bytes`, `--offload-bytes`, ...).
@Suite("ByteCount")
struct ByteCountTests {
    @Test(arguments: [
        ("0", 0), ("4096", 4096), ("512b", 512), ("512B", 512),
        ("4k", 4 << 10), ("4KB", 4 << 10), ("64KiB", 64 << 10), ("64kib", 64 << 10),
        ("2m", 2 << 20), ("2MB", 2 << 20), ("2MiB", 2 << 20),
        ("1g", 1 << 30), ("1GB", 1 << 30), ("3GiB", 3 << 30),
        ("1t", 1 << 40), ("3TiB", 3 << 40), ("  8MiB  ", 8 << 20),
        ("18446744073709551615", UInt64.max), ("16777215T", 16_777_215 << 40),
    ] as [(String, UInt64)])
    func parsesIntegersWithBinarySuffixes(text: String, bytes: UInt64) {
        #expect(ByteCount(argument: text)?.bytes == bytes)
    }

    /// Not a whole number of a known unit, or more than 64 bits: rejected, not truncated.
    @Test(arguments: ["", " ", "K", "GiB", "-1", "1.5G", "12XB", "1 GiB", "0x10", "1e9", "4KiBs",
                      "18446744073709551616", "16777216T", "17179869184G"])
    func rejectsAnythingElse(text: String) {
        #expect(ByteCount(argument: text) == nil)
    }

    @Test func formatsInTheLargestWholeUnit() {
        #expect(ByteCount.format(0) == "0 B")
        #expect(ByteCount.format(1023) == "1023 B")
        #expect(ByteCount.format(1024) == "1 KiB")
        #expect(ByteCount.format(1536) == "1.50 KiB")
        #expect(ByteCount.format(2 << 20) == "2 MiB")
        #expect(ByteCount.format((1 << 30) + (1 << 29) + (1 << 20)) == "1.50 GiB", "two decimals")
        #expect(ByteCount.format(1 << 50) == "1024 TiB", "TiB is the largest unit")
        #expect(ByteCount(bytes: 64 << 10).description == "64 KiB")
        #expect(ByteCount(bytes: 64 << 10).defaultValueDescription == "64KiB", "as the parser takes it")
        #expect(ByteCount(bytes: 1536).defaultValueDescription == "1536", "not a whole unit: bytes")
    }

    /// Every byte-count default a command's help shows parses: "1 GiB" was shown, the parser
    /// refused it.
    @Test func theHelpsDefaultsParse() throws {
        let helps = [LoadCommand.helpMessage(columns: 10_000), IOBenchCommand.helpMessage(columns: 10_000),
                     ReplayCommand.helpMessage(columns: 10_000), EvictEvalCommand.helpMessage(columns: 10_000)]
        let pattern = try Regex(#"default:? ([0-9][0-9.]* ?[KMGT]iB)"#)
        let shown = helps.flatMap { $0.matches(of: pattern).map { String($0.output[1].substring!) } }
        #expect(!shown.isEmpty)
        for text in shown { #expect(ByteCount(argument: text) != nil, "the help shows default \(text)") }
    }

    /// What the help prints as a default parses back to the same count.
    @Test(arguments: [UInt64(4 << 10), 64 << 10, 2 << 20, 2 << 30, 5 << 40, 1023])
    func formatParsesBack(bytes: UInt64) {
        let text = ByteCount.format(bytes).replacingOccurrences(of: " ", with: "")
        #expect(ByteCount(argument: text)?.bytes == bytes, "\(text)")
    }
}
