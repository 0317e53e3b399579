import TestSupport
import Testing
import CKVMemory
@testable import KVCache

/// Seeded random sequences of create (by tokens or by block hashes), append, fork, free, abort
/// (with garbage past `computedTokens`), compact (StreamingLLM or H2O, per layer or per head,
/// adaptive budgets or not), truncate (compacted or not), schedule, trim and, with a disk tier,
/// swap out (sync or async) and in, with every invariant checked after each step: every live
/// sequence's bytes (prefix hits
/// and disk reads included) are what was written for the positions it holds; block reference
/// counts equal the block tables' entries, and `usedCount`/`cachedCount` count them; the memory
/// tier's events, applied in order, give exactly the hashes the prefix index holds (none
/// stored twice or removed unknown, every parent stored before its child), the disk tier's
/// those `DiskTier.contains` finds; `cachedPrefixTokens` predicts what `createSequence`
/// reports (unless a swap-out settled during the create, which waits for one when memory is
/// short). Small budgets keep eviction, spills and out-of-memory refusals frequent.
/// `smallConfig`'s geometry puts 32 blocks on a page and a prompt within half of one; the
/// `Geometry.spanning` runs use blocks that span pages or do not divide them, where the
/// contiguous layout's page sharing, copying and unsharing meet block boundaries mid-page.
/// With `failures`, before a third of the calls the OS is made to fail (`InjectedFailure`: a
/// commit, a contiguous mapping, a disk-tier hand-over to the kernel), drawn from a stream of
/// their own so that the operations are those of the run without; a call that throws then
/// must have changed nothing but the cache (`EngineSnapshot.differences`, `cacheMayShrink`).
@Suite("Random operations keep every invariant")
struct RandomOperationTests {
    /// What the events said so far, per tier.
    struct EventViews {
        var memory = Set<UInt64>(), memoryEver = Set<UInt64>()
        var disk = Set<UInt64>(), diskEver = Set<UInt64>()

        mutating func apply(_ events: [KVEvent], step: Int) {
            for ev in events {
                let isMemory = ev.tier == KVEvent.memoryTier
                var view = isMemory ? memory : disk
                switch ev.kind {
                case .blockStored:
                    #expect(!view.contains(ev.blockHash), "step \(step): tier \(ev.tier) stored \(ev.blockHash) twice")
                    if isMemory { #expect(ev.parentHash == 0 || memoryEver.contains(ev.parentHash), "step \(step): parent never stored") }
                    view.insert(ev.blockHash)
                    if isMemory { memoryEver.insert(ev.blockHash) } else { diskEver.insert(ev.blockHash) }
                case .blockRemoved:
                    #expect(view.contains(ev.blockHash), "step \(step): tier \(ev.tier) removed unknown \(ev.blockHash)")
                    view.remove(ev.blockHash)
                case .allCleared:
                    view.removeAll()
                }
                if isMemory { memory = view } else { disk = view }
            }
        }
    }

    /// A run's block/page geometry: `smallConfig`'s 2 layers and 2 KV heads of 2-byte elements,
    /// `headDim` elements per head (a token is `4 * headDim` bytes per tensor), `blockTokens`,
    /// 4096-byte pages; the runs' prompts of `promptTokens`, of which a create takes at most
    /// `prefixTokens` (plus up to 9 of its own); memory budgets per layout and a disk tier's size
    /// small enough that eviction, spills and out-of-memory refusals stay frequent.
    struct Geometry: Sendable, CustomTestStringConvertible {
        let name: String
        let headDim: Int, blockTokens: Int
        let promptTokens: Int, prefixTokens: Int
        let pagedBytes: UInt64, contiguousBytes: UInt64, offloadBytes: UInt64
        var testDescription: String { name }
        /// Bytes of a block per tensor.
        var blockBytes: Int { blockTokens * 4 * headDim }

        /// `smallConfig`'s: 32-byte tokens, 128-byte blocks, 32 to a page.
        static let small = Geometry(name: "32 blocks a page", headDim: 8, blockTokens: 4, promptTokens: 64, prefixTokens: 40,
                                    pagedBytes: 32 << 10, contiguousBytes: 96 << 10, offloadBytes: 160 << 10)

