import KVCache

/// Spreads requests over serving instances with one `RoutingPolicy`, from what it knows of
/// each instance: its load (`report`, advanced optimistically by every decision), its cache
/// (`CacheView`, exact from `observe`d KV events or approximate from routing history), and
/// membership on two consistent-hash rings (DualMap's; consistent hash uses the first).
///
/// Instances are named by caller ids (`UInt32`) and held in at most `RouterConfig.maxInstances`
/// slots; per-slot state lives in fixed arrays allocated once, so `route` allocates nothing,
/// except with an approximate view: the first route to a slot (its recency list), and a route
/// whose new blocks take the shared block table past half full, which doubles it
/// (incrementally: `BlockMaskTable`); and with `active` (overlap cost), whatever the view: a
/// route whose hashes grow the slot's dictionary of active blocks or the shared mask table
/// (`ActiveBlocks.add`), bounded by `ActiveBlocks.limitPerInstance` blocks per slot.
///
/// Cost of `route`: one cache-view probe per matched block (cache-aware policies), O(log P)
/// per ring lookup and O(live instances) for the load scans. Not thread-safe: callers
/// serialise (the C ABI holds a mutex).
public final class Router {
    /// The configuration the router was created with.
    public let config: RouterConfig
    /// What the router believes each slot caches.
    public let view: CacheView
    /// The policy deciding.
    public let policy: any RoutingPolicy
    /// Per instance, the blocks of the requests routed there and not finished (`finish`), for
    /// policies with `PolicyKind.countsActiveBlocks`; nil for the others, which pay nothing.
    public let active: ActiveBlocks?
    /// DualMap's first ring (also the consistent-hash ring): seed "dualmap1" xor
    /// `config.ringSeed`.
    public private(set) var ring1: HashRing
    /// DualMap's second ring, an independent hash function: seed "dualmap2" xor
    /// `config.ringSeed`.
    public private(set) var ring2: HashRing
    /// Bit `s` set when slot `s` holds a live instance.
    public private(set) var liveMask: UInt64 = 0
    private let ids: UnsafeMutablePointer<UInt32>
    private let weights: UnsafeMutablePointer<Double>
    /// Per slot: the load as last reported and advanced by decisions.
    public let loads: UnsafeMutablePointer<InstanceLoad>
    /// Per slot: leading blocks of the current request the slot caches (valid in `choose` for
    /// the slots of `slotsToMatch`, and after `route` for the chosen slot).
    public let matched: UnsafeMutablePointer<Int>
    /// Prefill time per token, calibrated by `observePrefill`.
    public private(set) var prefill: PrefillEstimator
    /// Decisions made.
    public private(set) var decisions: UInt64 = 0
    /// DualMap: decisions that left the affinity candidate because of the SLO threshold.
    public internal(set) var sloSwitches: UInt64 = 0
    /// Queued requests moved by rebalancing.
    public private(set) var rebalanceMoves: UInt64 = 0
    /// Per slot: the numbered event stream its view was built from; reset by `addInstance`
    /// and `removeInstance` (`EventStream`).
    var streams = [EventStream](repeating: EventStream(), count: RouterConfig.maxInstances)
    /// Events of numbered batches skipped as already applied (redelivered).
    public internal(set) var duplicateEvents: UInt64 = 0
    /// Events of numbered batches ignored as an earlier engine's of their instance (late).
    public internal(set) var staleEvents: UInt64 = 0
    /// Numbered batches refused because events before them are missing.
    public internal(set) var refusedGaps: UInt64 = 0
    /// Batches refused (`outOfMemory`) because their stored blocks could take the exact view
    /// past `trackedBlocks` distinct hashes (`checkRoom`: any observe call or a resync).
    public private(set) var refusedFullBatches: UInt64 = 0

