// swift-tools-version: 6.1
// KVCacheEngine: a KV-cache manager for LLM serving. Layout and dependency direction are in
// README.md: CKVMemory <- KVCache <- {KVRouter, KVSim, KVEval, KVCacheABI, kvcache}; KVRouter <-
// {KVSim, KVCacheABI, kvcache}; KVSim, KVEval <- kvcache; KVReport (plots, quantiles, number
// formatting, JSON strings; depends on nothing) <- {KVSim, KVEval, kvcache}; CKVMemory <-
// kvcache directly (io-bench).
import PackageDescription

let packageDir = Context.packageDirectory

// The targets whose code runs inside every engine and router call (kvc_seq_append,
// kvc_router_route, ...). Release: no runtime exclusivity checks (a `swift_beginAccess` call per
// access to a class's `var`; a fifth of a route's instructions); debug builds, and so the tests,
// keep them. KVCacheABI's exports hold no class `var` of their own (the state they reach is the
// engine's and the router's), so they gain nothing from it.
let hotPathSettings: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "KVCacheEngine",
    platforms: [.macOS(.v15)],
    products: [
        // libkvcache.so: the C ABI of include/kvcache.h, exporting only kvc_* symbols, and the
        // constructor that gives a C or Python host back the fatal-signal dispositions the
        // Swift runtime takes when it loads (KVCacheHostSignals; not in the CLI or the tests).
        .library(name: "kvcache", type: .dynamic, targets: ["KVCacheABI", "KVCacheHostSignals"]),
        .executable(name: "kvcache-cli", targets: ["kvcache"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .target(
            name: "CKVMemory",
            cSettings: [.unsafeFlags(["-O2", "-Wall", "-Wextra", "-Werror"]), .define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("numa"), .linkedLibrary("uring")]
        ),
        .target(
            name: "KVCache",
            dependencies: ["CKVMemory"],
            swiftSettings: hotPathSettings
        ),
        .target(
            name: "KVRouter",
            dependencies: ["KVCache"],
            swiftSettings: hotPathSettings
        ),
        // The report pieces the simulator, the evaluation and the CLI share: SVG plots,
        // nearest-rank quantiles, fixed-decimal numbers. No dependencies.
        .target(name: "KVReport"),
        .target(
            name: "KVSim",
            dependencies: ["KVCache", "KVRouter", "KVReport"]
        ),
        // Linked with the version script (exports and their version node) and -z nodelete: a
        // plugin host's dlclose leaves the library loaded, so its thread-specific-data keys
        // (kvc_last_error's, the Swift runtime's) are made once per process, not per dlopen
        // (1100 load/unload cycles used up the process's 1024 keys).
        .target(
            name: "KVCacheABI",
            dependencies: ["KVCache", "KVRouter"],
            linkerSettings: [.unsafeFlags(["-Xlinker", "--version-script=\(packageDir)/include/kvcache.map",
                                           "-Xlinker", "-z", "-Xlinker", "nodelete"])]
        ),
        // Only in the kvcache product: a load-time constructor, no symbol of its own exported
        // (include/kvcache.map), referencing the Swift runtime that KVCacheABI links.
        .target(
            name: "KVCacheHostSignals",
            publicHeadersPath: ".", // no headers: nothing calls it
            cSettings: [.unsafeFlags(["-O2", "-Wall", "-Wextra", "-Werror"])]
        ),
        .target(
            name: "KVEval",
            dependencies: ["KVCache", "KVReport"],
            // Optimised in debug builds too: its tests replay whole traces (minutes unoptimised).
            swiftSettings: [.unsafeFlags(["-O"])]
        ),
        .executableTarget(
            name: "kvcache",
            dependencies: [
                "KVCache",
                "KVEval",
                "KVReport",
                "CKVMemory",
                "KVRouter",
                "KVSim",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // Helpers several test targets share (smaps parsing, the io_uring probe, the CLI's
        // path, a test thread): test code only, in no product, so not linked into libkvcache
        // or the CLI.
        .target(name: "TestSupport", dependencies: ["CKVMemory"], path: "Tests/TestSupport"),
        .testTarget(name: "CKVMemoryTests", dependencies: ["CKVMemory", "TestSupport"]),
        .testTarget(name: "KVCacheTests", dependencies: ["KVCache", "TestSupport"]),
        .testTarget(name: "KVCacheABITests", dependencies: ["KVCacheABI", "KVCache", "TestSupport"]),
        .testTarget(name: "KVRouterTests", dependencies: ["KVRouter", "KVCache"]),
        .testTarget(name: "KVSimTests", dependencies: ["KVSim", "KVRouter", "KVCache", "KVReport"]),
        .testTarget(name: "KVEvalTests", dependencies: ["KVEval", "KVCache"]),
        .testTarget(name: "KVReportTests", dependencies: ["KVReport"]),
        // The command-line tool's own logic (option parsing, workloads, the load report);
        // SwiftPM links an executable target into its tests with its @main entry point renamed.
        .testTarget(name: "KVCacheCLITests", dependencies: ["kvcache", "KVCache", "KVEval", "KVReport", "TestSupport"]),
        .executableTarget(
            name: "KVCacheBenchmarks",
            // KVSim: its Mooncake trace reader, for the trace-replay benchmark.
            dependencies: ["KVCache", "KVSim", .product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/KVCacheBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "KVRouterBenchmarks",
            dependencies: ["KVRouter", "KVCache", .product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/KVRouterBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
