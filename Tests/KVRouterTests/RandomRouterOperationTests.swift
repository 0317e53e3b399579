import KVCache
import Testing
@testable import KVRouter

/// Seeded random sequences of add (valid and invalid weights, ids added before), remove, KV
/// event batches (stored / removed / all-cleared, memory and disk tiers, unknown tiers, hash 0,
/// in any order, for live and unknown instances), load reports (zero to huge), prefill
/// observations and routes (1 to 10 blocks, partial last blocks, duplicate hashes), against a
/// reference model written from the contracts: per instance a set of the memory-tier hashes
/// its events leave (exact view) or a least-recently-routed list of the hashes routed to it
/// (approximate view), and its load. After every step: the view's bit of each live instance is set for exactly the
/// model's hashes (and the table holds no other for it), no other slot holds a bit, and the
/// loads are the model's; after every route: the chosen instance is live, its matched prefix
/// is the model's, its load advanced as `Router.route` documents, and the choice is the one
/// the policy's documented rule makes from the model's prefixes and loads.
/// A uniform integer in 0..<n.
private func below(_ n: Int, _ rng: inout SplitMix64) -> Int { Int(rng.next() % UInt64(n)) }

@Suite("Random router operations match a reference model")
struct RandomRouterOperationTests {
    /// What the contracts say the router knows of one live instance.
    struct ModelInstance {
        /// Exact view: the memory-tier hashes the instance's events leave.
        var memory = Set<UInt64>()
        /// Approximate view: the hashes routed to it, most recently routed first (at most
        /// `capacity`).
        var credited: [UInt64] = []
        var load = InstanceLoad()
        /// Overlap cost: references per hash of the requests routed here (none finishes).
        var active: [UInt64: Int] = [:]
    }

    static let blockTokens = 16
    /// Approximate view: distinct blocks per instance.
    static let capacity = 12
    static let instanceIds: [UInt32] = Array(0..<10).map { UInt32($0 * 7 + 3) }

    /// Eight conversations of ten chained blocks; prompts are prefixes of them, so they share.
    static let conversations: [[UInt64]] = (0..<8).map { chain(UInt64(1000 + $0), count: 10) }
    /// Every hash a prompt or an event of the test uses, plus two no prompt holds.
    static let universe: [UInt64] = conversations.flatMap { $0 } + [0xDEAD_BEEF, 0xFEED_F00D]

    final class Run {
        let router: Router
        let exact: Bool
        var model: [UInt32: ModelInstance] = [:]
        /// Round-robin: the slot chosen last (-1 before the first route).
        var lastSlot = -1
        var step = 0
        /// What the run exercised (so a generator that stops reaching a path fails the test).
        /// `routedWithMatch`: routes for which some instance cached a prefix.
        var routed = 0, routedWithMatch = 0, removedLive = 0, reAdded = 0, clearedNonEmpty = 0, batchesRefused = 0
        var everAdded = Set<UInt32>()
        /// Inserts the table must refuse: a hash no instance holds while it holds `trackedBlocks`.
        var refused: UInt64 = 0

        init(_ config: RouterConfig) throws {
            router = try Router(config)
            exact = config.effectiveView == .exact
        }

        /// Whether the table takes `hash` for one more instance: it holds it already, or has
        /// room for another distinct hash (counted as the model's union over live instances).
        func admits(_ hash: UInt64) -> Bool {
            let union = model.values.reduce(into: Set<UInt64>()) { $0.formUnion(exact ? $1.memory : Set($1.credited)) }
            if union.contains(hash) || union.count < router.config.trackedBlocks { return true }
            refused += 1
            return false
        }

        /// Leading blocks of `hashes` the model credits to `id`.
        func prefix(_ hashes: [UInt64], _ id: UInt32) -> Int {
            let m = model[id]!
            let held = exact ? m.memory : Set(m.credited)
            var n = 0
            while n < hashes.count && held.contains(hashes[n]) { n += 1 }
            return n
        }

