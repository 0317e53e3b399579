import Foundation
import KVCache
import KVReport

extension LoadReport {
    /// The disk tier's part of a `kvcache load` report: traffic, reloads and how long creates
    /// whose prefix came from disk took to become `ready`. Throughputs are bytes over the run's wall time (not device peaks).
    struct Offload: Codable, Sendable {
        var dir: String
        var backend: String
        var capacityBytes: UInt64
        /// What the engine found in the tier's journal when it started (an earlier run's tier),
        /// and journal records it could not use (`DiskTierStats.journalRecordsDropped`).
        var recoveredBlocks: UInt64
        var journalRecordsDropped: UInt64
        var bytesWritten: UInt64
        var bytesRead: UInt64
        var writeMiBPerSecond: Double
        var readMiBPerSecond: Double
        var blocksSpilled: UInt64
        /// Of `blocksSpilled`, those the writeback thread wrote ahead of their eviction
        /// (`--offload-writeback`, `DiskTierStats.blocksWrittenAhead`).
        var blocksWrittenAhead: UInt64
        /// Cached blocks allocations evicted without writing them back: no staging buffer was
        /// free beyond the reserve (`DiskTierStats.spillsSkipped`).
        var spillsSkipped: UInt64
        var blocksLoaded: UInt64
        /// Swap-outs completed, cancelled (a swap-in or free before they completed) and failed.
        var swapOuts: UInt64
        var swapOutsCancelled: UInt64
        var swapOutsFailed: UInt64
        /// Prompt tokens the requests' first admissions read from the own disk tier, and their
        /// share of those admissions' prompt tokens: the headline's (`prefix`) denominator, so
        /// that `diskHitRate` is the part of `prefix.hitRate` the tier supplied. Per create from
        /// `Engine.prefixSources` (found on disk at the create, whether or not the read later
        /// failed); restarts' are in `Restarts.diskHitTokens`. Until 2026-11-24 these were the
        /// engine's counts of every create, restarts included.
        var diskHitTokens: UInt64
        var diskHitRate: Double
        /// Prompt tokens found only on disk that the engine left to the modelled prefill, which
        /// it expected to compute them sooner (`DiskTierStats.declinedHitTokens`: the engine's
        /// count, every create's, restarts included).
        var declinedHitTokens: UInt64
        /// Peers (`--peer-offload-dir`): blocks read from them and served, reads refused as
        /// stale (the engine's counts, every create's), and prompt tokens the first admissions
        /// found in them with their share of those admissions' prompt tokens (as the disk's;
        /// restarts' in `Restarts.peerHitTokens`).
        var peerHits: UInt64
        var peerStale: UInt64
        var peerHitTokens: UInt64
        var peerHitRate: Double
        /// Disk reads that failed or were rejected, restarting their request.
        var reloadFailures: Int
        /// Creates not ready at once, and the time from each create's return until its thread
        /// found it ready (in all, mean, max); the thread decoded its other sequences meanwhile.
        var readyWaits: Int
        var readyWaitTotalMs: Double
        var readyWaitMeanUs: Double
        var readyWaitMaxUs: Double

        enum CodingKeys: String, CodingKey {
            case dir, backend
            case capacityBytes = "capacity_bytes"
            case recoveredBlocks = "recovered_blocks"
            case journalRecordsDropped = "journal_records_dropped"
            case bytesWritten = "bytes_written"
            case bytesRead = "bytes_read"
            case writeMiBPerSecond = "write_mib_per_s"
            case readMiBPerSecond = "read_mib_per_s"
            case blocksSpilled = "blocks_spilled"
            case blocksWrittenAhead = "blocks_written_ahead"
            case spillsSkipped = "spills_skipped"
            case blocksLoaded = "blocks_loaded"
            case swapOuts = "swap_outs"
            case swapOutsCancelled = "swap_outs_cancelled"
            case swapOutsFailed = "swap_outs_failed"
            case diskHitTokens = "disk_hit_tokens"
            case diskHitRate = "disk_hit_rate"
            case declinedHitTokens = "declined_hit_tokens"
            case peerHits = "peer_hits"
            case peerStale = "peer_stale"
            case peerHitTokens = "peer_hit_tokens"
            case peerHitRate = "peer_hit_rate"
            case reloadFailures = "reload_failures"
            case readyWaits = "ready_waits"
            case readyWaitTotalMs = "ready_wait_total_ms"
            case readyWaitMeanUs = "ready_wait_mean_us"
            case readyWaitMaxUs = "ready_wait_max_us"
        }

