import KVCache
import KVRouter

/// A discrete-event simulation of a cluster of serving instances behind one router.
///
/// Every instance is a real metadata-only `KVCache.Engine`: admissions are real
/// `createSequence(_:blockHashes:tokens:)` calls, each later prefill chunk a real
/// `append(_:tokens:blockHashes:)` (the prefix index decides what is cached, LRU decides what
/// is evicted, the block budget decides what fits), decode steps are real `append`s,
/// completions real `free`s. Every routing decision is a real `KVRouter.Router` call, fed the
/// engines' KV events (exact view) and the instances' loads after every change.
///
/// Instances run continuous batching: each step gives every decoding sequence one token,
/// fills the rest of the `tokenBudget` with prefill chunks (oldest first) and admits waiting
/// requests while budget is left and the engine has room (FCFS), each taking its chunk from
/// what is left; its duration comes from `CostModel`. When a step ends, every token it
/// produced is emitted (a prefill's last chunk yields one, each decode token one) and the
/// requests that are done are freed; only then does each request left decoding get the slot
/// of the token it just emitted, which the next step computes (a real `append` of one token),
/// as vLLM v1 takes a step's output (`update_from_output`) before `schedule` allocates the
/// next step's slots. So during a decode step the engine holds a request's prompt and all of
/// its output so far, as vLLM's `allocate_slots(request, 1)` covers `num_tokens`, and a
/// token a forward pass computed is never lost, not even when the append preempts its own
/// request.
///
/// KV blocks are allocated for the tokens a step schedules, as vLLM v1 allocates them
/// (`allocate_slots(request, num_new_tokens)` per step): an admitted request holds its cached
/// prefix (counted at admission, as `get_computed_blocks` counts it), its shared-tier load and
/// its first chunk; each later chunk's blocks are allocated when the chunk is scheduled. So a
/// long prompt under chunked prefill holds only the blocks of its chunks so far, and a chunk
/// that finds no room preempts, as a decode token does. The engine stays the source of truth:
/// the hit is the engine's own lookup (`cachedPrefixBlocks`, which `createSequence` then
/// matches), and the chunks grow the sequence through the engine's append by block hashes,
/// which indexes the prompt blocks they complete under the trace's hashes (the engine's token
/// `append` could not: a trace gives no tokens). A prompt's blocks are therefore in the prefix
/// index only once the chunk holding them is scheduled, with or without the engine's
/// `indexOnSchedule` (with it, every chunk is also a real `schedule` call), so a request hits
/// only blocks computed in its own step or before, and the router's view between steps shows
/// only the blocks scheduled so far. Output blocks, whose tokens a trace does not give, are
/// never indexed: a decode token is appended by block hashes with none given (`decodeOne`),
/// also after a prompt that ends on a block boundary. A recompute-preempted request
/// is re-admitted as one sequence of its prompt and output so far, known by the prompt's
/// block hashes only: its prompt blocks are hit and indexed as any prompt's, its output blocks
/// never.
/// A decode append or a prefill chunk that finds no free block preempts the youngest running
/// sequence (vLLM's recompute preemption): it returns to the head of its queue and recomputes
/// prompt and output (the tokens it emitted stay emitted). As in vLLM, the step whose
/// scheduling preempted admits no waiting request.
/// A victim still in prefill is freed with its computed tokens (`Engine.free(_:computedTokens:)`:
/// those of its admission's hit and shared-tier load plus every chunk up to the step that just
/// ended), which are all it holds: its blocks were allocated chunk by chunk, so none holds K/V
/// that nobody computed, and no request, its own re-admission included, hits such K/V.
///
/// With a `SharedTier` (`config.sharedTier`), an admitted request's blocks after those its
/// instance's engine holds are looked up in the tier; those found are loaded (they become the
/// instance's blocks, indexed as computed ones) and their load time is added to the admitting
/// step; every step stores the prompt blocks its chunks computed into the tier. Without it no
/// step differs from a run before the tier existed.
///
/// After every change an instance's KV events are drained into the router. Should its engine's
/// event queue have overflowed since the last drain (`Engine.eventsDropped` grew; the
/// oldest events are gone), the events left would give a view missing blocks stored and
/// keeping blocks removed in the gap, so the router's exact view of that instance is rebuilt
/// from the engine's index (`Engine.indexEvents`: an `allCleared` and a `blockStored` per
/// indexed block), as Dynamo's KV router recovers a gap from a dump of the worker's tree; the
/// drops and rebuilds are counted (`eventsDropped`, `viewResyncs`). The instances' engines are
/// metadata-only, so they have no disk tier and the dump holds the memory tier only (the
/// router's view reads tier 0 alone, `CacheView.apply`).
///
/// Events are arrivals (in trace order, times divided by `rateScale`) and step ends (one per
/// busy instance); the earliest goes next, arrivals first on ties. An arrival at an idle
/// instance ends its empty step at once (`wake`), so requests arriving at the same time are
/// queued before that instance composes a step and share it. Cost per step: O(batch)
/// plus O(instances) to find the next event; nothing allocates per request or step (but a
/// rebuild after dropped events, whose dump is an array of the engine's indexed blocks).
public final class ClusterSimulator: RequestQueues {
    /// The configuration of this run.
    public let config: SimulationConfig
    /// The trace being replayed.
    public let trace: Trace
    /// The router deciding every request.
    public let router: Router
    let instances: [Instance]
    /// The cluster's shared KV tier, if configured.
    let sharedTier: SharedTier?

