import ArgumentParser
import KVCache

/// The `kvcache-cli` command line tool: load tests, trace replay through a simulated cluster,
/// eviction evaluation and I/O benchmarks of the engine, each a subcommand. Its name in usage
/// and help is the binary's, the product `kvcache-cli` (the library product holds `kvcache`);
/// `--version` prints `kvcacheABIVersion`, the version libkvcache built from the same sources
/// reports.
@main
struct KVCacheCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kvcache-cli",
        abstract: "Load-test and evaluate the KVCacheEngine KV-cache manager.",
        discussion: """
            Exit status: 0 when the command did its work; 64 for a wrong flag or value \
            (unknown flag or subcommand, a value out of range, an engine configuration the \
            engine refuses); 1 for a runtime or input error (an unreadable or malformed \
            trace, a file that cannot be written, an I/O error, an engine that cannot be \
            created for another reason); 128 + the signal's number when SIGINT (130) or \
            SIGTERM (143) stopped it.
            """,
        version: String(kvcacheABIVersion),
        subcommands: [LoadCommand.self, ReplayCommand.self, EvictEvalCommand.self, IOBenchCommand.self, SpillChildCommand.self],
        defaultSubcommand: LoadCommand.self
    )

    /// Runs the command on the process's arguments, a negative number after an option joined
    /// to it (`negativeValuesJoined`); refuses (exit 64) arguments that are not UTF-8
    /// (`firstNonUTF8Argument`) and a first argument that is neither an option nor a
    /// subcommand (`unknownSubcommand`).
    static func main() {
        if let bad = firstNonUTF8Argument(CommandLine.unsafeArgv, count: Int(CommandLine.argc)) {
            exit(withError: ValidationError("argument \(bad) is not UTF-8: kvcache-cli reads paths and values as UTF-8 text"))
        }
        let arguments = Array(CommandLine.arguments.dropFirst())
        if let message = unknownSubcommand(arguments) { exit(withError: ValidationError(message)) }
        main(negativeValuesJoined(arguments))
    }

    /// The refusal of a first argument that is not an option (no leading `-`), a subcommand or
    /// `help`, naming the subcommands; nil otherwise. `load`, the default subcommand, takes no
    /// positional argument, so ArgumentParser read a mistyped subcommand (`replya`) as one of
    /// load's and printed "Unexpected argument" with load's usage. O(subcommands).
    static func unknownSubcommand(_ arguments: [String]) -> String? {
        guard let first = arguments.first, !first.hasPrefix("-") else { return nil }
        let subcommands = configuration.subcommands
        if first == "help" || subcommands.contains(where: { $0._commandName == first }) { return nil }
        let shown = subcommands.filter { $0.configuration.shouldDisplay }.map { $0._commandName }
        return "unknown subcommand '\(first)': the subcommands are \(shown.joined(separator: ", ")) "
            + "(load, the default, when the arguments start with an option)"
    }

    /// The position (from 1) of the first of `argv[1..<count]` that is not valid UTF-8, or nil.
    /// `CommandLine.arguments` repairs such bytes to U+FFFD, so a non-UTF-8 `--offload-dir`
    /// named, created and locked another directory than the one given (helper-117); the C ABI
    /// refuses such a path too. O(argument bytes).
    static func firstNonUTF8Argument(_ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>, count: Int) -> Int? {
        for i in 1..<max(count, 1) {
            guard let arg = argv[i] else { continue }
            if String(validatingCString: arg) == nil { return i }
        }
        return nil
    }

    /// `arguments` with every negative number (a `-` then a digit or a point: `-3`, `-0.5`,
    /// `-2GiB`) that follows a long option given as that option's value (`--seed -3` becomes
    /// `--seed=-3`). ArgumentParser reads an argument
    /// that starts with `-` as an option, so a negative value was reported as "Missing value
    /// for '--seed'"; joined, it meets the option's own check (an invalid value, or the
    /// option's range). An option already written `--name=value` is left as it is. O(arguments).
    static func negativeValuesJoined(_ arguments: [String]) -> [String] {
        var out: [String] = []
        out.reserveCapacity(arguments.count)
        for argument in arguments {
            if let last = out.last, last.hasPrefix("--"), !last.contains("="), last != "--",
               argument.first == "-", argument.dropFirst().first.map({ $0.isNumber || $0 == "." }) == true {
                out[out.count - 1] = last + "=" + argument
            } else {
                out.append(argument)
            }
        }
        return out
    }
}
