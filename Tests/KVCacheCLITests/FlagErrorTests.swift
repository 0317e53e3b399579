import Foundation
import TestSupport
import Testing

/// What the built `kvcache-cli` says, and how it exits, for a wrong flag value or subcommand.
/// Engine options were refused in `kvc_config`'s words (`memory_bytes is 0`), some at the
/// engine's creation with exit 1 and the error's Swift spelling (`invalidArgument: ...`), and
/// a mistyped subcommand as an unexpected argument of load, the default subcommand.
@Suite("kvcache-cli wrong flag values and subcommands")
struct FlagErrorTests {
    /// Runs the built CLI with `arguments`; its exit status and standard error.
    private func run(_ arguments: [String]) throws -> (status: Int32, error: String) {
        let (status, text) = try runCLI(arguments, reading: .error)
        return (status, text)
    }

    /// Every engine option's refusal exits 64 and names the flag as typed, whether the options'
    /// check or the engine's creation refuses it; no `kvc_config` field or Swift enum case.
    @Test(arguments: [
        (["--memory", "0"], "Error: --memory is 0"),
        (["--layers", "0"], "Error: --layers 0 is outside 1...1024"),
        (["--page-bytes", "3000"], "Error: --page-bytes 3000 is not a power of two from 4096 to 2097152"),
        (["--max-seqs", "0"], "Error: --max-seqs 0 is outside 1...65536"),
        (["--block-tokens", "0"], "Error: --block-tokens 0 is outside 1...65536"),
        (["--memory", "1KiB"], "Error: cannot create the engine: --memory 1024 holds no "),
        (["--memory", "100TiB"], "Error: cannot create the engine: --memory 109951162777600 holds "),
    ])
    func anEngineOptionIsRefusedByItsFlag(flag: [String], firstLine: String) throws {
        let (status, error) = try run(["load"] + flag + ["--requests", "1", "--plots", ""])
        #expect(status == 64, "\(error)")
        #expect(error.hasPrefix(firstLine), "\(error)")
        for word in ["memory_bytes", "num_layers", "page_bytes", "max_seqs", "block_tokens", "invalidArgument"] {
            #expect(!error.contains(word), "\(error)")
        }
    }

    /// A disk tier larger than a tier manages is refused before any file is made, by its flag.
    @Test func aTierTooLargeIsRefusedByItsFlag() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flagerr-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (status, error) = try run(["load", "--offload-dir", dir, "--offload-bytes", "100TiB", "--requests", "1", "--plots", ""])
        #expect(status == 64, "\(error)")
        #expect(error.hasPrefix("Error: --offload-bytes 109951162777600 is more than a tier manages"), "\(error)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    /// A mistyped subcommand is refused (64) naming the subcommands, not as an argument of load.
    @Test func aMistypedSubcommandNamesTheSubcommands() throws {
        let (status, error) = try run(["replya", "--trace", "x"])
        #expect(status == 64, "\(error)")
        #expect(error.hasPrefix("Error: unknown subcommand 'replya': the subcommands are load, replay, evict-eval, io-bench"),
                "\(error)")
        #expect(!error.contains("Unexpected argument"), "\(error)")
    }
}
