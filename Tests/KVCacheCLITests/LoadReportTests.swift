import Foundation
import KVCache
import Testing
import TestSupport
@testable import kvcache

/// Real, small `kvcache load` runs through the command's own path (argument parsing and
/// validation, `LoadCommand.loadRunner()`, `LoadRunner.run()`), checked through the report's
/// JSON, whose keys `LoadCommand`'s help promises to keep stable.
@Suite("kvcache load report")
struct LoadReportTests {
    /// One engine shape of a run.
    struct Shape: Sendable, CustomTestStringConvertible {
        var layout: String
        var pageBytes: UInt64
        var reserve = false
        var testDescription: String { "\(layout), \(ByteCount.format(pageBytes)) pages\(reserve ? ", --reserve" : "")" }
    }

    static let requests = 48
    static let threads = 2
    static let batch = 4
    static let promptTokens = 256
    static let sharedPrompts = 4
    static let blockTokens = 16
    static let budget: UInt64 = 64 << 20

    /// 48 requests of 256-token prompts whose first half (8 blocks of 16) is one of 4 shared
    /// prompts, and 8...24 output tokens, on 2 threads x 4 live sequences of a tiny model
    /// (2 layers, 2 heads of 64 two-byte elements: 1 KiB per token over its 4 tensors).
    ///
    /// The 64 MiB budget is ample: the 8 live sequences hold at most 8 x 280 tokens (about
    /// 2.2 MiB, a few MiB with page rounding; with 2 MiB pages the paged layout needs one page
    /// per tensor), and every prompt block the run ever caches is 48 x 256 tokens (12 MiB). So
    /// nothing is preempted, retried, rejected or evicted, which the tests rely on.
    static func arguments(_ shape: Shape) -> [String] {
        ["--layout", shape.layout, "--page-bytes", String(shape.pageBytes), "--memory", "64MiB",
         "--layers", "2", "--kv-heads", "2", "--head-dim", "64", "--dtype-bytes", "2",
         "--block-tokens", String(blockTokens), "--max-seqs", "16", "--max-seq-tokens", "1024",
         "--threads", String(threads), "--batch", String(batch), "--requests", String(requests),
         "--prompt-dist", "fixed", "--prompt-mean", String(promptTokens), "--prompt-max", String(promptTokens),
         "--output-dist", "uniform", "--output-mean", "16", "--output-max", "24",
         "--shared-prefix-ratio", "0.5", "--shared-prompts", String(sharedPrompts), "--seed", "7"]
            + (shape.reserve ? ["--reserve"] : [])
    }

    static let shapes = [
        Shape(layout: "paged", pageBytes: 64 << 10),
        Shape(layout: "contiguous", pageBytes: 4 << 10),
        Shape(layout: "paged", pageBytes: 2 << 20),
        Shape(layout: "contiguous", pageBytes: 64 << 10, reserve: true),
    ]

    /// Parses `arguments` as `kvcache load` does (validation included), builds the runner and runs it.
    static func load(_ arguments: [String]) throws -> (runner: LoadRunner, report: LoadReport) {
        let runner = try LoadCommand.parse(arguments).loadRunner()
        return (runner, try runner.run())
    }

    /// The JSON object at `path` (top level when empty) of `report.json()`.
    static func object(_ report: LoadReport, _ path: String...) throws -> [String: Any] {
        var value: Any = try JSONSerialization.jsonObject(with: Data(report.json().utf8))
        for key in path { value = try #require((value as? [String: Any])?[key], "no \(key)") }
        return try #require(value as? [String: Any])
    }

    static func uint(_ object: [String: Any], _ key: String) throws -> UInt64 {
        try #require((object[key] as? NSNumber)?.uint64Value, "\(key) is not a number")
    }

    static func double(_ object: [String: Any], _ key: String) throws -> Double {
        try #require((object[key] as? NSNumber)?.doubleValue, "\(key) is not a number")
    }

    @Test(arguments: shapes)
    func jsonKeysAndValuesAgreeWithTheRun(shape: Shape) throws {
        let (runner, report) = try Self.load(Self.arguments(shape))
        let json = report.json()
        let top = try Self.object(report)
        // Every key the help promises (first_error and offload are absent: no error, no tier).
        #expect(Set(top.keys) == ["workload", "workload_summary", "layout", "threads", "batch_per_thread", "write_kv",
                                  "elapsed_s", "requests", "prompt_tokens", "decoded_tokens", "restarts", "operations", "prefix", "memory",
                                  "interrupted"])
        #expect(top["interrupted"] as? Bool == false)
        #expect(top["workload"] as? String == "synthetic")
        #expect(top["layout"] as? String == shape.layout)
        #expect(try Self.uint(top, "threads") == UInt64(Self.threads))
        #expect(try Self.uint(top, "batch_per_thread") == UInt64(Self.batch))
        #expect(json.contains("\"write_kv\" : false"))
        #expect(try Self.double(top, "elapsed_s") > 0)

