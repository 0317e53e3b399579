import KVCache
import Testing
@testable import kvcache

/// `kvcache load`'s options, parsed and validated as on the command line: a bad option stops
/// the command with a message naming it.
@Suite("kvcache load options")
struct LoadOptionTests {
    /// The message ArgumentParser prints for `arguments`, or nil when they are accepted.
    static func error(_ arguments: [String]) -> String? { optionError(LoadCommand.self, arguments) }

    @Test(arguments: [
        (["--threads", "0"], "--threads 0 is outside 1...256"),
        (["--batch", "0"], "--batch must be at least 1"),
        (["--threads", "4", "--batch", "100"], "--threads 4 x --batch 100 exceeds --max-seqs 256"),
        (["--threads", "1", "--batch", "9223372036854775807"], "--threads 1 x --batch 9223372036854775807 exceeds --max-seqs 256"),  // trapped
        (["--requests=-1"], "--requests must be at least 1"),
        (["--requests", "0"], "--requests must be at least 1"),  // ran nothing and exited 0
        (["--duration", "0"], "--duration must be positive and at most 604800 s (a week)"),
        (["--duration", "inf"], "--duration must be positive and at most 604800 s (a week)"),  // trapped
        (["--duration", "1e308"], "--duration must be positive and at most 604800 s (a week)"),
        (["--rate=-2"], "--rate must be 0 or in 0.001...10000000 requests/s"),
        (["--rate", "1e-300"], "--rate must be 0 or in 0.001...10000000 requests/s"),
        (["--rate", "inf"], "--rate must be 0 or in 0.001...10000000 requests/s"),
        (["--rate", "10", "--requests", "16777217"], "with --rate every request's arrival time is drawn up front: at most 16777216 requests "
         + "(--requests, or 2 x --rate x --duration + 1000), not 16777217"),  // asked for 128 GiB and trapped past 2^32
        (["--rate", "1000", "--duration", "10000"], "with --rate every request's arrival time is drawn up front: at most 16777216 requests "
         + "(--requests, or 2 x --rate x --duration + 1000), not 20001000"),
        (["--trace", "t.jsonl", "--trace-speed", "1e-300"], "--trace-speed must be 0 or in 0.001...1000000"),
        (["--trace", "t.jsonl", "--rate", "5"],
         "--rate applies to the synthetic workload; a trace arrives at its timestamps with --trace-speed"),
        (["--trace-speed", "2"], "--trace-speed needs --trace"),
        (["--shared-prefix-ratio", "1.5"], "--shared-prefix-ratio must be in 0...1"),
        (["--shared-prompts", "0"], "--shared-prompts 0 is outside 1...1048576"),
        (["--shared-prompts", "4294967297"], "--shared-prompts 4294967297 is outside 1...1048576"),  // trapped
        (["--max-retries=-1"], "--max-retries must not be negative"),
        (["--compare-offload"], "--compare-offload needs --offload-dir"),
        (["--offload-dir", ""], "--offload-dir must name a directory"),  // said "offload_writeback needs a disk tier"
        (["--offload-dir", "/tmp/tier", "--offload-bytes", "0"], "--offload-bytes must be more than 0 (it sizes the disk tier)"),
        (["--draft-tokens=-1"], "--draft-tokens -1 is outside 0...1024"),
        (["--draft-tokens", "2000"], "--draft-tokens 2000 is outside 0...1024"),
        (["--draft-tokens", "2", "--draft-acceptance", "1.5"], "--draft-acceptance must be in 0...1"),
        (["--draft-acceptance", "0.5"], "--draft-acceptance applies with --draft-tokens (at least 1)"),
        (["--prefill-tokens-per-s=-1"], "--prefill-tokens-per-s must be 0 (no prefill) or a finite number of tokens per second, at least 1"),
        (["--prefill-tokens-per-s", "inf"], "--prefill-tokens-per-s must be 0 (no prefill) or a finite number of tokens per second, at least 1"),
        (["--prefill-tokens-per-s", "1e-8"], "--prefill-tokens-per-s must be 0 (no prefill) or a finite number of tokens per second, at least 1"),  // slept 1e19 ns: trapped converting to UInt64
        (["--prefill-tokens-per-s", "nan"], "--prefill-tokens-per-s must be 0 (no prefill) or a finite number of tokens per second, at least 1"),
        (["--read-every-disk-hit"], "--read-every-disk-hit needs --prefill-tokens-per-s (without it the engine reads every disk hit anyway)"),
        (["--max-seq-tokens", "4096", "--max-prompt-tokens", "5000"],
         "--max-prompt-tokens 5000 is outside 1...4096 (--max-seq-tokens)"),
        (["--prompt-dist", "uniform", "--prompt-mean", "100", "--prompt-max", "300"],
         "--prompt-mean/--prompt-max: a uniform distribution with mean 100 and max 300 would need lengths below 1; lower max to at most 199"),
        (["--output-mean", "300"], "--output-mean/--output-max: need 1 <= mean (300) <= max (256)"),
        (["--trace", "t.jsonl", "--output-max", "0"], "--output-max must be at least 1"),
        // The engine's own checks, through EngineOptions.
        (["--page-bytes", "3000"], "--page-bytes 3000 is not a power of two from 4096 to 2097152"),
        (["--layers", "0"], "--layers 0 is outside 1...1024"),
        (["--event-capacity", "0"], "--event-capacity 0 is outside 1...16777216"),
        // Values ArgumentParser cannot convert: it names the value and the option.
        (["--memory", "12XB"], "The value '12XB' is invalid for '--memory <memory>'"),
        (["--prompt-dist", "gaussian"], "The value 'gaussian' is invalid for '--prompt-dist <prompt-dist>'"),
        (["--layout", "ring"], "The value 'ring' is invalid for '--layout <layout>'"),
    ] as [([String], String)])
    func aBadOptionIsNamed(arguments: [String], message: String) {
        let text = Self.error(arguments)
        #expect(text?.hasPrefix(message) == true, "got \(text ?? "no error")")
    }

