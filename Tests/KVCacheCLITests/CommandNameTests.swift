import Foundation
import KVCache
import TestSupport
import Testing

/// What the built `kvcache-cli` says about itself. Its usage lines named `kvcache`, the library
/// product's name, a command no one could run; and it had no `--version`.
@Suite("kvcache-cli name and version")
struct CommandNameTests {
    /// Runs the built CLI with `arguments`; its exit status and standard output.
    private func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let (status, text) = try runCLI(arguments, reading: .output)
        return (status, text)
    }

    /// `--version` prints the one version of the package, the C ABI's that libkvcache's
    /// `kvc_abi_version` returns, and nothing else.
    @Test func versionPrintsTheABIVersion() throws {
        let (status, output) = try run(["--version"])
        #expect(status == 0)
        #expect(output == "\(kvcacheABIVersion)\n", "\(output)")
    }

    /// The root's and a subcommand's usage lines name the binary.
    @Test(arguments: [([], "USAGE: kvcache-cli <subcommand>"), (["load"], "USAGE: kvcache-cli load ")])
    func helpNamesTheBinary(subcommand: [String], usage: String) throws {
        let (status, output) = try run(subcommand + ["--help"])
        #expect(status == 0)
        #expect(output.contains(usage), "\(output)")
        #expect(!output.contains("kvcache \(subcommand.first ?? "<subcommand>")"), "\(output)")
    }

    /// The root's help says what each exit status means (it said nothing).
    @Test func helpStatesTheExitStatuses() throws {
        let (status, output) = try run(["--help"])
        #expect(status == 0)
        let text = output.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        for phrase in ["64 for a wrong flag or value", "1 for a runtime or input error", "SIGINT (130)", "SIGTERM (143)"] {
            #expect(text.contains(phrase), "\(output)")
        }
    }
}
