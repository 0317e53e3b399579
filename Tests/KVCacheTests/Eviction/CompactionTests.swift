#if canImport(Glibc)
import Glibc
#endif
import TestSupport
import Testing
@testable import KVCache

/// An engine of `smallConfig` shape evicting with `policy`.
private func evictingEngine(_ layout: Layout, _ policy: EvictionPolicyKind, perHead: Bool = false, memoryBytes: UInt64 = 64 << 20,
                            offloadDir: String? = nil) throws -> Engine {
    var c = smallConfig(layout, memoryBytes: memoryBytes)
    if let offloadDir {  // a disk tier on the thread backend, whose I/O tests can hold in flight
        c = offloadConfig(layout, dir: offloadDir, memoryBytes: memoryBytes)
        c.offloadForceThreads = true
    }
    c.eviction = EvictionConfig(policy)
    c.eviction.perHead = perHead
    return try Engine(c)
}

/// Scores for every head of a layer of `n` slots: head `h`'s heavy positions (`heavy`, each
/// plus `h * headShift`: per-head sets that differ) get 1, others 0.01.
func scores(_ e: Engine, n: Int, heavy: Set<Int>, headShift: Int = 0) -> [Float] {
    var s = [Float](repeating: 0.01, count: e.config.numKVHeads * n)
    for h in 0..<e.config.numKVHeads { for t in heavy where t + h * headShift < n { s[h * n + t + h * headShift] = 1 } }
    return s
}

func observeAll(_ e: Engine, _ seq: UInt64, _ s: [Float], n: Int) throws {
    for layer in 0..<e.config.numLayers {
        try s.withUnsafeBufferPointer { try e.observe(seq, layer: layer, scores: $0.baseAddress!, nHeads: e.config.numKVHeads, nTokens: n) }
    }
}

func positions(_ e: Engine, _ seq: UInt64, layer: Int) throws -> [Int32] {
    var out = [Int32](repeating: -1, count: 8192)
    let n = try out.withUnsafeMutableBufferPointer { try e.positions(seq, layer: layer, into: $0) }
    return Array(out.prefix(n))
}

/// Bytes of `seq` that differ from what `writeKV` wrote for the original positions each slot
/// now holds (per head in per-head mode), over every layer.
func slotMismatches(_ e: Engine, _ seq: UInt64, tokens toks: [Int32], salt: Int = 0) throws -> Int {
    var bad = 0
    let heads = e.config.numKVHeads, headBytes = e.config.headDim * e.config.dtypeBytes
    for layer in 0..<e.config.numLayers {
        let pos = try positions(e, seq, layer: layer)
        let n = try e.layerLength(seq, layer: layer)
        let perHead = pos.count == heads * n && pos.count != n
        for slot in 0..<n {
            let (k, v) = try tokenAddress(e, seq, layer: layer, position: slot)
            for head in 0..<heads {  // a head's bytes hold one position's K/V
                let p = Int(perHead ? pos[head * n + slot] : pos[slot]), lo = head * headBytes
                for (kv, row) in [(0, k), (1, v)] {
                    let first = kvByte(layer: layer, kv: kv, position: p, token: toks[p], i: lo, salt: salt)
                    if rampMatches(row + lo, first: first, count: headBytes) { continue }
                    for i in lo..<(lo + headBytes) where row.load(fromByteOffset: i, as: UInt8.self)
                        != kvByte(layer: layer, kv: kv, position: p, token: toks[p], i: i, salt: salt) { bad += 1 }
                }
            }
        }
    }
    return bad
}

/// Writes the `writeKV` pattern of just-appended `tokens` (positions `from...`) into each
/// layer's last slots: with adaptive budgets every layer appends after its own length.
func writeAppendedKV(_ e: Engine, _ seq: UInt64, tokens: [Int32], from: Int) throws {
    for layer in 0..<e.config.numLayers {
        let first = try e.layerLength(seq, layer: layer) - tokens.count
        for (j, t) in tokens.enumerated() {
            let (k, v) = try tokenAddress(e, seq, layer: layer, position: first + j)
            for i in 0..<e.config.tokenBytes {
                k.storeBytes(of: kvByte(layer: layer, kv: 0, position: from + j, token: t, i: i), toByteOffset: i, as: UInt8.self)
                v.storeBytes(of: kvByte(layer: layer, kv: 1, position: from + j, token: t, i: i), toByteOffset: i, as: UInt8.self)
            }
        }
    }
}

@Suite struct CompactionTests {
    @Test(arguments: [Layout.paged, .contiguous], [false, true])
    func compactionKeepsTheChosenTokensBytesExactly(layout: Layout, perHead: Bool) throws {
        let e = try evictingEngine(layout, .heavyHitter, perHead: perHead)
        let toks = tokens(64, seed: 3)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try observeAll(e, 1, scores(e, n: 64, heavy: [0, 5, 9, 33, 40, 41]), n: 64)
        #expect(try e.compact(1, budgetTokens: 16) == 16)
        for layer in 0..<2 {
            #expect(try e.layerLength(1, layer: layer) == 16)
            let pos = try positions(e, 1, layer: layer)
            #expect(pos.count == (perHead ? 2 * 16 : 16))
            #expect(Set(pos.prefix(16)) == Set([0, 5, 9, 33, 40, 41, 1, 2] + (56..<64).map(Int32.init)))
        }
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        #expect(try e.length(1) == 16)
    }

    /// Per head, `positions` reports one row per KV head from the start, as after a
    /// compaction: a server can read them the same way before anything was observed.
    @Test(arguments: [false, true])
    func positionsBeforeAnyObservationHaveOneRowPerKeptSet(perHead: Bool) throws {
        let e = try evictingEngine(.paged, .heavyHitter, perHead: perHead)
        try e.createSequence(1, tokens: tokens(5, seed: 1))
        #expect(try positions(e, 1, layer: 1) == (perHead ? [0, 1, 2, 3, 4, 0, 1, 2, 3, 4] : [0, 1, 2, 3, 4]))
        var short = [Int32](repeating: -1, count: 7)
        #expect(try short.withUnsafeMutableBufferPointer { try e.positions(1, layer: 0, into: $0) } == (perHead ? 10 : 5))
        #expect(short == (perHead ? [0, 1, 2, 3, 4, 0, 1] : [0, 1, 2, 3, 4, -1, -1]))
    }

