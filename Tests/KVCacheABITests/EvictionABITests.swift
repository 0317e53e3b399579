import Testing
@testable import KVCacheABI

/// The small model with `policy` (kvc_config.eviction_policy; offsets from `ConfigLayout`).
private func evictionConfig(_ layout: UInt32, policy: UInt32, perHead: UInt32 = 0) -> CConfig {
    var c = CConfig.small(layout)
    c.set32(ConfigLayout.evictionPolicy, policy)
    c.set32(ConfigLayout.evictionPerHead, perHead)
    return c
}

private let KVC_EVICTION_HEAVY_HITTER: UInt32 = 3
private let KVC_EVICTION_EPISODIC: UInt32 = 4

extension ABIFixture {
    /// Observes `scores` (`[head][token]`, 2 heads) for every layer of `seq`.
    func observe(_ seq: UInt64, _ scores: [Float], tokens: Int) throws {
        for layer in 0..<layers {
            let rc = scores.withUnsafeBufferPointer { kvc_seq_observe(handle, seq, UInt32(layer), $0.baseAddress, 2, tokens) }
            try #require(rc == KVC_OK, "kvc_seq_observe: \(String(cString: kvc_last_error()))")
        }
    }

    func positions(_ seq: UInt64, layer: Int) throws -> [Int32] {
        var n = 0
        _ = kvc_seq_positions(handle, seq, UInt32(layer), nil, 0, &n)
        var out = [Int32](repeating: -1, count: n)
        let rc = out.withUnsafeMutableBufferPointer { kvc_seq_positions(handle, seq, UInt32(layer), $0.baseAddress, $0.count, &n) }
        try #require(rc == KVC_OK, "kvc_seq_positions: \(String(cString: kvc_last_error()))")
        return out
    }

    func layerLength(_ seq: UInt64, layer: Int) throws -> Int {
        var n = -1
        try #require(kvc_seq_layer_length(handle, seq, UInt32(layer), &n) == KVC_OK)
        return n
    }

    /// The first byte of a compacted `seq` that is not the pattern of the position its slot holds
    /// (per head in per-head mode: head h's bytes of slot j, those of head h's j-th position).
    func firstSlotMismatch(_ seq: UInt64, salt: Int) throws -> String? {
        let table = isPaged ? try blockTable(seq) : []
        for layer in 0..<layers {
            let pos = try positions(seq, layer: layer), n = try layerLength(seq, layer: layer)
            let rowBytes = tokenBytes / (pos.count / max(n, 1))  // per head: one head's bytes
            for tensor in 0..<2 {
                for slot in 0..<n {
                    let addr = try tokenAddress(seq, layer: layer, tensor: tensor, token: slot, table: table)
                    for b in 0..<tokenBytes {
                        let p = Int(pos[(b / rowBytes) * n + slot])
                        if addr.load(fromByteOffset: b, as: UInt8.self) != patternByte(salt: salt, layer: layer, tensor: tensor, token: p, byte: b) {
                            return "layer \(layer) tensor \(tensor) slot \(slot) (position \(p)) byte \(b)"
                        }
                    }
                }
            }
        }
        return nil
    }
}

@Suite struct EvictionABITests {
    /// A fixture whose sequence 5 (40 tokens, pattern salt 5) was observed and compacted to 12.
    private func compacted(_ layout: UInt32, policy: UInt32 = KVC_EVICTION_HEAVY_HITTER, perHead: UInt32 = 0) throws -> ABIFixture {
        let f = try ABIFixture(evictionConfig(layout, policy: policy, perHead: perHead))
        try f.addWitness(1001, tokens: f.uniqueTokens(1001, count: 9))
        try f.create(5, tokens: f.uniqueTokens(5, count: 40))
        try f.write(5, salt: 5, from: 0, to: 40)
        var s = [Float](repeating: 0.01, count: 80)
        for t in [2, 11, 17] { s[t] = 1; s[40 + t] = 1 }
        try f.observe(5, s, tokens: 40)
        try #require(kvc_seq_compact(f.handle, 5, 12) == KVC_OK)
        return f
    }

