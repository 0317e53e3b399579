import Testing
@testable import KVCache

/// Kept positions of one row of `n` tokens (positions 0..<n) scored by `acc` / `last`.
private func kept(_ policy: any EvictionPolicy, n: Int, budget: Int, acc: [Float], last: [Float]? = nil, visible: [Float]? = nil) -> [Int] {
    let pos = (0..<n).map(Int32.init)
    let vis = visible ?? [Float](repeating: 1, count: n)
    let lastScores = last ?? acc
    var keep = [UInt8](repeating: 9, count: n)
    let values = UnsafeMutablePointer<Float>.allocate(capacity: n), slots = UnsafeMutablePointer<Int32>.allocate(capacity: n)
    defer { values.deallocate(); slots.deallocate() }
    pos.withUnsafeBufferPointer { p in acc.withUnsafeBufferPointer { a in lastScores.withUnsafeBufferPointer { l in vis.withUnsafeBufferPointer { v in
        let row = EvictionRow(count: n, positions: p.baseAddress!, accumulated: a.baseAddress!, last: l.baseAddress!, visible: v.baseAddress!,
                              episode: nil, nextPosition: n, budget: budget)
        policy.choose(row, scratch: SelectionScratch(values: values, slots: slots, capacity: n), keep: &keep)
    } } } }
    return (0..<n).filter { keep[$0] == 1 }
}

@Suite struct EvictionPolicyTests {
    @Test func streamingLLMKeepsSinksAndTheMostRecent() {
        #expect(kept(StreamingLLMPolicy(sinkTokens: 2), n: 10, budget: 5, acc: .init(repeating: 0, count: 10)) == [0, 1, 7, 8, 9])
    }

    /// A compacting stream's positions grow without bound: past 2^24 a `Float` no longer tells
    /// neighbours apart, and StreamingLLM once kept 2^24 and dropped 2^24 + 1 (ranked by
    /// `Float(position)`, ties to the lowest slot). Positions reach 2^24 + 4 here by compacting
    /// 16 appends of 2^20 tokens, as a stream would.
    @Test func streamingLLMKeepsTheNewestPositionsPast2To24() throws {
        var config = EvictionConfig(.streamingLLM)
        config.sinkTokens = 4
        let chunk = 1 << 20, base = 1 << 24
        let state = try EvictionState(layers: 1, heads: 1, config: config, length: 0, maxCapacity: chunk + 8)
        for _ in 0..<(base / chunk) {
            try state.append(chunk)
            state.compact(budget: 8)
        }
        try state.append(5)  // 2^24 ... 2^24 + 4
        state.compact(budget: 8)
        #expect(Array(state.positions(layer: 0)).map(Int.init).sorted() == [0, 1, 2, 3, base + 1, base + 2, base + 3, base + 4])
    }

    @Test func tovaKeepsTheLastQuerysTopTokens() {
        let last: [Float] = [0, 0.5, 0, 0, 0.3, 0, 0, 0.2]
        #expect(kept(TOVAPolicy(), n: 8, budget: 3, acc: .init(repeating: 9, count: 8), last: last) == [1, 4, 7])
    }

    /// An observe of fewer tokens than the layer holds gives the later slots no attention of
    /// that step, TOVA's last step too: they kept an earlier step's scores, so TOVA kept tokens
    /// the last query never saw over those it attended to (helper-126).
    @Test(arguments: [false, true])
    func tovaGivesSlotsPastAPartialObserveNoLastStepAttention(perHead: Bool) throws {
        var c = EvictionConfig(.tova)
        c.perHead = perHead
        let s = try EvictionState(layers: 1, heads: 1, config: c, length: 4, maxCapacity: 64)
        for step: [Float] in [[0.05, 0.05, 0.45, 0.45], [0.7, 0.3]] {
            try step.withUnsafeBufferPointer { try s.observe(layer: 0, scores: $0.baseAddress!, nHeads: 1, nTokens: $0.count) }
        }
        s.compact(budget: 2)
        #expect(Array(s.positions(layer: 0)).sorted() == [0, 1])
    }