    // Per request, structure of arrays: flat buffers of `trace.count` entries allocated once
    // (no copy-on-write or exclusivity bookkeeping on the per-step paths).
    let arrival: UnsafeMutablePointer<Double>
    private let instanceOf: UnsafeMutablePointer<Int32>
    private let state: UnsafeMutablePointer<UInt8>             // 0 not arrived, 1 waiting, 2 running, 3 done, 4 rejected, 5 aborted
    private let estimatedUncached: UnsafeMutablePointer<Int32>
    private let remaining: UnsafeMutablePointer<Int32>         // prefill tokens still to compute in this admission
    private let sequenceTokens: UnsafeMutablePointer<Int32>    // tokens to hold once prefilled (prompt, + output so far after preemption)
    private let length: UnsafeMutablePointer<Int32>            // tokens the engine holds for it now
    private let generated: UnsafeMutablePointer<Int32>
    private let cachedAtFirstAdmission: UnsafeMutablePointer<Int32>
    private let ttftStore: UnsafeMutablePointer<Double>
    private let finishStore: UnsafeMutablePointer<Double>
    private let inputTokens: UnsafeMutablePointer<Int32>
    private let outputTokens: UnsafeMutablePointer<Int32>
    private let hashStart: UnsafeMutablePointer<Int32>
    private let requestCount: Int

    /// Per request: time to first token in ms (-1 until known).
    public var ttft: [Double] { Array(UnsafeBufferPointer(start: ttftStore, count: requestCount)) }
    /// Per request: completion time in ms since the first arrival (-1 until done; a rejected
    /// or aborted request never completes).
    public var finish: [Double] { Array(UnsafeBufferPointer(start: finishStore, count: requestCount)) }

    /// Preemptions (recomputes) in all.
    public private(set) var preemptions = 0
    /// Requests that could never fit an instance (longer than its whole memory, or a prompt
    /// past the engine's `maxSeqTokens`), refused before their first token: none has a TTFT.
    public private(set) var rejected = 0
    /// Requests served their first token (they have a TTFT) that a recompute preemption left
    /// unable to come back: their prompt and output so far no longer fit their instance alone.
    /// They are dropped with their output cut short, as vLLM finishes a request it aborts,
    /// and never complete (`finish` stays -1); their TTFT counts as any served request's.
    public private(set) var aborted = 0
    /// Requests whose output stopped at the engine's `maxSeqTokens` (the model's context
    /// length): finished at the token that brought prompt and output to it, as a server
    /// finishes them ("length"), fewer tokens generated than the trace asked for.
    public private(set) var lengthCapped = 0
    /// Prompt tokens loaded from the shared tier at the first admissions of the requests
    /// after the warm-up (`warmupRequests`), as the hit rates count.
    public private(set) var sharedTierHitTokens = 0
    /// KV events the instances' engines dropped (their queues overflowed between drains).
    public private(set) var eventsDropped: UInt64 = 0
    /// Times an exact view of an instance was rebuilt from its engine's index because the
    /// engine had dropped events.
    public private(set) var viewResyncs = 0
    private let blockTokens: Int
    private var events: UnsafeMutableBufferPointer<KVEvent>
    /// The trace's hashes at a stable address, so requests' hash ranges can be handed out.
    private let hashStore: UnsafeMutableBufferPointer<UInt64>
    /// No block hashes: decode tokens are appended by this empty chain (`decodeOne`).
    private let noHashes = UnsafeBufferPointer<UInt64>(start: nil, count: 0)
    private var kicked: [Int] = []