    @Test(arguments: bothLayouts)
    func compactKeepsHeavyHittersAndRecentTokensWithTheirBytes(layout: UInt32) throws {
        let f = try compacted(layout)
        #expect(try f.layerLength(5, layer: 0) == 12)
        #expect(try f.length(5) == 12)
        #expect(try f.positions(5, layer: 1).sorted() == [0, 1, 2, 3, 11, 17, 34, 35, 36, 37, 38, 39])
        #expect(try f.firstSlotMismatch(5, salt: 5) == nil)
        try f.expectWitnessesIntact()
    }

    /// recent_tokens past the budget (17 > 12; legal, checked against 0...2^24 only) keeps the
    /// newest 12 positions with their bytes, the heavy hitters out-ranked, without a trap.
    @Test(arguments: bothLayouts)
    func aRecentWindowPastTheBudgetKeepsTheNewestPositions(layout: UInt32) throws {
        var c = evictionConfig(layout, policy: KVC_EVICTION_HEAVY_HITTER)
        c.set32(ConfigLayout.recentTokens, 17)
        let f = try ABIFixture(c)
        try f.create(5, tokens: f.uniqueTokens(5, count: 40))
        try f.write(5, salt: 5, from: 0, to: 40)
        var s = [Float](repeating: 0.01, count: 80)
        for t in [2, 11, 17] { s[t] = 1; s[40 + t] = 1 }
        try f.observe(5, s, tokens: 40)
        try #require(kvc_seq_compact(f.handle, 5, 12) == KVC_OK)
        for layer in 0..<f.layers { #expect(try f.positions(5, layer: layer).sorted() == Array(28..<40)) }
        #expect(try f.firstSlotMismatch(5, salt: 5) == nil)
    }

    /// Scores are taken as they come when finite and >= 0, probabilities or not: a head-0 row
    /// summing past 2^63 (read as that many queries) once trapped converting the count to Int,
    /// ending the server. A step's queries are at most the tokens it sees.
    @Test(arguments: bothLayouts, [0, 1] as [UInt32])
    func scoresClaimingMoreQueriesThanTokensAreObservedWithoutATrap(layout: UInt32, perHead: UInt32) throws {
        let f = try ABIFixture(evictionConfig(layout, policy: KVC_EVICTION_HEAVY_HITTER, perHead: perHead))
        try f.create(5, tokens: f.uniqueTokens(5, count: 40))
        try f.write(5, salt: 5, from: 0, to: 40)
        var s = [Float](repeating: 0.01, count: 80)
        s[7] = 1e19; s[40 + 7] = 1e19
        try f.observe(5, s, tokens: 40)
        try #require(kvc_seq_compact(f.handle, 5, 12) == KVC_OK, "\(String(cString: kvc_last_error()))")
        for layer in 0..<f.layers { #expect(try f.positions(5, layer: layer).contains(7), "the heavy hitter is kept") }
        #expect(try f.firstSlotMismatch(5, salt: 5) == nil)
    }

    /// With adaptive budgets (sensitivities 1 and 3) a budget_tokens past every layer's length,
    /// up to PTRDIFF_MAX, keeps every token as any budget of the longest layer's length does:
    /// `budget * layers` once overflowed (SIGILL, the server gone). A real budget then still
    /// splits by the sensitivities.
    @Test(arguments: bothLayouts)
    func aHugeAdaptiveBudgetKeepsEveryTokenWithoutATrap(layout: UInt32) throws {
        var c = evictionConfig(layout, policy: KVC_EVICTION_HEAVY_HITTER)
        c.set32(ConfigLayout.adaptiveBudgets, 1)
        let f = try ABIFixture(c)
        try f.create(5, tokens: f.uniqueTokens(5, count: 40))
        try f.write(5, salt: 5, from: 0, to: 40)
        let sensitivity: [Float] = [1, 3]
        try #require(sensitivity.withUnsafeBufferPointer { kvc_seq_set_layer_sensitivity(f.handle, 5, $0.baseAddress, 2) } == KVC_OK)
        for budget in [Int.max, 1 << 62, Int.max / 2 + 1, 40] {
            #expect(kvc_seq_compact(f.handle, 5, budget) == KVC_OK, "budget \(budget): \(String(cString: kvc_last_error()))")
            for layer in 0..<f.layers {
                #expect(try f.layerLength(5, layer: layer) == 40, "budget \(budget)")
                #expect(try f.positions(5, layer: layer) == (0..<40).map(Int32.init), "budget \(budget)")
            }
        }
        #expect(try f.length(5) == 40)
        #expect(try f.firstSlotMismatch(5, salt: 5) == nil)
        #expect(kvc_seq_compact(f.handle, 5, 20) == KVC_OK)
        #expect(try f.layerLength(5, layer: 0) == 10 && f.layerLength(5, layer: 1) == 30)
        #expect(try f.firstSlotMismatch(5, salt: 5) == nil)
    }

    @Test(arguments: bothLayouts, [0, 1] as [UInt32])
    func badEvictionInputGetsItsStatusAndChangesNothing(layout: UInt32, perHead: UInt32) throws {
        let f = try compacted(layout, perHead: perHead)
        let before = try (f.positions(5, layer: 0), f.positions(5, layer: 1), f.layerLength(5, layer: 0))
        let ok = [Float](repeating: 0.1, count: 24)
        var nan = ok; nan[3] = .nan
        var negative = ok; negative[20] = -1
        let emb: [Float] = [1, 2, 3]
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["seq 77"]) { h in ok.withUnsafeBufferPointer { kvc_seq_observe(h, 77, 0, $0.baseAddress, 2, 12) } }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_heads 3"]) { h in ok.withUnsafeBufferPointer { kvc_seq_observe(h, 5, 0, $0.baseAddress, 3, 8) } }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["13 tokens", "holds 12"]) { h in
            [Float](repeating: 0.1, count: 26).withUnsafeBufferPointer { kvc_seq_observe(h, 5, 0, $0.baseAddress, 2, 13) }
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["nan"]) { h in nan.withUnsafeBufferPointer { kvc_seq_observe(h, 5, 1, $0.baseAddress, 2, 12) } }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["-1.0"]) { h in negative.withUnsafeBufferPointer { kvc_seq_observe(h, 5, 1, $0.baseAddress, 2, 12) } }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["scores", "NULL"]) { h in kvc_seq_observe(h, 5, 0, nil, 2, 12) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["layer 2"]) { h in ok.withUnsafeBufferPointer { kvc_seq_observe(h, 5, 2, $0.baseAddress, 2, 12) } }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["budget_tokens is 0"]) { h in kvc_seq_compact(h, 5, 0) }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["77"]) { h in kvc_seq_compact(h, 77, 4) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["budget_tokens"]) { h in kvc_seq_compact(h, 5, -1) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n", "NULL"]) { h in kvc_seq_positions(h, 5, 0, nil, 0, nil) }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["77"]) { h in var n = 0; return kvc_seq_layer_length(h, 77, 0, &n) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["embedding", "NULL"]) { h in kvc_seq_add_segment(h, 5, 0, 4, nil, 3) }
        try f.expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["segments serve the episodic policy", "sequence 5 uses h2o"]) { h in
            emb.withUnsafeBufferPointer { kvc_seq_add_segment(h, 5, 0, 4, $0.baseAddress, 3) }
        }
        try f.expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["episodic"]) { h in var e: UInt32 = 0; return emb.withUnsafeBufferPointer { kvc_seq_focus(h, 5, $0.baseAddress, 3, &e) } }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["policy 9"]) { h in kvc_seq_set_eviction(h, 5, 9, 0) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["already compacted"]) { h in kvc_seq_set_eviction(h, 5, 2, 0) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["already compacted"]) { h in kvc_seq_set_eviction(h, 5, KVC_EVICTION_HEAVY_HITTER, 1 - perHead) }
        #expect(kvc_seq_set_eviction(f.handle, 5, KVC_EVICTION_HEAVY_HITTER, perHead) == KVC_OK, "the policy it has: no change")
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["3 sensitivities", "2 layers"]) { h in emb.withUnsafeBufferPointer { kvc_seq_set_layer_sensitivity(h, 5, $0.baseAddress, 3) } }
        #expect(try (f.positions(5, layer: 0), f.positions(5, layer: 1), f.layerLength(5, layer: 0)) == before)
        #expect(try f.firstSlotMismatch(5, salt: 5) == nil)
    }

    @Test func positionsReportsTheFullCountWhenTheBufferIsShort() throws {
        let f = try compacted(KVC_LAYOUT_PAGED)
        var out = [Int32](repeating: -1, count: 5)
        var n = 0
        let rc = out.withUnsafeMutableBufferPointer { kvc_seq_positions(f.handle, 5, 0, $0.baseAddress, 5, &n) }
        #expect(rc == KVC_ERR_BUFFER_TOO_SMALL)
        #expect(n == 12)
        #expect(!out.contains(-1))
    }

    @Test func episodicFocusThroughTheABIPicksTheNearestEpisode() throws {
        let f = try ABIFixture(evictionConfig(KVC_LAYOUT_CONTIGUOUS, policy: KVC_EVICTION_EPISODIC))
        try f.create(5, tokens: f.uniqueTokens(5, count: 40))
        let a: [Float] = [1, 0], b: [Float] = [0, 1]
        #expect(a.withUnsafeBufferPointer { kvc_seq_add_segment(f.handle, 5, 0, 20, $0.baseAddress, 2) } == KVC_OK)
        #expect(b.withUnsafeBufferPointer { kvc_seq_add_segment(f.handle, 5, 20, 40, $0.baseAddress, 2) } == KVC_OK)
        var ea: UInt32 = 9, eb: UInt32 = 9, again: UInt32 = 9
        #expect(([0.9, 0.1] as [Float]).withUnsafeBufferPointer { kvc_seq_focus(f.handle, 5, $0.baseAddress, 2, &ea) } == KVC_OK)
        #expect(([0.2, 0.8] as [Float]).withUnsafeBufferPointer { kvc_seq_focus(f.handle, 5, $0.baseAddress, 2, &eb) } == KVC_OK)
        #expect(a.withUnsafeBufferPointer { kvc_seq_focus(f.handle, 5, $0.baseAddress, 2, &again) } == KVC_OK)
        #expect(ea != eb && ea < 4 && eb < 4)
        #expect(again == ea)
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["dimension 3"]) { h in
            var e: UInt32 = 0
            return ([1, 2, 3] as [Float]).withUnsafeBufferPointer { kvc_seq_focus(h, 5, $0.baseAddress, 3, &e) }
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["dimension 1"]) { h in
            ([1] as [Float]).withUnsafeBufferPointer { kvc_seq_add_segment(h, 5, 0, 4, $0.baseAddress, 1) }
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["segment [4, 99)"]) { h in
            a.withUnsafeBufferPointer { kvc_seq_add_segment(h, 5, 4, 99, $0.baseAddress, 2) }
        }
    }

    @Test func anUnknownPolicyInTheConfigIsInvalid() {
        var engine: OpaquePointer?
        let c = evictionConfig(KVC_LAYOUT_PAGED, policy: 9)
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["eviction_policy 9"]) { c.create(&engine) }
        #expect(engine == nil)
    }
}