    @Test func heavyHitterKeepsTheRecentWindowAndTheTopScores() throws {
        let e = try evictingEngine(.paged, .heavyHitter)
        try e.createSequence(1, tokens: tokens(32, seed: 1))
        try observeAll(e, 1, scores(e, n: 32, heavy: [3, 10, 17, 20]), n: 32)
        try e.compact(1, budgetTokens: 8)
        #expect(try positions(e, 1, layer: 0).sorted() == [3, 10, 17, 20, 28, 29, 30, 31])
    }

    @Test func evictingOneTokenMovesOnlyTheTokensPastTheNewLength() throws {
        let e = try evictingEngine(.contiguous, .heavyHitter)
        try e.createSequence(1, tokens: tokens(10, seed: 1))
        var s = [Float](repeating: 1, count: 2 * 10)
        s[4] = 0; s[14] = 0  // token 4 is the lightest
        try observeAll(e, 1, s, n: 10)
        try e.compact(1, budgetTokens: 9)
        #expect(try positions(e, 1, layer: 0) == [0, 1, 2, 3, 9, 5, 6, 7, 8])
    }

    /// A decoder compacting back to a budget on a page-group edge (128 tokens here) every step:
    /// the compaction frees a group and the next append needs one. The compaction's trim keeps
    /// one free group committed (`compactionSpareGroups`), so the append takes it without
    /// committing: committed bytes stay level from step to step. Before, every compaction
    /// punched the group (and its commit batch) out and every append committed it again, ~300 us
    /// a step (helper-135). `trim` still gives the spare back.
    @Test(arguments: [Layout.paged, .contiguous])
    func compactingOnAGroupEdgeEveryStepDoesNotRecommit(layout: Layout) throws {
        let e = try evictingEngine(layout, .streamingLLM)
        try e.createSequence(1, tokens: tokens(512, seed: 3))
        try e.compact(1, budgetTokens: 256)
        var levels: [UInt64] = []
        for step in 0..<6 {
            try e.append(1, tokens: [Int32(900 + step)])
            levels.append(e.stats().committedBytes)
            try e.compact(1, budgetTokens: 256)
            levels.append(e.stats().committedBytes)
        }
        #expect(Set(levels.dropFirst(2)).count == 1, "committed bytes after each append and compaction: \(levels)")
        let level = e.stats().committedBytes
        try e.trim()
        #expect(e.stats().committedBytes < level, "trim gives the spare group back")
    }

    @Test(arguments: [Layout.paged, .contiguous])
    func compactionReleasesMemory(layout: Layout) throws {
        let e = try evictingEngine(layout, .streamingLLM)
        let toks = tokens(2048, seed: 2)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        let before = e.stats()
        try e.compact(1, budgetTokens: 100)
        let after = e.stats()
        #expect(after.committedBytes < before.committedBytes)
        #expect(after.blocksUsed == 25)  // 100 tokens of 4-token blocks
        #expect(try positions(e, 1, layer: 1) == [0, 1, 2, 3] + (1952..<2048).map(Int32.init))
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
    }

    @Test(arguments: [Layout.paged, .contiguous])
    func appendsAfterCompactionContinueAfterTheKeptTokens(layout: Layout) throws {
        let e = try evictingEngine(layout, .streamingLLM)
        var toks = tokens(40, seed: 4)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try e.compact(1, budgetTokens: 10)
        let extra = tokens(7, seed: 9)
        try e.append(1, tokens: extra)
        toks += extra
        #expect(try e.layerLength(1, layer: 0) == 17)
        #expect(try positions(e, 1, layer: 0) == [0, 1, 2, 3, 34, 35, 36, 37, 38, 39] + (40..<47).map(Int32.init))
        // The server writes the new tokens at slots 10..<17, each for its own position.
        try writeKV(e, 1, tokens: extra, from: 40, slot: 10)
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        try e.compact(1, budgetTokens: 12)
        #expect(try positions(e, 1, layer: 0).sorted() == [0, 1, 2, 3] + (39..<47).map(Int32.init))
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
    }

    @Test(arguments: [Layout.paged, .contiguous])
    func aSharedPrefixIsCopiedBeforeCompactionWritesIt(layout: Layout) throws {
        let e = try evictingEngine(layout, .heavyHitter)
        let toks = tokens(64, seed: 5)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        #expect(try e.createSequence(2, tokens: toks + [7]) == 64)  // shares all 16 blocks
        try writeKV(e, 2, tokens: [7], from: 64)
        try e.fork(parent: 1, child: 3)
        _ = drain(e)
        try observeAll(e, 1, scores(e, n: 64, heavy: [1, 7, 30]), n: 64)
        try e.compact(1, budgetTokens: 8)
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        #expect(try kvMismatches(e, 2, tokens: toks + [7], from: 0) == 0, "the other sequence keeps its bytes")
        #expect(try kvMismatches(e, 3, tokens: toks, from: 0) == 0, "the fork keeps its bytes")
        #expect(drain(e).isEmpty, "shared blocks stay indexed")
        try e.free(2)
        try e.free(3)
        #expect(e.cachedPrefixTokens(toks + [1]) == 64, "the prefix is still cached with its original bytes")
    }

    /// A compaction whose holes span several consecutive pages that another sequence shares
    /// copies them as one run (contiguous: `ContiguousMemory.unshare(slot:pages:)`, one mapping
    /// and one read per tensor for the run): every page of the run gets its own bytes, and the
    /// other sequence keeps the original ones. 1024 tokens of 32 bytes are 8 pages; the
    /// evicted tokens lie in pages 0...4 (every fifth below the recent window, plus the newest
    /// heavy ones there).
    @Test(arguments: [Layout.paged, .contiguous])
    func holesAcrossSeveralSharedPagesKeepEveryPagesBytes(layout: Layout) throws {
        let e = try evictingEngine(layout, .heavyHitter)
        let toks = tokens(1024, seed: 41)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        #expect(try e.createSequence(2, tokens: toks + [7]) == 1024)  // shares every page
        try writeKV(e, 2, tokens: [7], from: 1024)
        let heavy = Set((0..<1024).filter { $0 >= 574 || $0 % 5 != 0 })
        try observeAll(e, 1, scores(e, n: 1024, heavy: heavy), n: 1024)
        #expect(try e.compact(1, budgetTokens: 900) == 900)
        let evicted = Set(0..<1024).subtracting(try positions(e, 1, layer: 0).map(Int.init))
        #expect(evicted.count == 124 && evicted.allSatisfy { $0 < 574 } && Set(evicted.map { $0 / 128 }) == [0, 1, 2, 3, 4])
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        #expect(try kvMismatches(e, 2, tokens: toks + [7], from: 0) == 0, "the other sequence keeps its bytes")
    }

