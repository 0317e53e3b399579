import Foundation
import Testing
import TestSupport
@testable import kvcache

/// `kvcache io-bench`'s tier options: combinations that would be ignored or that the tier's
/// engine refuses are named.
@Suite("io-bench options")
struct IOBenchOptionTests {
    /// An unknown or repeated operation name is refused (it was dropped or run twice).
    @Test func opsNamesEachOperationOnce() {
        for bad in ["write,raed", "write,write", "", ","] {
            #expect(optionError(IOBenchCommand.self, ["--ops", bad])?.hasPrefix("--ops '\(bad)': write, read, or both") == true, "\(bad)")
        }
        for good in ["write", "read", "read,write"] { #expect(optionError(IOBenchCommand.self, ["--ops", good]) == nil, "\(good)") }
    }

    /// --skip-fill without the file an earlier --keep-file run wrote is refused before any
    /// measurement: it once preallocated a fresh file and timed reads of never-written extents,
    /// which the file system answers with zeros without touching the device.
    @Test func skipFillWithoutAWrittenFileIsRefused() throws {
        let scratch = ScratchDir("iobench"), dir = scratch.path
        defer { scratch.remove() }
        let command = try IOBenchCommand.parse(["--dir", dir, "--file-size", "8MiB", "--block-sizes", "64KiB", "--depths", "1",
                                                "--seconds", "0.01", "--skip-fill"])
        #expect {
            try command.run()
        } throws: { error in
            "\(error)".contains("--skip-fill reads the file an earlier run left with --keep-file: \(dir)/kvcache-io-bench.dat is missing")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty, "no file was made")
    }

