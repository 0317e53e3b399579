import KVCache
import Testing
@testable import KVRouter

/// Queues held in arrays, as a cluster would hold them.
final class ArrayQueues: RequestQueues {
    var queues: [[(id: Int, hashes: [UInt64], tokens: Int)]]
    private var pinned: [UnsafeMutableBufferPointer<UInt64>] = []
    init(slots: Int) { queues = Array(repeating: [], count: slots) }
    deinit { for p in pinned { p.deallocate() } }

    func queuedCount(slot: Int) -> Int { queues[slot].count }
    func queuedRequest(slot: Int, index: Int) -> (id: Int, hashes: UnsafeBufferPointer<UInt64>, tokens: Int) {
        let q = queues[slot][index]
        let p = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: q.hashes.count)
        _ = p.initialize(from: q.hashes)
        pinned.append(p)
        return (q.id, UnsafeBufferPointer(p), q.tokens)
    }
    func move(id: Int, from slot: Int, to target: Int) {
        let i = queues[slot].firstIndex { $0.id == id }!
        queues[target].append(queues[slot].remove(at: i))
    }
}

@Suite struct RebalanceTests {
    @Test func queuedRequestsMoveOffAnOverloadedInstanceToTheirOtherCandidate() throws {
        // Threshold 500 ms at 0.1 ms/token = 5000 pending tokens.
        let r = try makeRouter(.dualMap, instances: 4) { $0.ttftSLOMilliseconds = 1000; $0.prefillMillisecondsPerToken = 0.1 }
        // Ten requests whose ring-1 candidate is slot `hot`, each of 1000 uncached tokens.
        var hot = -1
        let queues = ArrayQueues(slots: 64)
        var id = 0
        var k: UInt64 = 0
        while queues.queues.reduce(0, { $0 + $1.count }) < 10 {
            let h = chain(1000 + k, count: 4)
            k += 1
            let (a, _) = r.candidates(r.key(of: h.withUnsafeBufferPointer { $0 }))
            if hot < 0 { hot = a }
            guard a == hot else { continue }
            queues.queues[hot].append((id, h, 1000))
            id += 1
        }
        r.report(slot: hot, load: InstanceLoad(pendingPrefillTokens: 10_000, activeRequests: 10, waitingRequests: 10))
        let moved = r.rebalance(queues)
        #expect(moved == 5, "moves until the hot instance is at the threshold: 10,000 -> 5,000 tokens")
        #expect(queues.queues[hot].count == 5)
        #expect(r.loads[hot].pendingPrefillTokens == 5000)
        #expect(r.loads[hot].activeRequests == 5 && r.loads[hot].waitingRequests == 5, "each move takes a waiting request along")
        #expect((0..<4).reduce(0) { $0 + r.loads[$1].waitingRequests } == 10)
        // Every moved request went to its own other candidate, which stays under the threshold.
        for s in 0..<4 where s != hot {
            for q in queues.queues[s] {
                let (a, b) = r.candidates(r.key(of: q.hashes.withUnsafeBufferPointer { $0 }))
                #expect(a == hot && b == s)
            }
            #expect(r.loads[s].pendingPrefillTokens <= 5000)
        }
    }

    @Test func whenBothCandidatesAreOverloadedRequestsMoveToTheRingNeighbour() throws {
        let r = try makeRouter(.dualMap, instances: 6) { $0.ttftSLOMilliseconds = 1000; $0.prefillMillisecondsPerToken = 0.1 }
        let queues = ArrayQueues(slots: 64)
        // Six requests that all have the same candidate pair (a, b), queued at a.
        var pair: (Int, Int)? = nil
        var k: UInt64 = 0, id = 0
        while queues.queues.reduce(0, { $0 + $1.count }) < 6 {
            let h = chain(9000 + k, count: 4)
            k += 1
            let c = r.candidates(r.key(of: h.withUnsafeBufferPointer { $0 }))
            if pair == nil { pair = c }
            guard c == pair! else { continue }
            queues.queues[c.0].append((id, h, 1000))
            id += 1
        }
        let (a, b) = pair!
        r.report(slot: a, load: InstanceLoad(pendingPrefillTokens: 6000))
        r.report(slot: b, load: InstanceLoad(pendingPrefillTokens: 5500))
        let moved = r.rebalance(queues)
        #expect(moved == 1, "one 1000-token request takes a from 6000 to 5000 pending tokens")
        #expect(queues.queues[a].count == 5 && queues.queues[b].isEmpty, "nothing lands on the overloaded other candidate")
        let overloaded: UInt64 = (1 << UInt64(a)) | (1 << UInt64(b))
        for s in 0..<6 where s != a && s != b {
            for q in queues.queues[s] {
                #expect(s == r.ring1.lookup(r.key(of: q.hashes.withUnsafeBufferPointer { $0 }), excludingMask: overloaded))
            }
        }
    }