        /// The view and loads equal the model's; no slot outside the live ones holds anything.
        /// Returns false after recording the first disagreement (the run then stops: later steps
        /// would only repeat it).
        func check() -> Bool {
            var agreed = true
            func expect(_ condition: Bool, _ message: @autoclosure () -> String) {
                if agreed && !condition {
                    Issue.record(Comment(rawValue: message()))
                    agreed = false
                }
            }
            expect(router.instanceCount == model.count, "step \(step)")
            var liveSlots: UInt64 = 0
            for (id, m) in model {
                let s = router.slot(of: id)
                expect(s >= 0, "step \(step): live instance \(id) has no slot")
                guard s >= 0 else { continue }
                expect(liveSlots & (1 << UInt64(s)) == 0, "step \(step): two instances share slot \(s)")
                liveSlots |= 1 << UInt64(s)
                let held = exact ? m.memory : Set(m.credited)
                for h in RandomRouterOperationTests.universe {
                    expect((router.view.table.slots(h) & (1 << UInt64(s)) != 0) == held.contains(h),
                           "step \(step): instance \(id) (slot \(s)) and the model disagree on hash \(h)")
                }
                expect(router.view.heldBlocks(slot: s) == held.count,
                       "step \(step): instance \(id) has \(router.view.heldBlocks(slot: s)) blocks in the view, \(held.count) in the model")
                expect(router.loads[s] == m.load, "step \(step): instance \(id) load \(router.loads[s]), the model's \(m.load)")
            }
            expect(router.liveMask == liveSlots, "step \(step)")
            for h in RandomRouterOperationTests.universe {
                expect(router.view.table.slots(h) & ~liveSlots == 0, "step \(step): a slot without an instance holds \(h)")
            }
            expect(router.view.table.refused == refused, "step \(step): the table refused \(router.view.table.refused) inserts, the model \(refused)")
            let perToken = router.prefill.millisecondsPerToken
            expect(perToken > 0 && perToken.isFinite, "step \(step): prefill estimate \(perToken)")
            return agreed
        }

        func expectError(_ code: KVError.Code, _ body: () throws(KVError) -> Void) {
            do throws(KVError) {
                try body()
                Issue.record("step \(step): expected \(code), the call succeeded")
            } catch {
                #expect(error.code == code, "step \(step): \(error)")
            }
        }

        func add(_ rng: inout SplitMix64) {
            let id = RandomRouterOperationTests.instanceIds[below(RandomRouterOperationTests.instanceIds.count, &rng)]
            let weights: [Double] = [1, 1, 1, 0.5, 2, 64, 1e-9, 0, -1, .nan, .infinity, 64.5]
            let w = weights[below(weights.count, &rng)]
            if !(w > 0 && w <= 64) {
                expectError(.invalidArgument) { () throws(KVError) in try router.addInstance(id, weight: w) }
            } else if model[id] != nil {
                expectError(.exists) { () throws(KVError) in try router.addInstance(id, weight: w) }
            } else {
                do throws(KVError) {
                    try router.addInstance(id, weight: w)
                    model[id] = ModelInstance()
                    if !everAdded.insert(id).inserted { reAdded += 1 }
                } catch { Issue.record("step \(step): add \(id) weight \(w): \(error)") }
            }
        }

        func remove(_ rng: inout SplitMix64) {
            let id = RandomRouterOperationTests.instanceIds[below(RandomRouterOperationTests.instanceIds.count, &rng)]
            if model[id] == nil {
                expectError(.notFound) { () throws(KVError) in try router.removeInstance(id) }
            } else {
                do throws(KVError) {
                    try router.removeInstance(id)
                    model[id] = nil
                    removedLive += 1
                } catch { Issue.record("step \(step): remove \(id): \(error)") }
            }
        }