    /// A compaction that keeps only the head of an indexed block moves no byte into it, but
    /// the sequence's appends then write its tail: the block must leave the index (or be
    /// copied, when shared) before that. Found by `tools/abi_model.c`: a later prompt hit the
    /// block and read the appended token's bytes as its own.
    @Test(arguments: [Layout.paged, .contiguous], [false, true])
    func appendsIntoABlockWhoseTailACompactionDroppedLeaveThePrefixCacheIntact(layout: Layout, shared: Bool) throws {
        let e = try evictingEngine(layout, .tova)
        let toks = tokens(17, seed: 11)  // blocks 0...3 full and indexed
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        if shared {  // a second holder of the prefix, so the block must be copied, not unindexed
            #expect(try e.createSequence(2, tokens: toks) == 16)
            try writeKV(e, 2, tokens: [toks[16]], from: 16)
        }
        // TOVA keeps exactly slots 0..<10: nothing moves, block 2 (slots 8..<12) keeps its head.
        try observeAll(e, 1, scores(e, n: 17, heavy: Set(0..<10)), n: 17)
        #expect(try e.compact(1, budgetTokens: 10) == 10)
        let extra = tokens(3, seed: 12)
        try e.append(1, tokens: extra)
        try writeKV(e, 1, tokens: extra, from: 17, slot: 10)  // slots 10...12: block 2's tail, block 3
        #expect(try slotMismatches(e, 1, tokens: toks + extra) == 0)
        if shared { #expect(try kvMismatches(e, 2, tokens: toks, from: 0) == 0, "the other holder keeps its bytes") }
        let hit = try e.createSequence(3, tokens: toks)
        #expect(hit == (shared ? 16 : 8), "block 2 stays indexed only when another holder keeps the original")
        #expect(try kvMismatches(e, 3, tokens: Array(toks.prefix(hit)), from: 0) == 0,
                "a prefix hit reads the prompt's bytes, not the compacted sequence's appends")
    }

    @Test func blocksACompactionRewritesLeaveThePrefixIndexUntouchedOnesStay() throws {
        let e = try evictingEngine(.paged, .heavyHitter)
        let toks = tokens(32, seed: 6)  // 8 full blocks, all indexed
        try e.createSequence(1, tokens: toks)
        _ = drain(e)
        // Keep 0..<8 (blocks 0, 1 untouched) and the recent 8: blocks 2, 3 are rewritten, 4...7 dropped.
        try observeAll(e, 1, scores(e, n: 32, heavy: Set(0..<8)), n: 32)
        try e.compact(1, budgetTokens: 16)
        let removed = drain(e).filter { $0.kind == .blockRemoved }
        #expect(removed.count == 6)
        #expect(e.stats().blocksCached == 0)
        #expect(e.cachedPrefixTokens(toks) == 8, "blocks 0 and 1 still describe their bytes")
        try e.append(1, tokens: tokens(16, seed: 7))
        #expect(drain(e).isEmpty, "a compacted sequence indexes no new block")
    }

    @Test func aSequenceMayOverrideTheEnginesPolicyUntilItsFirstCompaction() throws {
        let e = try evictingEngine(.paged, .none)
        try e.createSequence(1, tokens: tokens(30, seed: 1))
        try e.createSequence(2, tokens: tokens(30, seed: 2))
        try e.setEviction(1, EvictionConfig(.streamingLLM))
        #expect(try e.compact(1, budgetTokens: 6) == 6)
        #expect(try e.compact(2, budgetTokens: 6) == 30, "sequence 2 keeps the engine's policy none")
        #expect(caught { try e.setEviction(1, EvictionConfig(.tova)) }?.message.contains("already compacted") == true)
        try e.setEviction(1, EvictionConfig(.streamingLLM))  // the same configuration is fine
        var bad = EvictionConfig(.heavyHitter)
        bad.recentRatio = 2
        #expect(caught { try e.setEviction(2, bad) }?.message.contains("recent_ratio") == true)
    }

    /// A policy change before the first compaction drops the observations but keeps what the
    /// server supplied: the layer sensitivity (it was dropped, so the budget split evenly:
    /// [8, 8] where kvcache.h's example keeps [1, 15]; helper-126) and the segments.
    @Test func aPolicyChangeKeepsTheSensitivityAndSegments() throws {
        var c = smallConfig(.paged)
        c.eviction = EvictionConfig(.heavyHitter)
        c.eviction.adaptiveBudgets = true
        let e = try Engine(c)
        try e.createSequence(1, tokens: tokens(64, seed: 1))
        try [Float(0), 1].withUnsafeBufferPointer { try e.setLayerSensitivity(1, $0) }
        var tova = c.eviction
        tova.policy = .tova
        try e.setEviction(1, tova)
        try e.compact(1, budgetTokens: 8)
        #expect(try (0..<2).map { try e.layerLength(1, layer: $0) } == [1, 15])

        try e.createSequence(2, tokens: tokens(64, seed: 2))
        var episodic = c.eviction
        episodic.policy = .episodic
        try e.setEviction(2, episodic)
        try [Float(1), 0, 0].withUnsafeBufferPointer { try e.addSegment(2, start: 0, end: 32, embedding: $0) }
        episodic.perHead = true
        try e.setEviction(2, episodic)
        #expect(e.evictionStates[e.sequences.slot(of: 2)]?.segmentCount == 1)
        #expect(try [Float(1), 0, 0].withUnsafeBufferPointer { try e.focus(2, query: $0) } == 0, "focus needs a segment")
    }

    /// Sequence 1 (32 tokens, written, observed with heavy hitters 1...4) forked into 2, so every
    /// block and page of 1 is shared, and filler sequence 3 as long as the budget allows.
    private func sharedAndFull(_ e: Engine) throws -> [Int32] {
        let toks = tokens(32, seed: 8)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try e.fork(parent: 1, child: 2)
        var filler = min(4096, Int(e.stats().blocksTotal - e.stats().blocksUsed) * 4 + 8)
        while filler > 1 && (try? e.createSequence(3, tokens: tokens(filler, seed: 9))) == nil { filler -= 1 }
        #expect(filler > 1)
        try observeAll(e, 1, scores(e, n: 32, heavy: [1, 2, 3, 4]), n: 32)
        return toks
    }