    /// A cell shorter than its first request measured 0 bytes in 0 s, and the table trapped on
    /// the 0/0 rate (--json printed zeros): --seconds has a minimum, named.
    @Test func secondsBelowTheMinimumAreRefused() {
        for bad in ["1e-12", "0.009", "0", "-1", "nan", "601"] {
            #expect(optionError(IOBenchCommand.self, ["--seconds=\(bad)"])?.hasPrefix("--seconds must be in 0.01...600") == true, "\(bad)")
        }
        for good in ["0.01", "600"] { #expect(optionError(IOBenchCommand.self, ["--seconds", good]) == nil, "\(good)") }
    }

    /// Sizes past what a file offset or the tier's engine can take are refused by name; they
    /// trapped converting to Int (--file-size and --tier-sequence-bytes in the run,
    /// --block-sizes in validation). Every numeric option is tried with 2^64-1, 2^64 and 9000000T.
    @Test func sizesThatDoNotFitAreRefused() {
        let huge = ["18446744073709551615", "18446744073709551616", "9000000T", "9223372036854775808"]
        for value in huge {
            for option in ["--file-size", "--tier-sequence-bytes", "--block-sizes", "--depths", "--seconds"] {
                #expect(optionError(IOBenchCommand.self, [option, value, "--tier"]) != nil, "\(option) \(value)")
            }
        }
        for value in ["9000000T", "9223372036854775808"] {
            #expect(optionError(IOBenchCommand.self, ["--file-size", value])
                == "--file-size must be at most 9223372036854775807 bytes (the largest file offset)", "\(value)")
        }
        #expect(optionError(IOBenchCommand.self, ["--file-size", "9223372036854775807"]) == nil)
        for value in ["18446744073709551615", "70368744177665", "64GiB"] {
            #expect(optionError(IOBenchCommand.self, ["--tier", "--tier-sequence-bytes", value])
                == "--tier-sequence-bytes must be below 64 GiB (2^20 slots of 64 KiB, the smallest --tier block size: "
                + "the tier's engine holds no longer sequence)", "\(value)")
        }
        #expect(optionError(IOBenchCommand.self, ["--tier", "--tier-sequence-bytes", "65535MiB"]) == nil)
    }

    /// The bound is that of the smallest tier block size: 1TiB passed validation with 64KiB
    /// slots, ran every cell (about 10 s), then the tier's engine refused max_seq_tokens and
    /// none of the cells was printed.
    @Test func aTierSequenceTooLongForTheSmallestSlotIsRefusedByName() {
        let sizes = ["--block-sizes", "4KiB,64KiB,1MiB", "--depths", "1"]
        #expect(optionError(IOBenchCommand.self, sizes + ["--tier", "--tier-sequence-bytes", "1TiB"])
            == "--tier-sequence-bytes must be below 64 GiB (2^20 slots of 64 KiB, the smallest --tier block size: "
            + "the tier's engine holds no longer sequence)")
        #expect(optionError(IOBenchCommand.self, sizes + ["--tier", "--tier-sequence-bytes", "65535MiB"]) == nil)
        // 2^20 slots of the largest size, 64 TiB, was the bound: its engine refused it too.
        let largest = ["--block-sizes", "64MiB", "--depths", "1", "--file-size", "128MiB", "--tier", "--tier-sequence-bytes"]
        #expect(optionError(IOBenchCommand.self, largest + ["64TiB"])
            == "--tier-sequence-bytes must be below 64 TiB (2^20 slots of 64 MiB, the smallest --tier block size: "
            + "the tier's engine holds no longer sequence)")
        #expect(optionError(IOBenchCommand.self, largest + ["67108863MiB"]) == nil)
    }

    /// The largest --file-size accepted is refused by the file system, and the empty file
    /// made before the refusal is not left behind.
    @Test func aFileSizeTheFileSystemRefusesLeavesNoFile() throws {
        let scratch = ScratchDir("iobench"), dir = scratch.path
        defer { scratch.remove() }
        let command = try IOBenchCommand.parse(["--dir", dir, "--file-size", "9223372036854775807", "--block-sizes", "64KiB", "--depths", "1"])
        #expect(throws: IOBenchError.self) { try command.run() }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty, "no file was left")
    }

    /// An empty --dir put the test file at /kvcache-io-bench.dat.
    @Test func anEmptyDirIsRefused() {
        #expect(optionError(IOBenchCommand.self, ["--dir", ""]) == "--dir must not be empty (it is the directory of the test file)")
        #expect(optionError(IOBenchCommand.self, ["--dir", "/tmp"]) == nil)
    }

    /// --tier with no block size it can use ran no tier cell, silently.
    @Test func tierWithoutAMultipleOf64KiBIsRefused() {
        for sizes in ["4KiB", "4KiB,96KiB,1000KiB"] {
            #expect(optionError(IOBenchCommand.self, ["--tier", "--block-sizes", sizes])
                == "--tier needs a block size that is a multiple of 64KiB (--block-sizes '\(sizes)')", "\(sizes)")
        }
        #expect(optionError(IOBenchCommand.self, ["--tier", "--block-sizes", "4KiB,128KiB"]) == nil)
        #expect(optionError(IOBenchCommand.self, ["--block-sizes", "4KiB"]) == nil, "without --tier")
    }

    /// A repeated block size or depth was measured twice while the table showed the first
    /// measurement twice: refused, as a repeated --ops name is.
    @Test func repeatedSizesAndDepthsAreRefused() {
        for bad in ["64KiB,64KiB", "64KiB,128KiB,65536", "3KiB"] {
            #expect(optionError(IOBenchCommand.self, ["--block-sizes", bad])
                == "--block-sizes '\(bad)': sizes that are multiples of 4KiB up to 64MiB, each once", "\(bad)")
        }
        for bad in ["1,1", "1,4,2,4", "0", "257", ""] {
            #expect(optionError(IOBenchCommand.self, ["--depths", bad]) == "--depths '\(bad)': depths in 1...256, each once", "\(bad)")
        }
        #expect(optionError(IOBenchCommand.self, ["--block-sizes", "64KiB,4KiB", "--depths", "4,1"]) == nil)
    }

    @Test func tierAsyncWithoutTierIsRefused() {
        #expect(optionError(IOBenchCommand.self, ["--tier-async"])?.hasPrefix("--tier-async needs --tier") == true)
        #expect(optionError(IOBenchCommand.self, ["--tier", "--tier-async"]) == nil)
    }

    /// `--tier-sequence-bytes` sizes only the tier's sequences: without `--tier` it was
    /// silently ignored.
    @Test func tierSequenceBytesWithoutTierIsRefused() throws {
        #expect(optionError(IOBenchCommand.self, ["--tier-sequence-bytes", "4MiB"])?.hasPrefix("--tier-sequence-bytes needs --tier") == true)
        #expect(optionError(IOBenchCommand.self, ["--tier", "--tier-sequence-bytes", "4MiB"]) == nil)
        #expect(try IOBenchCommand.parse(["--tier"]).tierSequenceBytes == nil, "the default, 512 MiB, applies")
    }

    /// A sequence past the engine's 2^24 tokens: the refusal says it is the tier's engine and
    /// what shape it was given, with the engine's reason (it used to be the reason alone).
    @Test func aSequenceTheTiersEngineCannotHoldIsNamed() throws {
        let scratch = ScratchDir("tierbench"), dir = scratch.path
        defer { scratch.remove() }
        let bench = TierBench(dir: dir, payloadBytes: 64 << 10, sequenceBytes: 1 << 40, seconds: 0.01, asyncSwapOut: false)
        #expect {
            _ = try bench.run()
        } throws: { error in
            "\(error)" == "cannot create the tier's engine (sequences of 16777216 slots of 64 KiB): "
                + "invalidArgument: max_seq_tokens 268435472 is outside 1...16777216"
        }
    }
}