        func observe(_ rng: inout SplitMix64) {
            let id = RandomRouterOperationTests.instanceIds[below(RandomRouterOperationTests.instanceIds.count, &rng)]
            var events: [KVEvent] = []
            if below(2, &rng) == 0 {
                // As an engine announces a prompt it cached: a conversation's leading blocks, in order.
                let conversation = RandomRouterOperationTests.conversations[below(RandomRouterOperationTests.conversations.count, &rng)]
                let tier: UInt32 = below(4, &rng) == 0 ? 1 : 0
                for (i, h) in conversation[0..<(1 + below(conversation.count, &rng))].enumerated() {
                    events.append(KVEvent(kind: .blockStored, tier: tier, blockHash: h, parentHash: i > 0 ? conversation[i - 1] : 0))
                }
            }
            for _ in 0..<(1 + below(8, &rng)) {
                let u = RandomRouterOperationTests.universe
                let roll = below(100, &rng)
                let tier: UInt32 = roll < 70 ? 0 : roll < 90 ? 1 : UInt32(2 + below(6, &rng))
                var hash = u[below(u.count, &rng)]
                if below(40, &rng) == 0 { hash = 0 }
                // Removals mostly of what the instance holds, so sets shrink as well as grow.
                if let held = model[id]?.memory, !held.isEmpty, below(2, &rng) == 0 { hash = held.sorted()[below(held.count, &rng)] }
                let k = below(100, &rng)
                let kind: KVEvent.Kind = k < 55 ? .blockStored : k < 94 ? .blockRemoved : .allCleared
                events.append(KVEvent(kind: kind, tier: tier, blockHash: kind == .allCleared ? 0 : hash, parentHash: 0))
            }
            guard model[id] != nil else {
                expectError(.notFound) { () throws(KVError) in
                    try events.withUnsafeBufferPointer { (b) throws(KVError) in try router.observe(id, events: b) }
                }
                return
            }
            // An exact view refuses a batch whose stored blocks could pass trackedBlocks distinct
            // hashes (each stored memory-tier hash no instance holds counted), changing nothing.
            let union = exact ? model.values.reduce(into: Set<UInt64>()) { $0.formUnion($1.memory) } : []
            let newEntries = events.filter { $0.kind == .blockStored && $0.tier == KVEvent.memoryTier && $0.blockHash != 0 && !union.contains($0.blockHash) }.count
            if union.count + newEntries > router.config.trackedBlocks {
                batchesRefused += 1
                expectError(.outOfMemory) { () throws(KVError) in
                    try events.withUnsafeBufferPointer { (b) throws(KVError) in try router.observe(id, events: b) }
                }
                return
            }
            do throws(KVError) {
                try events.withUnsafeBufferPointer { (b) throws(KVError) in try router.observe(id, events: b) }
            } catch { Issue.record("step \(step): observe \(id): \(error)") }
            // Only the memory tier counts (a disk hit still costs a read); hash 0 names no block.
            guard exact else { return }
            for e in events where e.tier == KVEvent.memoryTier {
                switch e.kind {
                case .blockStored:
                    if e.blockHash != 0 { model[id]!.memory.insert(e.blockHash) }
                case .blockRemoved: model[id]!.memory.remove(e.blockHash)
                case .allCleared:
                    if !model[id]!.memory.isEmpty { clearedNonEmpty += 1 }
                    model[id]!.memory.removeAll()
                }
            }
        }

        func report(_ rng: inout SplitMix64) {
            let id = RandomRouterOperationTests.instanceIds[below(RandomRouterOperationTests.instanceIds.count, &rng)]
            func amount() -> UInt64 {
                switch below(10, &rng) {
                case 0: 0
                case 1: UInt64.max - UInt64(below(4, &rng))
                case 2: 1 << 62
                default: UInt64(below(20_000, &rng))
                }
            }
            let load = InstanceLoad(pendingPrefillTokens: amount(), runningBlocks: amount(), freeBlocks: amount(), activeRequests: amount(),
                                    waitingRequests: amount())
            if model[id] == nil {
                expectError(.notFound) { () throws(KVError) in try router.report(id, load: load) }
                return
            }
            do throws(KVError) {
                try router.report(id, load: load)
                model[id]!.load = load
            } catch { Issue.record("step \(step): report \(id): \(error)") }
        }

        func observePrefill(_ rng: inout SplitMix64) {
            let extremes: [(Int, Double)] = [(1, 1e308), (Int.max, .leastNonzeroMagnitude), (1, .greatestFiniteMagnitude), (1 << 40, 1e-300),
                                             (0, 5), (10, 0), (10, .nan), (10, -1), (10, .infinity)]
            if below(6, &rng) == 0 {
                // Refused or not, the estimate stays a positive finite number (`check`); refused, it is unchanged.
                let (t, ms) = extremes[below(extremes.count, &rng)]
                let before = router.prefill.millisecondsPerToken
                do throws(KVError) { try router.observePrefill(tokens: t, milliseconds: ms) } catch {
                    #expect(error.code == .invalidArgument, "step \(step): \(error)")
                    #expect(router.prefill.millisecondsPerToken == before, "step \(step): a refused observation changed the estimate")
                }
            } else {
                do throws(KVError) { try router.observePrefill(tokens: 1 + below(20_000, &rng), milliseconds: Double(1 + below(4000, &rng))) } catch {
                    Issue.record("step \(step): observe prefill: \(error)")
                }
            }
        }

