import ArgumentParser
import Foundation
import KVCache
import KVReport
import Synchronization

/// Runs one load test: creates the engine, starts the worker threads, samples memory (the
/// report's `timeline`) and shows progress on the calling thread until they finish, and assembles the report.
struct LoadRunner {
    var config: EngineConfig
    var workload: any Workload
    var threads: Int
    var settings: WorkerSettings
    /// Stop claiming requests after this long (nil: run the whole workload); requests claimed
    /// before it still finish, created again after it when memory or a preemption sent them back.
    var durationSeconds: Double?
    /// `--requests` as given (nil: not given), for the report.
    var requested: Int? = nil
    /// Commit (and, paged, fault in) the whole budget before the clock starts, as a server
    /// would at start-up (`Engine.reserve`).
    var reserve = false

    /// How often the calling thread samples the engine's and the process's memory (the peak of
    /// `committedBytes`, the `MemoryTimeline`); it also checks this often whether the workers
    /// have finished, so the command returns up to one interval after them (the report's time
    /// ends with the workers, not with this wake-up).
    var sampleIntervalNanoseconds = LoadRunner.defaultSampleIntervalNanoseconds

    /// `sampleIntervalNanoseconds` of every `kvcache-cli load` run: 50 ms.
    static let defaultSampleIntervalNanoseconds: UInt64 = 50_000_000

    /// An error that ends the run, with a message for the operator.
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// The run's engine, of `config`. A refused configuration (`invalidArgument`: a budget
    /// that holds no block or too many, a tier of another model) is a `ValidationError` (exit
    /// 64) naming the flags (`EngineOptions.flagWording`); any other refusal a `Failure`
    /// naming it. Costs the engine's creation (with a disk tier: opening, and recovering, the
    /// tier's files).
    func makeEngine() throws -> Engine {
        do {
            return try Engine(config)
        } catch where error.code == .invalidArgument {
            throw ValidationError("cannot create the engine: " + EngineOptions.flagWording(error.message))
        } catch {
            throw Failure(description: "cannot create the engine: \(error)")
        }
    }