    @Test(arguments: [Layout.paged, .contiguous])
    func compactionThatMustCopyASharedBlockWithNoRoomIsOutOfMemoryAndChangesNothing(layout: Layout) throws {
        let e = try evictingEngine(layout, .heavyHitter, memoryBytes: 256 << 10)
        let toks = try sharedAndFull(e)
        let before = (try positions(e, 1, layer: 0), e.stats(), try slotMismatches(e, 1, tokens: toks))
        let error = caught { try e.compact(1, budgetTokens: 8) }
        #expect(error?.code == .outOfMemory)
        #expect(try positions(e, 1, layer: 0) == before.0)
        #expect(e.stats() == before.1)
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        #expect(try kvMismatches(e, 2, tokens: toks, from: 0) == 0)
        try e.free(3)
        #expect(try e.compact(1, budgetTokens: 8) == 8, "with room again it succeeds")
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        #expect(try kvMismatches(e, 2, tokens: toks, from: 0) == 0)
    }

    /// The same full budget without the fork: sequence 1's written blocks and pages are held by
    /// nothing but itself and its own indexed blocks (a prefill's state), so the compaction
    /// copies nothing and needs no free memory; it succeeds in both layouts with every kept
    /// byte (contiguous: the room check used to count each page holding an indexed block as a
    /// copy and refuse, though the copy was not made).
    @Test(arguments: [Layout.paged, .contiguous])
    func compactionAtAFullBudgetThatCopiesNothingSucceeds(layout: Layout) throws {
        let e = try evictingEngine(layout, .heavyHitter, memoryBytes: 256 << 10)
        let toks = tokens(32, seed: 8)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        var filler = min(4096, Int(e.stats().blocksTotal - e.stats().blocksUsed) * 4 + 8)
        while filler > 1 && (try? e.createSequence(3, tokens: tokens(filler, seed: 9))) == nil { filler -= 1 }
        #expect(filler > 1)
        try observeAll(e, 1, scores(e, n: 32, heavy: [1, 2, 3, 4]), n: 32)
        let used = e.stats().blocksUsed
        #expect(try e.compact(1, budgetTokens: 8) == 8)
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        #expect(e.stats().blocksUsed == used - 6, "8 blocks of 4 tokens became 2")
    }

    /// With a swap-out of the filler pending, the same compaction waits for its memory instead.
    @Test(arguments: [Layout.paged, .contiguous])
    func compactionOutOfMemoryWaitsForAPendingSwapOut(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try evictingEngine(layout, .heavyHitter, memoryBytes: 256 << 10, offloadDir: dir.path)
        let toks = try sharedAndFull(e)
        #expect(caught { try e.compact(1, budgetTokens: 8) }?.code == .outOfMemory, "nothing pending: at once")
        #expect(e.pauseOffloadIO(true))
        try e.swapOutAsync(3)
        let order = EventLog()
        let compactor = loggedCall("compact", order) { _ = try e.compact(1, budgetTokens: 8) }
        #expect(waitUntil { e.offloadWaitingCalls == 1 }, "the compaction waits for the swap-out")
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        compactor.join()
        #expect(order.events == ["I/O resumed", "compact returned"])
        #expect(try e.layerLength(1, layer: 0) == 8 && e.layerLength(1, layer: 1) == 8)
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        #expect(try kvMismatches(e, 2, tokens: toks, from: 0) == 0)
    }

    /// A compaction whose budget every layer fits evicts nothing and leaves the sequence
    /// uncompacted: the blocks it fills afterwards are indexed (a second prompt hits all 16
    /// tokens, as without the call), and its policy may still change; a later compaction
    /// that evicts then works as usual. (Before, found by helper-101: the call marked the
    /// sequence compacted, so a server compacting every step from the first cached none of a
    /// reply's blocks, and `setEviction` was refused.)
    @Test(arguments: [Layout.paged, .contiguous], [EvictionPolicyKind.heavyHitter, .tova, .streamingLLM, .episodic])
    func aCompactionThatEvictsNothingLeavesTheSequenceUncompacted(layout: Layout, policy: EvictionPolicyKind) throws {
        for perHead in [false, true] {
            let e = try evictingEngine(layout, policy, perHead: perHead)
            let toks = tokens(17, seed: 12)
            try e.createSequence(1, tokens: Array(toks.prefix(8)))
            try writeKV(e, 1, tokens: Array(toks.prefix(8)), from: 0)
            try observeAll(e, 1, scores(e, n: 8, heavy: [1]), n: 8)
            _ = drain(e)
            #expect(try e.compact(1, budgetTokens: 8) == 8)
            #expect(try e.compact(1, budgetTokens: 1000) == 8)
            #expect(try positions(e, 1, layer: 0).prefix(8) == ArraySlice((0..<8).map(Int32.init)))
            try e.append(1, tokens: Array(toks[8..<16]))
            try writeKV(e, 1, tokens: Array(toks[8..<16]), from: 8)
            #expect(drain(e).filter { $0.kind == .blockStored }.count == 2, "the appended blocks were indexed")
            #expect(try e.createSequence(2, tokens: toks) == 16, "\(policy.name), per head \(perHead)")
            try writeKV(e, 2, tokens: [toks[16]], from: 16)
            #expect(try slotMismatches(e, 2, tokens: toks) == 0, "the hit serves the bytes sequence 1 wrote")
            try e.free(2)
            var other = EvictionConfig(policy == .tova ? .streamingLLM : .tova)
            other.perHead = perHead
            try e.setEviction(1, other)  // allowed: never compacted (drops the observations)
            try observeAll(e, 1, scores(e, n: 16, heavy: [1]), n: 16)
            #expect(try e.compact(1, budgetTokens: 6) == 6)
            #expect(caught { try e.setEviction(1, EvictionConfig(policy)) }?.message.contains("already compacted") == true)
            try e.append(1, tokens: [5])
            #expect(drain(e).allSatisfy { $0.kind != .blockStored }, "compacted now: no new block indexed")
        }
    }