    @Test func heavyHitterRawSumsFavourOldTokensNormalisedSumsDoNot() {
        var config = EvictionConfig(.heavyHitter)
        config.recentTokens = 1
        let acc: [Float] = [3, 0.5, 0.5, 2, 0.1]
        let visible: [Float] = [10, 9, 8, 2, 1]  // token 3 got 1.0 per query, token 0 only 0.3
        #expect(kept(HeavyHitterPolicy(config), n: 5, budget: 2, acc: acc, visible: visible) == [0, 4])
        config.normalizedScores = true
        #expect(kept(HeavyHitterPolicy(config), n: 5, budget: 2, acc: acc, visible: visible) == [3, 4])
    }

    @Test func tiesGoToTheLowestSlotAndTheBudgetIsExact() {
        var config = EvictionConfig(.heavyHitter)
        config.recentTokens = 0
        config.recentRatio = 0
        #expect(kept(HeavyHitterPolicy(config), n: 6, budget: 3, acc: .init(repeating: 1, count: 6)) == [0, 1, 2])
    }

    @Test(arguments: [1, 5, 31, 32, 100, 190])
    func topKMatchesSortingForSmallAndLargeEvictions(evicted: Int) {
        var config = EvictionConfig(.heavyHitter)
        config.recentRatio = 0
        var rng = SplitMix64(seed: UInt64(evicted))
        let n = 200
        let acc = (0..<n).map { _ in Float(rng.next() % 40) }  // many ties
        let expected = (0..<n).sorted { acc[$0] != acc[$1] ? acc[$0] > acc[$1] : $0 < $1 }.prefix(n - evicted).sorted()
        #expect(kept(HeavyHitterPolicy(config), n: n, budget: n - evicted, acc: acc) == Array(expected))
    }