    /// Creates a router with no instances. Throws `invalidArgument` for a bad config.
    public init(_ config: RouterConfig) throws(KVError) {
        try config.validate()
        self.config = config
        view = CacheView(mode: config.effectiveView, trackedBlocks: config.trackedBlocks,
                         approximateBlocksPerInstance: config.approximateBlocksPerInstance)
        policy = makePolicy(config.policy)
        ring1 = HashRing(seed: 0x6475_616C_6D61_7031 ^ config.ringSeed)  // "dualmap1"
        ring2 = HashRing(seed: 0x6475_616C_6D61_7032 ^ config.ringSeed)  // "dualmap2"
        active = config.policy.countsActiveBlocks ? ActiveBlocks() : nil
        prefill = PrefillEstimator(prior: config.prefillMillisecondsPerToken)
        let n = RouterConfig.maxInstances
        ids = .allocate(capacity: n)
        ids.initialize(repeating: 0, count: n)
        weights = .allocate(capacity: n)
        weights.initialize(repeating: 0, count: n)
        loads = .allocate(capacity: n)
        loads.initialize(repeating: InstanceLoad(), count: n)
        matched = .allocate(capacity: n)
        matched.initialize(repeating: 0, count: n)
    }

    deinit {
        ids.deallocate()
        weights.deallocate()
        loads.deallocate()
        matched.deallocate()
    }

    // MARK: membership

    /// Live instances.
    public var instanceCount: Int { liveMask.nonzeroBitCount }

    /// The slot of live instance `id`, or -1. Cost: O(live instances).
    public func slot(of id: UInt32) -> Int {
        var m = liveMask
        while m != 0 {
            let s = m.trailingZeroBitCount
            if ids[s] == id { return s }
            m &= m - 1
        }
        return -1
    }

    /// The id of the instance in live slot `slot`.
    @inline(__always) public func id(ofSlot slot: Int) -> UInt32 { ids[slot] }

    /// Adds instance `id` with `weight` (its share of ring positions, 1 for a standard
    /// instance; (0, 64]). Its load starts at zero and its cache empty.
    /// Throws `exists` (already live), `invalidArgument` (weight, all 64 slots in use, or its
    /// `virtualNodes x weight` positions would take a ring past `RouterConfig.maxRingPositions`);
    /// nothing changes then. Cost: on each ring sorts the
    /// v = `virtualNodes x weight` new positions and merges them in, O(v log v + P) for P
    /// positions (`HashRing.insert`).
    public func addInstance(_ id: UInt32, weight: Double = 1) throws(KVError) {
        guard weight > 0 && weight <= 64 && weight.isFinite else {
            throw KVError(.invalidArgument, "weight \(weight) of instance \(id) is outside (0, 64]")
        }
        if slot(of: id) >= 0 { throw KVError(.exists, "instance \(id) is already added") }
        guard liveMask != ~0 else {
            throw KVError(.invalidArgument, "a router holds at most \(RouterConfig.maxInstances) instances; remove one first")
        }
        // Positions never collide (`HashRing.position(ofVirtualNode:of:)`), so a ring holds
        // exactly the live instances' positions.
        let positions = virtualNodes(weight: weight), taken = ring1.count
        guard positions <= RouterConfig.maxRingPositions - taken else {
            throw KVError(.invalidArgument, "instance \(id) of weight \(weight) needs \(positions) positions on each hash ring "
                          + "(virtual_nodes \(config.virtualNodes) x weight); the live instances hold \(taken) and a ring holds at most "
                          + "\(RouterConfig.maxRingPositions): lower the weight or virtual_nodes")
        }
        let s = (~liveMask).trailingZeroBitCount
        ids[s] = id
        weights[s] = weight
        loads[s] = InstanceLoad()
        liveMask |= 1 << UInt64(s)  // the slot's view and stream are empty: `removeInstance` reset them
        ring1.insert(slot: s, id: id, virtualNodes: positions)
        ring2.insert(slot: s, id: id, virtualNodes: positions)
    }