        /// The instance the policy's documented rule picks, from the model (nil: the test does
        /// not predict it, only checks it is live).
        func expectedSlot(_ hashes: [UInt64], tokens: Int) -> Int? {
            let c = router.config
            let bt = c.blockTokens
            let live = model.keys.map { (id: $0, slot: router.slot(of: $0)) }.sorted { $0.slot < $1.slot }
            func uncached(_ id: UInt32) -> Int { max(0, tokens - prefix(hashes, id) * bt) }
            func load(_ id: UInt32) -> InstanceLoad { model[id]!.load }
            func ttft(_ id: UInt32) -> Double {
                (Double(load(id).pendingPrefillTokens) + Double(uncached(id))) * router.prefill.millisecondsPerToken
            }
            switch c.policy {
            case .roundRobin:
                return (live.first { $0.slot > lastSlot } ?? live[0]).slot
            case .leastLoaded:
                return live.min { (load($0.id).pendingPrefillTokens, load($0.id).activeRequests, $0.slot)
                    < (load($1.id).pendingPrefillTokens, load($1.id).activeRequests, $1.slot) }!.slot
            case .consistentHash:
                return router.ring1.lookup(hashes[min(c.keyBlocks, hashes.count) - 1])
            case .overlapCost:
                // Active blocks: distinct hashes routed to the instance; new: the prompt's others
                // (each occurrence; hash 0 always new).
                func logit(_ id: UInt32) -> Double {
                    let active = model[id]!.active
                    let new = hashes.filter { $0 == 0 || active[$0] == nil }.count
                    return c.overlapScoreWeight * ((Double(load(id).pendingPrefillTokens) + Double(uncached(id))) / Double(bt))
                        + Double(active.count + new)
                }
                return live.min { (logit($0.id), load($0.id).activeRequests, $0.slot) < (logit($1.id), load($1.id).activeRequests, $1.slot) }!.slot
            case .prefixTree:
                let active = live.map { load($0.id).activeRequests }
                let lo = active.min()!, hi = active.max()!
                if hi - lo > UInt64(c.balanceAbsThreshold) && Double(hi) > Double(lo) * c.balanceRelThreshold {
                    return live.first { load($0.id).activeRequests == lo }!.slot
                }
                let best = live.min { (-prefix(hashes, $0.id), load($0.id).activeRequests, $0.slot)
                    < (-prefix(hashes, $1.id), load($1.id).activeRequests, $1.slot) }!
                if Double(min(tokens, prefix(hashes, best.id) * bt)) / Double(tokens) > c.cacheThreshold { return best.slot }
                return live.first { load($0.id).activeRequests == lo }!.slot
            case .dualMap:
                let (a, b) = router.candidates(hashes[min(c.keyBlocks, hashes.count) - 1])
                #expect(a >= 0 && a != b, "step \(step): candidates \(a), \(b)")
                #expect((b < 0) == (live.count == 1), "step \(step): one candidate exactly when one instance is live")
                if b < 0 { return a }
                let ia = router.id(ofSlot: a), ib = router.id(ofSlot: b)
                let pa = prefix(hashes, ia), pb = prefix(hashes, ib)
                let affinity = pa != pb ? (pa > pb ? ia : ib) : (load(ib).runningBlocks < load(ia).runningBlocks ? ib : ia)
                let other = affinity == ia ? ib : ia
                let chosen: UInt32
                if ttft(affinity) <= c.sloThresholdMilliseconds {
                    chosen = affinity
                } else if ttft(other) < ttft(affinity) || (ttft(other) == ttft(affinity) && load(other).runningBlocks < load(affinity).runningBlocks) {
                    chosen = other
                } else {
                    chosen = affinity
                }
                return router.slot(of: chosen)
            case .llmD:
                // 3 x prefix (min-max over the instances caching block 0) + 2 x (1 - KV usage) +
                // 2 x queue (min-max over waiting requests); the highest, ties by fewer active.
                let hits = live.map { prefix(hashes, $0.id) }.filter { $0 > 0 }
                let waiting = live.map { load($0.id).waitingRequests }
                func score(_ id: UInt32) -> Double {
                    let p = prefix(hashes, id), l = load(id)
                    let prefixScore = p == 0 ? 0 : hits.min()! == hits.max()! ? 1 : Double(p - hits.min()!) / Double(hits.max()! - hits.min()!)
                    let total = Double(l.runningBlocks) + Double(l.freeBlocks)
                    let usage = total == 0 ? 0 : Double(l.runningBlocks) / total
                    // Differences of counts in integers, then Double: a report near 2^64 rounds
                    // otherwise, and at a near-tie a rounding decides the winner.
                    let queue = waiting.min()! == waiting.max()! ? 1 : Double(waiting.max()! - l.waitingRequests) / Double(waiting.max()! - waiting.min()!)
                    return 3 * prefixScore + 2 * (1 - usage) + 2 * queue
                }
                return live.min { (-score($0.id), load($0.id).activeRequests, $0.slot) < (-score($1.id), load($1.id).activeRequests, $1.slot) }!.slot
            }
        }

