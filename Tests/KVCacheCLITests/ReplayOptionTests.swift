import KVRouter
import KVSim
import Testing
@testable import kvcache

/// `kvcache replay`'s options, parsed and validated as on the command line.
@Suite("kvcache replay options")
struct ReplayOptionTests {
    @Test(arguments: [
        (["--shared-tier-gbps", "10"], "--shared-tier-gbps needs --shared-tier-gb"),
        (["--shared-tier-gb", "0"], "--shared-tier-gb must be > 0 and at most 492581 "),
        (["--shared-tier-gb=-400"], "--shared-tier-gb must be > 0 and at most 492581 "),
        // Once accepted below 1e9, then refused by the tier's engine naming memory_bytes and
        // block_tokens, which the user never set: the true maximum is named.
        (["--shared-tier-gb", "1e6"],
         "--shared-tier-gb must be > 0 and at most 492581 (16777216 blocks of 29360128 B, the most one engine indexes)"),
        (["--shared-tier-gb", "400", "--shared-tier-gbps", "0"], "--shared-tier-gbps must be finite and at least 1e-06"),
        (["--shared-tier-gb", "400", "--shared-tier-gbps=-25"], "--shared-tier-gbps must be finite and at least 1e-06"),
        // A token's load time overflowed to infinity: refused only after the simulation.
        (["--shared-tier-gb", "400", "--shared-tier-gbps", "1e-310"], "--shared-tier-gbps must be finite and at least 1e-06"),
    ] as [([String], String)])
    func aBadSharedTierOptionIsNamed(arguments: [String], message: String) {
        let text = optionError(ReplayCommand.self, arguments)
        #expect(text?.hasPrefix(message) == true, "got \(text ?? "no error")")
    }

    /// Values that once trapped (a rate scale past the progress line's integers, an empty
    /// policy list that replayed nothing, a synthetic request count asking for 34 GB) are
    /// refused by name.
    @Test(arguments: [
        (["--rate-scale", "inf"], "--rate-scale must be in 0.000001...1000000"),
        (["--rate-scale", "1e308"], "--rate-scale must be in 0.000001...1000000"),
        (["--rate-scale", "0"], "--rate-scale must be in 0.000001...1000000"),
        (["--policies", ""], "--policies names no policy"),
        (["--policies", ","], "--policies names no policy"),
        (["--synthetic", "--requests", "4294967297"], "--synthetic generates every request up front: --requests 4294967297 is more than 1048576"),
        // Once refused only when the run built its router (exit 1, "invalidArgument: ..."):
        (["--key-blocks", "0"], "--key-blocks: key_blocks 0 is outside 1...64"),
        // Once trapped in the simulator's admission (hit + loaded + budget overflowed).
        (["--token-budget", "9223372036854775807"], "--token-budget must be in 1...2147483647"),
        // Once 'unknown policy "all"' by a message listing all as accepted.
        (["--policies", "all,dualmap"], "--policies all names every policy and stands alone: \"all,dualmap\" lists it with others"),
        (["--policies", "dualmap,foo"],
         "unknown policy \"foo\"; --policies takes dualmap, round-robin, least-loaded, consistent-hash, prefix-tree, overlap-cost, llm-d or all"),
        // Once accepted: an infinite SLO failed when the run built its router (exit 1), a
        // repeated policy ran twice, an empty entry was dropped.
        (["--ttft-slo-ms", "inf"], "--ttft-slo-ms must be in (0, 1e12]"),
        (["--ttft-slo-ms", "0"], "--ttft-slo-ms must be in (0, 1e12]"),
        // Twice it (the plots' axes) overflowed to infinity: NaN coordinates in the SVG.
        (["--ttft-slo-ms", "1e308"], "--ttft-slo-ms must be in (0, 1e12]"),
        (["--policies", "dualmap,dualmap"], "--policies names dualmap twice"),
        (["--policies", "llm-d,dualmap,llm-d"], "--policies names llm-d twice"),
        (["--policies", "dualmap,"], "--policies \"dualmap,\" has an empty entry"),
        (["--policies", "dualmap,,llm-d"], "--policies \"dualmap,,llm-d\" has an empty entry"),
    ] as [([String], String)])
    func aValueOutsideWhatTheReplayCanRunIsNamed(arguments: [String], message: String) {
        let text = optionError(ReplayCommand.self, arguments)
        #expect(text?.hasPrefix(message) == true, "got \(text ?? "no error")")
    }

