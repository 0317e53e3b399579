import Testing
@testable import KVCache

/// A value that counts the comparisons made on it, in a counter of its own (no global state:
/// tests run in parallel).
private struct Counted: Comparable {
    final class Counter { var comparisons = 0 }
    let value: Int32
    let counter: Counter
    static func < (a: Counted, b: Counted) -> Bool {
        a.counter.comparisons += 1
        return a.value < b.value
    }
    static func == (a: Counted, b: Counted) -> Bool {
        a.counter.comparisons += 1
        return a.value == b.value
    }
}

/// Inputs no single pivot rule is meant for, each `n` long: `newestThenAscending` is what
/// StreamingLLM's selection of the newest positions gathers once the window has slid (a few
/// newest positions in the slots of the oldest evicted, then the rest ascending).
private func adversarial(_ n: Int) -> [(String, [Int32])] {
    let few = min(3, n)
    let newestThenAscending = (0..<few).map { Int32(n + $0) } + (0..<(n - few)).map(Int32.init)
    return [
        ("newestThenAscending", newestThenAscending),
        ("ascending", (0..<n).map(Int32.init)),
        ("descending", (0..<n).map { Int32(n - $0) }),
        ("organPipe", (0..<n).map { Int32(min($0, n - $0)) }),
        ("allEqual", [Int32](repeating: 7, count: n)),
        ("twoValues", (0..<n).map { Int32($0 % 2) }),
        ("sawtooth", (0..<n).map { Int32($0 % 17) }),
    ]
}

@Suite struct SelectionTests {
    /// StreamingLLM's compaction after the window slid once selected the newest positions
    /// with a quickselect whose median-of-three pivot (first, middle, last) was always near
    /// the maximum of "a few newest, then ascending": each pass dropped a few values, O(n^2)
    /// comparisons (62 s at 1M tokens, holding the engine lock). The selection must stay
    /// linear on it: at most 12 comparisons a value, at every order.
    @Test(arguments: [1 << 12, 1 << 13])
    func kthLargestComparesLinearlyOnACompactedRowsPositions(n: Int) {
        let keys = adversarial(n)[0].1
        for k in [n / 4, n / 2, n - n / 8] {
            let counter = Counted.Counter()
            var values = keys.map { Counted(value: $0, counter: counter) }
            let got = values.withUnsafeMutableBufferPointer { Selection.kthLargest($0.baseAddress!, n, k) }
            #expect(got.value == keys.sorted(by: >)[k - 1])
            #expect(counter.comparisons <= 12 * n, "n \(n), k \(k): \(counter.comparisons) comparisons")
        }
    }

    /// The selection against sorting, on random values (many ties, and distinct) and on the
    /// adversarial inputs, at the extreme orders and between, for sizes around every path.
    @Test(arguments: [1, 2, 3, 8, 31, 100, 257, 1000, 5000])
    func kthLargestMatchesSorting(n: Int) {
        var rng = SplitMix64(seed: UInt64(n))
        var inputs = adversarial(n)
        inputs.append(("randomTies", (0..<n).map { _ in Int32(rng.next() % 50) }))
        inputs.append(("randomDistinct", (0..<n).map(Int32.init).shuffled(using: &rng)))
        for (name, v) in inputs {
            let sorted = v.sorted(by: >)
            for k in Set([1, 2, n / 3, n / 2 + 1, n - 1, n].filter { (1...n).contains($0) }) {
                var copy = v
                let got = copy.withUnsafeMutableBufferPointer { Selection.kthLargest($0.baseAddress!, n, k) }
                #expect(got == sorted[k - 1], "\(name), n \(n), k \(k)")
                #expect(copy.sorted() == v.sorted(), "\(name), n \(n), k \(k): a permutation")
            }
        }
    }

    /// `kthLargest`'s bound, `heapSelect`, against sorting on the same inputs: it takes what
    /// quickselect left after its pass limit, which only inputs built against the ninther reach.
    @Test(arguments: [1, 2, 3, 8, 100, 1000])
    func heapSelectMatchesSorting(n: Int) {
        var rng = SplitMix64(seed: UInt64(n) + 100)
        var inputs = adversarial(n)
        inputs.append(("randomTies", (0..<n).map { _ in Int32(rng.next() % 50) }))
        for (name, v) in inputs {
            let sorted = v.sorted(by: >)
            for t in Set([1, 2, n / 2, n / 2 + 1, n - 1, n].filter { (1...n).contains($0) }) {
                var copy = v
                let got = copy.withUnsafeMutableBufferPointer { Selection.heapSelect($0.baseAddress!, n, t) }
                #expect(got == sorted[t - 1], "\(name), n \(n), t \(t)")
                #expect(copy.sorted() == v.sorted(), "\(name), n \(n), t \(t): a permutation")
            }
        }
    }

