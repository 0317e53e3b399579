import ArgumentParser

/// The `kvcache` command line tool: load tests, trace replay through a simulated cluster,
/// eviction evaluation and I/O benchmarks of the engine, each a subcommand.
@main
struct KVCacheCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kvcache",
        abstract: "Load-test and evaluate the KVCacheEngine KV-cache manager.",
        subcommands: [LoadCommand.self, ReplayCommand.self, EvictEvalCommand.self, IOBenchCommand.self, SpillChildCommand.self],
        defaultSubcommand: LoadCommand.self
    )
}