    /// Distinct policies in their order are accepted; `all` is every policy once.
    @Test func aListOfDistinctPoliciesIsAccepted() throws {
        #expect(try ReplayCommand.parse(["--policies", "llm-d,dualmap"]).policyList() == [.llmD, .dualMap])
        #expect(try ReplayCommand.parse(["--policies", "all"]).policyList() == PolicyKind.allCases)
    }

    /// The help's JSON key list names every key the JSON has, and says which requests the
    /// TTFT percentiles cover: not rejected ones, aborted ones.
    @Test func theHelpNamesEveryJSONKeyAndWhatThePercentilesCover() {
        let help = ReplayCommand.configuration.discussion
        for key in ["skipped_lines", "preemptions, rejected, aborted, length_capped, events_dropped", "effective_capacity"] {
            #expect(help.contains(key), "\(key)")
        }
        #expect(help.contains("a rejected request has no TTFT and is not in them"))
        #expect(help.contains("is aborted instead, its output cut short: its TTFT counts as served, in the percentiles and the attainment"))
    }

    /// `--requests 0` would replay nothing: refused by name (a file without requests is
    /// `Trace.read`'s "holds no requests"); one request is fine.
    @Test func zeroRequestsAreRefused() throws {
        let text = optionError(ReplayCommand.self, ["--requests", "0"])
        #expect(text?.hasPrefix("--requests must be at least 1") == true, "got \(text ?? "no error")")
        #expect(try ReplayCommand.parse(["--requests", "1"]).requests == 1)
    }

    /// Options that only one mode or policy reads are refused where nothing would read them
    /// (they were silently ignored), and accepted where something does.
    @Test(arguments: [
        (["--synthetic", "--trace", "t.jsonl"], "--synthetic replays generated sessions: --trace names a trace instead; give one of them"),
        (["--synthetic", "--lenient"], "--lenient applies to a trace's lines; --synthetic reads none"),
        (["--seed", "3"], "--seed applies to --synthetic; a trace is replayed as it is"),
        (["--policies", "round-robin,llm-d", "--key-blocks", "3"], "--key-blocks applies to dualmap and consistent-hash; --policies names neither"),
        (["--policies", "dualmap", "--overlap-weight", "2"], "--overlap-weight applies to overlap-cost; --policies does not name it"),
        (["--policies", "overlap-cost,llm-d", "--no-rebalance"], "--no-rebalance applies to dualmap; --policies does not name it"),
    ] as [([String], String)])
    func anOptionNothingReadsIsRefused(arguments: [String], message: String) throws {
        let text = optionError(ReplayCommand.self, arguments)
        #expect(text?.hasPrefix(message) == true, "got \(text ?? "no error")")
        for accepted in [["--synthetic", "--seed", "3"], ["--policies", "consistent-hash", "--key-blocks", "3"],
                         ["--policies", "overlap-cost,dualmap", "--overlap-weight", "0.5"], ["--key-blocks", "3", "--overlap-weight", "0"],
                         ["--policies", "dualmap,round-robin", "--no-rebalance"]] {
            #expect(optionError(ReplayCommand.self, accepted) == nil, "\(accepted)")
        }
    }

    /// `--no-rebalance` turns DualMap's hotspot rebalancing off in the simulated router (on
    /// by default), so the replay measures DualMap as a router through the C ABI runs it.
    @Test func noRebalanceTurnsTheRoutersRebalancingOff() throws {
        #expect(try ReplayCommand.parse([]).simulationConfig(blockTokens: 512).router.rebalance == true)
        #expect(try ReplayCommand.parse(["--no-rebalance"]).simulationConfig(blockTokens: 512).router.rebalance == false)
    }

    /// `--seed` reaches the synthetic generator: another seed, other sessions.
    @Test func theSeedChoosesTheSyntheticSessions() throws {
        let seeded = try ReplayCommand.parse(["--synthetic", "--seed", "3", "--requests", "40"]).requestTrace()
        let plain = try ReplayCommand.parse(["--synthetic", "--requests", "40"]).requestTrace()
        #expect(seeded.source == "synthetic sessions (seed 3)" && plain.source == "synthetic sessions (seed 1)")
        #expect((1...40).contains(seeded.count) && (1...40).contains(plain.count), "--requests caps both")
        #expect(seeded.arrivalMilliseconds != plain.arrivalMilliseconds && seeded.hashes != plain.hashes)
    }