    /// StreamingLLM's and TOVA's choices against sorting, over random rows: shuffled slots,
    /// positions with holes, few evictions (a decode step) and many, sinks from none to past the
    /// budget; TOVA's scores with many ties (kept to the lowest slot).
    @Test func streamingLLMAndTOVAMatchSortingOverRandomRows() {
        var rng = SplitMix64(seed: 5)
        func below(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        for round in 0..<600 {
            let n = 1 + below(300)
            var positions = (0..<n).map { Int32($0 * 2 + (below(4) == 0 ? 1 : 0)) }
            positions.shuffle(using: &rng)
            let evict = round % 2 == 0 ? below(min(n, 40)) : below(n)
            let budget = n - evict, sinks = below(8) == 0 ? n : below(40)
            let last = (0..<n).map { _ in Float(below(6)) * 0.25 }
            let byPosition = (0..<n).sorted { positions[$0] < positions[$1] }
            let s = min(sinks, budget)
            let streaming = (Array(byPosition.prefix(s)) + Array(byPosition.suffix(budget - s))).sorted()
            let tova = (0..<n).sorted { last[$0] != last[$1] ? last[$0] > last[$1] : $0 < $1 }.prefix(budget).sorted()
            let what = "round \(round): n \(n), budget \(budget), sinks \(sinks)"
            #expect(keptSlots(StreamingLLMPolicy(sinkTokens: sinks), positions, last, budget) == streaming, "\(what)")
            #expect(keptSlots(TOVAPolicy(), positions, last, budget) == Array(tova), "\(what)")
        }
    }

    /// A decode step (a few evictions) of StreamingLLM and of TOVA chooses in one pass over the
    /// row, as H2O's does (`Selection.evictFewest`): it gathers nothing into the scratch, which
    /// the selections of a compaction (`markByPosition`, `markTop`) fill. Once StreamingLLM
    /// gathered positions twice and selected among them every step, 10 times H2O's cost.
    @Test(arguments: [1, 5, 27])
    func aDecodeStepLeavesTheScratchUntouched(evict: Int) {
        let n = 1000
        var rng = SplitMix64(seed: UInt64(evict))
        var positions = (0..<n).map { Int32($0 + 7) }
        positions.shuffle(using: &rng)
        let last = (0..<n).map { _ in Float(rng.next() % 9) }
        for policy in [StreamingLLMPolicy(sinkTokens: 4), TOVAPolicy()] as [any EvictionPolicy] {
            var scratchValues = [Float](repeating: -1, count: 2 * n), scratchSlots = [Int32](repeating: -1, count: n)
            _ = keptSlots(policy, positions, last, n - evict, values: &scratchValues, slots: &scratchSlots)
            #expect(scratchValues.allSatisfy { $0 == -1 } && scratchSlots.allSatisfy { $0 == -1 }, "\(policy.kind)")
        }
    }
}

/// The slots `policy` keeps of a row holding `positions` with last-step scores `last`.
private func keptSlots(_ policy: any EvictionPolicy, _ positions: [Int32], _ last: [Float], _ budget: Int) -> [Int] {
    var values = [Float](repeating: 0, count: 2 * positions.count), slots = [Int32](repeating: 0, count: positions.count)
    return keptSlots(policy, positions, last, budget, values: &values, slots: &slots)
}

/// As above, with the scratch given (`values` twice the row, `slots` the row).
private func keptSlots(
    _ policy: any EvictionPolicy, _ positions: [Int32], _ last: [Float], _ budget: Int, values: inout [Float], slots: inout [Int32]
) -> [Int] {
    let n = positions.count
    var keep = [UInt8](repeating: 9, count: n)
    let zeros = [Float](repeating: 0, count: n)
    let next = Int(positions.max() ?? 0) + 1
    positions.withUnsafeBufferPointer { p in last.withUnsafeBufferPointer { l in zeros.withUnsafeBufferPointer { z in
        values.withUnsafeMutableBufferPointer { v in slots.withUnsafeMutableBufferPointer { s in
            let row = EvictionRow(count: n, positions: p.baseAddress!, accumulated: z.baseAddress!, last: l.baseAddress!,
                                  visible: z.baseAddress!, episode: nil, nextPosition: next, budget: budget)
            policy.choose(row, scratch: SelectionScratch(values: v.baseAddress!, slots: s.baseAddress!, capacity: 2 * n), keep: &keep)
        } }
    } } }
    #expect(keep.allSatisfy { $0 <= 1 })
    return (0..<n).filter { keep[$0] == 1 }
}