    /// A trace brings its own lengths: the synthetic length options are not checked with it,
    /// so `--output-max` alone caps a trace's outputs (it used to fail against the unused
    /// default `--output-mean` 64), and `--max-prompt-tokens` caps its prompts.
    @Test func aTraceRunTakesOutputMaxAlone() {
        #expect(Self.error(["--trace", "t.jsonl", "--output-max", "8"]) == nil)
        #expect(Self.error(["--trace", "t.jsonl", "--output-max", "8", "--max-prompt-tokens", "100"]) == nil)
        #expect(Self.error(["--output-max", "8"])?.hasPrefix("--output-mean/--output-max: need 1 <= mean (64) <= max (8)") == true)
    }

    /// The synthetic workload's options are refused with `--trace`, as `--rate` is, naming the
    /// option: they were ignored, even invalid values (`--prompt-mean 0 --trace ...` ran and
    /// exited 0). Alone (no trace) they are what they were.
    @Test(arguments: [["--prompt-dist", "fixed"], ["--prompt-mean", "0"], ["--prompt-mean", "5000"], ["--prompt-max", "100"],
                      ["--output-dist", "fixed"], ["--output-mean", "10"], ["--shared-prefix-ratio", "0.2"],
                      ["--shared-prompts", "3"], ["--seed", "9"]])
    func aSyntheticOptionIsRefusedWithATrace(option: [String]) throws {
        let message = "\(option[0]) applies to the synthetic workload; a trace brings its own lengths and prefixes "
            + "(--max-prompt-tokens and --output-max cap them)"
        #expect(Self.error(["--trace", "t.jsonl"] + option) == message, "\(option)")
        #expect(Self.error(option + ["--trace", "t.jsonl", "--output-max", "8"]) == message, "\(option), in any order")
        if option != ["--prompt-mean", "0"] && option != ["--prompt-mean", "5000"] && option != ["--prompt-max", "100"] {
            #expect(Self.error(option) == nil, "\(option) without a trace")
        }
    }

    /// The synthetic defaults stand when the options are not given.
    @Test func theSyntheticDefaultsStand() throws {
        let runner = try LoadCommand.parse(["--requests", "100"]).loadRunner()
        let synthetic = try #require(runner.workload as? SyntheticWorkload)
        #expect(synthetic.prompt.shape == .lognormal && synthetic.prompt.mean == 512 && synthetic.prompt.max == 2048)
        #expect(synthetic.output.shape == .lognormal && synthetic.output.mean == 64 && synthetic.output.max == 256)
        #expect(synthetic.sharedPrefixRatio == 0.5 && synthetic.sharedPrompts == 8 && synthetic.seed == 42)
    }