    /// `--arrivals` is spread by default, or recorded; anything else is refused by name.
    @Test func theArrivalsOptionChoosesHowBucketsArrive() throws {
        #expect(try ReplayCommand.parse([]).arrivalMode() == .spread)
        #expect(try ReplayCommand.parse(["--arrivals", "recorded"]).arrivalMode() == .recorded)
        #expect(try ReplayCommand.parse(["--synthetic", "--requests", "40"]).requestTrace().arrivals == .spread)
        let recorded = try ReplayCommand.parse(["--synthetic", "--requests", "40", "--arrivals", "recorded"]).requestTrace()
        #expect(recorded.arrivals == .recorded)
        let text = optionError(ReplayCommand.self, ["--arrivals", "burst"])
        #expect(text?.hasPrefix("--arrivals must be spread or recorded, not \"burst\"") == true, "got \(text ?? "no error")")
    }

    /// No option: no tier. `--shared-tier-gb` alone: that capacity at the default 25 GB/s.
    @Test func theTierOptionsBecomeTheSimulationsTier() throws {
        #expect(try ReplayCommand.parse([]).sharedTier() == nil)
        let tier = try ReplayCommand.parse(["--shared-tier-gb", "400"]).sharedTier()
        #expect(tier?.capacityBytes == 400_000_000_000 && tier?.loadGigabytesPerSecond == 25)
        let slow = try ReplayCommand.parse(["--shared-tier-gb", "1.5", "--shared-tier-gbps", "3.2"]).sharedTier()
        #expect(slow?.capacityBytes == 1_500_000_000 && slow?.loadGigabytesPerSecond == 3.2)
    }
}

/// The step budget, batch size and warm-up reach the simulation from the command line.
@Suite("kvcache replay scheduler options")
struct ReplaySchedulerOptionTests {
    /// `--token-budget` and `--max-batch` set the instances' step budget and batch; without
    /// them, vLLM's A100 defaults (2048 / 256).
    @Test func theBudgetAndBatchOptionsReachTheConfig() throws {
        let plain = try ReplayCommand.parse([]).simulationConfig(blockTokens: 512)
        #expect(plain.tokenBudget == 2048 && plain.maxBatch == 256)
        let set = try ReplayCommand.parse(["--token-budget", "8192", "--max-batch", "1024"]).simulationConfig(blockTokens: 512)
        #expect(set.tokenBudget == 8192 && set.maxBatch == 1024)
    }

    /// `--warmup` (default 300 s for a whole trace, 0 for a slice or synthetic sessions) and `--ring-seed` (default none: the fixed seeds) reach the
    /// simulation; a ring seed with no ring policy is refused, as `--key-blocks` is.
    @Test func theWarmUpAndRingSeedReachTheConfig() throws {
        let plain = try ReplayCommand.parse([]).simulationConfig(blockTokens: 512)
        #expect(plain.warmupSeconds == 300 && plain.router.ringSeed == 0)
        let set = try ReplayCommand.parse(["--warmup", "0", "--ring-seed", "5"]).simulationConfig(blockTokens: 512)
        #expect(set.warmupSeconds == 0 && set.router.ringSeed == 5)
        // A slice or synthetic sessions: no warm-up unless asked (300 s would leave a short run unmeasured).
        #expect(try ReplayCommand.parse(["--requests", "300"]).simulationConfig(blockTokens: 512).warmupSeconds == 0)
        #expect(try ReplayCommand.parse(["--synthetic"]).simulationConfig(blockTokens: 512).warmupSeconds == 0)
        #expect(try ReplayCommand.parse(["--requests", "300", "--warmup", "20"]).simulationConfig(blockTokens: 512).warmupSeconds == 20)
    }

    @Test(arguments: [
        (["--token-budget", "0"], "--token-budget must be in 1...2147483647"),
        (["--max-batch", "0"], "--max-batch must be at least 1"),
        (["--warmup=-1"], "--warmup must be a finite number of seconds >= 0"),
        (["--warmup", "inf"], "--warmup must be a finite number of seconds >= 0"),
        (["--policies", "llm-d", "--ring-seed", "2"], "--ring-seed applies to dualmap and consistent-hash; --policies names neither"),
    ] as [([String], String)])
    func aBudgetOrBatchAdmittingNothingIsRefused(arguments: [String], message: String) {
        let text = optionError(ReplayCommand.self, arguments)
        #expect(text?.hasPrefix(message) == true, "got \(text ?? "no error")")
    }
}