    /// Prepares a run: one engine per instance and the router with every instance added.
    /// Throws when the engine or router configuration is invalid, the rate scale is not a
    /// positive finite number, the token budget or batch size is not positive (nothing could
    /// ever be admitted), the batch is larger than the engine's `maxSeqs` (the sequences past
    /// it would be refused as unservable), the warm-up is negative, not finite or holds every
    /// request (nothing would be measured), or the trace's blocks do not match the engine's.
    public init(trace: Trace, config: SimulationConfig) throws {
        guard config.rateScale > 0 && config.rateScale.isFinite else {
            throw KVError(.invalidArgument, "rate_scale \(config.rateScale) is not a positive number")
        }
        guard config.tokenBudget > 0 && config.maxBatch > 0 else {
            throw KVError(.invalidArgument, "token_budget \(config.tokenBudget) and max_batch \(config.maxBatch) must be positive: nothing would be admitted")
        }
        guard config.tokenBudget <= SimulationConfig.maxTokenBudget else {
            throw KVError(.invalidArgument, "token_budget \(config.tokenBudget) is more than \(SimulationConfig.maxTokenBudget)")
        }
        guard config.maxBatch <= config.engine.maxSeqs else {
            throw KVError(.invalidArgument, "max_batch \(config.maxBatch) is more than the engine's max_seqs \(config.engine.maxSeqs)")
        }
        guard config.warmupSeconds >= 0 && config.warmupSeconds.isFinite else {
            throw KVError(.invalidArgument, "warmup_s \(config.warmupSeconds) is not a finite number >= 0")
        }
        if let first = trace.arrivalMilliseconds.first, let last = trace.arrivalMilliseconds.last,
           config.warmupSeconds > 0 && last - first < config.warmupSeconds * 1000 {
            throw KVError(.invalidArgument, "a warm-up of \(config.warmupSeconds) s covers every request: the trace's last arrives \((last - first) / 1000) s after its first "
                + "(a shorter warm-up measures some: `replay --warmup S`, 0 for none)")
        }
        guard trace.blockTokens == config.engine.blockTokens else {
            throw KVError(.invalidArgument, "the trace has \(trace.blockTokens)-token blocks but the engine \(config.engine.blockTokens)")
        }
        guard (1...RouterConfig.maxInstances).contains(config.instances) else {
            throw KVError(.invalidArgument, "instances \(config.instances) is outside 1...\(RouterConfig.maxInstances)")
        }
        self.config = config
        self.trace = trace
        blockTokens = trace.blockTokens
        var engines: [Instance] = []
        for _ in 0..<config.instances { engines.append(Instance(engine: try Engine(config.engine))) }
        instances = engines
        sharedTier = try config.sharedTier.map { (tier) throws(KVError) in try SharedTier(tier, engine: config.engine) }
        var rc = config.router
        rc.blockTokens = trace.blockTokens
        rc.ttftSLOMilliseconds = config.ttftSLOMilliseconds
        rc.approximateBlocksPerInstance = engines[0].capacityBlocks
        router = try Router(rc)
        for i in 0..<config.instances { try router.addInstance(UInt32(i)) }
        let n = trace.count
        requestCount = n
        func buffer<T>(_ value: T) -> UnsafeMutablePointer<T> {
            let p = UnsafeMutablePointer<T>.allocate(capacity: max(1, n))
            p.initialize(repeating: value, count: max(1, n))
            return p
        }
        func copy<T>(_ values: [T]) -> UnsafeMutablePointer<T> {
            let p = UnsafeMutablePointer<T>.allocate(capacity: max(1, n))
            values.withUnsafeBufferPointer { p.initialize(from: $0.baseAddress!, count: n) }
            return p
        }
        arrival = copy(trace.arrivalMilliseconds.map { $0 / config.rateScale })
        instanceOf = buffer(-1)
        state = buffer(0)
        estimatedUncached = buffer(0)
        remaining = buffer(0)
        sequenceTokens = copy(trace.inputTokens)
        length = buffer(0)
        generated = buffer(0)
        cachedAtFirstAdmission = buffer(-1)
        ttftStore = buffer(-1.0)
        finishStore = buffer(-1.0)
        inputTokens = copy(trace.inputTokens)
        // At least 1: the first token ends a request's prefill (its TTFT), also for a trace
        // output of 0 (`Trace` keeps the 0, which `kvcache load` honours; it stored 1 before).
        outputTokens = copy(trace.outputTokens.map { max(1, $0) })
        hashStart = copy(trace.hashStart)
        hashStore = .allocate(capacity: max(1, trace.hashes.count))
        _ = hashStore.initialize(from: trace.hashes)
        events = .allocate(capacity: 4096)
        events.initialize(repeating: KVEvent(kind: .allCleared, blockHash: 0, parentHash: 0))
    }

    deinit {
        events.deallocate()
        hashStore.deallocate()
        for p in [arrival, ttftStore, finishStore] { p.deallocate() }
        for p in [instanceOf, estimatedUncached, remaining, sequenceTokens, length, generated, cachedAtFirstAdmission,
                  inputTokens, outputTokens, hashStart] { p.deallocate() }
        state.deallocate()
    }

    /// Runs the whole trace to completion. `progress` is called about every 1,000 arrivals
    /// with the arrivals so far.
    public func run(progress: ((Int) -> Void)? = nil) throws {
        while let event = try advance() {
            if case .arrival(let r) = event, (r + 1) % 1000 == 0 { progress?(r + 1) }
        }
    }

    /// What `advance` simulated.
    enum Event: Equatable {
        /// Request `r` arrived (and was routed).
        case arrival(Int)
        /// Instance `s`'s step ended (and its next one was composed).
        case stepEnd(Int)
    }

    /// Arrivals simulated so far (the next arrival is request `arrived`).
    private var arrived = 0

    /// Simulates the next event, the earliest of the next arrival and the busy instances' step
    /// ends (arrivals first on ties), and returns it; nil once every request is done (or
    /// rejected or aborted). `run` calls it until then; tests call it to look at the instances
    /// between events.
    func advance() throws -> Event? {
        let n = trace.count
        let tArrival = arrived < n ? arrival[arrived] : .infinity
        var busy = -1
        var tStep = Double.infinity
        for (i, inst) in instances.enumerated() where inst.stepEnd < tStep {
            tStep = inst.stepEnd
            busy = i
        }
        if tArrival == .infinity && busy < 0 {
            // Invariant at the end: every request finished or was rejected or aborted, and the
            // prefill backlog each instance reported to the router has drained to zero.
            for inst in instances {
                precondition(inst.running.isEmpty && inst.waitingCount == 0 && inst.pendingPrefillTokens == 0,
                             "an instance ended with work left: the simulator's bookkeeping is wrong")
            }
            return nil
        }
        if tArrival <= tStep {
            let r = arrived
            try arrive(r, now: tArrival)
            arrived += 1
            return .arrival(r)
        }
        try endStep(busy, now: tStep)
        return .stepEnd(busy)
    }

