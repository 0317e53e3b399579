#if canImport(Glibc)
import Glibc
#endif
import KVCache

/// What one worker thread did, merged into the report at the end.
struct WorkerResult: Sendable {
    var latency = LatencyRecorder()
    /// Requests that decoded all their output and were freed.
    var completed = 0
    /// Requests given up on after `maxRetries` failures: out-of-memory creates and appends
    /// and, with a disk tier, failed reads of a created prefix (rare: the bad blocks leave the
    /// cache at the first).
    var rejectedOutOfMemory = 0
    /// Requests whose prompt and output together need more than the whole budget holds
    /// (`Engine.sequenceTokenCapacity`): rejected before any create, since neither waiting nor
    /// preempting others could make room (they once cycled through `maxRetries` preemptions of
    /// their own and counted as out of memory).
    var rejectedUnfittable = 0
    /// Requests the engine refused for another reason (for example past `max_seq_tokens`).
    var rejectedOther = 0
    /// `createSequence` calls that ran out of memory and were queued to be retried (not those
    /// after which the request was rejected).
    var createRetries = 0
    /// Sequences freed because an `append` ran out of memory; their request restarts later.
    var preemptions = 0
    /// The workload's side: prompt tokens of requests' first admissions (a request's first
    /// successful create), and of those the tokens the create found cached (its return value).
    var promptTokens = 0
    var hitTokens = 0
    /// With a disk tier: of `hitTokens`, those the first creates read from the own tier and
    /// from peers' tiers (`Engine.prefixSources`: found there at the create, whether or not the
    /// read later failed; declined hits are not cached, so in neither).
    var diskHitTokens = 0
    var peerHitTokens = 0
    /// Output tokens appended and kept for the first time (drafts rolled back are not counted):
    /// each request's output once, however often it restarted.
    var decodedTokens = 0
    /// The restarts' side: successful creates of requests admitted before (restarted after a
    /// preemption or a failed disk read), their prompt tokens and, of those, the tokens found
    /// cached; and output tokens decoded again (a restarted request decodes its output from the
    /// start, as its first admission did up to its preemption).
    var restartAdmissions = 0
    var restartPromptTokens = 0
    var restartHitTokens = 0
    /// With a disk tier: of `restartHitTokens`, those read from the own tier and from peers'.
    var restartDiskHitTokens = 0
    var restartPeerHitTokens = 0
    var redecodedTokens = 0
    /// Speculative decoding: decode steps of one sequence, and draft tokens appended then
    /// truncated away because the target model rejected them.
    var draftSteps = 0
    var rejectedDraftTokens = 0
    /// The first error message other than out-of-memory, for the report.
    var firstError: String?
    /// Creates that were not ready at once (part of their prompt was still being read back from
    /// disk): how many, the time from the create's return until the thread found them ready,
    /// in all and at most (the thread decoded its other sequences meanwhile), and reads that
    /// failed (the request restarted).
    var readyWaits = 0
    var readyWaitNanoseconds: UInt64 = 0
    var readyWaitMaxNanoseconds: UInt64 = 0
    var reloadFailures = 0
    /// Sequences the run's stop (a signal: `LoadCoordinator.interrupt`) found live or loading
    /// and freed, their requests unfinished. Their frees are timed with the others, so that the
    /// free row holds one free per successful create, an interrupted run's too.
    var freedAtStop = 0
    /// When the worker finished, from the start of the run: the run's end is the last one's.
    var finishedNanoseconds: UInt64 = 0
}

/// The settings of a worker's loop.
struct WorkerSettings: Sendable {
    /// Live sequences this thread decodes together (continuous batching).
    var batch: Int
    /// Out-of-memory failures a request survives before it counts as rejected.
    var maxRetries: Int
    /// Write K/V bytes for every new token through the engine's pointers.
    var writeKV: Bool
    /// Speculative decoding (`--draft-tokens`): nil appends one token per decode step.
    var speculation: SpeculativeDecoding? = nil
    /// The model's prefill speed (`--prefill-tokens-per-s`): a starting sequence costs its
    /// thread (its GPU) the time to compute the prompt tokens past the cached prefix, slept
    /// before the thread goes on. 0: prefill costs nothing (this test runs no model).
    var prefillTokensPerSecond: Double = 0
}

