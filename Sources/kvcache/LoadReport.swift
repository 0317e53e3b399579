import Foundation
import Histogram
import KVCache
import KVReport

/// The result of a `kvcache load` run: what `--json` prints (keys are stable; see
/// `LoadCommand`'s help) and what the table shows.
struct LoadReport: Codable, Sendable {
    /// Latency and rate of one engine operation. Latencies are of successful calls, in
    /// microseconds, measured around the engine call alone (they include about 20-30 ns of
    /// clock reads). Quantiles are the histogram's (3 significant digits, never above the
    /// maximum); the maximum is the longest latency recorded (up to 60 s; longer ones count as 60 s).
    struct OperationStats: Codable, Sendable {
        var count: UInt64
        /// `count` divided by the run's wall-clock time (all threads together).
        var opsPerSecond: Double
        var meanUs: Double
        var p50Us: Double
        var p99Us: Double
        var p999Us: Double
        var maxUs: Double

        enum CodingKeys: String, CodingKey {
            case count
            case opsPerSecond = "ops_per_s"
            case meanUs = "mean_us"
            case p50Us = "p50_us"
            case p99Us = "p99_us"
            case p999Us = "p999_us"
            case maxUs = "max_us"
        }

        init(_ histogram: Histogram<UInt64>, seconds: Double) {
            // Nanoseconds to microseconds with the nanosecond precision of the histogram.
            func us(_ ns: UInt64) -> Double { Double(ns) / 1000 }
            count = histogram.totalCount
            opsPerSecond = seconds > 0 ? (Double(count) / seconds).rounded() : 0
            meanUs = count > 0 ? (histogram.mean).rounded() / 1000 : 0
            p50Us = us(histogram.valueAtPercentile(50))
            p99Us = us(histogram.valueAtPercentile(99))
            p999Us = us(histogram.valueAtPercentile(99.9))
            // The longest value recorded, exactly: `max` is the top of its bucket (up to 0.1 %
            // above it, 3 significant digits), so it once read above every value and the p999.
            maxUs = us(histogram.maxRecorded)
        }
    }

    struct Requests: Codable, Sendable {
        /// `--requests` (absent when not given).
        var requested: Int?
        /// With `--trace`: the requests read from it, its first `--requests` or all of them
        /// (fewer than `requested` when the trace is shorter; absent without a trace).
        var traceRequests: Int?
        /// Requests in the workload (claimed by the run, when it stopped at `--duration` or was interrupted).
        var offered: Int
        var completed: Int
        /// Given up after `--max-retries` failures: out of memory, or (with a disk tier, rarely)
        /// a failed read of its cached prefix (`LoadWorker` counts both as attempts).
        var rejectedOutOfMemory: Int
        /// Prompt plus output need more than the whole budget holds (cannot fit however long it
        /// waits; `Engine.sequenceTokenCapacity`): rejected before any create, in neither
        /// `createRetries` nor `preemptions`.
        var rejectedUnfittable: Int
        /// Refused by the engine for another reason (see `first_error`).
        var rejectedOther: Int
        /// Creates that ran out of memory and waited to be retried.
        var createRetries: Int
        /// Sequences freed because an append ran out of memory (restarted later).
        var preemptions: Int
        /// Sequences live (or loading from disk) when the run was interrupted, freed then with
        /// their requests unfinished; their frees are in the free row, as every other free
        /// (0 when not interrupted).
        var freedAtStop: Int
        var perSecond: Double

        enum CodingKeys: String, CodingKey {
            case requested, offered, completed, preemptions
            case freedAtStop = "freed_at_stop"
            case traceRequests = "trace_requests"
            case rejectedOutOfMemory = "rejected_out_of_memory"
            case rejectedUnfittable = "rejected_unfittable"
            case rejectedOther = "rejected_other"
            case createRetries = "create_retries"
            case perSecond = "per_s"
        }
    }

    /// The workload's prefix hits: of requests' first admissions (each request's first
    /// successful create), prompt tokens looked up and found cached (the creates' return values).
    /// A restart's create is not here (it finds its own earlier blocks): see `Restarts`.
    struct Prefix: Codable, Sendable {
        var queryTokens: UInt64
        var hitTokens: UInt64
        /// hit_tokens / query_tokens (0 when nothing was queried).
        var hitRate: Double

        enum CodingKeys: String, CodingKey {
            case queryTokens = "query_tokens"
            case hitTokens = "hit_tokens"
            case hitRate = "hit_rate"
        }
    }