    /// Removes instance `id`: no later decision picks it and its cache view and active blocks
    /// are dropped.
    /// Throws `notFound`. Cost: compacts the instance's positions out of both rings, O(P), and
    /// forgets its view (`CacheView.forget`: one probe per hash it was credited with; the
    /// shared table's shrink is left to later calls).
    public func removeInstance(_ id: UInt32) throws(KVError) {
        let s = slot(of: id)
        guard s >= 0 else { throw KVError(.notFound, "instance \(id) is not in the router") }
        liveMask &= ~(1 << UInt64(s))
        view.forget(slot: s)
        streams[s] = EventStream()
        active?.clear(slot: s)
        ring1.remove(slot: s)
        ring2.remove(slot: s)
    }

    /// Ring positions of an instance of `weight`: `virtualNodes x weight`, rounded, at least 1.
    private func virtualNodes(weight: Double) -> Int { max(1, Int((Double(config.virtualNodes) * weight).rounded())) }

    // MARK: decisions

    /// Picks the instance for a prompt of `tokens` tokens whose chained block hashes are
    /// `hashes`, and advances that instance's load by the request (pending prefill tokens by
    /// its uncached part, running blocks, active and waiting requests; each saturates at
    /// `UInt64.max`, as a report may say anything). Approximate views credit it with the
    /// blocks; with `active`, it adds the hashes to the instance's active blocks until `finish`.
    /// Throws `invalidArgument` (no hashes, tokens < 1, more hashes than the
    /// `blocks(tokens)` the prompt fills), `notFound` (no live instance); nothing changes then.
    /// Cost: see the type; no allocation but the approximate view's and the active blocks'
    /// (see the type).
    public func route(_ hashes: UnsafeBufferPointer<UInt64>, tokens: Int) throws(KVError) -> UInt32 {
        try ids[routeSlot(hashes, tokens: tokens)]
    }

    /// `route`, answering the slot rather than the id.
    public func routeSlot(_ hashes: UnsafeBufferPointer<UInt64>, tokens: Int) throws(KVError) -> Int {
        guard hashes.count > 0 else {
            throw KVError(.invalidArgument, "no block hashes: a request is routed by at least one block hash")
        }
        guard tokens > 0 else { throw KVError(.invalidArgument, "n_tokens \(tokens) is below 1") }
        guard hashes.count <= blocks(tokens) else {
            throw KVError(.invalidArgument, "n_blocks \(hashes.count) is more than the \(blocks(tokens)) blocks of n_tokens \(tokens) "
                          + "(\(config.blockTokens)-token blocks, the last may be partial)")
        }
        guard liveMask != 0 else { throw KVError(.notFound, "no instance to route to; add one first") }
        view.table.advanceDrain()  // so lookups return to one array when events stop
        let request = RouteRequest(hashes: hashes, tokens: tokens, key: key(of: hashes))
        let matchedSlots = policy.slotsToMatch(request, router: self)
        if matchedSlots != 0 { view.match(hashes, slots: matchedSlots, into: matched) }
        let s = policy.choose(request, router: self)
        precondition(liveMask & (1 << UInt64(s)) != 0, "policy chose a slot that is not live")
        if matchedSlots & (1 << UInt64(s)) == 0 { matched[s] = view.matchedBlocks(hashes, slot: s) }
        commit(slot: s, uncachedTokens: uncachedTokens(tokens: tokens, slot: s), blocks: blocks(tokens))
        view.recordRoute(hashes, slot: s)
        active?.add(hashes, slot: s)
        decisions += 1
        return s
    }

    /// The request key: the chained hash of the first `keyBlocks` blocks.
    @inline(__always)
    public func key(of hashes: UnsafeBufferPointer<UInt64>) -> UInt64 {
        hashes[min(config.keyBlocks, hashes.count) - 1]
    }

    /// Blocks a prompt of `tokens` tokens occupies (a partial last one included; no overflow
    /// for any `tokens >= 0`).
    @inline(__always)
    public func blocks(_ tokens: Int) -> Int {
        tokens / config.blockTokens + (tokens % config.blockTokens == 0 ? 0 : 1)
    }

    /// Tokens of the current request `slot` would compute (from `matched`).
    @inline(__always)
    public func uncachedTokens(tokens: Int, slot: Int) -> Int {
        max(0, tokens - matched[slot] * config.blockTokens)
    }