/// One load-generating thread: a continuous-batching server loop in miniature.
///
/// The thread admits requests (claimed from the shared `LoadCoordinator` once they have
/// arrived) until it holds `batch` sequences, then runs decode steps that append one
/// token to every live sequence (with `speculation`, the sampled token plus the drafts, then a
/// truncation of the rejected ones), freeing each one when its output is complete. Out of memory
/// is a condition, not an error, as in a real server: a failed create waits in this thread's
/// queue until one of its sequences finishes (or, when it has none, a short back-off); a failed
/// append preempts that sequence (it is freed and its request restarts from the queue, like
/// vLLM's recompute preemption). After `maxRetries` failures a request counts as rejected.
/// A create whose prefix is still being read back from disk is not waited for: like a
/// request of vLLM's waiting for its remote K/V, it holds its place in the batch while the
/// thread decodes the others, and joins them (its prompt's K/V written) once `ready` says so.
/// With `prefillTokensPerSecond` the thread then sleeps for the prefill of the prompt past
/// the cached prefix (one prefill at a time, decodes wait: a GPU's time), and the request's
/// time to first token (create called to prefill done) is recorded as `ttft`; a stop ends the
/// sleep within `maxSleepNanoseconds`, that prefill untimed. A request whose prompt plus
/// output exceed `Engine.sequenceTokenCapacity` is rejected as unfittable, never created.
/// After a stop the thread creates nothing and runs no further step: it frees what it holds.
///
/// Only the engine call sits between the two clock reads of a timed operation; token
/// synthesis, K/V writes and bookkeeping are outside.
struct LoadWorker: Sendable {
    let index: Int
    let engine: Engine
    let workload: any Workload
    let coordinator: LoadCoordinator
    let progress: WorkerProgress
    let settings: WorkerSettings

    private struct Live {
        var id: UInt64
        var request: LoadRequest
        var attempts: Int
        var length: Int
        var remaining: Int
        /// Output tokens its earlier admissions decoded, at most (decoding them is a restart's work).
        var decodedBefore: Int
    }

    private struct Waiting {
        var request: LoadRequest
        var attempts: Int
        /// Whether a create of it succeeded before (its next admission is a restart), and the
        /// most output tokens an admission of it decoded.
        var started = false
        var decodedBefore = 0
        /// Whether an admission of it ended its prefill (its first token came then: `ttft` was
        /// recorded, and a restart's prefill is not timed again).
        var prefilled = false
    }

    /// A created sequence whose prefix blocks are still being read back from disk.
    private struct Loading {
        var id: UInt64
        var request: LoadRequest
        var attempts: Int
        /// Prompt tokens the create found cached: the server's prefill starts after them.
        var cached: Int
        var decodedBefore: Int
        var prefilled: Bool
        /// When the create was called and when it returned.
        var calledNanoseconds: UInt64
        var createdNanoseconds: UInt64
    }

    /// Back-off when a request does not fit and this thread holds no sequence to wait for.
    static let idleBackoffNanoseconds: UInt64 = 1_000_000
    /// Longest single sleep (waiting for an arrival, a slice of a modelled prefill), so that a
    /// stop is noticed within it.
    static let maxSleepNanoseconds: UInt64 = 10_000_000

    init(index: Int, engine: Engine, workload: any Workload, coordinator: LoadCoordinator,
         progress: WorkerProgress, settings: WorkerSettings) {
        self.index = index
        self.engine = engine
        self.workload = workload
        self.coordinator = coordinator
        self.progress = progress
        self.settings = settings
    }