    /// The work restarts repeated: requests admitted again after a preemption (or a failed disk
    /// read) are created again from their prompt and decode their output from the start.
    struct Restarts: Codable, Sendable {
        /// Successful creates of requests admitted before.
        var admissions: Int
        /// Their prompt tokens, and of those the tokens found cached and those left to compute
        /// (a server's prefill of them again).
        var promptTokens: Int
        var hitTokens: Int
        var recomputedPromptTokens: Int
        /// With a disk tier (else nil, absent from the JSON): of `hitTokens`, those read from the
        /// own tier and from peers' tiers (`Engine.prefixSources`), as `Offload` counts the first
        /// admissions'.
        var diskHitTokens: Int?
        var peerHitTokens: Int?
        /// Output tokens decoded again (an earlier admission had decoded them).
        var redecodedTokens: Int

        enum CodingKeys: String, CodingKey {
            case admissions
            case promptTokens = "prompt_tokens"
            case hitTokens = "hit_tokens"
            case recomputedPromptTokens = "recomputed_prompt_tokens"
            case diskHitTokens = "disk_hit_tokens"
            case peerHitTokens = "peer_hit_tokens"
            case redecodedTokens = "redecoded_tokens"
        }
    }

    /// `--draft-tokens`: how speculative decoding went.
    struct Speculation: Codable, Sendable {
        var draftTokens: Int
        /// `--draft-acceptance`: the probability of accepting a draft after accepted ones.
        var acceptance: Double
        /// Decode steps of one sequence (each one append, and one truncate when a draft was rejected).
        var steps: Int
        /// Draft tokens appended, then truncated away as rejected.
        var rejectedDraftTokens: Int
        /// Tokens kept per step (the sampled one plus accepted drafts), over every step.
        var keptPerStep: Double

        enum CodingKeys: String, CodingKey {
            case acceptance, steps
            case draftTokens = "draft_tokens"
            case rejectedDraftTokens = "rejected_draft_tokens"
            case keptPerStep = "kept_per_step"
        }

        init(draftTokens: Int, acceptance: Double, steps: Int, rejectedDraftTokens: Int, decodedTokens: Int) {
            self.draftTokens = draftTokens
            self.acceptance = acceptance
            self.steps = steps
            self.rejectedDraftTokens = rejectedDraftTokens
            keptPerStep = steps > 0 ? (Double(decodedTokens) / Double(steps) * 1000).rounded() / 1000 : 0
        }
    }

    struct Memory: Codable, Sendable {
        var budgetBytes: UInt64
        /// Highest EngineStats.committedBytes seen by the sampler (every 50 ms, so a lower bound).
        var committedPeakBytes: UInt64
        var committedEndBytes: UInt64
        /// Process RSS (VmRSS) before the engine was created, its peak (VmHWM) and at the end:
        /// pages the process touched. The paged layout faults in the pages it commits; the
        /// contiguous layout commits pages (`fallocate`) that count only once K/V are written
        /// there (`--write-kv`), so its RSS says little of its memory: compare layouts by committed bytes.
        var rssStartBytes: UInt64
        var rssPeakBytes: UInt64
        var rssEndBytes: UInt64
        var blocksEvicted: UInt64
        var mappings: UInt64
        /// The pool's page size, and whether its pages really are 2 MiB huge pages
        /// (`EngineStats.hugePages`: false when 2 MiB pages fell back to small ones).
        var pageBytes: UInt64
        var hugePages: Bool
        /// With `--reserve`: bytes committed ahead of the run (`Engine.reserve`) and how long
        /// that took (outside the measured run); 0 without.
        var reservedBytes: UInt64
        var reserveSeconds: Double

        enum CodingKeys: String, CodingKey {
            case budgetBytes = "budget_bytes"
            case committedPeakBytes = "committed_peak_bytes"
            case committedEndBytes = "committed_end_bytes"
            case rssStartBytes = "rss_start_bytes"
            case rssPeakBytes = "rss_peak_bytes"
            case rssEndBytes = "rss_end_bytes"
            case blocksEvicted = "blocks_evicted"
            case mappings
            case pageBytes = "page_bytes"
            case hugePages = "huge_pages"
            case reservedBytes = "reserved_bytes"
            case reserveSeconds = "reserve_s"
        }
    }

