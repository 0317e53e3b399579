import ArgumentParser
import Foundation
import KVCache
#if canImport(Glibc)
import Glibc
#endif

/// `kvcache load`: load-tests an in-process engine with several threads, on a synthetic
/// workload or a trace file (Mooncake or Azure), and reports latency, prefix hits and memory.
struct LoadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Load-test the engine in-process with several threads.",
        discussion: """
        Each request runs createSequence(prompt), then appends its output tokens one at a time \
        (decode), then free (a trace line whose output_length is 0 is created and freed). Every thread is a small continuous-batching server: it keeps up to \
        --batch live sequences and appends one token to each per decode step. When the engine is \
        out of memory, a create waits in the thread's queue until one of its sequences finishes, \
        and an append preempts its sequence (freed, request restarted later: created again from \
        its prompt, its output decoded from the start); after --max-retries \
        such failures (with a disk tier, a failed read of its cached prefix counts as one) a \
        request is rejected (rejected_out_of_memory). A request whose prompt and output together need more \
        than the whole budget holds (its blocks; contiguous: also its pages) is rejected before \
        its create as unfittable, decided from the configuration, not from what else is live.

        Workload: synthetic by default. Lengths: lognormal (sigma 1, clamped to 1...max, mean \
        before clamping), uniform on (2*mean-max)...max, or fixed. With --shared-prefix-ratio r, \
        the first round(r * prompt) tokens of each prompt are the start of one of \
        --shared-prompts shared texts (picked with Zipf weights 1/(k+1)); the rest is unique. \
        --rate 0 is a closed loop (every request available at once); otherwise Poisson arrivals. \
        With --trace FILE, requests come from a trace, read as kvcache-cli replay reads it: Mooncake \
        JSONL, or an Azure LLM inference CSV (.csv). Prompt tokens are synthesized per \
        512-token block from the trace's chained block ids, so equal prefixes give equal blocks. \
        The synthetic workload's options (--rate, --prompt-*, --output-dist, --output-mean, \
        --shared-*, --seed) are refused with --trace; --max-prompt-tokens and --output-max cap \
        a trace's lengths.

        This test runs no model, so a prompt costs only the engine's calls unless \
        --prefill-tokens-per-s R models its prefill: a thread starting a request sleeps (prompt \
        tokens past the cached prefix) / R seconds, as its GPU would compute them while its other \
        sequences wait, and the table's ttft row times the request from its create call to \
        that prefill's end, once per request (a restart after preemption is not timed again). Other latencies are of successful engine calls only, timed around \
        the call (they include ~20-30 ns of clock reads). ops/s is count / wall time, all threads together.

        The report's tokens and prefix hit rate describe the workload: prompt tokens of each \
        request's first admission (its first successful create), its output tokens once, and the \
        prompt tokens those first creates found cached (their return values). A restart's work is \
        reported apart ("restarts", JSON restarts): its creates, their prompt tokens found cached \
        (usually its own blocks from before) and recomputed, and output tokens decoded again. \
        Counting every create made an Azure trace with no shared block show a 99 % hit rate.

        Peak committed bytes are sampled every 50 ms; peak RSS is VmHWM, reset as each run \
        starts (so --compare-offload's second run reports its own). RSS counts only the \
        pages the process touched: the paged layout faults in the pages it commits, while the \
        contiguous layout commits pages (fallocate) that count only once K/V are written there \
        (--write-kv), so its RSS stays far below its committed bytes; compare layouts by committed \
        bytes. The same samples \
        (committed bytes, RSS, K/V bytes of live and of cached blocks) are plotted over the run to \
        --plots/memory.svg.

        --json prints one object with these stable keys: workload ("synthetic"|"trace"), \
        workload_summary, layout, threads, batch_per_thread, write_kv, elapsed_s, \
        requests {requested (with --requests), trace_requests (with --trace: the requests read, \
        fewer than requested when the trace is shorter), offered, completed, rejected_out_of_memory, rejected_unfittable, rejected_other, create_retries, \
        preemptions, freed_at_stop (sequences live when the run was interrupted, freed then: \
        their frees are timed with the others), per_s}, prompt_tokens, decoded_tokens, restarts {admissions, prompt_tokens, hit_tokens, \
        recomputed_prompt_tokens, disk_hit_tokens and peer_hit_tokens (with --offload-dir: of \
        hit_tokens, read from the own tier and from peers), redecoded_tokens}, operations {create|append|free \
        (and truncate with --draft-tokens, ttft with --prefill-tokens-per-s): {count, ops_per_s, mean_us, p50_us, p99_us, p999_us, \
        max_us}}, speculation {draft_tokens, acceptance, steps, rejected_draft_tokens, \
        kept_per_step} (absent without --draft-tokens), prefix {query_tokens, \
        hit_tokens, hit_rate}, memory {budget_bytes, committed_peak_bytes, committed_end_bytes, \
        rss_start_bytes, rss_peak_bytes, rss_end_bytes, blocks_evicted, mappings, page_bytes, huge_pages, \
        reserved_bytes, reserve_s}, \
        offload {dir, backend, capacity_bytes, recovered_blocks, journal_records_dropped, bytes_written, bytes_read, \
        write_mib_per_s, read_mib_per_s, blocks_spilled, blocks_written_ahead, spills_skipped, blocks_loaded, swap_outs, swap_outs_cancelled, \
        swap_outs_failed, disk_hit_tokens, disk_hit_rate, declined_hit_tokens, \
        peer_hits, peer_stale, peer_hit_tokens, peer_hit_rate, reload_failures, ready_waits, ready_wait_total_ms, ready_wait_mean_us, ready_wait_max_us} \
        (absent without --offload-dir; disk_hit_tokens and peer_hit_tokens are the first \
        admissions' prompt tokens read from the own tier and from peers, per create, and \
        disk_hit_rate and peer_hit_rate their shares of prompt_tokens, the denominator of \
        prefix.hit_rate (until 2026-11-24 every create's, restarts included); peer_hits, \
        peer_stale and declined_hit_tokens are the engine's counts over every create), first_error \
        (absent when none), and interrupted (true \
        when SIGINT or SIGTERM stopped the run: the report covers what completed before it, \
        requests.offered the requests taken; the command then exits with 128 + the signal, \
        130 for SIGINT; a second signal ends it at once).

        Speculative decoding: with --draft-tokens K, a decode step of a sequence appends the \
        sampled token plus K drafts in one call (the slots a verification pass writes), then \
        truncates away the drafts the target model rejected (kvc_seq_truncate): each draft is \
        accepted with probability --draft-acceptance until the first rejection, so a step keeps \
        1 + accepted tokens. Rejected drafts are tokens of another stream than the output's. \
        "decoded" counts kept tokens; a failed truncate preempts like a failed append.

        Disk tier: with --offload-dir, cached blocks evicted from memory are written to the tier \
        instead of dropped, and prompts find them there again; a create whose prefix came from \
        disk joins the decode batch once kvc_seq_ready says its K/V are there; its thread decodes \
        its other sequences meanwhile ("ready" times create to ready). \
        --compare-offload runs the same workload without and then with the tier (emptied first) \
        and prints one report comparing them (JSON: {without_tier, with_tier, hit_rate_gain}). \
        Without --prefill-tokens-per-s a prefix hit saves nothing this test spends, so the \
        comparison's requests/s shows only the tier's cost; with it, what the tier's hits save. \
        The tier gains only when it holds what prompts reuse: on the Mooncake trace that is \
        tens of GiB at 4 layers (docs/disk-tier.md). \
        --peer-offload-dir DIR (repeatable) also reads the blocks another engine (or an earlier \
        run) spilled to DIR, read-only; the report's "peers" line counts them.

        Example with the Mooncake trace (prompts are long: use a small model shape):
          kvcache-cli load --trace traces/mooncake_conversation_trace.jsonl --requests 2000 \\
            --layers 4 --memory 4GiB --max-prompt-tokens 16384 --output-max 256
        """
    )

    @OptionGroup(title: "Engine")
    var engine: EngineOptions

    @Option(help: "Worker threads, each one batch of live sequences.")
    var threads = 2

    @Option(help: "Live sequences per thread (continuous-batching width).")
    var batch = 16

    @Option(help: "Requests to run (synthetic default 2000; trace default: every line; more than the trace holds runs all of it, with a notice).")
    var requests: Int?

    @Option(help: "Stop claiming requests after this many seconds; requests arriving later are not offered. Those claimed before it finish: live ones, and ones waiting to be created again (after an out-of-memory create or a preemption), which may be created after it.")
    var duration: Double?

    @Option(help: "Synthetic arrival rate in requests/s; 0 runs a closed loop.")
    var rate = 0.0

    // The synthetic workload's own options: optional, so that one given with --trace is
    // refused (a trace brings its own lengths and prefixes); nil takes the default in the help.

    @Option(help: "Prompt length distribution: lognormal, uniform or fixed (synthetic workload; default lognormal).")
    var promptDist: LengthShape?

    @Option(help: "Mean prompt tokens (synthetic workload; default 512).")
    var promptMean: Int?

    @Option(help: "Largest prompt in tokens (synthetic workload; default 2048; --max-prompt-tokens caps a trace's).")
    var promptMax: Int?

    @Option(help: "Output length distribution: lognormal, uniform or fixed (synthetic workload; default lognormal).")
    var outputDist: LengthShape?

    @Option(help: "Mean output tokens (synthetic workload; default 64).")
    var outputMean: Int?

    @Option(help: "Largest output in tokens (also caps trace outputs).")
    var outputMax = 256

    @Option(help: "Fraction of each synthetic prompt taken from a shared prompt (0...1; synthetic workload; default 0.5).")
    var sharedPrefixRatio: Double?

    @Option(help: "Number of shared prompts (system prompts, earlier turns; synthetic workload; default 8).")
    var sharedPrompts: Int?

    @Option(help: "Seed of the synthetic workload (default 42).")
    var seed: UInt64?

    @Option(help: "Trace to replay instead of the synthetic workload: Mooncake JSONL, or Azure CSV (.csv).")
    var trace: String?

    @Option(help: "Trace replay speed: arrival = (timestamp - first timestamp) / speed; 0 ignores timestamps (closed loop).")
    var traceSpeed = 0.0

    @Option(help: "Truncate prompts to this many tokens (default: half of --max-seq-tokens).")
    var maxPromptTokens: Int?

    @Option(help: "Out-of-memory failures (and failed disk reads of its prefix) a request survives before it is rejected.")
    var maxRetries = 1000

    @Option(help: "Speculative decoding: draft tokens appended per decode step, then truncated when rejected (0: none).")
    var draftTokens = 0

    @Option(help: "With --draft-tokens: probability that a draft is accepted, given the drafts before it were (0...1; default \(Self.defaultDraftAcceptance)).")
    var draftAcceptance: Double?

    /// `--draft-acceptance` when not given.
    static let defaultDraftAcceptance = 0.7

    @Option(help: "Model a prefill: a starting request costs its thread (prompt tokens past the cached prefix) / this many seconds, slept, and its time to first token is reported as ttft (0: prefill costs nothing, this test runs no model; else at least 1). The engine is told the speed (prefill_tokens_per_s), so it reads a prefix back from disk only when that is faster, unless --read-every-disk-hit.")
    var prefillTokensPerS = 0.0

    @Flag(help: "With --prefill-tokens-per-s: do not tell the engine the prefill speed (prefill_tokens_per_s stays 0), so that it reads every prefix block it finds on disk, also when the prefill would compute it sooner.")
    var readEveryDiskHit = false

    @Flag(help: "Write K/V bytes for every token through the engine's pointers (makes RSS real).")
    var writeKV = false

    @Flag(help: "Commit (paged: and fault in) the whole memory budget before the run, as a server would at start-up (kvc_engine_reserve); the time it takes is reported, not measured in the run.")
    var reserve = false

    @Flag(help: "Print the report as JSON (keys listed above) instead of a table.")
    var json = false

    @Option(help: "Directory for the SVG plot of memory over the run (memory.svg; with --compare-offload, memory_without_offload.svg and memory_with_offload.svg); '' for none. A plot that would be the --trace file is refused.")
    var plots = "out/load"

    @Flag(help: "Run the workload twice, without and with the disk tier (--offload-dir, emptied first), and compare.")
    var compareOffload = false

    /// The longest `--duration`: a week (its nanoseconds and the requests it may admit stay
    /// far inside 64 bits).
    static let maxDurationSeconds = 604_800.0
    /// The most requests of a synthetic run with `--rate`: it keeps an arrival time per request.
    static let maxRatedRequests = 1 << 24
    /// The most `--shared-prompts`: the workload keeps a weight per shared prompt.
    static let maxSharedPrompts = 1 << 20

    func validate() throws {
        guard (1...256).contains(threads) else { throw ValidationError("--threads \(threads) is outside 1...256") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard batch <= engine.maxSeqs / threads else {
            throw ValidationError("--threads \(threads) x --batch \(batch) exceeds --max-seqs \(engine.maxSeqs)")
        }
        if let requests, requests < 1 { throw ValidationError("--requests must be at least 1") }
        if let duration, !(duration > 0 && duration <= Self.maxDurationSeconds) {
            throw ValidationError("--duration must be positive and at most \(Int(Self.maxDurationSeconds)) s (a week)")
        }
        guard rate == 0 || (1e-3...1e7).contains(rate) else { throw ValidationError("--rate must be 0 or in 0.001...10000000 requests/s") }
        guard traceSpeed == 0 || (1e-3...1e6).contains(traceSpeed) else { throw ValidationError("--trace-speed must be 0 or in 0.001...1000000") }
        if trace != nil, rate > 0 {
            throw ValidationError("--rate applies to the synthetic workload; a trace arrives at its timestamps with --trace-speed")
        }
        if trace != nil, let option = syntheticOptionsGiven.first {
            throw ValidationError("\(option) applies to the synthetic workload; a trace brings its own lengths and prefixes "
                                  + "(--max-prompt-tokens and --output-max cap them)")
        }
        if trace == nil, traceSpeed > 0 { throw ValidationError("--trace-speed needs --trace") }
        if trace == nil, rate > 0, syntheticRequestCount > Self.maxRatedRequests {
            throw ValidationError("with --rate every request's arrival time is drawn up front: at most \(Self.maxRatedRequests) requests "
                                  + "(--requests, or 2 x --rate x --duration + 1000), not \(syntheticRequestCount)")
        }
        guard (0...1).contains(sharedPrefix.ratio) else { throw ValidationError("--shared-prefix-ratio must be in 0...1") }
        guard (1...Self.maxSharedPrompts).contains(sharedPrefix.prompts) else {
            throw ValidationError("--shared-prompts \(sharedPrefix.prompts) is outside 1...\(Self.maxSharedPrompts)")
        }
        guard maxRetries >= 0 else { throw ValidationError("--max-retries must not be negative") }
        guard (0...1024).contains(draftTokens) else { throw ValidationError("--draft-tokens \(draftTokens) is outside 0...1024") }
        if let draftAcceptance {
            guard draftTokens > 0 else { throw ValidationError("--draft-acceptance applies with --draft-tokens (at least 1)") }
            guard (0...1).contains(draftAcceptance) else { throw ValidationError("--draft-acceptance must be in 0...1") }
        }
        guard prefillTokensPerS == 0 || (prefillTokensPerS >= 1 && prefillTokensPerS.isFinite) else {
            throw ValidationError("--prefill-tokens-per-s must be 0 (no prefill) or a finite number of tokens per second, at least 1 "
                                  + "(a slower prefill sleeps more than a second per token: a run would not end)")
        }
        if readEveryDiskHit && prefillTokensPerS == 0 {
            throw ValidationError("--read-every-disk-hit needs --prefill-tokens-per-s (without it the engine reads every disk hit anyway)")
        }
        if compareOffload && engine.offloadDir == nil { throw ValidationError("--compare-offload needs --offload-dir") }
        if let maxPromptTokens, !(1...engine.maxSeqTokens).contains(maxPromptTokens) {
            throw ValidationError("--max-prompt-tokens \(maxPromptTokens) is outside 1...\(engine.maxSeqTokens) (--max-seq-tokens)")
        }
        if trace != nil {
            // A trace brings its own lengths: only --output-max (the cap) applies to it.
            guard outputMax >= 1 else { throw ValidationError("--output-max must be at least 1") }
        } else {
            try promptLengths.validate("--prompt-mean/--prompt-max")
            try outputLengths.validate("--output-mean/--output-max")
        }
    }

    /// The synthetic workload's options given on the command line, by name, in the order of
    /// the help (refused with `--trace`).
    private var syntheticOptionsGiven: [String] {
        [("--prompt-dist", promptDist != nil), ("--prompt-mean", promptMean != nil), ("--prompt-max", promptMax != nil),
         ("--output-dist", outputDist != nil), ("--output-mean", outputMean != nil),
         ("--shared-prefix-ratio", sharedPrefixRatio != nil), ("--shared-prompts", sharedPrompts != nil), ("--seed", seed != nil)]
            .filter(\.1).map(\.0)
    }

    /// Synthetic prompt and output lengths: the options, or their defaults.
    private var promptLengths: LengthDistribution {
        LengthDistribution(shape: promptDist ?? .lognormal, mean: promptMean ?? 512, max: promptMax ?? 2048)
    }
    private var outputLengths: LengthDistribution {
        LengthDistribution(shape: outputDist ?? .lognormal, mean: outputMean ?? 64, max: outputMax)
    }
    /// Synthetic sharing: `--shared-prefix-ratio` and `--shared-prompts`, or their defaults.
    private var sharedPrefix: (ratio: Double, prompts: Int) { (sharedPrefixRatio ?? 0.5, sharedPrompts ?? 8) }

    /// Requests for a synthetic run: `--requests`, else 2000, or unbounded with `--duration`
    /// (bounded by what the arrival rate can offer in that time).
    private var syntheticRequestCount: Int {
        if let requests { return requests }
        guard let duration else { return 2000 }
        return rate > 0 ? Int(rate * duration * 2) + 1000 : 100_000_000
    }

    /// The load test these options describe: engine configuration, workload and worker
    /// settings, ready for `LoadRunner.run()`. Creates no engine. Reads the whole `--trace` file
    /// (O(file size) time and memory; the synthetic workload costs O(requests) only with a
    /// rate, for its arrival times) and throws `TraceFormatError` when it cannot be
    /// read, a line is malformed, or it holds no request. Expects options that passed `validate()`.
    func loadRunner() throws -> LoadRunner {
        var config = engine.config
        if !readEveryDiskHit { config.prefillTokensPerSecond = prefillTokensPerS }
        let limits = TokenLimits(maxPromptTokens: maxPromptTokens ?? max(1, config.maxSeqTokens / 2),
                                 maxSeqTokens: config.maxSeqTokens)
        let workload: any Workload
        if let trace {
            // Trace outputs run to 2,000 tokens; --output-max caps them as it caps synthetic ones.
            workload = try TraceWorkload(path: trace, maxRequests: requests, speed: traceSpeed, limits: limits,
                                         maxOutputTokens: outputMax)
        } else {
            var synthetic = SyntheticWorkload(
                requestCount: syntheticRequestCount, ratePerSecond: rate,
                prompt: promptLengths, output: outputLengths,
                sharedPrefixRatio: sharedPrefix.ratio, sharedPrompts: sharedPrefix.prompts, seed: seed ?? 42, limits: limits)
            if requests == nil, let duration { synthetic.durationSeconds = duration }
            workload = synthetic
        }
        return LoadRunner(config: config, workload: workload, threads: threads,
                          settings: WorkerSettings(
                              batch: batch, maxRetries: maxRetries, writeKV: writeKV,
                              speculation: draftTokens > 0 ? SpeculativeDecoding(draftTokens: draftTokens, acceptance: draftAcceptance ?? Self.defaultDraftAcceptance) : nil,
                              prefillTokensPerSecond: prefillTokensPerS),
                          durationSeconds: duration, requested: requests, reserve: reserve)
    }

    /// The line `run` writes on standard error when `--requests` asks for more requests than
    /// the trace holds (the run then runs all of them); nil otherwise.
    func requestsNotice(_ runner: LoadRunner) -> String? {
        guard trace != nil, let requests, runner.workload.requestCount < requests else { return nil }
        let count = runner.workload.requestCount
        return "kvcache-cli load: --requests \(requests), but the trace holds \(count) requests: running those \(count)"
    }

    /// Runs the load, prints its report, then writes the plots (whose directory was checked
    /// before the run: a failure there ends the command before it spends the run, and the
    /// report is out before any later failure).
    ///
    /// SIGINT or SIGTERM (`InterruptCleanup` in `.stop` mode) stops the run's workers; the
    /// report of what completed is printed (marked interrupted; with `--compare-offload`, a
    /// run not started is not run) and the command exits with 128 + the signal's number. One
    /// taken before the run starts (reading the trace) exits with that status at once; a second
    /// signal ends the process at once.
    func run() throws {
        let handlers = InterruptCleanup.install(.stop)
        defer { handlers.restore() }
        let runner = try loadRunner()
        try Self.exitIfInterrupted()
        if let notice = requestsNotice(runner) { FileHandle.standardError.write(Data((notice + "\n").utf8)) }
        let comparing = compareOffload && runner.config.offloadDir != nil
        let names = comparing ? ["memory_without_offload", "memory_with_offload"] : ["memory"]
        if !plots.isEmpty { try OutputFile.prepareDirectory(plots, for: names.map { $0 + ".svg" }, sparing: trace) }
        guard comparing, let dir = runner.config.offloadDir else {
            let report = try runner.run()
            print(json ? report.json() : report.table(), terminator: json ? "\n" : "")
            try writePlots(zip(names, [report]).map { ($0, $1) })
            try Self.exitIfInterrupted()
            return
        }
        let (without, with) = try Self.compareOffload(runner, dir: dir)
        print(json ? LoadReport.comparisonJSON(without: without, with: with) : LoadReport.comparison(without: without, with: with))
        try writePlots(zip(names, [without] + (with.map { [$0] } ?? [])).map { ($0, $1) })
        try Self.exitIfInterrupted()
    }

    /// Throws the exit status of a signal taken (128 + its number), if one was.
    private static func exitIfInterrupted() throws {
        let signal = InterruptCleanup.pendingSignal
        if signal != 0 { throw ExitCode(128 + signal) }
    }

    /// `--compare-offload`: runs `runner`'s workload without a disk tier (and so without
    /// writeback or peers' tiers), then with its tier in `dir`, emptied first so that both runs
    /// start cold. Refused before either run while another engine uses `dir`, or when the
    /// second run's engine would be refused (a missing directory, a tier past the slab's
    /// limit, a missing peer: it is created and dropped first, on the emptied directory; the
    /// refusal came after the whole first run). `with` is nil when the first run was
    /// interrupted (the second is not started).
    static func compareOffload(_ runner: LoadRunner, dir: String) throws -> (without: LoadReport, with: LoadReport?) {
        try DiskTierFiles.remove(in: dir)
        _ = try runner.makeEngine()
        try DiskTierFiles.remove(in: dir)  // what that engine's tier wrote: both runs start cold
        var without = runner
        without.config.offloadDir = nil
        without.config.offloadBytes = 0
        without.config.offloadWriteback = false
        without.config.peerOffloadDirs = []  // they need a tier of the engine's own
        let first = try without.run()
        return (first, first.interrupted ? nil : try runner.run())
    }

    /// Writes each report's memory timeline to `--plots`/NAME.svg (nothing when `--plots` is
    /// ''), saying where on standard error. Throws when the directory or a file cannot be written.
    func writePlots(_ reports: [(name: String, report: LoadReport)]) throws {
        guard !plots.isEmpty else { return }
        try OutputFile.makeDirectory(plots)
        for (name, report) in reports {
            guard let timeline = report.timeline else { continue }
            let title = "kvcache-cli load: memory, \(report.layout) layout, \(report.workload)"
            try OutputFile.write(timeline.svg(title: title), to: plots + "/\(name).svg")
        }
        FileHandle.standardError.write(Data("plots written to \(plots)/\n".utf8))
    }
}