    /// The one-pass decode-step choice (`Selection.evictFewest`, SIMD with a scalar tail)
    /// against a reference, over 4,000 random rows: candidates (positions below the recent
    /// window's start) sorted by (score ascending, slot descending), the first `evict` go.
    /// Rows of 1-300 slots (SIMD chunks and tails) in shuffled position order with holes (as
    /// after compactions), windows of 0 to half the row, 1-31 evictions, scores drawn from a
    /// few values (many ties, also after normalising), with and without `plus`, raw or
    /// normalised by `visible + visibleOffset` (counts 0-3: 0 counts as 1), with and without the
    /// low-score cache; with it, the scan's record must hold the first `evict +
    /// LowScoreCache.lowCapacity` of the reference's order (positions beside them) and the last
    /// one's score as its bound (+infinity when the candidates are fewer), and a second,
    /// unchanged step must choose the same, served from the record in most rows (not where
    /// the last evicted score ties the bound).
    @Test(arguments: [false, true], [false, true])
    func decodeStepChoiceMatchesAReferenceOverRandomRows(normalized: Bool, cached: Bool) throws {
        var rng = SplitMix64(seed: 11 + (normalized ? 1 : 0) + (cached ? 2 : 0))
        var served = 0
        func below(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        for round in 0..<1000 {
            let n = 1 + below(300), withPlus = round % 2 == 1
            var positions = (0..<n).map { Int32($0 * 2) }  // holes: evicted positions
            for i in stride(from: n - 1, to: 0, by: -1) { positions.swapAt(i, below(i + 1)) }
            let next = 2 * n, recent = below(n / 2 + 1)
            let from = next - 2 * recent  // `recent` positions at or past it
            let candidates = (0..<n).filter { Int(positions[$0]) < from }
            guard !candidates.isEmpty else { continue }
            let evict = 1 + below(min(31, candidates.count))
            let scores = (0..<n).map { _ in Float(below(6)) * 0.5 }
            let plus = (0..<n).map { _ in Float(below(3)) }
            let visible = (0..<n).map { _ in Float(below(4)) }, offset = Float(below(2))
            func score(_ i: Int) -> Float {
                let s = withPlus ? scores[i] + plus[i] : scores[i]
                return normalized ? s / max(visible[i] + offset, 1) : s
            }
            let order = candidates.sorted { score($0) != score($1) ? score($0) < score($1) : $0 > $1 }
            let expected = (0..<n).filter { !order.prefix(evict).contains($0) }
            let cache = try LowScoreCache(rows: 1, recording: true)
            for step in 0..<(cached ? 2 : 1) {
                var keep = [UInt8](repeating: 9, count: n)
                let scansBefore = cache.scans
                positions.withUnsafeBufferPointer { p in scores.withUnsafeBufferPointer { s in
                    plus.withUnsafeBufferPointer { a in visible.withUnsafeBufferPointer { v in
                        var row = EvictionRow(count: n, positions: p.baseAddress!, accumulated: s.baseAddress!, last: s.baseAddress!,
                                              visible: v.baseAddress!, visibleOffset: offset, episode: nil, nextPosition: next,
                                              budget: n - evict)
                        if cached { row.lowScores = cache.row(0) }
                        Selection.evictFewest(row, n - evict, recentFrom: from, scores: s.baseAddress!,
                                              plus: withPlus ? a.baseAddress! : nil, visible: normalized ? v.baseAddress! : nil, keep: &keep)
                    } }
                } }
                let what = "round \(round), step \(step), n \(n), evict \(evict), plus \(withPlus)"
                #expect((0..<n).filter { keep[$0] == 1 } == expected, "\(what)")
                guard cached else { continue }
                if step == 1 { served += cache.scans == scansBefore ? 1 : 0 }
                if step == 0 {
                    #expect(cache.scans == scansBefore + 1, "\(what): a scan")
                    let size = evict + LowScoreCache.lowCapacity, record = cache.lowRecord(row: 0)
                    let low = Array(order.prefix(size))
                    #expect(record.low.map { Int($0.slot) } == low, "\(what)")
                    #expect(record.low.map(\.position) == low.map { positions[$0] }, "\(what)")
                    #expect(record.bound == (order.count >= size ? score(order[size - 1]) : .infinity), "\(what)")
                }
            }
        }
        #expect(!cached || served > 500, "served \(served)")
    }

    /// `observe` places its scratch by the scores' address (`summedScratch`): half a page away
    /// modulo 4 KiB and inside the buffer for every alignment, and the sums are exact (heads
    /// added in order, as a scalar loop does) whatever the alignment and length.
    @Test(arguments: [7, 1024, 1031])
    func observeSumsExactlyWhereverTheScoresLie(n: Int) throws {
        let heads = 8
        let raw = UnsafeMutablePointer<Float>.allocate(capacity: heads * n + 2048)
        defer { raw.deallocate() }
        var rng = SplitMix64(seed: UInt64(n))
        for i in 0..<(heads * n + 2048) { raw[i] = Float(rng.next() >> 40) / Float(1 << 24) }
        for offset in [0, 1, 3, 512, 1023] {
            let s = try EvictionState(layers: 1, heads: heads, config: EvictionConfig(.heavyHitter), length: n, maxCapacity: 2048)
            let scores = UnsafePointer(raw + offset)
            let scratch = s.summedScratch(for: scores)
            let start = UInt(bitPattern: s.summedBuffer), at = UInt(bitPattern: scratch)
            #expect((at &- UInt(bitPattern: scores)) & 4095 == 2048)
            #expect(at >= start && at < start + UInt(EvictionState.pageFloats * 4), "the sums fit after it")
            try s.observe(layer: 0, scores: scores, nHeads: heads, nTokens: n)
            try s.observe(layer: 0, scores: scores, nHeads: heads, nTokens: n)
            let acc = s.accumulatedScores(layer: 0)
            var exact = true
            for t in 0..<n {
                var sum: Float = 0
                for h in 0..<heads { sum += scores[h * n + t] }
                exact = exact && acc[t] == sum + sum
            }
            #expect(exact, "offset \(offset)")
        }
    }

    /// A 2-layer state of `n` tokens whose layer 0 observed one step of random `heads x n`
    /// scores and layer 1 the same step twice; returns it and the scores.
    private func observedOnceAndTwice(_ config: EvictionConfig, heads: Int, n: Int) throws -> (EvictionState, [Float]) {
        let s = try EvictionState(layers: 2, heads: heads, config: config, length: n, maxCapacity: 2048)
        var rng = SplitMix64(seed: UInt64(n))
        let scores = (0..<(heads * n)).map { _ in Float(rng.next() >> 40) / Float(1 << 24) }
        try scores.withUnsafeBufferPointer { p in
            try s.observe(layer: 0, scores: p.baseAddress!, nHeads: heads, nTokens: n)
            try s.observe(layer: 1, scores: p.baseAddress!, nHeads: heads, nTokens: n)
            try s.observe(layer: 1, scores: p.baseAddress!, nHeads: heads, nTokens: n)
        }
        return (s, scores)
    }

    /// Per head, `observe` adds each head's scores to that head's row of that layer and to
    /// nothing else: after two steps (0 + s, then s + s, both exact) every slot of layer 1's
    /// rows holds twice its head's score, layer 0 the one step it observed; the lengths take
    /// the SIMD loop and its scalar tail (1031 = 128 x 8 + 7), and 7 the tail alone.
    @Test(arguments: [7, 1031])
    func perHeadObserveAddsEachHeadsScoresToItsOwnRow(n: Int) throws {
        let heads = 8
        var config = EvictionConfig(.heavyHitter)
        config.perHead = true
        let (s, scores) = try observedOnceAndTwice(config, heads: heads, n: n)
        for h in 0..<heads {
            let once = Array(scores[(h * n)..<((h + 1) * n)])
            #expect(Array(s.accumulatedScores(layer: 0, row: h)) == once, "layer 0, head \(h)")
            #expect(Array(s.accumulatedScores(layer: 1, row: h)) == once.map { $0 + $0 }, "layer 1, head \(h)")
        }
    }

    /// Episodic, `observe` adds a step both to the accumulated sums and to the current turn's
    /// block, row by row, and to no episode's: after layer 0 observed once and layer 1 twice
    /// (0 + s, then s + s, both exact), every slot of both holds the step's sum (over heads per
    /// layer, the head's score per head) once or twice; the lengths take the SIMD loop and its
    /// scalar tail (1031 = 128 x 8 + 7), and 7 the tail alone.
    @Test(arguments: [7, 1031], [false, true])
    func episodicObserveAddsTheStepToTheSumsAndTheTurn(n: Int, perHead: Bool) throws {
        let heads = 8
        var config = EvictionConfig(.episodic)
        config.perHead = perHead
        let (s, scores) = try observedOnceAndTwice(config, heads: heads, n: n)
        let block = s.rows * s.capacity
        for r in 0..<s.rows {
            let once = (0..<n).map { t in
                perHead ? scores[(r % heads) * n + t] : (0..<heads).reduce(Float(0)) { $0 + scores[$1 * n + t] }
            }
            let expected = r / s.rowsPerLayer == 0 ? once : once.map { $0 + $0 }
            let base = r * s.capacity, turn = s.episodeScores + config.episodes * block + base
            let sums = s.accumulatedScores(layer: r / s.rowsPerLayer, row: r % s.rowsPerLayer)
            let wrongSums = (0..<n).filter { sums[$0] != expected[$0] }, wrongTurn = (0..<n).filter { turn[$0] != expected[$0] }
            #expect(wrongSums.isEmpty, "row \(r): sums differ at slots \(wrongSums.prefix(8))")
            #expect(wrongTurn.isEmpty, "row \(r): the turn differs at slots \(wrongTurn.prefix(8))")
            for e in 0..<config.episodes { #expect((0..<n).allSatisfy { s.episodeScores[e * block + base + $0] == 0 }, "row \(r), episode \(e)") }
        }
    }

    /// Bad scores leave every accumulated score of every layer (and, per head, every head's
    /// row) bit for bit as it was, with H2O (the decode-step policy, sums only) and TOVA (sums
    /// and the last step's): a NaN, negative or infinite score in the middle of head 0's row,
    /// of the last head's, or in the last token (the scalar tail of 1031 tokens), each named by
    /// its head and token; finite scores whose sum overflows, named as such. Per head,
    /// `observe` adds into the sums while it checks and must put the old ones back exactly (a
    /// float add then subtract need not).
    @Test(arguments: [EvictionPolicyKind.heavyHitter, .tova], [false, true])
    func badScoresLeaveTheSumsExactlyUnchanged(kind: EvictionPolicyKind, perHead: Bool) throws {
        let heads = 8, n = 1031
        var config = EvictionConfig(kind)
        config.perHead = perHead
        let s = try EvictionState(layers: 2, heads: heads, config: config, length: n, maxCapacity: 2048)
        var rng = SplitMix64(seed: 5)
        let good = (0..<(heads * n)).map { _ in Float(rng.next() >> 40) / Float(1 << 24) / 3 }
        for _ in 0..<3 {
            for layer in 0..<2 { try good.withUnsafeBufferPointer { try s.observe(layer: layer, scores: $0.baseAddress!, nHeads: heads, nTokens: n) } }
        }
        let rows = perHead ? heads : 1
        let sums = { (0..<(2 * rows)).map { s.accumulatedScores(layer: $0 / rows, row: $0 % rows).map(\.bitPattern) } }
        let before = sums()
        let cases: [(Int, Float)] = [
            (n / 2, .nan), (n / 2, -0.25), ((heads - 1) * n + n / 2, .nan), ((heads - 1) * n + n / 2, -0.25),
            (heads * n - 1, -0.25), (heads * n - 1, .infinity),
        ]
        for (at, value) in cases {
            var bad = good
            bad[at] = value
            let error = caught { try bad.withUnsafeBufferPointer { try s.observe(layer: 1, scores: $0.baseAddress!, nHeads: heads, nTokens: n) } }
            #expect(error?.code == .invalidArgument, "\(value) at \(at)")
            #expect(error?.message.contains("at head \(at / n), token \(at % n) of layer 1") == true, "\(error?.message ?? "")")
            #expect(sums() == before, "\(value) at \(at)")
        }
        // Every score finite and >= 0, their float sum not: refused as such, naming no head.
        var huge = good
        huge[(heads - 1) * n + 3] = 3e38
        huge[(heads - 1) * n + 4] = 3e38
        let overflow = caught { try huge.withUnsafeBufferPointer { try s.observe(layer: 1, scores: $0.baseAddress!, nHeads: heads, nTokens: n) } }
        #expect(overflow?.code == .invalidArgument)
        #expect(overflow?.message == "the \(heads * n) scores of layer 1 are each finite and >= 0 but sum to more than a float holds: the sum must be finite")
        #expect(sums() == before, "an overflowing sum")
    }

    /// Each policy type's own answer to what it needs observed, against the kind checks the
    /// engine used to make (TOVA the last step; H2O and episodic low-score records, plus
    /// visibility counts when normalised; episodic its episodes; none keeps everything), and
    /// a state keeps what its policy asked for.
    @Test(arguments: EvictionPolicyKind.allCases, [false, true])
    func eachPolicyStatesWhatItNeedsObserved(kind: EvictionPolicyKind, normalized: Bool) throws {
        var config = EvictionConfig(kind)
        config.normalizedScores = normalized
        var expected: ScoreTracking = []
        if kind == .tova { expected.insert(.lastStep) }
        if kind == .heavyHitter || kind == .episodic { expected.insert(.lowScores) }
        if normalized && (kind == .heavyHitter || kind == .episodic) { expected.insert(.visibility) }
        if kind == .episodic { expected.insert(.episodes) }
        #expect(config.tracking == expected)
        #expect(config.keepsEveryToken == (kind == .none))
        #expect(kind.policy(config).kind == kind)
        let state = try EvictionState(layers: 2, heads: 2, config: config, length: 3, maxCapacity: 64)
        #expect(state.tracking == expected && state.episodeObserved.count == (kind == .episodic ? config.episodes + 1 : 0))
    }

    @Test func kthLargestFindsTheOrderStatistic() {
        var rng = SplitMix64(seed: 1)
        for n in [1, 2, 7, 100, 1000] {
            let v = (0..<n).map { _ in Float(rng.next() % 50) }
            for k in [1, n / 2 + 1, n] {
                var copy = v
                let got = copy.withUnsafeMutableBufferPointer { Selection.kthLargest($0.baseAddress!, n, k) }
                #expect(got == v.sorted(by: >)[k - 1])
            }
        }
    }

    @Test func kMeansIsDeterministicAndSeparatesClusters() {
        let points: [Float] = [0, 0, 0.1, 0, 10, 10, 10.2, 9.9, 0, 0.2, 10, 10.1]
        let a = points.withUnsafeBufferPointer { KMeans(points: $0, n: 6, dim: 2, k: 2, seed: 7) }
        let b = points.withUnsafeBufferPointer { KMeans(points: $0, n: 6, dim: 2, k: 2, seed: 7) }
        #expect(a.assignment == b.assignment)
        #expect(a.assignment[0] == a.assignment[1] && a.assignment[1] == a.assignment[4])
        #expect(a.assignment[2] == a.assignment[3] && a.assignment[3] == a.assignment[5])
        #expect(a.assignment[0] != a.assignment[2])
        #expect(([9, 9] as [Float]).withUnsafeBufferPointer { a.nearest($0) } == Int(a.assignment[2]))
    }

    @Test func episodicCreditsEachTurnToItsSegmentsEpisodeAndKeepsTheFocusedOnesTokens() throws {
        var config = EvictionConfig(.episodic)
        config.episodes = 2
        config.recentTokens = 1
        let s = try EvictionState(layers: 1, heads: 1, config: config, length: 20, maxCapacity: 64)
        func observe(_ heavy: [Int: Float]) throws {
            var row = [Float](repeating: 0, count: 20)
            for (t, v) in heavy { row[t] = v }
            try row.withUnsafeBufferPointer { try s.observe(layer: 0, scores: $0.baseAddress!, nHeads: 1, nTokens: 20) }
        }
        try observe([2: 1, 3: 1])  // turn A's queries
        try ([1, 0] as [Float]).withUnsafeBufferPointer { try s.addSegment(start: 0, end: 10, embedding: $0) }
        _ = try ([0.1, 1] as [Float]).withUnsafeBufferPointer { try s.focus($0) }  // turn B starts
        for _ in 0..<3 { try observe([12: 1, 13: 3]) }  // turn B's queries
        try ([0, 1] as [Float]).withUnsafeBufferPointer { try s.addSegment(start: 10, end: 20, embedding: $0) }
        let a = try ([1, 0.1] as [Float]).withUnsafeBufferPointer { try s.focus($0) }  // back to A
        #expect(s.segmentEpisodes == [a, 1 - a])
        s.compact(budget: 3)
        #expect(Array(s.positions(layer: 0)).sorted() == [2, 3, 19], "episode A's heavy hitters, not H2O's (12, 13)")
    }

    /// A recent window wider than the budget (legal: recent_tokens is checked against 0...2^24, not
    /// the budget) keeps exactly the newest `budget` positions, heavy hitters or not: the window is
    /// clamped to the budget, or the selection's preconditions trap (window past the kept count).
    @Test(arguments: [EvictionPolicyKind.heavyHitter, .episodic], [1, 40])
    func aRecentWindowPastTheBudgetKeepsTheNewestBudgetPositions(kind: EvictionPolicyKind, evicted: Int) throws {
        let budget = 8, n = budget + evicted  // 1: the decode step's path; 40: a large eviction
        var config = EvictionConfig(kind)
        config.recentTokens = budget + 5
        let s = try EvictionState(layers: 1, heads: 1, config: config, length: n, maxCapacity: 64)
        var row = [Float](repeating: 0.01, count: n)
        row[0] = 5  // heavy hitters the clamped window outranks
        row[2] = 4
        try row.withUnsafeBufferPointer { try s.observe(layer: 0, scores: $0.baseAddress!, nHeads: 1, nTokens: n) }
        s.compact(budget: budget)
        #expect(Array(s.positions(layer: 0)).map(Int.init).sorted() == Array(n - budget..<n))
    }
}