    // MARK: arrivals and routing

    @inline(__always)
    private func hashes(_ r: Int) -> UnsafeBufferPointer<UInt64> {
        UnsafeBufferPointer(start: hashStore.baseAddress! + Int(hashStart[r]), count: (Int(inputTokens[r]) + blockTokens - 1) / blockTokens)
    }

    private func arrive(_ r: Int, now: Double) throws {
        let s = try router.routeSlot(hashes(r), tokens: Int(inputTokens[r]))
        let inst = instances[s]
        instanceOf[r] = Int32(s)
        state[r] = 1
        estimatedUncached[r] = Int32(router.uncachedTokens(tokens: Int(inputTokens[r]), slot: s))
        inst.waiting.append(Int32(r))
        inst.pendingPrefillTokens += Int(estimatedUncached[r])
        report(s)
        wake(s, now: now)
        if config.router.rebalance && router.config.policy == .dualMap {
            kicked.removeAll(keepingCapacity: true)
            if router.rebalance(self) > 0 {
                for k in kicked { wake(k, now: now) }
            }
        }
    }

    /// Has idle instance `s` compose a step at `now` once every arrival at `now` is queued:
    /// its empty step (`Instance.isIdle`) ends at `now`, and arrivals go first on ties, so
    /// requests arriving together share one step, as requests added to a server before its
    /// next `schedule` call do. A busy instance composes its next step when its step ends.
    private func wake(_ s: Int, now: Double) {
        let inst = instances[s]
        if inst.isIdle { inst.stepEnd = now }
    }

    private func report(_ s: Int) {
        let inst = instances[s]
        let used = inst.engine.blocksUsed
        router.report(slot: s, load: InstanceLoad(
            pendingPrefillTokens: UInt64(max(0, inst.pendingPrefillTokens)), runningBlocks: used,
            freeBlocks: UInt64(inst.capacityBlocks) - used, activeRequests: UInt64(inst.waitingCount + inst.running.count),
            waitingRequests: UInt64(inst.waitingCount)))
    }

    private func drainEvents(_ s: Int) {
        let inst = instances[s], engine = inst.engine
        while true {
            let got = engine.drainEvents(into: events)
            if got > 0 { router.observe(slot: s, events: UnsafeBufferPointer(rebasing: events[0..<got])) }
            if got < events.count { break }
        }
        let dropped = engine.eventsDropped
        guard dropped != inst.eventsDropped else { return }
        eventsDropped += dropped - inst.eventsDropped
        inst.eventsDropped = dropped
        guard router.view.mode == .exact else { return }  // an approximate view ignores events
        engine.indexEvents().withUnsafeBufferPointer { router.observe(slot: s, events: $0) }
        viewResyncs += 1
    }

    // MARK: RequestQueues (for rebalancing)

    /// `RequestQueues.queuedCount`: the instance's waiting requests. O(1).
    public func queuedCount(slot: Int) -> Int { instances[slot].waitingCount }

    /// `RequestQueues.queuedRequest`: the waiting request at `index` from the queue's head. O(1).
    public func queuedRequest(slot: Int, index: Int) -> (id: Int, hashes: UnsafeBufferPointer<UInt64>, tokens: Int) {
        let inst = instances[slot]
        let r = Int(inst.waiting[inst.waitingHead + index])
        return (r, hashes(r), Int(sequenceTokens[r]))
    }

    /// `RequestQueues.move`: moves waiting request `r` to `target`'s queue, re-estimating its
    /// uncached prompt tokens there (one prefix match); a request no longer waiting stays.
    public func move(id r: Int, from slot: Int, to target: Int) {
        let from = instances[slot], to = instances[target]
        guard state[r] == 1, from.removeWaiting(Int32(r)) else { return }
        from.pendingPrefillTokens -= Int(estimatedUncached[r])
        let est = max(0, Int(sequenceTokens[r]) - router.view.matchedBlocks(hashes(r), slot: target) * trace.blockTokens)
        estimatedUncached[r] = Int32(est)
        to.pendingPrefillTokens += est
        to.waiting.append(Int32(r))
        instanceOf[r] = Int32(target)
        kicked.append(target)
    }

    // MARK: steps

