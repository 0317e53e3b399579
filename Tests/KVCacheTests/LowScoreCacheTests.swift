import Testing
@testable import KVCache

/// H2O's decode steps served from `LowScoreCache` choose exactly what a full scan chooses:
/// each step's kept positions are checked against a sort of the state before the step.
@Suite struct LowScoreCacheTests {
    /// The positions H2O keeps in row `row` of `layer` at `budget`: the recent window, then the
    /// highest raw sums, ties to the lowest slot.
    private func expectedKept(_ state: AttentionScores, layer: Int, row: Int, budget: Int, window: Int) -> Set<Int32> {
        let pos = state.positions(layer: layer, row: row), acc = state.accumulatedScores(layer: layer, row: row)
        let k = min(budget, pos.count)
        let recent = min(k, window)
        let from = state.nextPosition - recent
        let inWindow = (0..<pos.count).filter { Int(pos[$0]) >= from }
        let rest = (0..<pos.count).filter { Int(pos[$0]) < from }.sorted { acc[$0] != acc[$1] ? acc[$0] > acc[$1] : $0 < $1 }
        return Set((inWindow + rest.prefix(k - inWindow.count)).map { pos[$0] })
    }

    /// Random decode: 1-3 tokens appended per step, scores with many ties and zeros, budgets
    /// that mostly evict a few tokens and sometimes grow, shrink the window or evict many;
    /// per layer and per head; windows of 0, 3 and 40 tokens; now and then a plan that is never
    /// applied.
    @Test(arguments: [(false, 0), (false, 3), (false, 40), (true, 40)])
    func decodeStepsMatchAFullScan(perHead: Bool, window: Int) throws {
        var config = EvictionConfig(.heavyHitter)
        config.recentTokens = window
        config.recentRatio = 0
        config.perHead = perHead
        let layers = 2, heads = 2, start = 300
        let state = AttentionScores(layers: layers, heads: heads, config: config, length: start, maxCapacity: 4096)
        var rng = SplitMix64(seed: UInt64(window) + (perHead ? 100 : 0))
        var budget = start - 20
        let steps = 600
        for step in 0..<steps {
            let n = 1 + Int(rng.next() % 3)
            state.append(n)
            for l in 0..<layers {
                let len = state.length(layer: l)
                let scores = (0..<(heads * len)).map { _ in Float(rng.next() % 8) / 8 }  // many ties, some 0
                try scores.withUnsafeBufferPointer { try state.observe(layer: l, scores: $0.baseAddress!, nHeads: heads, nTokens: len) }
            }
            switch rng.next() % 50 {
            case 0: budget += 10  // room: nothing evicted for a few steps
            case 1: budget = max(60, budget - 40)  // a large eviction (not a decode step)
            case 2: budget = max(60, budget - 5)
            default: break
            }
            // A compaction that fails after planning (the engine's memory step threw) plans
            // and never applies: the next choice must not depend on it.
            if rng.next() % 7 == 0 { _ = state.plan(budget: budget) }
            let rows = perHead ? heads : 1
            let expected = (0..<layers).map { l in (0..<rows).map { expectedKept(state, layer: l, row: $0, budget: budget, window: window) } }
            state.compact(budget: budget)
            for l in 0..<layers {
                for r in 0..<rows {
                    let wrong = Set(state.positions(layer: l, row: r)).symmetricDifference(expected[l][r])
                    #expect(wrong.isEmpty, "step \(step), layer \(l), row \(r): positions kept or evicted wrongly")
                }
            }
        }
        // With a window of 40 positions most steps were served by the records (a scan serves
        // at most min(window, pendingCapacity) positions of the window's moves); a full scan
        // per row and step would be steps x rows scans.
        let rowSteps = steps * layers * (perHead ? heads : 1)
        #expect(state.lowScoreScans > 0)
        if window == 40 { #expect(state.lowScoreScans * 4 < rowSteps, "\(state.lowScoreScans) scans in \(rowSteps) row-steps") }
    }

    /// Normalised sums can fall (the visibility count grows), so they never use the record.
    @Test func normalisedSumsAlwaysScan() throws {
        var config = EvictionConfig(.heavyHitter)
        config.normalizedScores = true
        let state = AttentionScores(layers: 1, heads: 1, config: config, length: 100, maxCapacity: 1024)
        for _ in 0..<20 {
            state.append(1)
            let scores = [Float](repeating: 0.01, count: state.length(layer: 0))
            try scores.withUnsafeBufferPointer { try state.observe(layer: 0, scores: $0.baseAddress!, nHeads: 1, nTokens: $0.count) }
            state.compact(budget: 90)
        }
        #expect(state.lowScoreScans == 0)
    }
}