        init(stats: EngineStats, dir: String, elapsed: Double, total: WorkerResult) {
            let d = stats.disk
            self.dir = dir
            backend = (d.backend == 0 ? "io_uring" : "thread pool") + (d.direct == 1 ? ", O_DIRECT" : ", buffered")
            capacityBytes = d.capacitySlots * d.slotBytes
            recoveredBlocks = d.recoveredSlots
            journalRecordsDropped = d.journalRecordsDropped
            bytesWritten = d.bytesWritten
            bytesRead = d.bytesRead
            writeMiBPerSecond = elapsed > 0 ? Double(d.bytesWritten) / elapsed / 1_048_576 : 0
            readMiBPerSecond = elapsed > 0 ? Double(d.bytesRead) / elapsed / 1_048_576 : 0
            blocksSpilled = d.blocksSpilled
            blocksWrittenAhead = d.blocksWrittenAhead
            spillsSkipped = d.spillsSkipped
            blocksLoaded = d.blocksLoaded
            swapOuts = d.swapOuts
            swapOutsCancelled = d.swapOutsCancelled
            swapOutsFailed = d.swapOutsFailed
            let firstAdmissions = Double(total.promptTokens)
            diskHitTokens = UInt64(total.diskHitTokens)
            declinedHitTokens = d.declinedHitTokens
            diskHitRate = total.promptTokens > 0 ? Double(total.diskHitTokens) / firstAdmissions : 0
            peerHits = d.peerHits
            peerStale = d.peerStale
            peerHitTokens = UInt64(total.peerHitTokens)
            peerHitRate = total.promptTokens > 0 ? Double(total.peerHitTokens) / firstAdmissions : 0
            reloadFailures = total.reloadFailures
            readyWaits = total.readyWaits
            readyWaitTotalMs = Double(total.readyWaitNanoseconds) / 1e6
            readyWaitMeanUs = total.readyWaits > 0 ? Double(total.readyWaitNanoseconds) / Double(total.readyWaits) / 1000 : 0
            readyWaitMaxUs = Double(total.readyWaitMaxNanoseconds) / 1000
        }
    }

    /// One report comparing a run without the disk tier and one with it, same workload; the
    /// first run's alone when it was interrupted (`with` nil: the second did not run).
    static func comparison(without: LoadReport, with: LoadReport?) -> String {
        guard let with else {
            return "=== without the disk tier ===\n" + without.table() + "\n=== with the disk tier: not run (interrupted) ===\n"
        }
        var out = "=== without the disk tier ===\n" + without.table() + "\n=== with the disk tier ===\n" + with.table()
        out += "\n=== comparison (same workload, same memory budget \(ByteCount.format(with.memory.budgetBytes))) ===\n"
        func row(_ name: String, _ a: String, _ b: String) {
            out += name.padding(toLength: 28, withPad: " ", startingAt: 0) + a.padding(toLength: 18, withPad: " ", startingAt: 0) + b + "\n"
        }
        row("", "without tier", "with tier")
        row("prefix hit rate", "\(fixed(without.prefix.hitRate * 100, 1)) %", "\(fixed(with.prefix.hitRate * 100, 1)) %")
        row("prompt tokens from cache", "\(without.prefix.hitTokens)", "\(with.prefix.hitTokens)")
        row("of them from disk", "0", "\(with.offload?.diskHitTokens ?? 0)")
        row("on disk, computed instead", "-", "\(with.offload?.declinedHitTokens ?? 0)")
        row("requests per second", fixed(without.requests.perSecond, 1), fixed(with.requests.perSecond, 1))
        row("create p99 us", fixed(without.operations["create"]?.p99Us ?? 0, 1), fixed(with.operations["create"]?.p99Us ?? 0, 1))
        if let a = without.operations["ttft"], let b = with.operations["ttft"] {
            row("ttft p50 / p99 ms", "\(fixed(a.p50Us / 1000, 1)) / \(fixed(a.p99Us / 1000, 1))",
                "\(fixed(b.p50Us / 1000, 1)) / \(fixed(b.p99Us / 1000, 1))")
        }
        row("disk written / read", "-", "\(ByteCount.format(with.offload?.bytesWritten ?? 0)) / \(ByteCount.format(with.offload?.bytesRead ?? 0))")
        row("create to ready, mean us", "-", fixed(with.offload?.readyWaitMeanUs ?? 0, 1))
        return out
    }

    /// The comparison as one JSON object: {"without_tier": ..., "with_tier": ..., "hit_rate_gain": ...};
    /// with_tier null and no hit_rate_gain when the first run was interrupted.
    static func comparisonJSON(without: LoadReport, with: LoadReport?) -> String {
        guard let with else { return "{\"without_tier\": \(without.json()),\n\"with_tier\": null}" }
        return "{\"without_tier\": \(without.json()),\n\"with_tier\": \(with.json()),\n\"hit_rate_gain\": \(with.prefix.hitRate - without.prefix.hitRate)}"
    }
}