    /// Composes the next step, admitting what fits, and schedules its end (or goes idle): one
    /// decode token per decoding sequence (its slot was allocated as the step before ended,
    /// `endStep`), then prefill chunks, oldest first, from the rest of the budget: first for
    /// the sequences already running, then for each request as it is admitted while budget is
    /// left (as vLLM's scheduler takes running requests before waiting ones, and waiting ones
    /// only "while token_budget > 0"). So a request is admitted only once every prompt before
    /// it on the instance is scheduled to its end.
    ///
    /// Each chunk's blocks are allocated as it is scheduled, as vLLM's `allocate_slots` takes
    /// a step's `num_new_tokens` (`grow`): a running prefill grows by its chunk, preempting the
    /// youngest running requests when the engine has no room (itself last, which ends the
    /// running prefills), and an admitted request holds its cached prefix, its shared-tier
    /// load and its first chunk only (`admit`). With `indexOnSchedule` each chunk is also
    /// handed to the engine's `schedule`; without it the engine indexes a chunk's full prompt
    /// blocks as it allocates them. Either way a request admitted later in the same step hits
    /// the blocks this step computes before it, and none beyond them, as in vLLM, which caches
    /// a chunk's full blocks when it allocates them.
    ///
    /// A step in whose scheduling a request was preempted (`preemptedThisStep`: by this step's
    /// chunks, or by the decode appends of the step that just ended) admits no waiting request,
    /// as vLLM's scheduler skips its waiting queue in a step that preempted: the victim, back
    /// at the head of the queue, is re-admitted a step later, not in the step that evicted it.
    ///
    /// Running prefills come after every decode token, where vLLM takes its running requests
    /// in admission order; the two agree because a request still in prefill is younger than
    /// every decoding one (a request is admitted only when every prompt before it is
    /// scheduled to its end, and a preempted one comes back at the end), so the victims a
    /// prefill's growth preempts were not scheduled in this step yet.
    private func startStep(_ s: Int, now: Double) throws {
        let inst = instances[s]
        var budget = config.tokenBudget
        inst.stepLoadMilliseconds = 0
        inst.stepRequests.removeAll(keepingCapacity: true)
        inst.stepChunks.removeAll(keepingCapacity: true)
        var decodeSequences = 0, decodeContext = 0
        for r32 in inst.running where remaining[Int(r32)] == 0 {
            inst.stepRequests.append(r32)
            inst.stepChunks.append(0)
            decodeSequences += 1
            decodeContext += Int(length[Int(r32)])  // its slots: prompt and output so far, this step's token included
        }
        budget -= decodeSequences
        var prefillTokens = 0
        var pairs = 0.0
        func schedule(_ r: Int, chunk: Int) throws(KVError) {
            let done = Int(sequenceTokens[r] - remaining[r])
            if config.engine.indexOnSchedule { try inst.engine.schedule(UInt64(r), tokens: done + chunk) }
            inst.stepRequests.append(Int32(r))
            inst.stepChunks.append(Int32(chunk))
            pairs += CostModel.attentionPairs(chunk: chunk, context: done)
            prefillTokens += chunk
            budget -= chunk
        }
        var k = 0
        while k < inst.running.count && budget > 0 {
            let r = Int(inst.running[k])
            k += 1
            guard state[r] == 2 && remaining[r] > 0 else { continue }
            let chunk = min(Int(remaining[r]), budget)
            guard try grow(r, s, by: chunk) else { break }
            try schedule(r, chunk: chunk)
        }
        dropPreempted(s)
        if !inst.preemptedThisStep {
            try admit(s, budget: budget) { r, chunk throws(KVError) in
                try schedule(r, chunk: chunk)
                return budget
            }
        }
        drainEvents(s)
        report(s)
        inst.stepPrefillTokens = prefillTokens
        inst.prefillTokensComputed += prefillTokens
        guard !inst.stepRequests.isEmpty else {
            if inst.preemptedThisStep && inst.waitingCount > 0 {
                // Every running request was preempted (one outgrew the instance alone): vLLM's
                // engine loop schedules again at once, and that step admits.
                inst.preemptedThisStep = false
                try startStep(s, now: now)
                return
            }
            inst.stepEnd = .infinity
            return
        }
        let dt = config.cost.stepMilliseconds(prefillTokens: prefillTokens, attentionPairs: pairs,
                                              decodeSequences: decodeSequences, decodeContextTokens: decodeContext)
            + inst.stepLoadMilliseconds
        inst.stepMilliseconds = dt
        // Without its prefill the step would be its decode work alone, or no step at all. The
        // shared-tier loads of the requests it admits stay in (a server pays them before their
        // first tokens), so a step loading K/V reports them even when its chunks' compute
        // stays under the weight read.
        let decodeOnly = decodeSequences > 0
            ? config.cost.stepMilliseconds(prefillTokens: 0, attentionPairs: 0, decodeSequences: decodeSequences, decodeContextTokens: decodeContext)
            : 0
        inst.stepPrefillMilliseconds = dt - decodeOnly
        inst.stepEnd = now + dt
        inst.busyMilliseconds += dt
    }

    /// Allocates the blocks of running request `r`'s next prefill chunk, `chunk` tokens, at
    /// instance `s` (a real `Engine.append(_:tokens:blockHashes:)`: the prompt's blocks it
    /// completes are indexed under their hashes), preempting the youngest running requests
    /// until it fits, as vLLM's scheduler does when `allocate_slots` finds no room; false when
    /// `r` itself was preempted (nothing younger is left running then). A request that fits
    /// the instance alone always fits once every other is preempted (`admit` checks).
    private func grow(_ r: Int, _ s: Int, by chunk: Int) throws(KVError) -> Bool {
        let inst = instances[s]
        let prompt = fullBlocks(r)
        while true {
            do throws(KVError) {
                try inst.engine.append(UInt64(r), tokens: chunk, blockHashes: prompt)
                length[r] += Int32(chunk)
                return true
            } catch where error.code == .outOfMemory {
                guard let victim = inst.running.last(where: { state[Int($0)] == 2 }) else { return false }
                precondition(Int(victim) == r || !inst.stepRequests.contains(victim),
                             "a prefill's growth preempted a request scheduled in the same step")
                preempt(Int(victim), s)
                if Int(victim) == r { return false }
            }
        }
    }