    func run() throws -> LoadReport {
        ProcessMemory.resetPeak()  // the run's peak RSS is its own (--compare-offload runs two)
        let rssStart = ProcessMemory.current()
        let engine = try makeEngine()
        var reserved: (bytes: UInt64, seconds: Double) = (0, 0)
        if reserve {
            let t0 = monotonicNanoseconds()
            do {
                reserved.bytes = try engine.reserve(bytes: config.memoryBytes)
            } catch {
                throw Failure(description: "cannot reserve the memory budget: \(error)")
            }
            reserved.seconds = Double(monotonicNanoseconds() - t0) / 1e9
        }
        var progressLine = ProgressLine()
        let admitUntil = durationSeconds.map { UInt64($0 * 1e9) } ?? .max
        let coordinator = LoadCoordinator(startNanoseconds: monotonicNanoseconds(), admitUntilNanoseconds: admitUntil,
                                          requestCount: workload.requestCount)
        let progress = (0..<threads).map { _ in WorkerProgress() }
        let results = Mutex<[WorkerResult]>([])
        for index in 0..<threads {
            let worker = LoadWorker(index: index, engine: engine, workload: workload, coordinator: coordinator,
                                    progress: progress[index], settings: settings)
            let thread = Thread {
                let result = worker.run()
                results.withLock { $0.append(result) }
                progress[index].finished.store(true, ordering: .releasing)
            }
            thread.name = "kvcache-load-\(index)"
            thread.start()
        }

        var committedPeak: UInt64 = 0
        var timeline = MemoryTimeline(config: config)
        // The signal that stopped the run (SIGINT, SIGTERM: `InterruptCleanup` in `.stop` mode), 0 if none.
        var interruptSignal: Int32 = 0
        while !progress.allSatisfy({ $0.finished.load(ordering: .acquiring) }) {
            if interruptSignal == 0, case let signal = InterruptCleanup.pendingSignal, signal != 0 {
                interruptSignal = signal
                coordinator.interrupt()
                continue  // the workers stop within a decode step
            }
            sleepNanoseconds(sampleIntervalNanoseconds)
            let stats = engine.stats()
            committedPeak = max(committedPeak, stats.committedBytes)
            let rss = ProcessMemory.current().rssBytes
            timeline.record(seconds: Double(coordinator.elapsedNanoseconds()) / 1e9, stats: stats, rssBytes: rss)
            progressLine.update(self.progressText(coordinator: coordinator, progress: progress, stats: stats, rssBytes: rss))
        }
        progressLine.clear()
        if let failure = coordinator.failure {
            throw Failure(description: failure)
        }

        var total = WorkerResult()
        for result in results.withLock({ $0 }) {
            total.finishedNanoseconds = max(total.finishedNanoseconds, result.finishedNanoseconds)
            total.latency.merge(result.latency)
            total.completed += result.completed
            total.rejectedOutOfMemory += result.rejectedOutOfMemory
            total.rejectedUnfittable += result.rejectedUnfittable
            total.rejectedOther += result.rejectedOther
            total.createRetries += result.createRetries
            total.preemptions += result.preemptions
            total.promptTokens += result.promptTokens
            total.hitTokens += result.hitTokens
            total.diskHitTokens += result.diskHitTokens
            total.peerHitTokens += result.peerHitTokens
            total.decodedTokens += result.decodedTokens
            total.restartAdmissions += result.restartAdmissions
            total.restartPromptTokens += result.restartPromptTokens
            total.restartHitTokens += result.restartHitTokens
            total.restartDiskHitTokens += result.restartDiskHitTokens
            total.restartPeerHitTokens += result.restartPeerHitTokens
            total.redecodedTokens += result.redecodedTokens
            total.draftSteps += result.draftSteps
            total.rejectedDraftTokens += result.rejectedDraftTokens
            total.firstError = total.firstError ?? result.firstError
            total.readyWaits += result.readyWaits
            total.readyWaitNanoseconds += result.readyWaitNanoseconds
            total.readyWaitMaxNanoseconds = max(total.readyWaitMaxNanoseconds, result.readyWaitMaxNanoseconds)
            total.reloadFailures += result.reloadFailures
            total.freedAtStop += result.freedAtStop
        }
        // The workers' end, not this thread's next sample (up to 50 ms later: a short run's
        // rate was once understated by it).
        let elapsed = Double(total.finishedNanoseconds) / 1e9
        let stats = engine.stats()
        committedPeak = max(committedPeak, stats.committedBytes)
        let rssEnd = ProcessMemory.current()
        timeline.record(seconds: max(elapsed, timeline.samples.last?.seconds ?? 0), stats: stats, rssBytes: rssEnd.rssBytes)

        var operations: [String: LoadReport.OperationStats] = [:]
        for op in TimedOperation.allCases where (op != .truncate || settings.speculation != nil)
            && (op != .ttft || settings.prefillTokensPerSecond > 0) {
            operations[op.name] = LoadReport.OperationStats(total.latency.histogram(op), seconds: elapsed)
        }
        let offered = durationSeconds == nil && interruptSignal == 0 ? workload.requestCount : coordinator.claimed
        return LoadReport(
            workload: workload.kind,
            workloadSummary: workload.summary,
            layout: config.layout == .paged ? "paged" : "contiguous",
            threads: threads,
            batchPerThread: settings.batch,
            writeKV: settings.writeKV,
            elapsedSeconds: (elapsed * 1000).rounded() / 1000,
            requests: .init(requested: requested, traceRequests: workload.kind == "trace" ? workload.requestCount : nil,
                            offered: offered, completed: total.completed,
                            rejectedOutOfMemory: total.rejectedOutOfMemory, rejectedUnfittable: total.rejectedUnfittable,
                            rejectedOther: total.rejectedOther,
                            createRetries: total.createRetries, preemptions: total.preemptions,
                            freedAtStop: total.freedAtStop,
                            perSecond: elapsed > 0 ? (Double(total.completed) / elapsed * 10).rounded() / 10 : 0),
            promptTokens: total.promptTokens,
            decodedTokens: total.decodedTokens,
            restarts: .init(admissions: total.restartAdmissions, promptTokens: total.restartPromptTokens,
                            hitTokens: total.restartHitTokens, recomputedPromptTokens: total.restartPromptTokens - total.restartHitTokens,
                            diskHitTokens: config.hasDiskTier ? total.restartDiskHitTokens : nil,
                            peerHitTokens: config.hasDiskTier ? total.restartPeerHitTokens : nil,
                            redecodedTokens: total.redecodedTokens),
            operations: operations,
            speculation: settings.speculation.map {
                // Kept per step over every step, restarts' included.
                LoadReport.Speculation(draftTokens: $0.draftTokens, acceptance: $0.acceptance, steps: total.draftSteps,
                                       rejectedDraftTokens: total.rejectedDraftTokens,
                                       decodedTokens: total.decodedTokens + total.redecodedTokens)
            },
            // From the workers' creates, not the engine's counters (EngineStats.prefixQueryTokens
            // and prefixHitTokens), which count every create, restarts too.
            prefix: .init(queryTokens: UInt64(total.promptTokens), hitTokens: UInt64(total.hitTokens),
                          hitRate: total.promptTokens > 0 ? Double(total.hitTokens) / Double(total.promptTokens) : 0),
            memory: .init(budgetBytes: stats.budgetBytes, committedPeakBytes: committedPeak,
                          committedEndBytes: stats.committedBytes, rssStartBytes: rssStart.rssBytes,
                          rssPeakBytes: rssEnd.peakRSSBytes, rssEndBytes: rssEnd.rssBytes,
                          blocksEvicted: stats.blocksEvicted, mappings: stats.mappings,
                          pageBytes: config.pageBytes, hugePages: stats.hugePages,
                          reservedBytes: reserved.bytes, reserveSeconds: (reserved.seconds * 1000).rounded() / 1000),
            firstError: total.firstError,
            interrupted: interruptSignal != 0,
            interruptSignal: interruptSignal,
            offload: config.hasDiskTier ? LoadReport.Offload(stats: stats, dir: config.offloadDir ?? "", elapsed: elapsed, total: total) : nil,
            timeline: timeline
        )
    }