    /// Through the engine: a StreamingLLM stream compacted to 8 tokens whose positions pass
    /// 2^24 keeps the newest ones (it kept 2^24 over 2^24 + 1, ranking by `Float(position)`).
    @Test func streamingLLMStreamPast2To24KeepsTheNewestPositions() throws {
        let chunk = 1 << 20, base = 1 << 24
        var c = EngineConfig()
        c.layout = .paged
        c.metadataOnly = true
        c.numLayers = 1
        c.numKVHeads = 1
        c.headDim = 1
        c.blockTokens = 4096
        c.maxSeqs = 1
        c.maxSeqTokens = chunk + 8
        c.memoryBytes = 64 << 20
        c.eviction = EvictionConfig(.streamingLLM)
        c.eviction.sinkTokens = 4
        let e = try Engine(c)
        let tokens = [Int32](repeating: 7, count: chunk)
        _ = try e.createSequence(1, tokens: tokens)
        _ = try e.compact(1, budgetTokens: 8)
        for _ in 1..<(base / chunk) {
            try e.append(1, tokens: tokens)
            _ = try e.compact(1, budgetTokens: 8)
        }
        try e.append(1, tokens: [1, 2, 3, 4, 5])  // 2^24 ... 2^24 + 4
        _ = try e.compact(1, budgetTokens: 8)
        #expect(try positions(e, 1, layer: 0).map(Int.init).sorted() == [0, 1, 2, 3, base + 1, base + 2, base + 3, base + 4])
    }

    @Test func policyNoneChangesNothing() throws {
        let e = try evictingEngine(.paged, .none)
        try e.createSequence(1, tokens: tokens(20, seed: 1))
        try observeAll(e, 1, scores(e, n: 20, heavy: [1]), n: 20)
        #expect(try e.compact(1, budgetTokens: 4) == 20)
        #expect(try positions(e, 1, layer: 0) == (0..<20).map(Int32.init))
    }

    @Test func aForkedSequenceKeepsItsOwnEvictionState() throws {
        let e = try evictingEngine(.paged, .streamingLLM)
        let toks = tokens(30, seed: 1)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try e.compact(1, budgetTokens: 10)
        try e.fork(parent: 1, child: 2)
        try e.compact(2, budgetTokens: 6)
        #expect(try positions(e, 1, layer: 0).count == 10)
        #expect(try positions(e, 2, layer: 0).sorted() == [0, 1, 2, 3, 28, 29])
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        #expect(try slotMismatches(e, 2, tokens: toks) == 0)
    }

    /// An H2O engine with adaptive budgets whose sequence 1 (`count` tokens, K/V written) was
    /// compacted to a mean of `budget` with layer sensitivities 1 and 3: a quarter of the
    /// layers' tokens in layer 0, three quarters in layer 1.
    private func unevenlyCompacted(_ layout: Layout, tokens count: Int, budget: Int) throws -> (Engine, [Int32]) {
        var c = smallConfig(layout)
        c.eviction = EvictionConfig(.heavyHitter)
        c.eviction.adaptiveBudgets = true
        let e = try Engine(c)
        let toks = tokens(count, seed: 1)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try [Float(1), 3].withUnsafeBufferPointer { try e.setLayerSensitivity(1, $0) }
        try e.compact(1, budgetTokens: budget)
        return (e, toks)
    }

    /// The layers' shares sum to the budget times the layers: each share was rounded on its
    /// own, half up, and a layer's one token came on top, so 8 layers at budget 1 with
    /// sensitivities 1 and 3 kept 12 tokens (helper-126). Now the one token comes out of the
    /// others' shares and largest remainder gives the rounding to the shares that lost the most.
    /// A layer capped at its length leaves the others its surplus, and one a weight of 0 gives
    /// nothing keeps one token out of the total (helper-130: {0, 1} on 16-token layers kept
    /// [1, 16]; {1, 1, 1e6} on 11-token layers at budget 4 kept [1, 1, 11]).
    @Test(arguments: [
        (8, 100, [1, 3, 1, 3, 1, 3, 1, 3], 1, [1, 1, 1, 1, 1, 1, 1, 1]),
        (4, 100, [1, 3, 1, 3], 5, [3, 8, 2, 7]),  // shares 2.5 and 7.5: ties to the lowest layers
        (3, 100, [0.01, 1, 0.01], 7, [1, 19, 1]),
        (2, 16, [0, 1], 8, [1, 15]),
        (3, 11, [1, 1, 1e6], 4, [1, 1, 10]),
        (2, 100, [1, 3], 20, [10, 30]),
    ] as [(Int, Int, [Float], Int, [Int])])
    func adaptiveBudgetsSumToTheBudgetTimesTheLayers(layers: Int, length: Int, sensitivity: [Float], budget: Int, expected: [Int]) throws {
        var c = EvictionConfig(.heavyHitter)
        c.adaptiveBudgets = true
        let s = try EvictionState(layers: layers, heads: 1, config: c, length: length, maxCapacity: 1024)
        try sensitivity.withUnsafeBufferPointer { try s.setSensitivity($0) }
        s.compact(budget: budget)
        let kept = (0..<layers).map { s.length(layer: $0) }
        #expect(kept == expected)
        #expect(kept.reduce(0, +) == budget * layers)
    }

    /// Equal weights share the total too: a layer shorter than the budget (after an earlier
    /// compaction) hands its surplus on (helper-130: [8, 24] to budget 12 kept [8, 12], 20 of
    /// 24, where weights 1 and 1.001 kept 24), and a total past what the layers hold keeps all.
    @Test func equalWeightsHandOnAShortLayersSurplus() throws {
        var c = EvictionConfig(.heavyHitter)
        c.adaptiveBudgets = true
        let s = try EvictionState(layers: 2, heads: 1, config: c, length: 64, maxCapacity: 128)
        try [Float(1), 3].withUnsafeBufferPointer { try s.setSensitivity($0) }
        s.compact(budget: 16)
        #expect((0..<2).map { s.length(layer: $0) } == [8, 24])
        try [Float(1), 1].withUnsafeBufferPointer { try s.setSensitivity($0) }
        s.compact(budget: 12)
        #expect((0..<2).map { s.length(layer: $0) } == [8, 16])
        s.compact(budget: 20)
        #expect((0..<2).map { s.length(layer: $0) } == [8, 16], "a total of 40 past the 24 held keeps all")
    }

    @Test func adaptiveBudgetsFollowTheSensitivityAndKeepTheMean() throws {
        let (e, toks) = try unevenlyCompacted(.contiguous, tokens: 100, budget: 20)
        #expect(try e.layerLength(1, layer: 0) == 10)
        #expect(try e.layerLength(1, layer: 1) == 30)
        #expect(try e.length(1) == 30)
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        try e.append(1, tokens: [5])
        #expect(try e.layerLength(1, layer: 0) == 11)
        #expect(try positions(e, 1, layer: 0).last == 100)
    }