    /// Estimated TTFT in ms at `slot` for a request adding `uncachedTokens`: the slot's
    /// pending prefill plus these tokens, times the calibrated time per token (summed as
    /// doubles: a reported backlog may be near `UInt64.max`).
    @inline(__always)
    public func estimatedTTFT(slot: Int, uncachedTokens: Int) -> Double {
        (Double(loads[slot].pendingPrefillTokens) + Double(uncachedTokens)) * prefill.millisecondsPerToken
    }

    private func commit(slot s: Int, uncachedTokens: Int, blocks: Int) {
        loads[s].pendingPrefillTokens = loads[s].pendingPrefillTokens.addingSaturated(UInt64(uncachedTokens))
        loads[s].runningBlocks = loads[s].runningBlocks.addingSaturated(UInt64(blocks))
        loads[s].freeBlocks -= min(loads[s].freeBlocks, UInt64(blocks))
        loads[s].activeRequests = loads[s].activeRequests.addingSaturated(1)
        loads[s].waitingRequests = loads[s].waitingRequests.addingSaturated(1)
    }

    /// DualMap's two candidates for `key`: the owner on ring 1, and the owner on ring 2 or,
    /// when both rings agree, the next distinct instance clockwise on ring 2. The second is
    /// -1 with one live instance; both are -1 with none. Always distinct otherwise.
    @inline(__always)
    public func candidates(_ key: UInt64) -> (Int, Int) {
        let a = ring1.lookup(key)
        if a < 0 { return (-1, -1) }
        return (a, ring2.lookup(key, excluding: a))
    }

    // MARK: feedback

    /// Replaces the load of instance `id` with its report. Throws `notFound`.
    public func report(_ id: UInt32, load: InstanceLoad) throws(KVError) {
        let s = slot(of: id)
        guard s >= 0 else { throw KVError(.notFound, "instance \(id) is not in the router") }
        loads[s] = load
    }

    /// Replaces the load of live slot `slot`: the fast path, without the id lookup, for callers
    /// inside this package that hold a slot they know is live (the simulator never removes its
    /// instances); other callers use `report(_:load:)`. Precondition, checked: `slot` is live
    /// (a removed instance's slot, or one never used, traps rather than feeding a slot the
    /// next `addInstance` reuses). Cost: one mask test and a store.
    @inline(__always) package func report(slot: Int, load: InstanceLoad) {
        precondition(isLive(slot), "report(slot: \(slot)): not a live slot")
        loads[slot] = load
    }

    /// Applies instance `id`'s KV events, in order, to the exact view (the approximate view
    /// ignores them). An engine's first event clears its memory tier (`Engine.init`), so the
    /// view stays exact across a restart of the instance that nobody told the router of, as
    /// long as every event arrives once and in order, across restarts too: a late batch of a
    /// dead engine or a repeated one is applied as if new (ghost blocks, or a repeated first
    /// batch's clear dropping every block); numbered streams are checked
    /// (`observe(_:epoch:firstSequence:events:)`).
    /// Throws `notFound`, `outOfMemory` (`checkRoom`: nothing applied). Cost: two table probes
    /// per removed event, three per stored one (one for the room check), one per entry of the
    /// instance's log for an `allCleared` (two when it leads the batch: `checkRoom`).
    public func observe(_ id: UInt32, events: UnsafeBufferPointer<KVEvent>) throws(KVError) {
        let s = try liveSlot(id)
        try checkRoom(slot: s) { from, body in body(UnsafeBufferPointer(rebasing: events[from...])) }
        for e in events { view.apply(e, slot: s) }
    }

    /// The slot of live instance `id`, or `notFound`. Cost: `slot(of:)`.
    package func liveSlot(_ id: UInt32) throws(KVError) -> Int {
        let s = slot(of: id)
        guard s >= 0 else { throw KVError(.notFound, "instance \(id) is not in the router") }
        return s
    }