        /// Blocks spanning pages or not dividing them, tokens across pages and wider than two
        /// (their bytes as 40 heads of 128 fp16), with 96-token prompts and budgets of about
        /// 320 tokens (paged: whole blocks in their page groups) or 384 (contiguous: pages),
        /// and a disk tier of 24 blocks.
        static let spanning = [
            Geometry(name: "blocks of 1.5 pages, tokens across pages", headDim: 96, blockTokens: 16),  // 384-byte tokens
            Geometry(name: "blocks of 2 pages", headDim: 128, blockTokens: 16),
            Geometry(name: "blocks of 1.25 KiB, one in 3.2 across a page", headDim: 64, blockTokens: 5),
            Geometry(name: "tokens of 2.5 pages, blocks of 5", headDim: 2560, blockTokens: 2),  // 40 heads of 128 fp16
        ]

        private init(name: String, headDim: Int, blockTokens: Int, promptTokens: Int, prefixTokens: Int,
                     pagedBytes: UInt64, contiguousBytes: UInt64, offloadBytes: UInt64) {
            (self.name, self.headDim, self.blockTokens, self.promptTokens, self.prefixTokens) = (name, headDim, blockTokens, promptTokens, prefixTokens)
            (self.pagedBytes, self.contiguousBytes, self.offloadBytes) = (pagedBytes, contiguousBytes, offloadBytes)
        }

        private init(name: String, headDim: Int, blockTokens: Int) {
            let page = 4096, tensors = 4, blockBytes = blockTokens * 4 * headDim  // as `blockBytes`
            let perGroup = Int(kvm_arena_blocks_per_group(UInt64(blockBytes), UInt64(page)))  // the paged arena's groups
            let groupBytes = Int(kvm_arena_group_bytes(UInt64(blockBytes), UInt64(page)))
            let groups = (320 / blockTokens + perGroup - 1) / perGroup
            let pages = (384 * 4 * headDim + page - 1) / page
            self.init(name: name, headDim: headDim, blockTokens: blockTokens, promptTokens: 96, prefixTokens: 80,
                      pagedBytes: UInt64(groups * groupBytes * tensors), contiguousBytes: UInt64(pages * page * tensors),
                      offloadBytes: UInt64(24 * DiskTier.slotBytes(payloadBytes: tensors * blockBytes)))
        }
    }

    /// What a run did, so that a test can confirm its runs reached each case.
    struct Coverage {
        /// Truncations of compacted sequences.
        var compactedCuts = 0
        /// Calls that threw with a failure armed.
        var refusedArmed = 0
        /// Compactions, and truncations whose cut lies mid-page below the old length's last page.
        var compactions = 0, cutsAcrossPages = 0
        /// Forks of a parent whose bytes end at a page boundary, and elsewhere.
        var forksAtPageEnd = 0, forksMidPage = 0
        /// Creates whose prefix hit ends mid-page.
        var hitsEndingMidPage = 0
        /// The engine's counts: blocks evicted, spilled, read back for a prompt, swap-ins.
        var evictions = 0, spills = 0, diskHits = 0, swapIns = 0

        static func += (a: inout Coverage, b: Coverage) {
            a.compactedCuts += b.compactedCuts
            a.refusedArmed += b.refusedArmed
            a.compactions += b.compactions
            a.cutsAcrossPages += b.cutsAcrossPages
            a.forksAtPageEnd += b.forksAtPageEnd
            a.forksMidPage += b.forksMidPage
            a.hitsEndingMidPage += b.hitsEndingMidPage
            a.evictions += b.evictions
            a.spills += b.spills
            a.diskHits += b.diskHits
            a.swapIns += b.swapIns
        }
    }

    private static func below(_ n: Int, _ rng: inout SplitMix64) -> Int { Int(rng.next() % UInt64(n)) }