    /// A mean budget past every layer's length keeps every token, however large: the water
    /// filling took `budget * layers` as it came, which overflowed (a trap) from Int.max / layers.
    @Test(arguments: [Int.max, 1 << 62, Int.max / 2 + 1, 100])
    func anAdaptiveBudgetPastEveryLayerKeepsEveryToken(budget: Int) throws {
        let (e, toks) = try unevenlyCompacted(.contiguous, tokens: 100, budget: budget)
        #expect(try e.layerLength(1, layer: 0) == 100)
        #expect(try e.layerLength(1, layer: 1) == 100)
        #expect(try positions(e, 1, layer: 0) == (0..<100).map(Int32.init))
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
    }

    /// With adaptive budgets the short layer's appends land in blocks (pages) below the
    /// sequence's length, which a fork shares: each side must get its own before writing.
    /// Found by `tools/abi_model.c`: the parent's appends overwrote the child's.
    @Test(arguments: [Layout.paged, .contiguous])
    func appendsOfAForkWithUnevenLayersLeaveTheOtherSidesBytes(layout: Layout) throws {
        let (e, toks) = try unevenlyCompacted(layout, tokens: 600, budget: 200)
        #expect(try e.layerLength(1, layer: 0) == 100 && e.layerLength(1, layer: 1) == 300)
        try e.fork(parent: 1, child: 2)
        let child = tokens(3, seed: 21), parent = tokens(3, seed: 22)
        for (seq, extra) in [(UInt64(2), child), (1, parent)] {
            try e.append(seq, tokens: extra)
            try writeAppendedKV(e, seq, tokens: extra, from: 600)  // layer 0 at slots 100..., layer 1 at 300...
        }
        #expect(try slotMismatches(e, 2, tokens: toks + child) == 0, "the parent's appends left the child's bytes")
        #expect(try slotMismatches(e, 1, tokens: toks + parent) == 0, "the child's appends left the parent's bytes")
    }
}

/// Contiguous layout where a block's bytes span more than one page: a compaction that keeps
/// the sequence's block count makes its last block the sequence's own, and the pages of that
/// block past the new length must become its own too before appends write them; they mapped
/// the group a fork (or the prefix cache) holds. Found by helper-73's fuzzer: the appends wrote
/// the fork's bytes, or a cached block's, which a later prompt then hit.
@Suite struct CompactionOfBlocksSpanningPagesTests {
    /// Shapes: 2 x 256 fp16 heads (1 KiB tokens, an 8-token block on two 4 KiB pages), and
    /// 3 x 128 heads (768-byte tokens: token 10 straddles pages 1 and 2).
    enum Shape: CaseIterable { case blockOnTwoPages, tokenStraddlesPages }

    private func engine(_ shape: Shape, perHead: Bool) throws -> Engine {
        var c = smallConfig(.contiguous, memoryBytes: 16 << 20, blockTokens: 8)
        c.numKVHeads = shape == .blockOnTwoPages ? 2 : 3
        c.headDim = shape == .blockOnTwoPages ? 256 : 128
        c.eviction = EvictionConfig(.streamingLLM)
        c.eviction.sinkTokens = 1
        c.eviction.perHead = perHead
        return try Engine(c)
    }

    @Test(arguments: Shape.allCases, [false, true])
    func appendsAfterACompactionThatKeepsTheBlockCountLeaveTheForksBytes(shape: Shape, perHead: Bool) throws {
        let e = try engine(shape, perHead: perHead)
        let (count, budget) = shape == .blockOnTwoPages ? (8, 3) : (16, 10)  // same block count after
        let toks = tokens(count, seed: 61)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try e.fork(parent: 1, child: 2)
        let committed = e.stats().committedBytes
        try observeAll(e, 2, scores(e, n: count, heavy: []), n: count)
        #expect(try e.compact(2, budgetTokens: budget) == budget)
        #expect(e.stats().committedBytes <= committed, "the compaction took no page it did not need")
        let extra = tokens(2, seed: 62)
        try e.append(2, tokens: extra)
        try writeKV(e, 2, tokens: extra, from: count, slot: budget)
        #expect(try kvMismatches(e, 1, tokens: toks, from: 0) == 0, "the fork's appends left the parent's bytes")
        #expect(try slotMismatches(e, 2, tokens: toks + extra) == 0)
    }

    @Test(arguments: Shape.allCases)
    func appendsAfterACompactionOfAPrefixHitLeaveTheCachedBlockIntact(shape: Shape) throws {
        let e = try engine(shape, perHead: false)
        let (count, budget) = shape == .blockOnTwoPages ? (8, 3) : (16, 10)
        let toks = tokens(count, seed: 63), prompt = toks + [7]
        try e.createSequence(1, tokens: prompt)  // stays live: the hit below shares its blocks
        try writeKV(e, 1, tokens: prompt, from: 0)
        #expect(try e.createSequence(2, tokens: prompt) == count)
        try writeKV(e, 2, tokens: [7], from: count)
        try observeAll(e, 2, scores(e, n: count + 1, heavy: []), n: count + 1)
        #expect(try e.compact(2, budgetTokens: count) == count)  // the own last block goes
        #expect(try e.compact(2, budgetTokens: budget) == budget)  // the shared one stays, written
        let extra = tokens(2, seed: 64)
        try e.append(2, tokens: extra)
        try writeKV(e, 2, tokens: extra, from: count + 1, slot: budget)
        #expect(try slotMismatches(e, 2, tokens: prompt + extra) == 0)
        #expect(try kvMismatches(e, 1, tokens: prompt, from: 0) == 0, "the other holder keeps its bytes")
        try e.free(1)
        #expect(try e.createSequence(3, tokens: prompt) == count)
        #expect(try kvMismatches(e, 3, tokens: toks, from: 0) == 0, "a later hit reads the prompt's bytes")
    }
}

@Suite struct EvictionBadInputTests {
    /// An engine with a compacted-once H2O sequence 1 and a snapshot of what must not change.
    private func fixture(_ layout: Layout = .paged) throws -> (Engine, () throws -> [String]) {
        let e = try evictingEngine(layout, .episodic)
        let toks = tokens(48, seed: 2)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try observeAll(e, 1, scores(e, n: 48, heavy: [2, 20]), n: 48)
        try e.compact(1, budgetTokens: 24)
        let snapshot = { () throws -> [String] in
            let state = e.evictionStates[e.sequences.slot(of: 1)]!
            return [
                "\(try positions(e, 1, layer: 0))", "\(try positions(e, 1, layer: 1))",
                "\(Array(state.accumulatedScores(layer: 0)))", "\(Array(state.accumulatedScores(layer: 1)))",
                "\(try e.length(1))", "\(e.stats())", "\(state.segmentCount)", "\(state.focusedEpisode)",
                "\(try slotMismatches(e, 1, tokens: toks))",
            ]
        }
        return (e, snapshot)
    }