    /// Takes the requests preempted while the step was composed out of `running`.
    private func dropPreempted(_ s: Int) {
        let inst = instances[s]
        var w = 0
        for k in 0..<inst.running.count where state[Int(inst.running[k])] == 2 {
            inst.running[w] = inst.running[k]
            w += 1
        }
        inst.running.removeLast(inst.running.count - w)
    }

    /// The hashes of `r`'s full prompt blocks: what its sequence is looked up and indexed by
    /// (after a recompute preemption too: its output blocks are never indexed).
    @inline(__always)
    private func fullBlocks(_ r: Int) -> UnsafeBufferPointer<UInt64> {
        UnsafeBufferPointer(rebasing: hashes(r)[0..<Int(inputTokens[r]) / blockTokens])
    }

    /// Admits waiting requests, oldest first, while the step has token budget left (`budget`
    /// tokens at first, then what `then` returns) and the batch and the engine have room,
    /// calling `then` with each one admitted and its first chunk (it schedules the chunk and
    /// returns the budget left) before the next is looked up in the engine. A request admitted
    /// with no budget left would hold its blocks through a step that computes none of its
    /// tokens.
    ///
    /// As vLLM's `get_computed_blocks` then `allocate_slots`: the request's cached prefix is
    /// looked up over its whole prompt (the engine's read-only `cachedPrefixBlocks`, capped
    /// so that one token stays to compute, as `createSequence` caps it), the blocks after it
    /// found in the shared tier are loaded, and the sequence is created holding those tokens
    /// and its first chunk only, a real `createSequence` that hits exactly that prefix; the
    /// rest of the prompt is allocated chunk by chunk (`grow`). A request that could never fit
    /// the instance alone (more blocks than the engine has, or past its `maxSeqTokens`) is
    /// dropped, as admitted by its first chunk it would preempt itself for ever: `rejected`
    /// when it never emitted a token, `aborted` when it did (a decoding request preempted
    /// once its prompt and output outgrew the instance), which has a TTFT.
    private func admit(_ s: Int, budget: Int, then: (Int, Int) throws(KVError) -> Int) throws(KVError) {
        let inst = instances[s]
        let bt = trace.blockTokens
        var budget = budget
        while budget > 0, inst.running.count < config.maxBatch, inst.firstWaiting >= 0 {
            let r = inst.firstWaiting
            let tokens = Int(sequenceTokens[r])
            let full = fullBlocks(r)
            var cached = -1
            if tokens <= config.engine.maxSeqTokens && (tokens + bt - 1) / bt <= inst.capacityBlocks {
                let hit = bt * inst.engine.cachedPrefixBlocks(UnsafeBufferPointer(rebasing: full[0..<min(full.count, (tokens - 1) / bt)]))
                let loaded = sharedTierTokens(cached: hit, full: full, tokens: tokens)
                let held = min(tokens, hit + loaded + budget)
                do throws(KVError) {
                    // After a recompute preemption: prompt and output so far, known by the prompt's hashes.
                    cached = try inst.engine.createSequence(UInt64(r), blockHashes: UnsafeBufferPointer(rebasing: full[0..<min(full.count, held / bt)]),
                                                            tokens: held)
                    precondition(cached == hit, "createSequence hit \(cached) tokens where the lookup found \(hit)")
                    if loaded > 0, let sharedTier { inst.stepLoadMilliseconds += sharedTier.loadMilliseconds(tokens: loaded) }
                    if cachedAtFirstAdmission[r] < 0 {
                        cachedAtFirstAdmission[r] = Int32(cached)
                        if r >= warmupRequests { sharedTierHitTokens += loaded }
                    }
                    inst.popWaiting()
                    remaining[r] = Int32(tokens - cached - loaded)
                    length[r] = Int32(held)
                } catch where error.code == .outOfMemory && !inst.running.isEmpty {
                    break
                } catch {
                    cached = -1
                }
            }
            guard cached >= 0 else {
                // Longer than the instance, or a prompt the engine refuses: it can never be
                // served here.
                inst.popWaiting()
                inst.pendingPrefillTokens -= Int(estimatedUncached[r])
                router.finish(slot: s, hashes: hashes(r))
                if generated[r] > 0 {
                    state[r] = 5
                    aborted += 1
                } else {
                    state[r] = 4
                    rejected += 1
                }
                continue
            }
            inst.pendingPrefillTokens += Int(remaining[r]) - Int(estimatedUncached[r])
            estimatedUncached[r] = 0
            state[r] = 2
            inst.running.append(Int32(r))
            budget = try then(r, Int(length[r] - (sequenceTokens[r] - remaining[r])))
        }
    }