    private static func check(_ e: Engine, _ model: [UInt64: [Int32]], swapped: Set<UInt64>, _ views: inout EventViews, step: Int) throws {
        for id in model.keys where !swapped.contains(id) {
            // A failed asynchronous swap-out is reported once; the sequence is resident and unchanged.
            if (try? waitReady(e, id)) == nil { try waitReady(e, id) }
        }
        views.apply(drain(e), step: step)
        if let tier = e.offload?.tier {
            for h in views.diskEver { #expect(tier.contains(h, fingerprint: 0) == views.disk.contains(h), "step \(step): disk tier and its events disagree on \(h)") }
        }
        let pool = e.blocks
        var refs = [UInt32](repeating: 0, count: pool.capacity)
        for s in 0..<e.sequences.maxSeqs where e.sequences.lengths[s] > 0 {
            let table = e.sequences.table(s), swappedOut = e.offload?.swapped[s] == true
            for i in 0..<e.sequences.blockCount(s) {
                // A swapped-out table holds disk slots and the blocks its swap-out kept (`SwapHolds`).
                let b = swappedOut ? SwapHolds.kept(table[i]) : table[i]
                if b >= 0 { refs[Int(b)] += 1 }
            }
        }
        // A pending asynchronous swap-out's sequence counts as swapped but still holds its blocks.
        let exact = e.stats().disk.swapOutsPending == 0
        var indexed = Set<UInt64>(), used = 0, cached = 0
        for b in 0..<pool.capacity {
            let block = Int32(b)
            if pool.isIndexed(block) {
                indexed.insert(pool.hash(of: block))
                #expect(pool.lookup(pool.hash(of: block), fingerprint: pool.fingerprint(of: block)) == block, "step \(step): block \(b) indexed but not found")
            }
            if exact { #expect(pool.references(block) == refs[b], "step \(step): block \(b) has \(pool.references(block)) references, tables \(refs[b])") }
            if pool.references(block) > 0 { used += 1 } else if pool.isIndexed(block) { cached += 1 }
        }
        #expect(pool.usedCount == used && pool.cachedCount == cached, "step \(step): used \(pool.usedCount) vs \(used), cached \(pool.cachedCount) vs \(cached)")
        #expect(indexed == views.memory, "step \(step): the index holds \(indexed.count) hashes, the events say \(views.memory.count)")
        #expect(e.stats().sequences == UInt64(model.count))
        guard e.paged != nil || e.contiguous != nil else { return }
        for (id, toks) in model where !swapped.contains(id) {
            let bad = try slotMismatches(e, id, tokens: toks)
            #expect(bad == 0, "step \(step): sequence \(id) has \(bad) wrong bytes")
            if bad != 0 { throw KVError.invalid("step \(step): stop at the first wrong byte") }
        }
    }

    /// Writes the K/V of `toks[from...]` (the tokens just added) at the end of every layer.
    private static func write(_ e: Engine, _ id: UInt64, _ toks: [Int32], from: Int) throws {
        guard from < toks.count, !e.config.metadataOnly else { return }
        for layer in 0..<e.config.numLayers {
            let base = try e.layerLength(id, layer: layer) - (toks.count - from)
            for p in from..<toks.count {
                let (k, v) = try tokenAddress(e, id, layer: layer, position: base + p - from)
                storeRamp(k, first: kvByte(layer: layer, kv: 0, position: p, token: toks[p], i: 0), count: e.config.tokenBytes)
                storeRamp(v, first: kvByte(layer: layer, kv: 1, position: p, token: toks[p], i: 0), count: e.config.tokenBytes)
            }
        }
    }

    /// A failure to arm before the next call, or nil: a third of the calls, half of those after
    /// a `trim` (so that the call must commit what it takes).
    private static func injectedFailure(_ e: Engine, _ rng: inout SplitMix64) throws -> InjectedFailure? {
        guard below(3, &rng) == 0 else { return nil }
        let kinds = e.offload == nil ? (e.contiguous == nil ? 1 : 2) : 3
        let failure: InjectedFailure = switch below(kinds, &rng) {
        case 0: .commits(after: below(3, &rng))
        case 1 where e.contiguous != nil: .mmap(after: below(4, &rng))
        default: .submits(count: 1 + below(3, &rng))
        }
        if below(2, &rng) == 0 { try e.trim() }
        return failure.arm(e) ? failure : nil
    }

    /// Returns what the run did (`Coverage`).
    @discardableResult
    private static func run(_ layout: Layout, metadataOnly: Bool = false, onSchedule: Bool, disk: Bool = false, failures: Bool = false,
                            geometry: Geometry = .small, seed: UInt64, steps: Int) throws -> Coverage {
        var c = smallConfig(layout, memoryBytes: layout == .paged ? geometry.pagedBytes : geometry.contiguousBytes)
        let dir = ScratchDir("random")
        defer { dir.remove() }
        if disk {
            c = offloadConfig(layout, dir: dir.path, memoryBytes: c.memoryBytes, offloadBytes: geometry.offloadBytes)
            c.offloadForceThreads = seed % 2 == 0
        }
        c.headDim = geometry.headDim
        c.blockTokens = geometry.blockTokens
        c.metadataOnly = metadataOnly
        c.indexOnSchedule = onSchedule
        var rng = SplitMix64(seed: seed), faults = SplitMix64(seed: ~seed), covered = Coverage()
        c.eviction = EvictionConfig(below(2, &rng) == 0 ? .streamingLLM : .heavyHitter)
        c.eviction.sinkTokens = below(6, &rng)
        c.eviction.perHead = below(2, &rng) == 0
        c.eviction.adaptiveBudgets = below(2, &rng) == 0
        let e = try Engine(c)
        let bt = c.blockTokens, tb = c.tokenBytes, page = Int(c.pageBytes)
        var model: [UInt64: [Int32]] = [:], swapped = Set<UInt64>(), views = EventViews(), nextId: UInt64 = 1
        let prompts: [[Int32]] = (1...4).map { tokens(geometry.promptTokens, seed: Int32($0)) }
        func pick(_ ids: [UInt64]) -> UInt64? { ids.isEmpty ? nil : ids[below(ids.count, &rng)] }
        for step in 0..<steps {
            var op = below(10, &rng)
            if model.count > 5 && below(2, &rng) == 0 { op = 6 + below(2, &rng) }  // keep memory turning over
            let all = model.keys.sorted(), resident = all.filter { !swapped.contains($0) }
            let failure = failures ? try injectedFailure(e, &faults) : nil
            let before = failure == nil ? nil : try EngineSnapshot(e, sequences: resident, prompts: prompts)
            var refusal: KVError?
            do {
                switch op {
                case 0, 1, 2:
                    var toks = Array(prompts[below(prompts.count, &rng)].prefix(1 + below(geometry.prefixTokens, &rng)))
                    if below(3, &rng) == 0 { toks += tokens(below(10, &rng), seed: Int32(100 + below(50, &rng))) }
                    let cached: Int
                    if below(3, &rng) == 0 {
                        var hashes = [UInt64](repeating: 0, count: toks.count / bt)
                        _ = toks.withUnsafeBufferPointer { t in hashes.withUnsafeMutableBufferPointer { BlockHash.chain(t, blockTokens: bt, into: $0) } }
                        let known = below(hashes.count + 1, &rng)
                        // By hash alone: such a lookup matches blocks whatever their fingerprints.
                        let byHash = bt * min(hashes[0..<known].withUnsafeBufferPointer { e.cachedPrefixBlocks($0) }, (toks.count - 1) / bt)
                        cached = try hashes.withUnsafeBufferPointer { (h) throws(KVError) -> Int in
                            try e.createSequence(nextId, blockHashes: UnsafeBufferPointer(rebasing: h[0..<known]), tokens: toks.count)
                        }
                        #expect(cached <= byHash, "step \(step): a create by \(known) hashes found more than its hashes' prediction")
                    } else {
                        let predicted = e.cachedPrefixTokens(toks)
                        let settled = e.stats().disk.swapOuts + e.stats().disk.swapOutsFailed
                        cached = try e.createSequence(nextId, tokens: toks)
                        let settledDuring = e.stats().disk.swapOuts + e.stats().disk.swapOutsFailed != settled
                        #expect(cached == predicted || settledDuring, "step \(step): created with \(cached) cached tokens, predicted \(predicted)")
                    }
                    if cached * tb % page != 0 { covered.hitsEndingMidPage += 1 }
                    model[nextId] = toks
                    if onSchedule { try e.schedule(nextId, tokens: below(toks.count + 1, &rng)) }
                    try write(e, nextId, toks, from: cached)
                    nextId += 1
                case 3, 4:
                    guard let id = pick(resident) else { continue }
                    let added = tokens(1 + below(6, &rng), seed: Int32(200 + below(4, &rng)))
                    try e.append(id, tokens: added)
                    model[id]! += added
                    try write(e, id, model[id]!, from: model[id]!.count - added.count)
                case 5:
                    guard let id = pick(resident) else { continue }
                    let atPageEnd = try e.length(id) * tb % page == 0
                    try e.fork(parent: id, child: nextId)
                    if atPageEnd { covered.forksAtPageEnd += 1 } else { covered.forksMidPage += 1 }
                    model[nextId] = model[id]
                    nextId += 1
                case 6:
                    if disk && below(2, &rng) == 0 {
                        guard let id = pick(all) else { continue }
                        if swapped.contains(id) {
                            try e.swapIn(id)
                            swapped.remove(id)
                        } else {
                            if below(2, &rng) == 0 { try e.swapOut(id) } else { try e.swapOutAsync(id) }
                            swapped.insert(id)
                        }
                    } else {
                        guard let id = pick(all) else { continue }
                        try e.free(id)
                        model[id] = nil
                        swapped.remove(id)
                    }
                case 7:
                    guard let id = pick(all) else { continue }
                    let length = try e.length(id)
                    let computed = below(2, &rng) == 0 ? length : below(length + 1, &rng)
                    // Nothing was computed from `computed` on: garbage there, in the blocks only this
                    // sequence holds (paged, never compacted, resident), which no later hit may serve.
                    let s = e.sequences.slot(of: id)
                    if e.paged != nil && !swapped.contains(id) && (e.evictionStates[s]?.compactions ?? 0) == 0 {
                        let table = e.sequences.table(s)
                        for p in computed..<length where e.blocks.references(table[p / bt]) == 1 {
                            for t in 0..<c.tensors {
                                let token = e.paged!.address(table[p / bt], tensor: t) + (p % bt) * c.tokenBytes
                                token.initializeMemory(as: UInt8.self, repeating: 0xEE, count: c.tokenBytes)
                            }
                        }
                    }
                    try e.free(id, computedTokens: computed)
                    model[id] = nil
                    swapped.remove(id)
                case 8:
                    guard let id = pick(resident) else { continue }
                    let length = try e.length(id)
                    guard length > 12 else { continue }
                    if c.eviction.adaptiveBudgets {
                        let sensitivity = (0..<c.numLayers).map { _ in Float(1 + below(4, &rng)) }
                        try sensitivity.withUnsafeBufferPointer { (v) throws(KVError) in try e.setLayerSensitivity(id, v) }
                    }
                    if c.eviction.policy == .heavyHitter {
                        for layer in 0..<c.numLayers {
                            let n = try e.layerLength(id, layer: layer)
                            let scores = (0..<(n * c.numKVHeads)).map { _ in Float(below(100, &rng)) / 100 }
                            try scores.withUnsafeBufferPointer { (s) throws(KVError) in
                                try e.observe(id, layer: layer, scores: s.baseAddress!, nHeads: c.numKVHeads, nTokens: n)
                            }
                        }
                    }
                    try e.compact(id, budgetTokens: 8 + below(length - 8, &rng))
                    covered.compactions += 1
                case 9 where below(2, &rng) == 0:
                    // Roll back a few positions (rejected drafts), or further: compacted or not, every
                    // layer (head) keeps its tokens below the cut, which the byte check confirms.
                    guard let id = pick(resident) else { continue }
                    let seen = model[id]!.count  // the model holds a token per position seen
                    let keep = below(3, &rng) == 0 ? 1 + below(seen, &rng) : max(1, seen - 1 - below(2 * bt, &rng))
                    guard keep < seen else { continue }
                    let compacted = (e.evictionStates[e.sequences.slot(of: id)]?.compactions ?? 0) > 0
                    let lastPage = (try e.length(id) * tb - 1) / page
                    try e.truncate(id, to: keep)
                    model[id] = Array(model[id]!.prefix(keep))
                    if compacted { covered.compactedCuts += 1 }
                    let cut = try e.length(id) * tb
                    if cut % page != 0 && cut / page < lastPage { covered.cutsAcrossPages += 1 }
                    for layer in 0..<c.numLayers {
                        #expect(try positions(e, id, layer: layer).allSatisfy { $0 < keep }, "step \(step): a position past the cut stayed")
                    }
                default:
                    if below(8, &rng) == 0 { try e.trim() }
                }
            } catch let error as KVError where error.code == .outOfMemory {
                // refused (an injected commit or mapping failure too): nothing changed, which
                // the checks below confirm
                refusal = error
            } catch let error as KVError where error.code == .io && disk {
                // a swap-out the full tier refused: the sequence stays resident and unchanged
                refusal = error
            } catch let error as KVError where error.code == .unsupported || (error.code == .invalidArgument && op == 9) {
                // a truncation refused (per-head counts, a layer left empty, reads in flight,
                // unscheduled blocks): nothing changed
                refusal = error
            }
            if let failure {
                failure.disarm(e)
                if let refusal, let before {
                    covered.refusedArmed += 1
                    let diff = try EngineSnapshot(e, sequences: resident, prompts: prompts).differences(from: before, cacheMayShrink: true)
                    #expect(diff.isEmpty, "step \(step) op \(op) with \(failure) threw \(refusal.code) (\(refusal)) and changed: \(diff.joined(separator: "; "))")
                    if !diff.isEmpty { throw KVError.invalid("step \(step): stop at the first change") }
                }
            }
            for id in swapped where e.offload?.swapped[e.sequences.slot(of: id)] == false { swapped.remove(id) }  // failed later
            try check(e, model, swapped: swapped, &views, step: step)
        }
        let stats = e.stats()
        covered.evictions = Int(stats.blocksEvicted)
        covered.spills = Int(stats.disk.blocksSpilled)
        covered.diskHits = Int(stats.disk.blocksLoaded)
        covered.swapIns = Int(stats.disk.swapIns)
        return covered
    }

    @Test(arguments: [(Layout.paged, false), (.contiguous, false), (.paged, true)], [false, true])
    func inMemory(shape: (layout: Layout, metadataOnly: Bool), onSchedule: Bool) throws {
        var compactedCuts = 0
        for seed in UInt64(1)...8 {
            compactedCuts += try Self.run(shape.layout, metadataOnly: shape.metadataOnly, onSchedule: onSchedule, seed: seed, steps: 250).compactedCuts
        }
        #expect(compactedCuts > 0, "compacted sequences were truncated")
    }

    @Test(arguments: [Layout.paged, .contiguous], [false, true])
    func withADiskTier(layout: Layout, onSchedule: Bool) throws {
        var compactedCuts = 0
        for seed in UInt64(1)...8 {
            compactedCuts += try Self.run(layout, onSchedule: onSchedule, disk: true, seed: seed, steps: 250).compactedCuts
        }
        #expect(compactedCuts > 0, "compacted sequences were truncated")
    }

    /// The runs above (with memory) with failures of the OS injected: every call they refused
    /// changed nothing.
    @Test(arguments: [Layout.paged, .contiguous], [false, true])
    func withInjectedFailures(layout: Layout, disk: Bool) throws {
        var refusedArmed = 0
        for seed in UInt64(1)...8 {
            refusedArmed += try Self.run(layout, onSchedule: seed % 2 == 0, disk: disk, failures: true, seed: seed, steps: 250).refusedArmed
        }
        #expect(refusedArmed > 0, "calls were refused with a failure armed")
    }

    /// The runs above at geometries where blocks span pages or do not divide them, or tokens
    /// span pages (the bugs `TruncateTests.aCutPageWhoseForeignBlockACompactionUnsharedIsCopied`,
    /// `WideTokenTests` and `RefusedOpenMappingTests` show lived only there), both layouts; per
    /// seed a disk tier or not, failures injected or not, indexing on schedule or not. 8 seeds
    /// of 250 steps per geometry and layout; every case the runs are for happened (a prefix hit
    /// ends on a block boundary: mid-page only where blocks are not whole pages).
    @Test(arguments: Geometry.spanning, [Layout.paged, .contiguous])
    func acrossPages(geometry: Geometry, layout: Layout) throws {
        var seen = Coverage()
        for seed in UInt64(1)...8 {
            seen += try Self.run(layout, onSchedule: seed % 4 >= 2, disk: seed % 2 == 1, failures: seed % 3 == 0, geometry: geometry,
                                 seed: seed, steps: 250)
        }
        #expect(seen.compactions > 0 && seen.compactedCuts > 0 && seen.cutsAcrossPages > 0, "\(seen)")
        #expect(seen.forksAtPageEnd > 0 && seen.forksMidPage > 0, "\(seen)")
        #expect(seen.hitsEndingMidPage > 0 || geometry.blockBytes % 4096 == 0, "\(seen)")
        #expect(seen.evictions > 0 && seen.spills > 0 && seen.diskHits > 0 && seen.swapIns > 0 && seen.refusedArmed > 0, "\(seen)")
    }

    /// The `acrossPages` run that found promoted duplicates reading rewritten pages, alone:
    /// tokens of 2.5 pages, contiguous, seed 2. At step 158 a compaction of a sequence whose
    /// blocks were duplicates its fork shared took blocks and pages, evicting the indexed
    /// copies; the duplicates were promoted with page records from the compacted slot's pages
    /// mid-change, which the compaction then rewrote, and step 160's prompt hit them. On the
    /// code before `BlockPool.endDuplicate`: "step 160: sequence 47 has 327680 wrong bytes".
    @Test func aCompactedDuplicateIsNotPromotedFromItsPages() throws {
        try Self.run(.contiguous, onSchedule: true, geometry: Geometry.spanning[3], seed: 2, steps: 161)
    }
}