        // Requests: all asked, all completed, nothing lost on the way (see `arguments`).
        let requests = try Self.object(report, "requests")
        #expect(Set(requests.keys) == ["requested", "offered", "completed", "rejected_out_of_memory", "rejected_unfittable",
                                       "rejected_other", "create_retries", "preemptions", "freed_at_stop", "per_s"],
                "no trace_requests without a trace")
        #expect(try Self.uint(requests, "requested") == UInt64(Self.requests))
        #expect(try Self.uint(requests, "offered") == UInt64(Self.requests))
        #expect(try Self.uint(requests, "completed") == UInt64(Self.requests))
        for key in ["rejected_out_of_memory", "rejected_unfittable", "rejected_other", "create_retries", "preemptions", "freed_at_stop"] {
            #expect(try Self.uint(requests, key) == 0, "\(key)")
        }
        #expect(try Self.double(requests, "per_s") > 0)

        // Tokens: every prompt created once, every output token appended once.
        let outputs = (0..<Self.requests).map { runner.workload.request($0).outputTokens }
        #expect(outputs.allSatisfy { (8...24).contains($0) }, "uniform on 2 x 16 - 24 ... 24")
        #expect(try Self.uint(top, "prompt_tokens") == UInt64(Self.requests * Self.promptTokens))
        #expect(try Self.uint(top, "decoded_tokens") == UInt64(outputs.reduce(0, +)))

        // Operations: one create and one free per request, one append per decoded token.
        let operations = try Self.object(report, "operations")
        #expect(Set(operations.keys) == ["create", "append", "free"])
        let expectedCounts = ["create": Self.requests, "append": outputs.reduce(0, +), "free": Self.requests]
        for (name, count) in expectedCounts {
            let op = try Self.object(report, "operations", name)
            #expect(Set(op.keys) == ["count", "ops_per_s", "mean_us", "p50_us", "p99_us", "p999_us", "max_us"])
            #expect(try Self.uint(op, "count") == UInt64(count), "\(name)")
            let quantiles = try ["p50_us", "p99_us", "p999_us", "max_us"].map { try Self.double(op, $0) }
            #expect(quantiles == quantiles.sorted(), "\(name): \(quantiles)")
            #expect(try Self.double(op, "mean_us") <= quantiles.last!, "\(name)")
            #expect(try Self.double(op, "ops_per_s") > 0, "\(name)")
        }

        // Prefix cache: every first admission looks its whole prompt up. Within one thread
        // every use of a shared prompt after its first finds its 128 shared tokens (nothing
        // is evicted), so at most threads x shared prompts requests miss; the unique halves never hit.
        let prefix = try Self.object(report, "prefix")
        #expect(Set(prefix.keys) == ["query_tokens", "hit_tokens", "hit_rate"])
        let query = try Self.uint(prefix, "query_tokens"), hit = try Self.uint(prefix, "hit_tokens")
        let shared = UInt64(Self.promptTokens / 2)
        #expect(query == UInt64(Self.requests * Self.promptTokens))
        #expect(hit <= query)
        #expect(hit % shared == 0, "hits are whole shared halves: \(hit)")
        #expect(hit >= UInt64(Self.requests - Self.threads * Self.sharedPrompts) * shared, "\(hit)")
        #expect(try Self.double(prefix, "hit_rate") == Double(hit) / Double(query))

        // Memory: the new page_bytes and huge_pages, the budget and the process's RSS.
        let memory = try Self.object(report, "memory")
        #expect(Set(memory.keys) == ["budget_bytes", "committed_peak_bytes", "committed_end_bytes", "rss_start_bytes",
                                     "rss_peak_bytes", "rss_end_bytes", "blocks_evicted", "mappings", "page_bytes",
                                     "huge_pages", "reserved_bytes", "reserve_s"])
        #expect(try Self.uint(memory, "page_bytes") == runner.config.pageBytes)
        #expect(runner.config.pageBytes == shape.pageBytes)
        // Huge pages only with 2 MiB pages, and then exactly when the engine gets them (the
        // kernel's shmem setting; the engine's own tests pin that side).
        let huge = shape.pageBytes == 2 << 20 ? try Engine(runner.config).stats().hugePages : false
        #expect(json.contains("\"huge_pages\" : \(huge)"), "huge_pages should be \(huge)")
        #expect(try Self.uint(memory, "budget_bytes") == Self.budget)
        let peak = try Self.uint(memory, "committed_peak_bytes"), end = try Self.uint(memory, "committed_end_bytes")
        #expect(end <= peak && peak <= Self.budget, "end \(end), peak \(peak)")
        let rss = try ["rss_start_bytes", "rss_peak_bytes", "rss_end_bytes"].map { try Self.uint(memory, $0) }
        #expect(rss.allSatisfy { $0 > 0 }, "\(rss)")
        // VmHWM and VmRSS come from one read of /proc/self/status at the end, where the kernel
        // reports at least the current RSS as the peak. Against the start's RSS there is no
        // such promise: the kernel updates its high-water mark lazily (not when shmem pages
        // are punched out), and other tests in this process map and unmap meanwhile; one full
        // run saw the peak below the start.
        #expect(rss[1] >= rss[2], "VmHWM is at least VmRSS of the same read: \(rss)")
        #expect(try Self.uint(memory, "blocks_evicted") == 0)
        if shape.layout == "paged" { #expect(try Self.uint(memory, "mappings") == 0, "the paged layout maps nothing per sequence") }
        let reserved = try Self.uint(memory, "reserved_bytes")
        if shape.reserve {
            #expect(reserved > 0 && reserved <= Self.budget && reserved <= peak, "\(reserved)")
        } else {
            #expect(reserved == 0)
            #expect(try Self.double(memory, "reserve_s") == 0)
        }
    }

    /// The table states the page size, and for 2 MiB pages whether they really are huge.
    @Test(arguments: [shapes[0], shapes[2]])
    func tableNamesThePageSize(shape: Shape) throws {
        let (runner, report) = try Self.load(Self.arguments(shape))
        let table = report.table()
        #expect(table.contains("kvcache-cli load: \(shape.layout) layout, \(Self.threads) threads x \(Self.batch) live sequences"))
        #expect(table.contains("requests   \(Self.requests) completed of \(Self.requests) in "))
        #expect(table.contains("budget 64 MiB; pages of \(ByteCount.format(shape.pageBytes))"), "\(table)")
        let hugeNote = "(huge pages)", smallNote = "(small pages: shmem huge pages are off)"
        if shape.pageBytes == 2 << 20 {
            let huge = try Engine(runner.config).stats().hugePages
            #expect(table.contains(huge ? hugeNote : smallNote), "\(table)")
        } else {
            #expect(!table.contains(hugeNote) && !table.contains(smallNote), "\(table)")
        }
    }

    /// A tail latency of seconds (11 characters in microseconds, as the main job's create
    /// p999 can be) widens its column, so the row stays under the header (it used to push
    /// the rest of the row one character right of its headings).
    @Test func aSecondLongLatencyKeepsTheColumnsApart() throws {
        var report = try Self.load(Self.arguments(Self.shapes[0])).report
        report.operations["create"]?.p99Us = 292028.415
        report.operations["create"]?.p999Us = 1121976.319
        report.operations["create"]?.maxUs = 1445986.3
        let lines = report.table().split(separator: "\n")
        let header = try #require(lines.first { $0.hasPrefix("operation") })
        let create = try #require(lines.first { $0.hasPrefix("create") })
        #expect(create.hasSuffix(" 292028.415 1121976.319  1445986.3"), "\(create)")
        #expect(header.count == create.count, "the header is as wide as the row:\n\(header)\n\(create)")
        #expect(header.hasSuffix("p99 us     p999 us     max us"), "the p999 column widened by one: \(header)")
    }

    /// max_us is the longest latency recorded, not the top of its histogram bucket (3
    /// significant digits: up to 0.1 % above, so it once read 47906.8 us beside a p999 of 47874.6).
    @Test func theMaximumIsTheLongestRecordedLatency() {
        var recorder = LatencyRecorder()
        for nanoseconds: UInt64 in [1_000, 2_500, 47_874_612, 47_891_005] { recorder.record(.create, nanoseconds: nanoseconds) }
        let stats = LoadReport.OperationStats(recorder.histogram(.create), seconds: 1)
        #expect(stats.maxUs == 47_891.005)
        #expect(stats.p999Us <= stats.maxUs && stats.count == 4)
        #expect(LoadReport.OperationStats(LatencyRecorder().histogram(.create), seconds: 1).maxUs == 0, "nothing recorded")
    }

    /// The contiguous layout commits pages with `fallocate` and the process touches them only
    /// when it writes K/V, so its RSS column counts touched pages alone (the paged layout
    /// faults its fresh pages in): the table says so beside the column, and only there.
    @Test(arguments: [shapes[0], shapes[1]])
    func theTableSaysWhatTheContiguousLayoutsRSSCounts(shape: Shape) throws {
        let table = try Self.load(Self.arguments(shape)).report.table()
        let note = "RSS counts only pages touched: the contiguous layout commits pages without touching them "
            + "(--write-kv touches those it writes); compare layouts by committed bytes"
        #expect(table.contains(note) == (shape.layout == "contiguous"), "\(table)")
        #expect(LoadCommand.configuration.discussion.contains("counts only the pages the process touched"))
    }

    /// `--trace` runs the bundled Mooncake trace through the same path: the first requests,
    /// prompts truncated to `--max-prompt-tokens` and outputs capped at `--output-max`.
    @Test func aTraceRunCompletesItsRequests() throws {
        let (runner, report) = try Self.load(
            ["--trace", TraceWorkloadTests.bundledTrace, "--requests", "24", "--layers", "1", "--kv-heads", "1",
             "--head-dim", "32", "--memory", "64MiB", "--max-seqs", "16", "--max-seq-tokens", "4096",
             "--max-prompt-tokens", "2048", "--output-max", "8", "--threads", "2", "--batch", "4"])
        #expect(report.workload == "trace")
        #expect(report.requests.offered == 24 && report.requests.completed == 24)
        let asked = (0..<24).map { runner.workload.request($0) }
        #expect(asked.allSatisfy { $0.promptTokens <= 2048 && $0.outputTokens <= 8 })
        try #require(asked.allSatisfy { $0.promptTokens >= 512 }, "each prompt holds the whole shared block 0")
        #expect(report.promptTokens == asked.reduce(0) { $0 + $1.promptTokens })
        #expect(report.decodedTokens == asked.reduce(0) { $0 + $1.outputTokens })
        // Every Mooncake request starts with block 0, a shared 512-token system prompt: every
        // create after the first one of each thread finds it.
        #expect(report.prefix.hitTokens >= UInt64((24 - 2) * 512), "\(report.prefix.hitTokens)")
        #expect(report.workloadSummary.contains("24 requests") && report.workloadSummary.contains("outputs capped at 8 tokens"))
    }

    /// `--compare-offload` with the writeback thread (on by default with a tier): the run
    /// without a tier has no thread (a config with one and no tier would be refused), the run
    /// with the tier has one, which wrote blocks ahead of their eviction (the evicting calls
    /// spill those it had not reached).
    @Test func aComparisonWithWritebackRunsItOnlyWithTheTier() throws {
        let scratch = ScratchDir("load-wb"), dir = scratch.path
        defer { scratch.remove() }
        let arguments = Self.arguments(Self.shapes[0]).map { $0 == "64MiB" ? "4MiB" : $0 }
            + ["--offload-dir", dir, "--compare-offload", "--plots", ""]
        let runner = try LoadCommand.parse(arguments).loadRunner()
        #expect(runner.config.offloadWriteback)
        let (without, second) = try LoadCommand.compareOffload(runner, dir: dir)
        let with = try #require(second, "the second run ran")
        #expect(without.offload == nil)
        let offload = try #require(with.offload)
        #expect(offload.blocksWrittenAhead > 0 && offload.blocksWrittenAhead <= offload.blocksSpilled,
                "\(offload.blocksWrittenAhead) of \(offload.blocksSpilled) written ahead")
        #expect(with.table().contains("(\(offload.blocksWrittenAhead) written ahead, \(offload.spillsSkipped) skipped)"))
    }

    /// `--compare-offload` with a peer's tier: the run without a tier drops the peers too (it
    /// kept them and was refused: peers need a tier of the engine's own), the run with it
    /// reads the peer's blocks. A directory another engine uses is refused before either run,
    /// and keeps its tier files (they were unlinked under that engine).
    @Test func aComparisonWithAPeersTierRunsAndSparesADirectoryInUse() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("kvcache-load-peer-\(UUID().uuidString)").path
        let (peer, own) = (base + "/peer", base + "/own")
        for dir in [peer, own] { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(atPath: base) }
        let tight = Self.arguments(Self.shapes[0]).map { $0 == "64MiB" ? "4MiB" : $0 } + ["--model-tag", "5", "--plots", ""]
        let filled = try Self.load(tight + ["--offload-dir", peer, "--no-offload-writeback"]).report
        try #require((filled.offload?.blocksSpilled ?? 0) > 0, "the peer's run spilled nothing")
        let runner = try LoadCommand.parse(tight + ["--offload-dir", own, "--peer-offload-dir", peer, "--compare-offload"]).loadRunner()
        let (without, with) = try LoadCommand.compareOffload(runner, dir: own)
        #expect(without.offload == nil && without.requests.completed == Self.requests)
        #expect((with?.offload?.peerHits ?? 0) > 0, "the run with the tier read none of the peer's blocks")

        let holder = try Engine(runner.config)  // holds `own`, as a server would
        let files = try FileManager.default.contentsOfDirectory(atPath: own).sorted()
        #expect(throws: KVError.self) { _ = try LoadCommand.compareOffload(runner, dir: own) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: own).sorted() == files && files.contains("kvcache.slab"))
        _ = holder
    }

    /// A run with `--offload-dir` reports the disk tier under exactly the keys the help lists
    /// (it once listed three fewer than the JSON had), and a second run on the same directory
    /// reports the blocks the first one spilled as found in the tier's journal, in the JSON and
    /// in the table. Both runs spill in the evicting call (`--no-offload-writeback`), so none
    /// is written ahead.
    @Test func anOffloadRunsKeysAreTheHelpsAndASecondRunFindsTheFirstOnesBlocks() throws {
        let scratch = ScratchDir("load-tier"), dir = scratch.path
        defer { scratch.remove() }
        // 4 MiB beside ~2.5 MiB of live sequences and ~6.5 MiB of distinct prompt blocks:
        // cached blocks are evicted, so spilled.
        let arguments = Self.arguments(Self.shapes[0]).map { $0 == "64MiB" ? "4MiB" : $0 }
            + ["--offload-dir", dir, "--no-offload-writeback", "--plots", ""]
        let first = try Self.load(arguments).report
        let spilled = try Self.uint(try Self.object(first, "offload"), "blocks_spilled")
        try #require(spilled > 0, "the first run spilled nothing")
        #expect(try Self.uint(try Self.object(first, "offload"), "blocks_written_ahead") == 0)
        #expect(try Self.uint(try Self.object(first, "offload"), "recovered_blocks") == 0, "a new directory")

        let (secondRunner, second) = try Self.load(arguments)
        let offload = try Self.object(second, "offload")
        let help = LoadCommand.configuration.discussion
        let listed = try #require(help.range(of: "offload {").flatMap { start in
            help[start.upperBound...].firstIndex(of: "}").map { help[start.upperBound..<$0] }
        })
        let keys = Set(listed.split(separator: ",").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) })
        #expect(Set(offload.keys) == keys, "JSON \(Set(offload.keys).symmetricDifference(keys)) differ from the help")
        let recovered = try Self.uint(offload, "recovered_blocks")
        #expect(recovered > 0 && recovered <= spilled, "recovered \(recovered) of \(spilled) spilled")
        #expect(try Self.uint(offload, "journal_records_dropped") == 0)
        #expect(second.table().contains("  start    \(recovered) blocks found in the tier's journal, 0 journal records dropped"))
        // Prompts found blocks on disk, their sequences waited for them outside the decode
        // batch (`LoadWorker`'s loading list), then decoded every output token: none was lost
        // or decoded twice on the way.
        #expect(try Self.uint(offload, "disk_hit_tokens") > 0)
        #expect(try Self.double(offload, "disk_hit_rate") == Double(try Self.uint(offload, "disk_hit_tokens")) / Double(second.promptTokens),
                "a share of the first admissions' prompt tokens, as prefix.hit_rate")
        #expect(try Self.uint(offload, "disk_hit_tokens") <= second.prefix.hitTokens, "part of the headline's cached tokens")
        #expect(try Self.uint(offload, "reload_failures") == 0)
        let outputs = (0..<Self.requests).map { secondRunner.workload.request($0).outputTokens }
        #expect(second.requests.completed + second.requests.rejectedOutOfMemory == Self.requests)
        if second.requests.completed == Self.requests && second.requests.preemptions == 0 {
            #expect(second.decodedTokens == outputs.reduce(0, +))
        }
    }

    /// `--prefill-tokens-per-s R`: each request's thread sleeps (prompt - cached) / R, so the
    /// ttft row (create called to prefill done) adds up to at least the prompt tokens not
    /// served from the cache over R, and the run lasts at least that over the threads.
    @Test func aModelledPrefillCostsItsUncachedTokensAndIsReportedAsTTFT() throws {
        let rate = 64_000.0  // 2-4 ms per prompt of 128-256 uncached tokens
        let report = try Self.load(Self.arguments(Self.shapes[0]) + ["--prefill-tokens-per-s", String(rate)]).report
        try #require(report.requests.completed == Self.requests && report.requests.preemptions == 0
                     && report.requests.createRetries == 0)
        let ttft = try #require(report.operations["ttft"], "no ttft row")
        #expect(ttft.count == UInt64(Self.requests))
        let prefillSeconds = Double(report.promptTokens - Int(report.prefix.hitTokens)) / rate
        #expect(prefillSeconds >= Double(Self.requests * Self.promptTokens / 2) / rate, "half of each prompt is unique")
        #expect(ttft.meanUs * Double(ttft.count) >= prefillSeconds * 1e6, "ttft \(ttft.meanUs) us x \(ttft.count)")
        #expect(report.elapsedSeconds >= prefillSeconds / Double(Self.threads))
        #expect(Set(try Self.object(report, "operations").keys) == ["create", "append", "free", "ttft"])
        #expect(report.table().contains("\nttft "))
    }

    /// `--duration` admits no request arriving after it: at 0.05 requests/s most arrivals
    /// come tens of seconds in, and a run of one second once claimed the first of them and
    /// waited for it (38 s). The run ends before that arrival and offers exactly the requests
    /// arriving within the second.
    @Test func aDurationAdmitsNoRequestArrivingAfterIt() throws {
        let arguments = Self.arguments(Self.shapes[0]).filter { $0 != "--requests" && $0 != String(Self.requests) }
            + ["--rate", "0.05", "--duration", "1"]
        let runner = try LoadCommand.parse(arguments).loadRunner()
        let arrivals = (0..<runner.workload.requestCount).map { runner.workload.request($0).arrivalNanoseconds }
        let within = arrivals.filter { $0 < 1_000_000_000 }.count
        let late = try #require(arrivals.first { $0 >= 1_000_000_000 })
        try #require(late > 5_000_000_000, "the first late arrival comes \(late) ns in")
        let report = try runner.run()
        #expect(report.requests.offered == within && report.requests.completed == within)
        #expect(report.elapsedSeconds < Double(late) / 1e9)
    }

    /// With `--max-retries 0` no create is retried: a refused one rejects its request (it was
    /// counted as retried all the same).
    @Test func withoutRetriesNoCreateCountsAsRetried() throws {
        let arguments = Self.arguments(Self.shapes[0]).map { $0 == "64MiB" ? "1MiB" : $0 } + ["--max-retries", "0"]
        let report = try Self.load(arguments).report
        try #require(report.requests.rejectedOutOfMemory > 0, "the 1 MiB budget refused nothing")
        #expect(report.requests.createRetries == 0)
        #expect(report.requests.completed + report.requests.rejectedOutOfMemory + report.requests.rejectedUnfittable == Self.requests)
    }

    /// The run's time ends when its workers do, not at the sampling thread's next wake-up
    /// (`LoadRunner.sampleIntervalNanoseconds` later): one short request once took 55 ms,
    /// so a short run's rate was understated. The interval here is 10 s, so that a time ending
    /// at the wake-up (>= 10 s) is told from one request's time however loaded the machine
    /// (it took 0.109 s against the 50 ms default once, and failed).
    @Test func theElapsedTimeEndsWithTheWorkers() throws {
        var runner = try LoadCommand.parse(Self.arguments(Self.shapes[0]).map { $0 == String(Self.requests) ? "1" : $0 })
            .loadRunner()
        runner.sampleIntervalNanoseconds = 10_000_000_000
        let report = try runner.run()
        try #require(report.requests.completed == 1)
        #expect(report.elapsedSeconds < 5, "\(report.elapsedSeconds) s")
    }
}