    @Test func unknownSequenceIsNotFoundEverywhere() throws {
        let (e, snapshot) = try fixture()
        let before = try snapshot()
        let s = [Float](repeating: 0.1, count: 2 * 4)
        let emb: [Float] = [1, 0]
        #expect(caught { try s.withUnsafeBufferPointer { try e.observe(9, layer: 0, scores: $0.baseAddress!, nHeads: 2, nTokens: 4) } }?.code == .notFound)
        #expect(caught { try e.compact(9, budgetTokens: 4) }?.code == .notFound)
        #expect(caught { _ = try e.layerLength(9, layer: 0) }?.code == .notFound)
        #expect(caught { _ = try [Int32](repeating: 0, count: 4).withUnsafeBufferPointer { _ in try e.positions(9, layer: 0, into: .init(start: nil, count: 0)) } }?.code == .notFound)
        #expect(caught { try emb.withUnsafeBufferPointer { try e.addSegment(9, start: 0, end: 2, embedding: $0) } }?.code == .notFound)
        #expect(caught { _ = try emb.withUnsafeBufferPointer { try e.focus(9, query: $0) } }?.code == .notFound)
        #expect(try snapshot() == before)
    }

    @Test func badScoresAreRejectedAndChangeNothing() throws {
        let (e, snapshot) = try fixture()
        let before = try snapshot()
        func observe(_ s: [Float], heads: Int = 2, n: Int) -> KVError? {
            caught { try s.withUnsafeBufferPointer { try e.observe(1, layer: 0, scores: $0.baseAddress!, nHeads: heads, nTokens: n) } }
        }
        var nan = [Float](repeating: 0.1, count: 48); nan[30] = .nan
        var negative = [Float](repeating: 0.1, count: 48); negative[47] = -0.5
        var infinite = [Float](repeating: 0.1, count: 48); infinite[3] = .infinity
        #expect(observe(nan, n: 24)?.code == .invalidArgument)
        #expect(observe(negative, n: 24)?.code == .invalidArgument)
        #expect(observe(infinite, n: 24)?.code == .invalidArgument)
        #expect(observe([Float](repeating: 0.1, count: 72), heads: 3, n: 24)?.message.contains("n_heads 3") == true)
        #expect(observe([Float](repeating: 0.1, count: 50), n: 25)?.message.contains("holds 24") == true)
        #expect(caught { try [Float](repeating: 0, count: 4).withUnsafeBufferPointer { try e.observe(1, layer: 2, scores: $0.baseAddress!, nHeads: 2, nTokens: 2) } }?.code == .invalidArgument)
        #expect(try snapshot() == before)
    }

    @Test func budgetZeroIsRejectedAndChangesNothing() throws {
        let (e, snapshot) = try fixture(.contiguous)
        let before = try snapshot()
        #expect(caught { try e.compact(1, budgetTokens: 0) }?.code == .invalidArgument)
        #expect(try snapshot() == before)
    }

    @Test func badSegmentsAndQueriesAreRejectedAndChangeNothing() throws {
        let (e, snapshot) = try fixture()
        try [Float](repeating: 1, count: 3).withUnsafeBufferPointer { try e.addSegment(1, start: 0, end: 10, embedding: $0) }
        let before = try snapshot()
        func add(_ emb: [Float], _ start: Int, _ end: Int) -> KVError? {
            caught { try emb.withUnsafeBufferPointer { try e.addSegment(1, start: start, end: end, embedding: $0) } }
        }
        #expect(add([1, 2], 10, 20)?.message.contains("dimension 2") == true)
        #expect(add([1, 2, .nan], 10, 20)?.code == .invalidArgument)
        #expect(add([3e38, 0, 0], 10, 20)?.message.contains("squared norm") == true, "finite, but distances would overflow")
        #expect(add([1e19, 1e19, 0], 10, 20)?.message.contains("squared norm") == true)
        #expect(add([1, 2, 3], 20, 20)?.code == .invalidArgument)
        #expect(add([1, 2, 3], 40, 49)?.code == .invalidArgument, "past the 48 positions seen")
        #expect(caught { _ = try [Float](repeating: 1, count: 4).withUnsafeBufferPointer { try e.focus(1, query: $0) } }?.code == .invalidArgument)
        #expect(caught { _ = try [Float](arrayLiteral: -3e38, 0, 0).withUnsafeBufferPointer { try e.focus(1, query: $0) } }?.message.contains("squared norm") == true)
        #expect(try snapshot() == before)
    }