    /// Tokens of a request (`tokens` tokens, `cached` of them hit in its instance's engine,
    /// prompt blocks `full`) that follow its cached prefix in the shared tier, leaving at least
    /// one token to compute as the engine does (0 without a tier): loaded at its admission,
    /// they become the instance's blocks, held and indexed as computed ones (indexing on
    /// schedule, with the request's first chunk, whose `schedule` covers every token before
    /// it). Their load time goes to the step that admits it.
    private func sharedTierTokens(cached: Int, full: UnsafeBufferPointer<UInt64>, tokens: Int) -> Int {
        guard let sharedTier else { return 0 }
        let bt = trace.blockTokens
        let start = cached / bt, end = min(full.count, (tokens - 1) / bt)
        guard end > start else { return 0 }
        return bt * sharedTier.lookup(UnsafeBufferPointer(rebasing: full[start..<end]))
    }

    /// Applies the finished step at instance `s`, then starts the next one, in vLLM's order:
    /// first the step's output (`update_from_output`), then the next step's slots (`schedule`).
    ///
    /// Output: every prefill chunk of the step is computed (its tokens leave `remaining`, its
    /// prompt blocks go to the shared tier), a request whose prefill ended emits its token (its
    /// first: the TTFT), and every decoding request emits the token its decode step computed;
    /// a request whose token was its last finishes and frees its blocks. Nothing is allocated
    /// yet, so no token a forward pass computed is ever thrown away, and a step's finished
    /// requests' blocks are free before any allocation needs them.
    ///
    /// Slots: every running request whose prefill is done (it emitted a token in this step)
    /// then gets, in admission order, the slot of that token, which the next step computes
    /// (`decodeOne`, vLLM's `allocate_slots(request, num_new_tokens=1)`); an append that finds
    /// no room preempts the youngest running request, possibly the one appending, which keeps
    /// every token it emitted. The step those appends schedule then admits nothing.
    private func endStep(_ s: Int, now: Double) throws {
        let inst = instances[s]
        inst.preemptedThisStep = false  // the decode appends below schedule the next step
        for k in 0..<inst.stepRequests.count {
            let r = Int(inst.stepRequests[k])
            let chunk = Int(inst.stepChunks[k])
            guard chunk > 0 else {
                emit(r, s, now: now)
                continue
            }
            remaining[r] -= Int32(chunk)
            if let sharedTier {
                let computed = Int(sequenceTokens[r] - remaining[r]) / blockTokens
                let prompt = hashes(r)
                sharedTier.store(UnsafeBufferPointer(rebasing: prompt[0..<min(computed, Int(inputTokens[r]) / blockTokens)]))
            }
            inst.pendingPrefillTokens -= chunk
            if remaining[r] == 0 {
                if ttftStore[r] < 0 { ttftStore[r] = now - arrival[r] }
                emit(r, s, now: now)
            }
        }
        // Decoding requests come before prefilling ones in `running` (see `startStep`), so an
        // append's victims, the youngest, have no slot for the next step yet.
        var k = 0
        while k < inst.running.count {
            let r = Int(inst.running[k])
            k += 1
            guard state[r] == 2 && remaining[r] == 0 else { continue }  // done, preempted, or in prefill
            decodeOne(r, s)
        }
        dropPreempted(s)
        // The prefill's own time, as `kvc_router_observe_prefill` asks: not the decode work the
        // step carried beside it (0 when the step's compute stayed under the weight read).
        if inst.stepPrefillTokens > 0 && inst.stepPrefillMilliseconds > 0 {
            try router.observePrefill(tokens: inst.stepPrefillTokens, milliseconds: inst.stepPrefillMilliseconds)
        }
        inst.stepEnd = .infinity
        try startStep(s, now: now)
    }

    /// Allocates the slot of `r`'s next decode step: the one of its last emitted token, which
    /// that step computes, as vLLM's `allocate_slots(request, num_new_tokens=1)` covers
    /// `num_computed_tokens + 1` tokens, that is `num_tokens`: prompt and every output token so
    /// far. Preempts the youngest running sequences until it fits (`r` itself last, which
    /// then waits with every token it emitted). So during each decode step the engine holds
    /// exactly `r`'s prompt and output so far (`length[r]`), all computed but the last, whose
    /// K/V the step writes; between steps, after this append, the same. Never past the
    /// engine's `maxSeqTokens`: `emit` finishes a request whose prompt and output reach it.
    ///
    /// The token is appended by block hashes, none of them given (`noHashes`): a trace gives
    /// no output tokens, so the blocks they fill are never indexed, as after a recompute
    /// preemption. A token append would index them once a prompt ended on a block boundary
    /// (every block's hash known, so the engine hashes what follows), under the hash of a
    /// made-up token; appending by hashes also ends that state (`indexesAppends`).
    private func decodeOne(_ r: Int, _ s: Int) {
        let inst = instances[s]
        while true {
            do {
                try inst.engine.append(UInt64(r), tokens: 1, blockHashes: noHashes)
                length[r] += 1
                return
            } catch {
                guard let victim = inst.running.last(where: { state[Int($0)] == 2 }) else { return }
                preempt(Int(victim), s)
                if Int(victim) == r { return }
            }
        }
    }

