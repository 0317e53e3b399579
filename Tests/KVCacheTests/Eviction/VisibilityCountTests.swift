import Testing
@testable import KVCache

/// Normalised H2O's visibility counts (the queries that could see a token) follow their
/// tokens: resident tokens count every query of their layer (the last slots of a multi-query
/// step fewer), parked tokens (episodic offload) none, and a restored token resumes from its
/// count when it left. `LowScoreCacheTests` checks them through random decoding.
@Suite struct VisibilityCountTests {
    /// Observes one step of `queries` queries on every slot of layer 0, each row summing to it.
    private func observe(_ state: EvictionState, queries: Int) throws {
        let n = state.length(layer: 0)
        let scores = [Float](repeating: Float(queries) / Float(n), count: n)
        try scores.withUnsafeBufferPointer { try state.observe(layer: 0, scores: $0.baseAddress!, nHeads: 1, nTokens: n) }
    }

    @Test func tokensPastAStepsScoresSeeNone() throws {
        var config = EvictionConfig(.heavyHitter)
        config.normalizedScores = true
        let state = try EvictionState(layers: 1, heads: 1, config: config, length: 6, maxCapacity: 64)
        let scores: [Float] = [0.25, 0.25, 0.25, 0.25]  // one query over the first 4 of 6 slots
        try scores.withUnsafeBufferPointer { try state.observe(layer: 0, scores: $0.baseAddress!, nHeads: 1, nTokens: 4) }
        #expect(state.visibility(layer: 0) == [1, 1, 1, 1, 0, 0])
        try observe(state, queries: 2)  // all 6: the last slot sees one of the two queries
        #expect(state.visibility(layer: 0) == [3, 3, 3, 3, 2, 1])
    }

    /// Counts stay exact past 2^24 queries per layer (a long stream's total): a `Float` total
    /// of the layer's queries stopped growing there, so a new token counted as seen by 0
    /// queries and older counts froze. 4096 steps of 4096 queries bring the total to 2^24.
    @Test func countsStayExactPast2To24QueriesOfALayer() throws {
        var config = EvictionConfig(.heavyHitter)
        config.normalizedScores = true
        let n = 4096, steps = (1 << 24) / n
        let state = try EvictionState(layers: 1, heads: 1, config: config, length: n, maxCapacity: n + 8)
        for _ in 0..<steps { try observe(state, queries: n) }  // slot t sees n - t queries each step
        state.compact(budget: 8)
        try state.append(1)
        try observe(state, queries: 1)  // one decode query over the 9 held tokens
        let seen = state.visibility(layer: 0)
        let expected = state.positions(layer: 0).map { p in p == Int32(n) ? 1 : Float(steps * (n - Int(p)) + 1) }
        #expect(seen == expected)
        #expect(seen.last == 1, "the new token was seen by the one query")
    }

    @Test func parkedTokensSeeNoQueriesAndResumeTheirCountsWhenRestored() throws {
        var config = EvictionConfig(.heavyHitter)
        config.normalizedScores = true
        config.recentTokens = 4
        config.recentRatio = 0
        let state = try EvictionState(layers: 1, heads: 1, config: config, length: 20, maxCapacity: 64)
        try observe(state, queries: 20)  // a prefill: slot t is seen by the 20 - t queries from t on
        #expect(state.visibility(layer: 0) == (0..<20).map { Float(20 - $0) })
        try state.append(1)
        try observe(state, queries: 1)  // a decode step: every token sees it
        #expect(state.visibility(layer: 0) == (0..<20).map { Float(21 - $0) } + [1])

        state.parksEvictions = true
        state.compact(budget: 16)  // 5 tokens parked
        #expect(state.parkedCount(row: 0) == 5)
        var counts: [Int32: Float] = [:]
        for (slot, p) in state.positions(layer: 0).enumerated() { counts[p] = state.visibility(layer: 0)[slot] }
        let parked = (state.parkedStart(row: 0)..<state.capacity).map { state.position(row: 0, slot: $0) }
        #expect(Set(parked).isDisjoint(with: counts.keys) && parked.count == 5)
        for p in parked { counts[p] = Float(21 - Int(p)) }  // their counts when they left

        for _ in 0..<3 {  // three decode steps seen by the 16 resident tokens only
            try state.append(1)
            try observe(state, queries: 1)
            for p in state.positions(layer: 0) { counts[p, default: 0] += 1 }
        }
        #expect(state.positions(layer: 0).enumerated().allSatisfy { state.visibility(layer: 0)[$0.offset] == counts[$0.element] })

        // A restore: parked token p takes resident slot 0, whose token leaves; then they swap back.
        let p = state.position(row: 0, slot: state.parkedStart(row: 0)), leaving = state.positions(layer: 0)[0]
        state.swapSlots(row: 0, 0, state.parkedStart(row: 0))
        #expect(state.positions(layer: 0)[0] == p)
        #expect(state.visibility(layer: 0)[0] == counts[p], "a restored token resumes from its count when parked")
        try state.append(1)
        try observe(state, queries: 1)
        counts[p]! += 1
        state.swapSlots(row: 0, 0, state.parkedStart(row: 0))
        #expect(state.positions(layer: 0)[0] == leaving)
        #expect(state.visibility(layer: 0)[0] == counts[leaving], "the token parked meanwhile saw nothing")
        #expect(state.position(row: 0, slot: state.parkedStart(row: 0)) == p)
    }
}