    var workload: String
    var workloadSummary: String
    var layout: String
    var threads: Int
    var batchPerThread: Int
    var writeKV: Bool
    var elapsedSeconds: Double
    var requests: Requests
    /// The workload's tokens: prompt tokens of requests' first admissions, and output tokens
    /// decoded, each once (restarts' repeats are in `restarts`).
    var promptTokens: Int
    var decodedTokens: Int
    var restarts: Restarts
    var operations: [String: OperationStats]
    /// Absent without `--draft-tokens`.
    var speculation: Speculation?
    var prefix: Prefix
    var memory: Memory
    var firstError: String?
    /// Whether SIGINT or SIGTERM stopped the run: the report covers what completed before it.
    var interrupted: Bool
    /// That signal's number (0 when none), for the table; not in the JSON.
    var interruptSignal: Int32 = 0
    /// The disk tier's side of the run (absent without `--offload-dir`).
    var offload: Offload?
    /// Memory over the run, for `--plots` (not in the JSON: a sample per 50 ms).
    var timeline: MemoryTimeline?

    enum CodingKeys: String, CodingKey {
        case workload, layout, threads, requests, restarts, operations, speculation, prefix, memory, offload, interrupted
        case workloadSummary = "workload_summary"
        case batchPerThread = "batch_per_thread"
        case writeKV = "write_kv"
        case elapsedSeconds = "elapsed_s"
        case promptTokens = "prompt_tokens"
        case decodedTokens = "decoded_tokens"
        case firstError = "first_error"
    }

