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
}