    /// Refuses (`outOfMemory`) a batch of `slot`'s events whose stored blocks could take the
    /// exact view past `trackedBlocks` distinct hashes: counts its events for which
    /// `CacheView.mayAddEntry` holds (an upper bound: repeats and removals in the batch are not
    /// netted). A batch whose first event is a memory-tier `allCleared` (a restarted engine's
    /// first batch, a dump) is judged as if that clear had been applied, without applying it:
    /// the entries only this slot holds count as free, and its stores of hashes no other slot
    /// holds as new. So the view never drops a stored block in silence, and a restart near the
    /// bound is not refused for blocks its own clear drops. The batch is `events`' events
    /// from index `from` on (`EventPieces`). A refusal is counted in `refusedFullBatches`.
    /// Cost: one probe per event; with a leading clear and no room for the batch's stores
    /// counted as new, one per block the slot holds.
    package func checkRoom(slot: Int, from: Int = 0, _ events: EventPieces) throws(KVError) {
        var cleared: UInt64?, newEntries = 0
        events(from) { batch in
            if cleared == nil, let e = batch.first {
                cleared = e.kind == .allCleared && e.tier == KVEvent.memoryTier ? 1 << UInt64(slot) : 0
            }
            for e in batch where view.mayAddEntry(e, cleared: cleared ?? 0) { newEntries += 1 }
        }
        if view.table.room(for: newEntries) { return }
        let freed = (cleared ?? 0) != 0 ? view.entriesHeldAlone(slot: slot) : 0
        guard !view.table.room(for: newEntries - freed) else { return }
        let alone = (cleared ?? 0) != 0
            ? ", \(freed) of them held by this instance alone, which the batch's leading all-cleared frees," : ","
        refusedFullBatches += 1
        throw KVError(.outOfMemory, "the cache view holds \(view.table.count) distinct blocks of the \(view.table.limit) it "
                      + "can track\(alone) and these events could add \(newEntries): the instances' caches hold too many blocks together")
    }

    /// `observe` for live slot `slot`: the fast path, without the id lookup, for callers inside
    /// this package that hold a slot they know is live (the simulator; the C ABI after
    /// `slot(of:)` under its mutex); other callers use `observe(_:events:)`. Precondition,
    /// checked: `slot` is live (a removed instance's events would otherwise enter the view of
    /// whichever instance `addInstance` puts in the slot next). Cost: one mask test, then one
    /// view probe per event.
    package func observe(slot: Int, events: UnsafeBufferPointer<KVEvent>) {
        precondition(isLive(slot), "observe(slot: \(slot)): not a live slot")
        for e in events { view.apply(e, slot: slot) }
    }

    /// True when `slot` (any integer) holds a live instance. O(1).
    @inline(__always) public func isLive(_ slot: Int) -> Bool {
        slot >= 0 && slot < RouterConfig.maxInstances && liveMask & (1 << UInt64(slot)) != 0
    }

    /// Calibrates the prefill estimate with a completed prefill of `tokens` uncached tokens
    /// that took `milliseconds`: the time the prefill added to the steps that carried it, not
    /// their decode work (`kvc_router_observe_prefill` in kvcache.h says how a server gets it).
    /// Throws `invalidArgument`, changing nothing, for tokens < 1,
    /// milliseconds not a positive number, or an observation that would take the estimate
    /// out of the positive finite numbers (`PrefillEstimator.observe`).
    public func observePrefill(tokens: Int, milliseconds: Double) throws(KVError) {
        guard tokens > 0 else { throw KVError(.invalidArgument, "n_tokens is \(tokens); a prefill computes at least 1 token") }
        guard milliseconds > 0 && milliseconds.isFinite else {
            throw KVError(.invalidArgument, "milliseconds \(milliseconds) is not a positive number")
        }
        guard prefill.observe(tokens: tokens, milliseconds: milliseconds) else {
            throw KVError(.invalidArgument, "a prefill of \(tokens) tokens in \(milliseconds) ms would make the estimate of "
                          + "\(prefill.millisecondsPerToken) ms per token infinite or 0")
        }
    }