    /// Pretty-printed JSON with sorted keys, so equal reports print identically.
    func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = (try? encoder.encode(self)) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// The human-readable report.
    func table() -> String {
        var out = ""
        func line(_ s: String = "") { out += s + "\n" }
        func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
            let fill = String(repeating: " ", count: max(0, width - s.count))
            return left ? s + fill : fill + s
        }
        line("kvcache-cli load: \(layout) layout, \(threads) threads x \(batchPerThread) live sequences\(writeKV ? ", K/V written" : "")")
        line("workload: \(workloadSummary)")
        if interrupted {
            let name = interruptSignal == SIGINT ? "SIGINT" : interruptSignal == SIGTERM ? "SIGTERM" : "signal \(interruptSignal)"
            let unfinished = requests.offered - requests.completed - requests.rejectedOutOfMemory - requests.rejectedUnfittable
                - requests.rejectedOther
            line("interrupted by \(name) after \(fixed(elapsedSeconds, 2)) s: this report covers what completed before it; "
                + "\(unfinished) requests taken were stopped unfinished, \(requests.freedAtStop) of them live and freed at the stop "
                + "(timed in the free row)")
        }
        line()
        line("requests   \(requests.completed) completed of \(requests.offered) in \(fixed(elapsedSeconds, 2)) s "
            + "(\(fixed(requests.perSecond, 1)) req/s)")
        line("rejected   \(requests.rejectedOutOfMemory) out of memory (or failed disk reads) after --max-retries, "
            + "\(requests.rejectedUnfittable) larger than the whole budget, \(requests.rejectedOther) other")
        line("           \(requests.createRetries) creates retried, \(requests.preemptions) preemptions (append out of memory)")
        line("tokens     \(promptTokens) prompt, \(decodedTokens) decoded (each request's first admission, its output once)")
        line("restarts   \(restarts.admissions) admissions again after preemption\(offload == nil ? "" : " or a failed disk read"): "
            + "\(restarts.promptTokens) prompt tokens (\(restarts.hitTokens) from the cache"
            + (restarts.diskHitTokens.map { disk in
                ": \(disk) of them from disk" + (restarts.peerHitTokens.map { $0 > 0 ? ", \($0) from peers" : "" } ?? "")
            } ?? "")
            + ", \(restarts.recomputedPromptTokens) recomputed), "
            + "\(restarts.redecodedTokens) tokens decoded again")
        if let speculation {
            line("drafts     \(speculation.draftTokens) per step, acceptance \(fixed(speculation.acceptance, 2)): "
                + "\(speculation.steps) steps kept \(fixed(speculation.keptPerStep, 2)) tokens each, "
                + "\(speculation.rejectedDraftTokens) rejected drafts truncated")
        }
        line()
        // Columns as wide as their widest cell (at least the usual width): a second-long tail
        // latency has 11 characters and must not run into its neighbour.
        var cells = [["operation", "count", "ops/s", "mean us", "p50 us", "p99 us", "p999 us", "max us"]]
        for op in TimedOperation.allCases {
            guard let s = operations[op.name] else { continue }
            cells.append([op.name, String(s.count), fixed(s.opsPerSecond, 0), fixed(s.meanUs, 3), fixed(s.p50Us, 3),
                          fixed(s.p99Us, 3), fixed(s.p999Us, 3), fixed(s.maxUs, 1)])
        }
        let widths = [10, 10, 12, 10, 10, 10, 10, 10].enumerated().map { c, minimum in
            cells.reduce(minimum) { max($0, $1[c].count) }
        }
        for row in cells {
            line(row.enumerated().map { c, cell in pad(cell, widths[c], left: c == 0) }.joined(separator: " "))
        }
        line()
        line("prefix hit rate  \(fixed(prefix.hitRate * 100, 1)) %  (\(prefix.hitTokens) of \(prefix.queryTokens) prompt tokens "
            + "of first admissions served from the cache)")
        line()
        line([pad("memory", 10, left: true), pad("committed", 12), pad("RSS", 12)].joined(separator: " "))
        line([pad("start", 10, left: true), pad("-", 12), pad(ByteCount.format(memory.rssStartBytes), 12)].joined(separator: " "))
        line([pad("peak", 10, left: true), pad(ByteCount.format(memory.committedPeakBytes), 12),
              pad(ByteCount.format(memory.rssPeakBytes), 12)].joined(separator: " "))
        line([pad("end", 10, left: true), pad(ByteCount.format(memory.committedEndBytes), 12),
              pad(ByteCount.format(memory.rssEndBytes), 12)].joined(separator: " "))
        if layout == "contiguous" {
            line("RSS counts only pages touched: the contiguous layout commits pages without touching them "
                + "(--write-kv touches those it writes); compare layouts by committed bytes")
        }
        line("budget \(ByteCount.format(memory.budgetBytes)); pages of \(ByteCount.format(memory.pageBytes))"
            + (memory.pageBytes == 2 << 20 ? (memory.hugePages ? " (huge pages)" : " (small pages: shmem huge pages are off)") : "")
            + "; \(memory.blocksEvicted) cached blocks evicted; \(memory.mappings) mappings")
        if memory.reservedBytes > 0 {
            line("reserved \(ByteCount.format(memory.reservedBytes)) ahead of the run in \(fixed(memory.reserveSeconds, 2)) s (--reserve, not in the times above)")
        }
        if let offload {
            line()
            line("disk tier  \(offload.dir), \(ByteCount.format(offload.capacityBytes)), \(offload.backend)")
            if offload.recoveredBlocks + offload.journalRecordsDropped > 0 {
                line("  start    \(offload.recoveredBlocks) blocks found in the tier's journal, "
                    + "\(offload.journalRecordsDropped) journal records dropped (torn, corrupt, or past the tier's size)")
            }
            line("  written  \(ByteCount.format(offload.bytesWritten)) (\(fixed(offload.writeMiBPerSecond, 1)) MiB/s over the run), "
                + "\(offload.blocksSpilled) blocks spilled (\(offload.blocksWrittenAhead) written ahead, \(offload.spillsSkipped) skipped), \(offload.swapOuts) swap-outs "
                + "(\(offload.swapOutsCancelled) cancelled, \(offload.swapOutsFailed) failed)")
            line("  read     \(ByteCount.format(offload.bytesRead)) (\(fixed(offload.readMiBPerSecond, 1)) MiB/s over the run), "
                + "\(offload.blocksLoaded) blocks loaded, \(offload.reloadFailures) failed")
            line("  reload   \(offload.diskHitTokens) prompt tokens from disk: \(fixed(offload.diskHitRate * 100, 1)) % of first admissions' prompt tokens; "
                + "\(offload.declinedHitTokens) found there computed instead (faster than reading)")
            if offload.peerHits + offload.peerStale > 0 {
                line("  peers    \(offload.peerHitTokens) prompt tokens from peers: \(fixed(offload.peerHitRate * 100, 1)) % of first admissions' prompt tokens; "
                    + "\(offload.peerHits) blocks read, \(offload.peerStale) refused as stale")
            }
            line("  ready    \(offload.readyWaits) creates not ready at once, \(fixed(offload.readyWaitTotalMs, 1)) ms from create to ready in all "
                + "(mean \(fixed(offload.readyWaitMeanUs, 1)) us, max \(fixed(offload.readyWaitMaxUs, 1)) us)")
        }
        if let firstError { line("first error: \(firstError)") }
        return out
    }
}