    @Test func nothingMovesWhenNoInstanceIsOverloaded() throws {
        let r = try makeRouter(.dualMap, instances: 4) { $0.ttftSLOMilliseconds = 1000; $0.prefillMillisecondsPerToken = 0.1 }
        let queues = ArrayQueues(slots: 64)
        queues.queues[0] = [(0, chain(1, count: 2), 1000)]
        r.report(slot: 0, load: InstanceLoad(pendingPrefillTokens: 5000))
        #expect(r.rebalance(queues) == 0)
    }

    @Test func cheapestRequestsMoveFirst() throws {
        let r = try makeRouter(.dualMap, instances: 4) { $0.ttftSLOMilliseconds = 1000; $0.prefillMillisecondsPerToken = 0.1 }
        let queues = ArrayQueues(slots: 64)
        // Two requests on the same hot slot; the first is cached there (moving it costs its
        // whole prompt), the second is not (moving it costs nothing extra).
        var hot = -1, found: [[UInt64]] = []
        var k: UInt64 = 0
        while found.count < 2 {
            let h = chain(5000 + k, count: 4)
            k += 1
            let (a, _) = r.candidates(r.key(of: h.withUnsafeBufferPointer { $0 }))
            if hot < 0 { hot = a }
            if a == hot { found.append(h) }
        }
        try r.store(found[0], at: r.id(ofSlot: hot))
        queues.queues[hot] = [(0, found[0], 64), (1, found[1], 64)]
        r.report(slot: hot, load: InstanceLoad(pendingPrefillTokens: 5050))
        #expect(r.rebalance(queues) == 1)
        #expect(queues.queues[hot].map(\.id) == [0], "the uncached request moved, the cached one stayed")
    }

    /// With an approximate view, a moved request's blocks are credited where it now runs (found
    /// by helper-127: the instance that computes them got no credit, so the conversation's next
    /// request went back to the one it left). The one it left keeps what its route credited.
    @Test func aMovedRequestsBlocksAreCreditedWhereItRuns() throws {
        let r = try makeRouter(.dualMap, instances: 4) {
            $0.ttftSLOMilliseconds = 1000; $0.prefillMillisecondsPerToken = 0.1; $0.view = .approximate
        }
        let h = chain(4242, count: 4)
        let hot = try h.withUnsafeBufferPointer { (p) throws(KVError) in try r.routeSlot(p, tokens: 64) }
        let queues = ArrayQueues(slots: 64)
        queues.queues[hot].append((1, h, 64))
        r.report(slot: hot, load: InstanceLoad(pendingPrefillTokens: 10_000, activeRequests: 1, waitingRequests: 1))
        #expect(r.rebalance(queues) == 1)
        let target = try #require((0..<4).first { queues.queues[$0].count == 1 })
        #expect(target != hot)
        #expect(h.withUnsafeBufferPointer { r.view.matchedBlocks($0, slot: target) } == 4)
        #expect(h.withUnsafeBufferPointer { r.view.matchedBlocks($0, slot: hot) } == 4)
        #expect((0..<4).filter { $0 != hot && $0 != target }.allSatisfy { s in h.withUnsafeBufferPointer { r.view.matchedBlocks($0, slot: s) } == 0 })
    }
}