    @Test func defaultsAreTheEnginesExceptTheMemory() throws {
        #expect(Self.error([]) == nil)
        let command = try LoadCommand.parse([])
        var expected = EngineConfig()
        expected.memoryBytes = 2 << 30
        #expect(command.engine.config == expected)
    }

    /// The modelled prefill's speed is what the engine is told (prefill_tokens_per_s), so that
    /// it chooses between reading a prefix and leaving it to the prefill; not with
    /// --read-every-disk-hit, nor without a modelled prefill.
    @Test func theModelledPrefillSpeedIsTheEnginesUnlessEveryDiskHitIsRead() throws {
        let told = try LoadCommand.parse(["--prefill-tokens-per-s", "25000", "--requests", "1"]).loadRunner()
        #expect(told.config.prefillTokensPerSecond == 25000 && told.settings.prefillTokensPerSecond == 25000)
        let untold = try LoadCommand.parse(["--prefill-tokens-per-s", "25000", "--read-every-disk-hit", "--requests", "1"]).loadRunner()
        #expect(untold.config.prefillTokensPerSecond == 0 && untold.settings.prefillTokensPerSecond == 25000)
        #expect(try LoadCommand.parse(["--requests", "1"]).loadRunner().config.prefillTokensPerSecond == 0)
    }