        func route(_ rng: inout SplitMix64) {
            let conversation = RandomRouterOperationTests.conversations[below(RandomRouterOperationTests.conversations.count, &rng)]
            var hashes = Array(conversation[0..<(1 + below(conversation.count, &rng))])
            if below(8, &rng) == 0 {
                let i = below(hashes.count, &rng)
                hashes.insert(hashes[i], at: i)  // a prompt whose hashes repeat
            }
            let bt = RandomRouterOperationTests.blockTokens
            let tokens = hashes.count * bt - below(bt, &rng)
            if below(30, &rng) == 0 {
                expectError(.invalidArgument) { () throws(KVError) in _ = try router.routeSlot([], tokens: tokens) }
                expectError(.invalidArgument) { () throws(KVError) in _ = try router.routeSlot(hashes, tokens: 0) }
                return
            }
            if model.isEmpty {
                expectError(.notFound) { () throws(KVError) in _ = try router.routeSlot(hashes, tokens: tokens) }
                return
            }
            let expected = expectedSlot(hashes, tokens: tokens)
            let s: Int
            do throws(KVError) { s = try router.routeSlot(hashes, tokens: tokens) } catch {
                Issue.record("step \(step): route: \(error)")
                return
            }
            guard s >= 0 && s < RouterConfig.maxInstances && router.liveMask & (1 << UInt64(s)) != 0 else {
                Issue.record("step \(step): routed to slot \(s), which holds no instance")
                return
            }
            let id = router.id(ofSlot: s)
            #expect(expected == s, "step \(step): \(router.config.policy.name) chose slot \(s), its rule slot \(expected ?? -1)")
            let matched = prefix(hashes, id)
            routed += 1
            if model.keys.contains(where: { prefix(hashes, $0) > 0 }) { routedWithMatch += 1 }
            #expect(Int(router.matched[s]) == matched, "step \(step): matched prefix of the chosen instance")
            // `route` advances the chosen load by the request (saturating: a load is a count).
            var l = model[id]!.load
            let uncached = UInt64(max(0, tokens - matched * RandomRouterOperationTests.blockTokens))
            let blocks = UInt64((tokens + RandomRouterOperationTests.blockTokens - 1) / RandomRouterOperationTests.blockTokens)
            l.pendingPrefillTokens = l.pendingPrefillTokens.addingReportingOverflow(uncached).overflow ? .max : l.pendingPrefillTokens + uncached
            l.runningBlocks = l.runningBlocks.addingReportingOverflow(blocks).overflow ? .max : l.runningBlocks + blocks
            l.freeBlocks -= min(l.freeBlocks, blocks)
            l.activeRequests = l.activeRequests == .max ? .max : l.activeRequests + 1
            l.waitingRequests = l.waitingRequests == .max ? .max : l.waitingRequests + 1
            model[id]!.load = l
            if router.config.policy.countsActiveBlocks {
                for h in hashes { model[id]!.active[h, default: 0] += 1 }
                #expect(router.active?.unique(slot: s) == model[id]!.active.count, "step \(step): active blocks at the chosen instance")
            }
            lastSlot = s
            if !exact {
                // The approximate view makes the route's nonzero hashes the most recent, in route
                // order (first most recent; a repeat at its last occurrence): `placed` of them lead
                // the list. A new one evicts the least recent first, unless all are this route's
                // (then the route stops); one the full table refuses stops it too (the view
                // underestimates).
                var placed = 0
                for h in hashes where h != 0 {
                    if let j = model[id]!.credited.firstIndex(of: h) {
                        model[id]!.credited.remove(at: j)
                        if j < placed { placed -= 1 }
                    } else {
                        if model[id]!.credited.count == RandomRouterOperationTests.capacity {
                            if placed == RandomRouterOperationTests.capacity { break }
                            model[id]!.credited.removeLast()
                        }
                        guard admits(h) else { break }
                    }
                    model[id]!.credited.insert(h, at: placed)
                    placed += 1
                }
            }
        }
    }