    /// Tells the router that a request routed to instance `id` with the block `hashes` it was
    /// routed with has finished (completed, aborted or rejected): its blocks leave the
    /// instance's active blocks (`active`), as Dynamo's `free` at request completion. Call it
    /// once per routed request; a prefill's end is not a finish (the blocks stay held while
    /// it decodes). Policies without `PolicyKind.countsActiveBlocks` keep nothing to free:
    /// for them the call only checks its arguments. Throws `notFound` (no such instance),
    /// `invalidArgument` (no hashes; with `active` only, one of them not active at the
    /// instance: never routed there, already finished, or dropped by an `ActiveBlocks` reset;
    /// the other policies accept any hashes); nothing changes then.
    /// Hashes are counted, not tied to a request: a second finish of a request whose blocks
    /// another routed request shares takes that request's references. Cost: `slot(of:)`, then
    /// about three hash probes per block (`ActiveBlocks.remove`).
    public func finish(_ id: UInt32, hashes: UnsafeBufferPointer<UInt64>) throws(KVError) {
        let s = slot(of: id)
        guard s >= 0 else { throw KVError(.notFound, "instance \(id) is not in the router") }
        guard hashes.count > 0 else { throw KVError(.invalidArgument, "no block hashes: a finished request was routed by at least one") }
        guard active?.remove(hashes, slot: s) ?? true else {
            throw KVError(.invalidArgument, "a block hash of the \(hashes.count) given is not active at instance \(id): the request "
                          + "was not routed there, or has finished already")
        }
    }

    /// `finish` for live slot `slot`, without the id lookup, for callers inside this package
    /// that routed the request there themselves (the simulator). Precondition, checked: the
    /// slot is live. Blocks an `ActiveBlocks` reset dropped (or never counted: a request of
    /// more hashes than its limit) are not active there any more: such a finish removes
    /// nothing and is counted in `finishesOfDroppedBlocks`.
    package func finish(slot: Int, hashes: UnsafeBufferPointer<UInt64>) {
        precondition(isLive(slot), "finish(slot: \(slot)): not a live slot")
        if !(active?.remove(hashes, slot: slot) ?? true) { finishesOfDroppedBlocks += 1 }
    }

    /// Package-internal finishes (`finish(slot:hashes:)`) whose blocks were not active: dropped
    /// by an `ActiveBlocks` reset or never counted.
    package private(set) var finishesOfDroppedBlocks: UInt64 = 0

    /// Lets the policy move queued requests off overloaded instances; returns how many moved.
    public func rebalance(_ queues: any RequestQueues) -> Int {
        guard liveMask != 0 else { return 0 }
        let moved = policy.rebalance(router: self, queues: queues)
        rebalanceMoves += UInt64(moved)
        return moved
    }

    /// Moves one request's pending prefill tokens (`fromTokens`, its uncached part at `from`,
    /// off `from`; `toTokens`, its uncached part at `to`, onto `to`) and its `blocks` from
    /// `from` to `to` (after a rebalancing move, until the next reports), and credits an approximate view with the
    /// request's `hashes` at `to`, which will compute them (as a route there would have). The
    /// view keeps them at `from` too: it cannot tell the blocks the request's route added there
    /// from those it held before. Active blocks (`active`) move with the request.
    func transfer(from: Int, to: Int, fromTokens: Int, toTokens: Int, blocks: Int, hashes: UnsafeBufferPointer<UInt64>) {
        view.recordRoute(hashes, slot: to)
        if let active {
            let removed = active.remove(hashes, slot: from)
            precondition(removed, "transfer: the moved request's blocks are not active at its slot")
            active.add(hashes, slot: to)
        }
        loads[from].pendingPrefillTokens -= min(loads[from].pendingPrefillTokens, UInt64(fromTokens))
        loads[from].runningBlocks -= min(loads[from].runningBlocks, UInt64(blocks))
        loads[from].activeRequests -= min(loads[from].activeRequests, 1)
        loads[from].waitingRequests -= min(loads[from].waitingRequests, 1)
        commit(slot: to, uncachedTokens: toTokens, blocks: blocks)
    }
}