    /// Recompute preemption of `r` at instance `s`: at the end of a step (`endStep` has applied
    /// all of the step's chunks and emitted its tokens), for a decode slot, or while a step is
    /// composed, for a prefill chunk (`grow`; `r` is then not scheduled in it). A victim still
    /// in prefill (`remaining` > 0) has computed `sequenceTokens - remaining` tokens: its
    /// admission's hit and shared-tier load, and every chunk through the step that last ended;
    /// that is exactly what it holds (its chunks' blocks are allocated as they are scheduled),
    /// so `computedTokens` takes nothing out of the prefix index, and is passed so that
    /// nothing ever could. Blocks of a
    /// decoding victim were all computed: it is preempted before it gets the slot of the token
    /// it just emitted (`decodeOne`'s victims come after the request appending, in admission
    /// order, or are it). Its sequence to recompute is its prompt and every token it emitted,
    /// that last one included, as vLLM's resumed request's `num_tokens`. The step being
    /// composed admits nothing (`preemptedThisStep`).
    private func preempt(_ r: Int, _ s: Int) {
        let inst = instances[s]
        do {
            try inst.engine.free(UInt64(r), computedTokens: remaining[r] > 0 ? Int(sequenceTokens[r] - remaining[r]) : nil)
        } catch {
            preconditionFailure("freeing preempted request \(r) failed: \(error)")
        }
        inst.pendingPrefillTokens -= Int(remaining[r])
        state[r] = 1
        sequenceTokens[r] = inputTokens[r] + generated[r]
        estimatedUncached[r] = sequenceTokens[r]
        inst.pendingPrefillTokens += Int(sequenceTokens[r])
        remaining[r] = 0
        length[r] = 0
        inst.pushFrontWaiting(Int32(r))
        inst.preemptedThisStep = true
        preemptions += 1
    }

    /// Counts a token generated for `r` at instance `s` at `now`, finishing `r` when it was its
    /// last: the trace's output length, or the token that brings prompt and output to the
    /// engine's `maxSeqTokens` (the model's context length), where a server stops a sequence
    /// ("length"; vLLM's `num_tokens >= max_model_len`), counted in `lengthCapped`.
    private func emit(_ r: Int, _ s: Int, now: Double) {
        generated[r] += 1
        if generated[r] >= outputTokens[r] {
            complete(r, s, now: now)
        } else if Int(inputTokens[r]) + Int(generated[r]) >= config.engine.maxSeqTokens {
            lengthCapped += 1
            complete(r, s, now: now)
        }
    }

    /// Ends request `r` at instance `s`: frees its sequence and tells the router it finished.
    private func complete(_ r: Int, _ s: Int, now: Double) {
        try? instances[s].engine.free(UInt64(r))
        router.finish(slot: s, hashes: hashes(r))
        state[r] = 3
        finishStore[r] = now
    }

    // MARK: results

    /// Requests arriving in the warm-up (`SimulationConfig.warmupSeconds` of the trace's own
    /// time from its first arrival): a prefix of the trace, arrivals being in order. O(log n).
    public var warmupRequests: Int {
        guard let first = trace.arrivalMilliseconds.first else { return 0 }
        let end = first + config.warmupSeconds * 1000
        var lo = 0, hi = trace.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if trace.arrivalMilliseconds[mid] < end { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// The run's measurements. Call after `run`. TTFTs, attainment and hit rate are of the
    /// requests after the warm-up; busy time, prefill skew and the counters of the whole run.
    public func result(policy: String, wallSeconds: Double) -> ReplayResult {
        var served: [Double] = []
        served.reserveCapacity(trace.count)
        var met = 0, hit = 0, query = 0
        let slo = config.ttftSLOMilliseconds
        let warmup = warmupRequests
        for r in warmup..<trace.count {
            if ttftStore[r] >= 0 {
                served.append(ttftStore[r])
                if ttftStore[r] <= slo { met += 1 }
            }
            if cachedAtFirstAdmission[r] >= 0 {
                hit += Int(cachedAtFirstAdmission[r])
                query += Int(inputTokens[r])
            }
        }
        served.sort()
        func maxOverMean(_ values: [Double]) -> Double {
            let mean = values.reduce(0, +) / Double(values.count)
            return mean > 0 ? values.max()! / mean : 1
        }
        return ReplayResult(
            policy: policy, view: router.view.mode, instances: config.instances, rateScale: config.rateScale,
            ttftSLOMilliseconds: slo, requests: trace.count, warmupRequests: warmup, served: served.count, sloMet: met, ttftSorted: served,
            prefixHitRate: query > 0 ? Double(hit) / Double(query) : 0,
            sharedTierHitTokens: sharedTier == nil ? nil : sharedTierHitTokens,
            sharedTierHitRate: sharedTier == nil ? nil : query > 0 ? Double(sharedTierHitTokens) / Double(query) : 0,
            loadImbalance: maxOverMean(instances.map(\.busyMilliseconds)),
            prefillSkew: maxOverMean(instances.map { Double($0.prefillTokensComputed) }),
            makespanSeconds: max(0, finish.max() ?? 0) / 1000,
            preemptions: preemptions, rejected: rejected, aborted: aborted, lengthCapped: lengthCapped, eventsDropped: Int(eventsDropped), viewResyncs: viewResyncs,
            sloSwitches: Int(router.sloSwitches), rebalanceMoves: Int(router.rebalanceMoves), wallSeconds: wallSeconds)
    }
}