    @Test func engineOptionsBecomeTheConfig() throws {
        let command = try LoadCommand.parse(
            ["--layout", "contiguous", "--memory", "512MiB", "--page-bytes", "2MiB", "--block-tokens", "32", "--layers", "4",
             "--kv-heads", "2", "--head-dim", "64", "--dtype-bytes", "1", "--max-seqs", "8", "--max-seq-tokens", "8192",
             "--threads", "2", "--batch", "4", "--offload-dir", "/tmp/tier", "--offload-bytes", "1GiB", "--index-on-schedule",
             "--offload-queue-depth", "256", "--no-offload-writeback"])
        let config = command.engine.config
        #expect(config.indexOnSchedule && !config.offloadWriteback)
        #expect(config.offloadQueueDepth == 256)
        #expect(Self.error(["--offload-dir", "/tmp/tier", "--offload-queue-depth", "31"])?
            .contains("--offload-queue-depth 31 is outside 32...1024") == true)
        #expect(config.layout == .contiguous && config.memoryBytes == 512 << 20 && config.pageBytes == 2 << 20)
        #expect(config.blockTokens == 32 && config.numLayers == 4 && config.numKVHeads == 2 && config.headDim == 64)
        #expect(config.dtypeBytes == 1 && config.maxSeqs == 8 && config.maxSeqTokens == 8192)
        #expect(config.offloadDir == "/tmp/tier" && config.offloadBytes == 1 << 30 && config.hasDiskTier)
        let tierDefaults = try LoadCommand.parse(["--offload-dir", "/tmp/tier"]).engine.config
        #expect(tierDefaults.offloadBytes == EngineOptions.defaultOffloadBytes && tierDefaults.offloadQueueDepth == EngineConfig().offloadQueueDepth)
        // The writeback thread is on with a tier unless refused, and off without one.
        #expect(tierDefaults.offloadWriteback)
        #expect(try LoadCommand.parse(["--offload-dir", "/tmp/tier", "--offload-writeback"]).engine.config.offloadWriteback)
        #expect(try !LoadCommand.parse([]).engine.config.offloadWriteback)
        #expect(try LoadCommand.parse(["--event-capacity", "524288"]).engine.config.eventCapacity == 524288)
        #expect(try LoadCommand.parse([]).engine.config.eventCapacity == 65536)
    }

    /// A negative number after an option is that option's value (`KVCacheCommand.main` joins
    /// it), so it meets the option's own check instead of "Missing value"; flags, short
    /// options, `--name=value` and what follows `--` are left alone.
    @Test func aNegativeNumberAfterAnOptionIsItsValue() {
        let joined = KVCacheCommand.negativeValuesJoined(
            ["load", "--seed", "-3", "--memory", "-2GiB", "--rate", "-.5", "--json", "-h", "--rate=-2", "--", "-4"])
        #expect(joined == ["load", "--seed=-3", "--memory=-2GiB", "--rate=-.5", "--json", "-h", "--rate=-2", "--", "-4"])
        #expect(Self.error(KVCacheCommand.negativeValuesJoined(["--requests", "-1"])) == "--requests must be at least 1")
        #expect(Self.error(["--requests", "-1"])?.contains("Missing value") == true, "what ArgumentParser alone says")
    }

    @Test func tierOptionsWithoutATierAreRefused() {
        #expect(Self.error(["--offload-bytes", "1GiB"]) == "--offload-bytes needs --offload-dir (it sizes the disk tier)")
        #expect(Self.error(["--offload-queue-depth", "64"])
                    == "--offload-queue-depth needs --offload-dir (it sets the disk tier's staging buffers)")
        #expect(Self.error(["--model-tag", "7"]) == "--model-tag needs --offload-dir (it names the model of the disk tier's blocks)")
        #expect(Self.error(["--offload-writeback"]) == "--offload-writeback needs --offload-dir (it chooses how the disk tier is written)")
        #expect(Self.error(["--no-offload-writeback"]) == "--no-offload-writeback needs --offload-dir (it chooses how the disk tier is written)")
    }

    @Test func peerOffloadDirsReachTheConfigAndNeedAnOwnTier() throws {
        let config = try LoadCommand.parse(["--offload-dir", "/tmp/own", "--model-tag", "1", "--peer-offload-dir", "/tmp/p1",
                                            "--peer-offload-dir", "/tmp/p2"]).engine.config
        #expect(config.peerOffloadDirs == ["/tmp/p1", "/tmp/p2"])
        #expect(try LoadCommand.parse([]).engine.config.peerOffloadDirs.isEmpty)
        #expect(Self.error(["--peer-offload-dir", "/tmp/p1"])?.contains("--peer-offload-dir needs a disk tier of this engine's own") == true)
        #expect(Self.error(["--offload-dir", "/tmp/own", "--peer-offload-dir", "/tmp/p1"])?
            .contains("--peer-offload-dir needs a --model-tag other than 0") == true)
    }

    @Test func modelTagReachesTheConfig() throws {
        #expect(try LoadCommand.parse(["--offload-dir", "/tmp/own", "--model-tag", "161"]).engine.config.modelTag == 161)
        #expect(try LoadCommand.parse([]).engine.config.modelTag == 0)
    }

    /// What `loadRunner()` hands to the run: the synthetic default of 2000 requests, prompts
    /// capped at half of --max-seq-tokens unless --max-prompt-tokens says otherwise.
    @Test func theRunnerCarriesTheOptions() throws {
        let runner = try LoadCommand.parse(["--max-seq-tokens", "1000", "--threads", "3", "--batch", "5", "--max-retries", "7",
                                            "--write-kv", "--prompt-mean", "2000", "--prompt-max", "4000",
                                            "--prompt-dist", "fixed"]).loadRunner()
        #expect(runner.workload.requestCount == 2000 && runner.workload.kind == "synthetic")
        #expect(runner.threads == 3 && runner.settings.batch == 5 && runner.settings.maxRetries == 7 && runner.settings.writeKV)
        #expect(runner.durationSeconds == nil && !runner.reserve)
        #expect(runner.settings.speculation == nil, "no drafts unless asked")
        let drafting = try LoadCommand.parse(["--draft-tokens", "5", "--draft-acceptance", "0.25"]).loadRunner()
        #expect(drafting.settings.speculation?.draftTokens == 5 && drafting.settings.speculation?.acceptance == 0.25)
        let defaultAcceptance = try LoadCommand.parse(["--draft-tokens", "5"]).loadRunner()
        #expect(defaultAcceptance.settings.speculation?.acceptance == LoadCommand.defaultDraftAcceptance)
        #expect(runner.workload.request(0).promptTokens == 500, "half of --max-seq-tokens")
        let capped = try LoadCommand.parse(["--max-seq-tokens", "1000", "--max-prompt-tokens", "900", "--prompt-mean", "2000",
                                            "--prompt-max", "4000", "--prompt-dist", "fixed", "--duration", "3"]).loadRunner()
        #expect(capped.workload.request(0).promptTokens == 900)
        #expect(capped.durationSeconds == 3 && capped.workload.summary.hasPrefix("synthetic, 3.0 s, closed loop"))
    }
}
