import ArgumentParser
import Foundation
import Synchronization
import KVReport
import KVRouter
import KVSim

/// `kvcache replay`: replays a serving trace through a simulated cluster of metadata-only
/// engines, once per routing policy, and reports TTFT, SLO attainment, prefix hits, load
/// imbalance and the effective request capacity of each.
struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Replay a serving trace through a simulated cluster, comparing routing policies.",
        discussion: """
        Each instance is a real metadata-only KVCache engine (prefix index, LRU, block budget) \
        shaped like Qwen2.5-7B on an A100-80GB (1,771 blocks of 512 tokens, sequences of up to \
        131,072 tokens: a longer prompt is rejected, an output reaching it finishes there; the \
        table shows "rejected / aborted / capped" when any run had one); steps are timed by \
        a roofline cost model (KVSim/CostModel.swift cites its sources). Steps take up to \
        --token-budget tokens and --max-batch sequences, by default vLLM's for an A100 served \
        through its OpenAI server, 2048 and 256 (KVSim/SimulationConfig.swift cites them). \
        Every routing decision is a real KVRouter call fed the engines' KV events.

        Per policy: TTFT p50/p90/p99 of the requests served (a rejected request has no TTFT and \
        is not in them; "-", null in JSON, when none was served), SLO attainment (requests with \
        TTFT <= --ttft-slo-ms, of the measured requests, so a rejected one counts as a miss), prefix hit rate (prompt tokens cached at admission), load imbalance (max \
        over mean instance busy time: decode-only steps count, so it stays near 1), prefill \
        skew (max over mean prompt tokens computed per instance: where the prefill work went) \
        and the effective capacity: the highest rate scale at which at least 90% of requests \
        meet the SLO (doubling, then 7 geometric bisections: a grid of 2^(1/128), 0.54%). \
        Requests arriving in the trace's first --warmup seconds (default 300 for a whole trace, 0 \
        with --requests or --synthetic; in the trace's \
        own time, so the same requests at every rate) are simulated but left out of the TTFT \
        percentiles, the attainment and the hit rate, for every policy alike: the cluster \
        starts empty. Busy time and prefill skew cover the whole run. \
        Rejected requests never got a first token. A request that did and then, preempted, no \
        longer fits its instance alone (prompt and output so far) is aborted instead, its output \
        cut short: its TTFT counts as served, in the percentiles and the attainment. With \
        these engines none can be (an instance holds 906,752 tokens, the context 131,072), \
        but smaller simulated instances abort.

        With no arguments: the bundled Mooncake conversation trace over 8 instances, every \
        policy, with the capacity search; plots go to out/replay/.

        --arrivals spread (the default) places the k requests that share a recorded timestamp t \
        evenly over [t, next distinct timestamp) in file order (the i-th at t + i * gap / k; the \
        last timestamp's over the median gap; with a single distinct timestamp, as in the \
        bundled trace's first 10 requests, there is no gap and nothing moves), before \
        --rate-scale divides the times. The \
        bundled trace records arrivals in 3 s buckets (1,180 timestamps for 12,031 requests), \
        an aggregation rather than simultaneous arrivals; --arrivals recorded replays each \
        bucket at one instant, routed before any step runs. Azure traces have distinct \
        timestamps: the two modes replay them alike.

        --index-on-schedule runs every engine with index_on_schedule: a prompt's blocks enter \
        the prefix index as its prefill chunks are scheduled (each chunk a schedule call). The \
        simulated instances allocate a prompt's blocks chunk by chunk as they schedule them, as \
        vLLM does, and an engine indexes a prompt's full blocks as it allocates them, so without \
        it too a request hits only blocks computed by its own step or before.

        --shared-tier-gb N adds an LMCache-style KV store of N GB (decimal) shared by all \
        instances: each step stores the prompt blocks it computed there, and an admitted request \
        loads the blocks after its instance's own cached prefix from it at --shared-tier-gbps \
        (default 25 GB/s: PCIe 4.0 x16 or one 200 Gb/s RDMA port per GPU), the load time added \
        to the admitting step. Its index is a metadata-only engine of that capacity (LRU). \
        The table gains "tier hit" (prompt tokens loaded from the tier); 400 GB is about the \
        cluster's own KV memory again (KVSim/SharedTierConfig.swift gives the reasoning).

        --json prints one object: trace, requests, skipped_lines (malformed lines --lenient \
        skipped), arrivals (spread or recorded), instances, rate_scale, ttft_slo_ms, warmup_s, \
        token_budget, max_batch, \
        index_on_schedule, rebalance (DualMap's, false with --no-rebalance), [shared_tier {capacity_bytes, load_gbps}], policies \
        [{policy, warmup_requests (not measured), view (exact, approximate, or null for a policy that reads no cache), ttft_p50_ms, ttft_p90_ms, ttft_p99_ms, slo_attainment, prefix_hit_rate, \
        load_imbalance, prefill_skew, [shared_tier_hit_tokens, shared_tier_hit_rate], preemptions, rejected, \
        aborted, length_capped, events_dropped, view_resyncs, slo_switches, rebalance_moves, makespan_s, wall_s, \
        effective_capacity, capacity_probes [{rate_scale, attainment}]}]; the bracketed keys \
        only with a shared tier. events_dropped counts KV events an instance's engine dropped \
        before the router saw them (its queue overflowed) and view_resyncs the exact views \
        rebuilt from the engine's index after that; when any are dropped the table gains \
        "dropped ev." (events / resyncs).
        """
    )

    @Option(help: "Trace file: Mooncake JSONL (.jsonl) or Azure LLM inference CSV (.csv); default \(Self.defaultTrace).")
    var trace: String?

    @Flag(help: "Replay synthetic multi-turn sessions with shared system prompts instead of a trace.")
    var synthetic = false

    @Option(help: "With --synthetic: the generator's seed (default \(SyntheticSessions().seed)).")
    var seed: UInt64?

    @Option(help: "Replay only the first N requests (with --synthetic: sessions of N / 4 are generated, 1 to 8 turns each, and cut to N; a short draw gives fewer: the output says how many).")
    var requests: Int?

    @Flag(help: "Skip (and count) malformed trace lines instead of failing.")
    var lenient = false

    @Option(help: "Arrivals of requests sharing a recorded timestamp: spread (evenly over the gap to the next timestamp; the bundled trace records 3 s buckets) or recorded (all at that instant).")
    var arrivals = ArrivalMode.spread.rawValue

    @Option(help: "Comma-separated policies, each once: \(PolicyKind.allCases.map(\.name).joined(separator: ", ")), or all.")
    var policies = "all"

    @Option(help: "Serving instances (1...64).")
    var instances = 8

    @Option(help: "Arrival rate multiplier for the main run.")
    var rateScale = 1.0

    @Option(help: "TTFT SLO in milliseconds.")
    var ttftSloMs = 10_000.0

    @Option(help: "Seconds of the trace's own time from its first arrival whose requests are simulated but not measured (TTFT, attainment, hit rate), for every policy; 0 measures all (default 300, or 0 with --requests or --synthetic, whose short runs a 300 s window would leave nearly unmeasured).")
    var warmup: Double?

    /// `--warmup`, or its default: 300 s for a whole trace, 0 for a slice or synthetic sessions.
    var warmupSeconds: Double { warmup ?? (requests == nil && !synthetic ? 300 : 0) }

    @Option(help: "Tokens per step per instance (vLLM's max_num_batched_tokens; default \(SimulationConfig().tokenBudget), vLLM's for an A100 server).")
    var tokenBudget = SimulationConfig().tokenBudget

    @Option(help: "Sequences running at once per instance (vLLM's max_num_seqs; default \(SimulationConfig().maxBatch)).")
    var maxBatch = SimulationConfig().maxBatch

    @Option(help: "Xored into the DualMap / consistent-hash rings' seeds (default 0): another placement of the instances on the rings; needs one of them in --policies.")
    var ringSeed: UInt64?

    @Option(help: "Cache view for every policy: exact (KV events) or approximate (routing history); default per policy.")
    var view: String?

    @Option(help: "Blocks in the DualMap / consistent-hash key (default \(RouterConfig(policy: .dualMap).keyBlocks)); needs one of them in --policies.")
    var keyBlocks: Int?

    @Option(help: "overlap-cost's overlap_score_weight (Dynamo's default \(RouterConfig(policy: .overlapCost).overlapScoreWeight)), for diagnosis; needs overlap-cost in --policies.")
    var overlapWeight: Double?

    @Flag(help: "Index prompt blocks only as their prefill chunks are scheduled (index_on_schedule).")
    var indexOnSchedule = false

    @Flag(help: "DualMap without hotspot rebalancing: no queued request moves to another instance (the simulator moves one at no cost; a router through the C ABI has no queue to move from); needs dualmap in --policies.")
    var noRebalance = false

    @Option(help: "Add a KV store of this many GB (decimal) shared by all instances, LMCache-style (e.g. 400; at most 492581, the blocks one engine indexes); default none.")
    var sharedTierGb: Double?

    @Option(help: "Load bandwidth from the shared tier per instance, GB/s (needs --shared-tier-gb; default 25).")
    var sharedTierGbps: Double?

    @Flag(help: "Skip the effective-capacity search (one run per policy).")
    var noSearch = false

    @Option(help: "Threads running policies in parallel.")
    var threads = 2

    @Option(help: "Directory for the SVG plots (ttft_cdf.svg; attainment.svg with the search); '' for none. A plot that would be the --trace file is refused.")
    var plots = "out/replay"

    @Flag(help: "Print JSON instead of the table.")
    var json = false

    /// The largest `--max-batch`: each sequence slot is engine metadata.
    static let maxBatchLimit = 1 << 16
    /// The most requests `--synthetic` generates (each is held with its block hashes).
    static let maxSyntheticRequests = 1 << 20
    /// The trace replayed without `--trace` or `--synthetic`: the bundled Mooncake one.
    static let defaultTrace = "traces/mooncake_conversation_trace.jsonl"

    func validate() throws {
        guard (1...64).contains(instances) else { throw ValidationError("--instances must be in 1...64") }
        if let requests, requests < 1 { throw ValidationError("--requests must be at least 1") }
        if synthetic, let requests, requests > Self.maxSyntheticRequests {
            throw ValidationError("--synthetic generates every request up front: --requests \(requests) is more than \(Self.maxSyntheticRequests)")
        }
        guard rateScale >= 1e-6 && rateScale <= 1e6 else { throw ValidationError("--rate-scale must be in 0.000001...1000000") }
        // (Bounded: the plots' axes reach twice the SLO, which overflowed to infinity near Double.max.)
        guard ttftSloMs > 0 && ttftSloMs <= 1e12 else { throw ValidationError("--ttft-slo-ms must be in (0, 1e12]") }
        guard threads >= 1 else { throw ValidationError("--threads must be >= 1") }
        guard warmupSeconds >= 0 && warmupSeconds.isFinite else { throw ValidationError("--warmup must be a finite number of seconds >= 0") }
        guard (1...SimulationConfig.maxTokenBudget).contains(tokenBudget) else {
            throw ValidationError("--token-budget must be in 1...\(SimulationConfig.maxTokenBudget)")
        }
        guard (1...Self.maxBatchLimit).contains(maxBatch) else { throw ValidationError("--max-batch must be at least 1 (and at most \(Self.maxBatchLimit))") }
        _ = try arrivalMode()
        if synthetic {
            if trace != nil { throw ValidationError("--synthetic replays generated sessions: --trace names a trace instead; give one of them") }
            if lenient { throw ValidationError("--lenient applies to a trace's lines; --synthetic reads none") }
        } else if seed != nil {
            throw ValidationError("--seed applies to --synthetic; a trace is replayed as it is")
        }
        if let overlapWeight {
            guard overlapWeight >= 0 && overlapWeight.isFinite else { throw ValidationError("--overlap-weight must be >= 0") }
        }
        var router = RouterConfig(policy: .dualMap)  // the router's own checks, before any run
        router.keyBlocks = keyBlocks ?? router.keyBlocks
        do { try router.validate() } catch { throw ValidationError("--key-blocks: \(error.message)") }
        let listed = try policyList()
        if keyBlocks != nil, !listed.contains(where: \.usesRequestKey) {
            throw ValidationError("--key-blocks applies to dualmap and consistent-hash; --policies names neither")
        }
        if ringSeed != nil, !listed.contains(where: \.usesRequestKey) {
            throw ValidationError("--ring-seed applies to dualmap and consistent-hash; --policies names neither")
        }
        if overlapWeight != nil, !listed.contains(.overlapCost) {
            throw ValidationError("--overlap-weight applies to overlap-cost; --policies does not name it")
        }
        if noRebalance, !listed.contains(.dualMap) {
            throw ValidationError("--no-rebalance applies to dualmap; --policies does not name it")
        }
        _ = try sharedTier()
        if let view, view != "exact" && view != "approximate" { throw ValidationError("--view must be exact or approximate") }
    }

    /// The arrival mode `--arrivals` names; a `ValidationError` for anything else.
    func arrivalMode() throws -> ArrivalMode {
        guard let mode = ArrivalMode(rawValue: arrivals) else {
            throw ValidationError("--arrivals must be spread or recorded, not \"\(arrivals)\"")
        }
        return mode
    }

    /// The policies `--policies` names, in its order; a `ValidationError` for an unknown name,
    /// an empty entry ("dualmap,"), a policy named twice (it would run twice) or "all" beside
    /// others.
    func policyList() throws -> [PolicyKind] {
        if policies == "all" { return PolicyKind.allCases }
        let names = policies.split(separator: ",", omittingEmptySubsequences: false)
        guard names.contains(where: { !$0.isEmpty }) else { throw ValidationError("--policies names no policy") }
        var list: [PolicyKind] = []
        for name in names {
            guard !name.isEmpty else { throw ValidationError("--policies \"\(policies)\" has an empty entry") }
            guard name != "all" else { throw ValidationError("--policies all names every policy and stands alone: \"\(policies)\" lists it with others") }
            guard let p = PolicyKind(name: String(name)) else {
                throw ValidationError("unknown policy \"\(name)\"; --policies takes \(PolicyKind.allCases.map(\.name).joined(separator: ", ")) or all")
            }
            guard !list.contains(p) else { throw ValidationError("--policies names \(name) twice") }
            list.append(p)
        }
        return list
    }

    /// The shared tier the options ask for, nil for none; throws a `ValidationError` for a bad
    /// combination or value (the engine shape's block size is checked by the simulator).
    func sharedTier() throws -> SharedTierConfig? {
        guard let gb = sharedTierGb else {
            if sharedTierGbps != nil { throw ValidationError("--shared-tier-gbps needs --shared-tier-gb") }
            return nil
        }
        // Every trace replay reads, and its synthetic sessions, have 512-token blocks.
        let engine = SimulationConfig.qwen7BEngine(blockTokens: MooncakeTraceReader.blockTokens)
        let blockBytes = UInt64(engine.blockBytesAllTensors)
        let maxBytes = SharedTierConfig.maxCapacityBytes(blockBytes: blockBytes)
        let maxGb = (Double(maxBytes) / 1e9).rounded(.down)
        guard gb > 0 && gb <= maxGb else {
            throw ValidationError("--shared-tier-gb must be > 0 and at most \(Int(maxGb)) (\(maxBytes / blockBytes) blocks of \(blockBytes) B, the most one engine indexes)")
        }
        var tier = SharedTierConfig()
        tier.capacityBytes = UInt64(gb * 1e9)
        if let gbps = sharedTierGbps {
            guard gbps >= SharedTierConfig.minLoadGigabytesPerSecond && gbps.isFinite else {
                throw ValidationError("--shared-tier-gbps must be finite and at least \(SharedTierConfig.minLoadGigabytesPerSecond)")
            }
            tier.loadGigabytesPerSecond = gbps
        }
        return tier
    }

    /// The requests to replay: `--synthetic` sessions (from `--seed`) or the trace file, cut
    /// to `--requests`, their arrivals placed by `--arrivals` (after the cut: the last
    /// timestamp kept spreads its requests over the median gap). Reads the whole file or
    /// generates every request: O(requests).
    func requestTrace() throws -> Trace {
        var t: Trace
        if synthetic {
            var gen = SyntheticSessions()
            if let requests { gen.sessions = max(1, requests / 4) }
            if let seed { gen.seed = seed }
            t = gen.generate()
        } else {
            t = try Trace.read(path: trace ?? Self.defaultTrace, maxRequests: requests, lenient: lenient)
        }
        if let requests { t = t.prefix(requests) }
        return t.withArrivals(try arrivalMode())
    }

    /// The cluster the options describe, for a trace of `blockTokens`-token blocks.
    func simulationConfig(blockTokens: Int) throws -> SimulationConfig {
        var config = SimulationConfig()
        config.instances = instances
        config.rateScale = rateScale
        config.ttftSLOMilliseconds = ttftSloMs
        config.warmupSeconds = warmupSeconds
        config.tokenBudget = tokenBudget
        config.maxBatch = maxBatch
        if let keyBlocks { config.router.keyBlocks = keyBlocks }
        if let ringSeed { config.router.ringSeed = ringSeed }
        if let overlapWeight { config.router.overlapScoreWeight = overlapWeight }
        config.router.rebalance = !noRebalance
        config.engine = SimulationConfig.qwen7BEngine(blockTokens: blockTokens)
        config.engine.indexOnSchedule = indexOnSchedule
        config.engine.maxSeqs = max(config.engine.maxSeqs, maxBatch)
        config.sharedTier = try sharedTier()
        return config
    }

    func run() throws {
        let started = Date()
        // The plots' directory before the run (minutes with the search), not after it.
        if !plots.isEmpty { try OutputFile.prepareDirectory(plots, for: noSearch ? ["ttft_cdf.svg"] : ["ttft_cdf.svg", "attainment.svg"],
                                                            sparing: synthetic ? nil : trace ?? Self.defaultTrace) }
        let t = try requestTrace()
        let config = try simulationConfig(blockTokens: t.blockTokens)
        let replay = Replay(config: config, policies: try policyList(),
                            view: view.map { $0 == "exact" ? .exact : .approximate },
                            search: noSearch ? nil : CapacitySearch(), threads: threads)
        let progress = Mutex(ProgressLine())  // the replay reports from its worker threads
        let outcomes = try replay.run(t) { line in progress.withLock { $0.update(line) } }
        progress.withLock { $0.clear() }
        if json {
            print(ReplayReport.json(outcomes, trace: t, config: config))
        } else {
            print("\(t.source): \(t.count) requests\(t.skippedLines > 0 ? " (\(t.skippedLines) malformed lines skipped)" : ""), "
                  + "\(instances) instances, rate x\(fixed(rateScale, 2)), TTFT SLO \(fixed(ttftSloMs / 1000, 1)) s, "
                  + "warm-up \(fixed(warmupSeconds, 0)) s (\(outcomes.first?.result.warmupRequests ?? 0) requests not measured), "
                  + "step \(tokenBudget) tokens / \(maxBatch) sequences, "
                  + (ringSeed.map { "ring seed \($0), " } ?? "")
                  + "arrivals \(t.arrivals.rawValue), prompt blocks indexed \(indexOnSchedule ? "as scheduled" : "as allocated")"
                  + (config.sharedTier.map { ", shared tier \(fixed(Double($0.capacityBytes) / 1e9, 0)) GB at \(fixed($0.loadGigabytesPerSecond, 1)) GB/s" } ?? ""))
            print(ReplayReport.table(outcomes), terminator: "")
            print("capacity: highest rate scale with >= 90% of requests within the SLO; imbalance: max/mean busy time; "
                  + "prefill skew: max/mean prompt tokens computed per instance; "
                  + "\(fixed(Date().timeIntervalSince(started), 1)) s")
        }
        if !plots.isEmpty {
            try OutputFile.makeDirectory(plots)
            let cdf = SVGPlot.ttftCDF(outcomes, maxSeconds: 2 * ttftSloMs / 1000)
            try OutputFile.write(cdf, to: plots + "/ttft_cdf.svg")
            if !noSearch {
                try OutputFile.write(SVGPlot.attainment(outcomes, target: 0.9), to: plots + "/attainment.svg")
            }
            FileHandle.standardError.write(Data("plots written to \(plots)/\n".utf8))
        }
    }
}