    /// A refused first call leaves the sequence without eviction state, whatever the policy:
    /// no memory outside the budget for bad input (a state holds the policy's rows, megabytes
    /// per sequence per head), and a later call behaves as on a sequence never touched. Setting
    /// the configuration a sequence already has creates none either. Policy none refuses a
    /// score sum that overflows a float, as the other policies do.
    @Test(arguments: [EvictionPolicyKind.none, .heavyHitter, .episodic])
    func aRefusedFirstCallLeavesNoEvictionState(policy: EvictionPolicyKind) throws {
        let e = try evictingEngine(.paged, policy)
        try e.createSequence(1, tokens: tokens(24, seed: 1))
        let slot = try e.slot(1)
        let nanSensitivity: [Float] = [1, .nan]
        #expect(caught { try nanSensitivity.withUnsafeBufferPointer { try e.setLayerSensitivity(1, $0) } }?.code == .invalidArgument)
        #expect(caught { try [Float(1)].withUnsafeBufferPointer { try e.setLayerSensitivity(1, $0) } }?.message.contains("1 sensitivities") == true)
        let overflowing = [Float](repeating: 3e38, count: 2 * 24)
        let overflow = caught { try overflowing.withUnsafeBufferPointer { try e.observe(1, layer: 0, scores: $0.baseAddress!, nHeads: 2, nTokens: 24) } }
        #expect(overflow?.message == "the 48 scores of layer 0 are each finite and >= 0 but sum to more than a float holds: the sum must be finite")
        var negative = [Float](repeating: 0.1, count: 2 * 24); negative[30] = -1
        #expect(caught { try negative.withUnsafeBufferPointer { try e.observe(1, layer: 0, scores: $0.baseAddress!, nHeads: 2, nTokens: 24) } }?
            .message == "score -1.0 at head 1, token 6 of layer 0: scores must be finite and >= 0")
        if policy == .episodic {
            #expect(caught { try [Float.nan].withUnsafeBufferPointer { try e.addSegment(1, start: 0, end: 4, embedding: $0) } }?.code == .invalidArgument)
            #expect(caught { _ = try [Float(1)].withUnsafeBufferPointer { try e.focus(1, query: $0) } }?.code == .invalidArgument)
        }
        try e.setEviction(1, e.config.eviction)
        #expect(e.evictionStates[slot] == nil)
        try [Float](repeating: 0.1, count: 2 * 24).withUnsafeBufferPointer { try e.observe(1, layer: 0, scores: $0.baseAddress!, nHeads: 2, nTokens: 24) }
        #expect((e.evictionStates[slot] == nil) == (policy == .none), "an accepted observation creates the state its policy needs")
    }

    /// A focus without segments is refused; on another policy a focus and a segment are
    /// unsupported (the segment would serve no focus) and change nothing, until the sequence
    /// is made episodic.
    @Test func focusWithoutSegmentsOrOnAnotherPolicyIsRefused() throws {
        let e = try evictingEngine(.paged, .episodic)
        try e.createSequence(1, tokens: tokens(8, seed: 1))
        #expect(caught { _ = try [Float(1)].withUnsafeBufferPointer { try e.focus(1, query: $0) } }?.code == .invalidArgument)
        let h = try evictingEngine(.paged, .heavyHitter)
        try h.createSequence(1, tokens: tokens(8, seed: 1))
        #expect(caught { _ = try [Float(1)].withUnsafeBufferPointer { try h.focus(1, query: $0) } }?.code == .unsupported)
        let segment = caught { try [Float(1)].withUnsafeBufferPointer { try h.addSegment(1, start: 0, end: 4, embedding: $0) } }
        #expect(segment?.code == .unsupported)
        #expect(segment?.message == "segments serve the episodic policy; sequence 1 uses h2o")
        #expect(h.evictionStates[try h.slot(1)]?.segmentCount ?? 0 == 0, "no segment registered")
        try h.setEviction(1, EvictionConfig(.episodic))
        try [Float(1)].withUnsafeBufferPointer { try h.addSegment(1, start: 0, end: 4, embedding: $0) }
        #expect(try [Float(1)].withUnsafeBufferPointer { try h.focus(1, query: $0) } == 0)
    }
}

/// The `KVError` `body` throws, or nil (for bodies whose closures erase the error type).
func caught(_ body: () throws -> Void) -> KVError? {
    do { try body() } catch { return error as? KVError }
    return nil
}

@Suite struct CompactionWithPendingReadsTests {
    /// Compaction moves and releases blocks, so it must not run over blocks a disk read is still
    /// filling: the read would land on the compacted layout (or on a released block). Sequence 2
    /// takes 60 of its 64 tokens from the disk tier and is compacted at once, before any
    /// completion is processed; once ready, every kept slot holds its token's bytes.
    @Test(arguments: [Layout.paged, .contiguous])
    func compactingASequenceWhoseDiskReadsArePendingKeepsTheirBytes(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.eviction = EvictionConfig(.heavyHitter)
        let e = try Engine(c)
        let toks = tokens(64, seed: 3)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try e.free(1)
        try e.trim()
        try e.syncOffload()  // else the reads would be served from staging at once
        let cached = try e.createSequence(2, tokens: toks)
        #expect(cached == 60)
        try writeKV(e, 2, tokens: Array(toks[cached...]), from: cached)
        try observeAll(e, 2, scores(e, n: 64, heavy: [0, 5, 9, 33, 40, 41]), n: 64)
        #expect(try e.compact(2, budgetTokens: 16) == 16)
        try waitReady(e, 2)
        #expect(try slotMismatches(e, 2, tokens: toks) == 0)
        try e.free(2)
        try e.trim()
        #expect(e.stats().committedBytes == 0)
    }

    /// With adaptive budgets an append writes the short layer's slots below the sequence's
    /// length, so it copies the blocks there a fork shares (`makeWritable`); right after a
    /// swap-in (paged: a fork may share blocks still being read) the copy must wait for the
    /// reads, or it copies unfilled bytes and the read lands in the block the other side keeps.
    /// Found by helper-73's fuzzer (the child's kept slots held stale bytes). The reads are
    /// held in flight (thread backend paused) until the fork and the append have started, so
    /// they are certainly pending during the copy (with io_uring they once landed first on a
    /// loaded machine, and the precondition failed).
    @Test(arguments: [Layout.paged, .contiguous], [UInt64(1), 2])
    func anAppendRightAfterASwapInAndAForkCopiesTheBytesTheReadsBring(layout: Layout, appender: UInt64) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadForceThreads = true
        c.eviction = EvictionConfig(.heavyHitter)
        c.eviction.adaptiveBudgets = true
        let e = try Engine(c)
        let toks = tokens(64, seed: 9)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try [Float(1), 3].withUnsafeBufferPointer { try e.setLayerSensitivity(1, $0) }
        try observeAll(e, 1, scores(e, n: 64, heavy: [3, 17, 40]), n: 64)
        try e.compact(1, budgetTokens: 16)
        #expect(try e.layerLength(1, layer: 0) == 8 && e.layerLength(1, layer: 1) == 24)
        try e.swapOut(1)
        #expect(e.pauseOffloadIO(true))
        try e.swapIn(1)
        #expect(try !e.ready(1), "the reads are pending")
        let extra = tokens(1, seed: 10)
        let order = EventLog()
        // Contiguous, the fork waits for the parent's reads; paged, the append does.
        let server = loggedCall("fork and append", order) {
            try e.fork(parent: 1, child: 2)
            try e.append(appender, tokens: extra)
        }
        usleep(20_000)  // lets the calls reach their wait (were they later, the check would be weaker, never wrong)
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        server.join()
        #expect(order.events == ["I/O resumed", "fork and append returned"])
        try waitReady(e, 1)
        try waitReady(e, 2)
        try writeAppendedKV(e, appender, tokens: extra, from: 64)
        #expect(try slotMismatches(e, appender, tokens: toks + extra) == 0)
        #expect(try slotMismatches(e, 3 - appender, tokens: toks) == 0, "the other side keeps its bytes")
    }
}
