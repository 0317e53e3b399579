import Testing
@testable import KVCache

/// `PendingReads`, the ring of reads waiting for a staging buffer: first in, first out, across
/// the end of its storage, and a cancellation keeps the others' order.
@Suite("Pending-read queue")
struct PendingReadQueueTests {
    private func entry(_ slot: Int32, seq: Int32) -> PendingReads.Entry {
        PendingReads.Entry(read: PeerRead(peer: -1, slot: slot, hash: 0, parent: 0, generation: 0, checksum: 0),
                           target: LoadTarget(block: slot, slot: seq, position: 0, tokens: 4))
    }

    private func drain(_ q: PendingReads) -> [Int32] {
        var slots: [Int32] = []
        while !q.isEmpty { slots.append(q.pop().read.slot) }
        return slots
    }

    @Test func readsComeOutInTheOrderTheyWereQueuedAcrossTheRingsEnd() throws {
        let q = try PendingReads(capacity: 4)
        for s: Int32 in 0..<3 { q.push(entry(s, seq: 0)) }
        #expect(q.pop().read.slot == 0 && q.pop().read.slot == 1)
        for s: Int32 in 3..<6 { q.push(entry(s, seq: 0)) }  // wraps around
        #expect(q.count == 4)
        #expect(drain(q) == [2, 3, 4, 5])
    }

    @Test func cancellingOneSequencesReadsKeepsTheOthersInOrder() throws {
        let q = try PendingReads(capacity: 8)
        for s: Int32 in 0..<4 { q.push(entry(s, seq: 0)) }
        for _ in 0..<3 { _ = q.pop() }
        for s: Int32 in 4..<10 { q.push(entry(s, seq: s % 2 == 0 ? 1 : 2)) }  // 3...9 queued, wrapping
        var seen: [Int32] = []
        let removed = q.remove { e in
            seen.append(e.read.slot)
            return e.target.slot == 1
        }
        #expect(seen == [3, 4, 5, 6, 7, 8, 9], "called once per read, oldest first")
        #expect(removed == 3 && q.count == 4)
        #expect(drain(q) == [3, 5, 7, 9])
    }
}
