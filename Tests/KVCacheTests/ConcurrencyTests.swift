import Testing
@testable import KVCache

#if canImport(Glibc)
import Glibc
#endif

@Suite("Concurrent use")
struct ConcurrencyTests {
    /// Four threads create, append to, write and free their own sequences at once, sharing a
    /// system prompt; every byte each wrote is intact, and the counters add up.
    @Test(arguments: [Layout.paged, .contiguous])
    func threadsOnDistinctSequencesKeepTheirBytes(layout: Layout) throws {
        let e = try Engine(smallConfig(layout, memoryBytes: 32 << 20))
        let system = tokens(64, seed: 500)
        let counts = Failures()
        DispatchLike.concurrentPerform(iterations: 4) { thread in
            for round in 0..<25 {
                let seq = UInt64(thread * 1000 + round)
                let prompt = system + tokens(30, seed: Int32(thread * 100 + round))
                do {
                    let cached = try e.createSequence(seq, tokens: prompt)
                    try writeKV(e, seq, tokens: Array(prompt[cached...]), from: cached)
                    try e.append(seq, tokens: [1, 2, 3])
                    try writeKV(e, seq, tokens: [1, 2, 3], from: prompt.count)
                    counts.values[thread] += try kvMismatches(e, seq, tokens: Array(prompt[cached...]) + [1, 2, 3], from: cached)
                    try e.free(seq)
                } catch {
                    counts.values[thread] += 1_000_000
                }
            }
        }
        #expect((0..<4).map { counts.values[$0] } == [0, 0, 0, 0])
        let s = e.stats()
        #expect(s.sequences == 0)
        #expect(s.sequencesCreated == 100)
        #expect(s.prefixHitTokens >= 99 * 64)
    }
}

/// One failure count per thread; each thread writes only its own.
final class Failures: @unchecked Sendable {
    let values = UnsafeMutablePointer<Int>.allocate(capacity: 4)
    init() { values.initialize(repeating: 0, count: 4) }
    deinit { values.deallocate() }
}

/// `concurrentPerform` on plain threads (pthreads), so the test needs no Dispatch.
enum DispatchLike {
    static func concurrentPerform(iterations: Int, _ body: @escaping @Sendable (Int) -> Void) {
        final class Box: @unchecked Sendable {
            let body: (Int) -> Void
            let index: Int
            init(_ body: @escaping (Int) -> Void, _ index: Int) { self.body = body; self.index = index }
        }
        var threads: [pthread_t] = []
        for i in 0..<iterations {
            var t = pthread_t()
            let box = Unmanaged.passRetained(Box(body, i)).toOpaque()
            pthread_create(&t, nil, { raw in
                let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                box.body(box.index)
                return nil
            }, box)
            threads.append(t)
        }
        for t in threads { pthread_join(t, nil) }
    }
}