    func run() -> WorkerResult {
        var result = WorkerResult()
        let config = engine.config
        // Unfittable (prompt plus output past this) is a property of the configuration, not of
        // what else is live (a read of the engine's live sequences after a failed create raced
        // with other threads' frees).
        let capacity = engine.sequenceTokenCapacity
        let prompt = UnsafeMutableBufferPointer<Int32>.allocate(capacity: config.maxSeqTokens)
        defer { prompt.deallocate() }
        let blockTable = UnsafeMutableBufferPointer<Int32>.allocate(capacity: config.maxSeqTokens / config.blockTokens + 1)
        defer { blockTable.deallocate() }
        let stepTokens = UnsafeMutableBufferPointer<Int32>.allocate(capacity: (settings.speculation?.draftTokens ?? 0) + 1)
        defer { stepTokens.deallocate() }

        var live: [Live] = []
        live.reserveCapacity(settings.batch)
        var loading: [Loading] = []
        var waiting: [Waiting] = []
        var exhausted = false
        // Set when a create ran out of memory: admit nothing more until a sequence finishes.
        var admissionBlocked = false
        var nextSequence: UInt64 = 0

        func publish() {
            progress.completed.store(result.completed, ordering: .relaxed)
            progress.rejected.store(result.rejectedOutOfMemory + result.rejectedUnfittable + result.rejectedOther,
                                    ordering: .relaxed)
            progress.decodedTokens.store(result.decodedTokens, ordering: .relaxed)
            progress.promptTokens.store(result.promptTokens, ordering: .relaxed)
            progress.hitTokens.store(result.hitTokens, ordering: .relaxed)
        }

        /// Queues `entry` to be tried again, or rejects it after `maxRetries`; true when queued.
        @discardableResult func requeue(_ entry: Waiting) -> Bool {
            guard entry.attempts <= settings.maxRetries else {
                result.rejectedOutOfMemory += 1
                publish()
                return false
            }
            waiting.insert(entry, at: 0)
            return true
        }

        /// Frees `id`, timed in the free row; a failure fails the run (false).
        @discardableResult
        func freeTimed(_ id: UInt64) -> Bool {
            let t0 = monotonicNanoseconds()
            do throws(KVError) {
                try engine.free(id)
            } catch {
                coordinator.fail("free of sequence \(id) failed: \(error)")
                return false
            }
            result.latency.record(.free, nanoseconds: monotonicNanoseconds() &- t0)
            return true
        }

        /// Makes created sequence `id` (its create called at `called`) live: its prompt's
        /// prefill past the cached prefix run (slept, with `prefillTokensPerSecond`; `ttft`
        /// recorded unless an earlier admission `prefilled`) and, with `writeKV`, its K/V written. False when the run must stop (stopped
        /// during the prefill, which is then not timed, or a failed K/V write); the sequence is
        /// live either way, so that the stop frees it.
        func start(_ id: UInt64, request: LoadRequest, attempts: Int, cached: Int, decodedBefore: Int, prefilled: Bool,
                   called: UInt64) -> Bool {
            live.append(Live(id: id, request: request, attempts: attempts,
                             length: request.promptTokens, remaining: request.outputTokens, decodedBefore: decodedBefore))
            if settings.prefillTokensPerSecond > 0 {
                let prefill = UInt64(Double(request.promptTokens - cached) / settings.prefillTokensPerSecond * 1e9)
                guard sleepUnlessStopped(until: monotonicNanoseconds() &+ prefill) else { return false }
                if !prefilled { result.latency.record(.ttft, nanoseconds: monotonicNanoseconds() &- called) }
            }
            return !settings.writeKV || writeKV(id, from: cached, to: request.promptTokens, blockTable: blockTable)
        }

        /// A sequence whose disk read failed: the bad blocks left the cache; it is freed and its
        /// request recomputed.
        func reloadFailed(_ id: UInt64, request: LoadRequest, attempts: Int, decodedBefore: Int, prefilled: Bool) {
            freeTimed(id)
            result.reloadFailures += 1
            requeue(Waiting(request: request, attempts: attempts + 1, started: true, decodedBefore: decodedBefore, prefilled: prefilled))
        }

        while !coordinator.isStopped {
            // Sequences whose prefix reads completed join the batch.
            var l = 0
            scan: while l < loading.count {
                let entry = loading[l]
                switch readiness(entry.id) {
                case .pending:
                    l += 1
                    continue
                case .ready:
                    let waited = monotonicNanoseconds() &- entry.createdNanoseconds
                    result.readyWaits += 1
                    result.readyWaitNanoseconds &+= waited
                    result.readyWaitMaxNanoseconds = max(result.readyWaitMaxNanoseconds, waited)
                    loading.remove(at: l)
                    if !start(entry.id, request: entry.request, attempts: entry.attempts, cached: entry.cached,
                              decodedBefore: entry.decodedBefore, prefilled: entry.prefilled, called: entry.calledNanoseconds) { break scan }
                case .failed:
                    loading.remove(at: l)
                    reloadFailed(entry.id, request: entry.request, attempts: entry.attempts, decodedBefore: entry.decodedBefore,
                                 prefilled: entry.prefilled)
                }
            }

            // Admission: fill the batch with requests that have arrived.
            // A stop (`claim` returns nil after one) also holds back requests already waiting.
            admission: while live.count + loading.count < settings.batch, !admissionBlocked, !coordinator.isStopped {
                if waiting.isEmpty {
                    if exhausted { break }
                    guard let next = coordinator.claim(from: workload) else { exhausted = true; break }
                    waiting.append(Waiting(request: next, attempts: 0))
                }
                let head = waiting[0]
                if head.request.arrivalNanoseconds > coordinator.elapsedNanoseconds() { break }
                waiting.removeFirst()

                let request = head.request
                if request.promptTokens + request.outputTokens > capacity {
                    // No freed memory would ever hold it whole: reject it before its create, which
                    // would take memory (and preempt others to grow) only to be preempted at the
                    // budget's end, again and again. Nothing is learned about memory, so
                    // admission goes on. The bound is prompt + output, not one less: the decode
                    // steps below append every output token, the last one too (a server that
                    // never appends its last sampled token holds one less; this loop models one
                    // that does, and checks the length at the end), and speculative steps append
                    // no more than the output still needs, so prompt + output is the peak.
                    result.rejectedUnfittable += 1
                    if result.firstError == nil {
                        result.firstError = "a \(request.promptTokens)-token prompt with \(request.outputTokens) output tokens, "
                            + "more than the budget holds (\(capacity) tokens)"
                    }
                    publish()
                    continue
                }
                workload.fillPrompt(request, into: prompt)
                let id = UInt64(index) << 48 | nextSequence
                nextSequence += 1
                let tokens = UnsafeBufferPointer(rebasing: prompt[0..<request.promptTokens])
                let t0 = monotonicNanoseconds()
                let cached: Int
                do throws(KVError) {
                    cached = try engine.createSequence(id, tokens: tokens)
                } catch where error.code == .outOfMemory {
                    if requeue(Waiting(request: request, attempts: head.attempts + 1, started: head.started,
                                       decodedBefore: head.decodedBefore, prefilled: head.prefilled)) {
                        result.createRetries += 1
                    }
                    admissionBlocked = true
                    break
                } catch {
                    result.rejectedOther += 1
                    if result.firstError == nil { result.firstError = "create: \(error)" }
                    publish()
                    continue
                }
                let created = monotonicNanoseconds()
                result.latency.record(.create, nanoseconds: created &- t0)
                // The workload's prefix hits are its requests' first admissions'; a restart's
                // create finds its own earlier blocks, which is the restart's, not the workload's.
                // Where they came from: only a tier can have read any (the sequence is live, its
                // own thread's: the query cannot fail).
                let sources = config.hasDiskTier && cached > 0 ? (try? engine.prefixSources(of: id)) ?? PrefixSources.zero : PrefixSources.zero
                if head.started {
                    result.restartAdmissions += 1
                    result.restartPromptTokens += request.promptTokens
                    result.restartHitTokens += cached
                    result.restartDiskHitTokens += sources.diskTokens
                    result.restartPeerHitTokens += sources.peerTokens
                } else {
                    result.promptTokens += request.promptTokens
                    result.hitTokens += cached
                    result.diskHitTokens += sources.diskTokens
                    result.peerHitTokens += sources.peerTokens
                }
                switch config.hasDiskTier && cached > 0 ? readiness(id) : .ready {
                case .ready:
                    if !start(id, request: request, attempts: head.attempts, cached: cached, decodedBefore: head.decodedBefore,
                              prefilled: head.prefilled, called: t0) { break admission }
                case .pending:
                    loading.append(Loading(id: id, request: request, attempts: head.attempts, cached: cached,
                                           decodedBefore: head.decodedBefore, prefilled: head.prefilled,
                                           calledNanoseconds: t0, createdNanoseconds: created))
                case .failed:
                    reloadFailed(id, request: request, attempts: head.attempts, decodedBefore: head.decodedBefore, prefilled: head.prefilled)
                }
            }

            if coordinator.isStopped { break }  // no decode step after a stop
            if live.isEmpty && !loading.isEmpty {
                // Only reads to wait for: sleep until the device completes some.
                engine.poll(timeoutMicroseconds: 200)
                continue
            }
            if live.isEmpty {
                // Nothing of ours will finish, so nothing would ever unblock admission.
                admissionBlocked = false
                if waiting.isEmpty {
                    if exhausted { break }
                    continue
                }
                let head = waiting[0]
                let now = coordinator.elapsedNanoseconds()
                if head.request.arrivalNanoseconds > now {
                    sleepNanoseconds(min(head.request.arrivalNanoseconds - now, Self.maxSleepNanoseconds))
                } else {
                    // Out of memory with nothing of ours to wait for: other threads hold it.
                    sleepNanoseconds(Self.idleBackoffNanoseconds)
                }
                continue
            }

            // One decode step: a token (or a verified draft run) for every live sequence,
            // freeing finished ones.
            var i = 0
            while i < live.count {
                if live[i].remaining > 0 {
                    let id = live[i].id, length = live[i].length
                    // Without drafts a step appends one token and keeps it. With drafts it
                    // appends the sampled token and up to `draftTokens` drafts (no more than the
                    // output still needs), then truncates to the tokens the target model kept.
                    let appended = min((settings.speculation?.draftTokens ?? 0) + 1, live[i].remaining)
                    let kept = min(settings.speculation?.keptTokens(stream: id, length: length) ?? 1, appended)
                    for j in 0..<appended {
                        stepTokens[j] = j < kept ? syntheticToken(stream: id, position: length + j)
                                                 : SpeculativeDecoding.rejectedToken(stream: id, position: length + j)
                    }
                    var operation = "append"
                    var t0 = monotonicNanoseconds()
                    do throws(KVError) {
                        try engine.append(id, tokens: UnsafeBufferPointer(rebasing: stepTokens[0..<appended]))
                        result.latency.record(.append, nanoseconds: monotonicNanoseconds() &- t0)
                        // The verification pass writes K/V for every token it appended.
                        if settings.writeKV, !writeKV(id, from: length, to: length + appended, blockTable: blockTable) { break }
                        if kept < appended {
                            operation = "truncate"
                            t0 = monotonicNanoseconds()
                            try engine.truncate(id, to: length + kept)
                            result.latency.record(.truncate, nanoseconds: monotonicNanoseconds() &- t0)
                        }
                    } catch {
                        // Preempt: give the memory back and restart the request later.
                        freeTimed(id)
                        let victim = live.remove(at: i)
                        if error.code == .outOfMemory {
                            result.preemptions += 1
                            let decoded = victim.request.outputTokens - victim.remaining
                            requeue(Waiting(request: victim.request, attempts: victim.attempts + 1, started: true,
                                            decodedBefore: max(victim.decodedBefore, decoded), prefilled: true))
                            admissionBlocked = true
                        } else {
                            result.rejectedOther += 1
                            if result.firstError == nil { result.firstError = "\(operation): \(error)" }
                            publish()
                        }
                        continue
                    }
                    if settings.speculation != nil {
                        result.draftSteps += 1
                        result.rejectedDraftTokens += appended - kept
                    }
                    // Output positions decoded..<decoded + kept: those an earlier admission
                    // reached are decoded again.
                    let decoded = live[i].request.outputTokens - live[i].remaining
                    let again = max(0, min(decoded + kept, live[i].decodedBefore) - decoded)
                    result.redecodedTokens += again
                    result.decodedTokens += kept - again
                    live[i].length += kept
                    live[i].remaining -= kept
                }
                if live[i].remaining == 0 {
                    // The engine must hold exactly the prompt and the kept output (a check of
                    // every append and truncate, outside the timed calls).
                    let held = try? engine.length(live[i].id)
                    if held != live[i].length {
                        coordinator.fail("sequence \(live[i].id) holds \(held.map(String.init) ?? "nothing") tokens, expected \(live[i].length)")
                        break
                    }
                    freeTimed(live[i].id)
                    live.swapAt(i, live.count - 1)
                    live.removeLast()
                    result.completed += 1
                    admissionBlocked = false
                    continue
                }
                i += 1
            }
            publish()
        }
        // Claimed but not arrived at the stop: not offered (they were counted so, and "stopped
        // unfinished"). The stop's time is read before the frees below, which take a while.
        let stoppedAt = coordinator.elapsedNanoseconds()
        // A stopped run still frees what it holds, so the engine ends consistent; timed as
        // every other free (they were once untimed: an interrupted run's free row counted
        // fewer frees than its creates), and counted (`freedAtStop`).
        for id in live.map(\.id) + loading.map(\.id) where freeTimed(id) { result.freedAtStop += 1 }
        coordinator.unclaim(waiting.count { $0.request.arrivalNanoseconds > stoppedAt })
        publish()
        result.finishedNanoseconds = coordinator.elapsedNanoseconds()
        return result
    }