    private func progressText(coordinator: LoadCoordinator, progress: [WorkerProgress], stats: EngineStats, rssBytes: UInt64) -> String {
        let seconds = Double(coordinator.elapsedNanoseconds()) / 1e9
        let decoded = progress.reduce(0) { $0 + $1.decodedTokens.load(ordering: .relaxed) }
        // As the report's: first admissions only.
        let query = progress.reduce(0) { $0 + $1.promptTokens.load(ordering: .relaxed) }
        let hitTokens = progress.reduce(0) { $0 + $1.hitTokens.load(ordering: .relaxed) }
        return progressText(seconds: seconds,
                            completed: progress.reduce(0) { $0 + $1.completed.load(ordering: .relaxed) },
                            rejected: progress.reduce(0) { $0 + $1.rejected.load(ordering: .relaxed) },
                            live: stats.sequences, tokensPerSecond: Double(decoded) / max(seconds, 1e-9),
                            hitRate: query > 0 ? Double(hitTokens) / Double(query) : 0,
                            committedBytes: stats.committedBytes, rssBytes: rssBytes)
    }

    /// The requests a run ends at, when that is a number a person can read as such: the
    /// workload's count without `--duration`, with `--requests`, or of a trace (the run ends
    /// at whichever comes first, the count or the duration). Nil for a synthetic run bounded
    /// by `--duration` alone, whose count is only a cap the duration never reaches
    /// (100,000,000 in a closed loop; 2 x rate x duration + 1000 with `--rate`).
    var progressRequestBound: Int? {
        durationSeconds == nil || requested != nil || workload.kind == "trace" ? workload.requestCount : nil
    }

    /// The progress line: the time (with `--duration`, of how long; past it, that admission
    /// has ended while the live requests finish), requests done (of `progressRequestBound`
    /// when there is one), rejected and live, the decode rate, the hit rate of first
    /// admissions (as the report's), committed bytes and RSS.
    func progressText(seconds: Double, completed: Int, rejected: Int, live: UInt64, tokensPerSecond: Double, hitRate: Double,
                      committedBytes: UInt64, rssBytes: UInt64) -> String {
        let time: String
        if let durationSeconds {
            time = seconds < durationSeconds ? "\(fixed(seconds, 1)) s of \(fixed(durationSeconds, 1)) s"
                : "\(fixed(seconds, 1)) s, admission ended at \(fixed(durationSeconds, 1)) s"
        } else {
            time = "\(fixed(seconds, 1)) s"
        }
        let done = progressRequestBound.map { "\(completed)/\($0)" } ?? "\(completed)"
        return "[\(time)] \(done) done, \(rejected) rejected, "
            + "\(live) live, \(fixed(tokensPerSecond / 1000, 1))k tok/s, "
            + "hit \(fixed(hitRate * 100, 1))%, committed \(ByteCount.format(committedBytes)), "
            + "RSS \(ByteCount.format(rssBytes))"
    }
}