    /// `trackedBlocks` 96: room for every hash of the universe in a table of at most 256
    /// entries, so probes collide but nothing is refused; 24: a full table refuses batches
    /// (exact) or inserts (approximate), which the model predicts.
    static func run(_ policy: PolicyKind, view: CacheViewMode? = nil, trackedBlocks: Int = 96, seed: UInt64, steps: Int = 600) throws {
        var c = RouterConfig(policy: policy)
        c.view = view
        c.blockTokens = blockTokens
        c.approximateBlocksPerInstance = capacity
        c.trackedBlocks = trackedBlocks
        c.virtualNodes = 16
        c.ttftSLOMilliseconds = 4000
        c.balanceAbsThreshold = 4
        let run = try Run(c)
        var rng = SplitMix64(seed: seed)
        for step in 0..<steps {
            run.step = step
            switch below(100, &rng) {
            case 0..<12: run.add(&rng)
            case 12..<18: run.remove(&rng)
            case 18..<45: run.observe(&rng)
            case 45..<58: run.report(&rng)
            case 58..<63: run.observePrefill(&rng)
            default: run.route(&rng)
            }
            guard run.check() else { return }
        }
        let exercised = "\(run.routed) routes, \(run.routedWithMatch) with a cached prefix somewhere, \(run.removedLive) removals, \(run.reAdded) re-adds"
        #expect(run.routed > 150 && run.routedWithMatch > 10 && run.removedLive > 6 && run.reAdded > 4, "too little: \(exercised)")
        if run.exact { #expect(run.clearedNonEmpty > 2, "only \(run.clearedNonEmpty) all-cleared events emptied a view") }
        // A full table refuses in every run: an exact view whole batches of events, never an
        // insert (it would drop a block in silence); an approximate one inserts (its view
        // underestimates). One with room for the whole universe refuses nothing.
        let full = trackedBlocks < 80
        #expect(run.exact ? run.refused == 0 && (run.batchesRefused >= 3) == full : (run.refused >= 8) == full,
                "\(run.refused) inserts and \(run.batchesRefused) batches refused with room for \(trackedBlocks)")
    }

    /// Seeds 24 and 32 route with reports near 2^64 at a near-tie (llm-d's score); a soak of
    /// seeds 1-60 passes every test here.
    static let seeds: [UInt64] = [1, 2, 3, 24, 32]

    @Test(arguments: seeds) func dualMapExact(seed: UInt64) throws { try Self.run(.dualMap, seed: seed) }
    @Test(arguments: seeds) func dualMapApproximate(seed: UInt64) throws { try Self.run(.dualMap, view: .approximate, seed: seed) }
    @Test(arguments: seeds) func roundRobin(seed: UInt64) throws { try Self.run(.roundRobin, seed: seed) }
    @Test(arguments: seeds) func leastLoaded(seed: UInt64) throws { try Self.run(.leastLoaded, seed: seed) }
    @Test(arguments: seeds) func consistentHash(seed: UInt64) throws { try Self.run(.consistentHash, seed: seed) }
    @Test(arguments: seeds) func prefixTreeApproximate(seed: UInt64) throws { try Self.run(.prefixTree, seed: seed) }
    @Test(arguments: seeds) func prefixTreeExact(seed: UInt64) throws { try Self.run(.prefixTree, view: .exact, seed: seed) }
    @Test(arguments: seeds) func overlapCostExact(seed: UInt64) throws { try Self.run(.overlapCost, seed: seed) }
    @Test(arguments: seeds) func llmDExact(seed: UInt64) throws { try Self.run(.llmD, seed: seed) }
    @Test(arguments: seeds) func dualMapExactFullTable(seed: UInt64) throws { try Self.run(.dualMap, trackedBlocks: 24, seed: seed) }
    @Test(arguments: seeds) func prefixTreeApproximateFullTable(seed: UInt64) throws {
        try Self.run(.prefixTree, trackedBlocks: 24, seed: seed)
    }
}