    /// Sleeps until `deadline` (`monotonicNanoseconds`) in slices of at most
    /// `maxSleepNanoseconds`; false, returning early, once the run is stopped.
    private func sleepUnlessStopped(until deadline: UInt64) -> Bool {
        while true {
            if coordinator.isStopped { return false }
            let now = monotonicNanoseconds()
            if now >= deadline { return true }
            sleepNanoseconds(min(deadline - now, Self.maxSleepNanoseconds))
        }
    }

    private enum Readiness { case ready, pending, failed }

    /// Whether `seq`'s prompt tokens read back from disk are resident (a server must not read
    /// them before), without waiting; `failed` when a read failed (`io`).
    private func readiness(_ seq: UInt64) -> Readiness {
        do throws(KVError) {
            return try engine.ready(seq) ? .ready : .pending
        } catch {
            return .failed
        }
    }

    /// Writes a byte pattern over the K and V of tokens `from..<to` of `seq` in every layer,
    /// as a server's attention kernels would, so that the engine's memory is really touched.
    /// Returns false (and stops the run) when the engine gives no pointers.
    private func writeKV(_ seq: UInt64, from: Int, to: Int, blockTable: UnsafeMutableBufferPointer<Int32>) -> Bool {
        guard from < to else { return true }
        let config = engine.config
        let tokenBytes = config.tokenBytes
        let pattern = Int32(truncatingIfNeeded: seq) & 0xFF
        do throws(KVError) {
            switch config.layout {
            case .contiguous:
                for layer in 0..<config.numLayers {
                    let (k, v) = try engine.kv(seq, layer: layer)
                    memset(k + from * tokenBytes, pattern, (to - from) * tokenBytes)
                    memset(v + from * tokenBytes, pattern, (to - from) * tokenBytes)
                }
            case .paged:
                let blocks = try engine.blockTable(seq, into: blockTable)
                precondition(blocks <= blockTable.count, "block table of \(blocks) blocks exceeds max_seq_tokens")
                var position = from
                while position < to {
                    let block = position / config.blockTokens
                    let offset = position % config.blockTokens
                    let count = min(to - position, config.blockTokens - offset)
                    for layer in 0..<config.numLayers {
                        let (k, v) = try engine.blockKV(blockTable[block], layer: layer)
                        memset(k + offset * tokenBytes, pattern, count * tokenBytes)
                        memset(v + offset * tokenBytes, pattern, count * tokenBytes)
                    }
                    position += count
                }
            }
        } catch {
            coordinator.fail("--write-kv: \(error)")
            return false
        }
        return true
    }
}
