import TestSupport
import Testing
@testable import KVCache

/// A burst's room is given back: `EventQueue.grow` makes room for a restart's events beside
/// the queue's base buffer, and once a drain leaves no more pending events than the base
/// holds, they move back into it and the burst's buffer is freed, with the events' order and
/// numbering unchanged.
@Suite("Event queue: a drained burst gives its room back")
struct EventQueueBurstTests {
    static let eventBytes = MemoryLayout<KVEvent>.stride

    static func event(_ hash: UInt64) -> KVEvent { KVEvent(kind: .blockStored, blockHash: hash, parentHash: hash &- 1) }

    /// Up to `n` pending events, oldest first.
    static func drain(_ q: EventQueue, _ n: Int) -> [KVEvent] {
        var out = [KVEvent](repeating: KVEvent(kind: .allCleared, blockHash: 0, parentHash: 0), count: n)
        let got = out.withUnsafeMutableBufferPointer { q.drain(into: $0) }
        return Array(out.prefix(got))
    }

    /// A queue of 4 grown by 100 holds 104 events beside its base while more than 4 are
    /// pending, and only its base once a drain leaves 4.
    @Test func aDrainedBurstFreesItsBuffer() throws {
        let q = try EventQueue(capacity: 4)
        #expect(q.heldBytes == 4 * Self.eventBytes)
        for h in 1...3 { q.push(Self.event(UInt64(h))) }
        try q.grow(by: 100, "test")
        for h in 4...103 { q.push(Self.event(UInt64(h))) }
        #expect(q.capacity == 104 && q.dropped == 0)
        #expect(Self.drain(q, 50).map(\.blockHash) == (1...50).map { UInt64($0) })
        #expect(q.capacity == 104, "53 pending: more than the base holds")
        #expect(Self.drain(q, 49).map(\.blockHash) == (51...99).map { UInt64($0) })
        #expect(q.capacity == 4 && q.heldBytes == 4 * Self.eventBytes, "4 pending: back in the base")
        #expect(q.firstPending == 100 && q.count == 4)
        #expect(Self.drain(q, 10).map(\.blockHash) == [100, 101, 102, 103])
        #expect(q.pushed == 103 && q.dropped == 0 && q.firstPending == 104)
    }

    /// A head wrapped before the grow, partial drains, pushes while the burst is live, drops
    /// in the burst and after the return: the events come out in push order, numbered as
    /// pushed.
    @Test func orderAndNumberingSurviveTheReturnToTheBase() throws {
        let q = try EventQueue(capacity: 3)
        for h in 1...5 { q.push(Self.event(UInt64(h))) }  // wrapped: 3, 4, 5
        try q.grow(by: 4, "test")
        for h in 6...10 { q.push(Self.event(UInt64(h))) }  // 7 fit; 10 drops 3
        #expect(q.dropped == 3 && q.firstPending == 4)
        #expect(Self.drain(q, 2).map(\.blockHash) == [4, 5])
        q.push(Self.event(11))  // 6 pending, in the burst's buffer
        #expect(q.capacity == 7 && q.firstPending == 6)
        #expect(Self.drain(q, 3).map(\.blockHash) == [6, 7, 8])
        #expect(q.capacity == 3 && q.heldBytes == 3 * Self.eventBytes && q.firstPending == 9)
        q.push(Self.event(12))  // the base is full: 9 goes
        #expect(q.dropped == 4 && q.firstPending == 10)
        #expect(Self.drain(q, 8).map(\.blockHash) == [10, 11, 12])
        #expect(q.pushed == 12 && q.firstPending == 13 && q.count == 0)
    }

    /// Random pushes, drains and grows against an array queue of the same rule (room of the
    /// base plus the grows since the last return; back to the base once a drain leaves no
    /// more than it holds; the oldest dropped when full), from a queue with `room` for the
    /// creation's events beside its base, which that return gives back too.
    @Test(arguments: [1, 2, 5, 16], [0, 1, 3])
    func matchesAnArrayQueue(base: Int, room: Int) throws {
        var rng = SplitMix64(seed: UInt64(base) &* 0x9E37_79B9 &+ UInt64(room))
        let q = try EventQueue(capacity: base, room: room)
        var model: [KVEvent] = [], capacity = base + room, dropped: UInt64 = 0, pushed: UInt64 = 0
        for _ in 0..<20_000 {
            switch rng.next() % 16 {
            case 0:
                let extra = Int(rng.next() % UInt64(4 * base + 8)) + 1
                try q.grow(by: extra, "test")
                capacity += extra
            case 1...8:
                pushed += 1
                if model.count == capacity {
                    model.removeFirst()
                    dropped += 1
                }
                model.append(Self.event(pushed))
                q.push(Self.event(pushed))
            default:
                let n = Int(rng.next() % UInt64(2 * base + 3))
                let want = Array(model.prefix(n))
                model.removeFirst(want.count)
                if model.count <= base { capacity = base }
                #expect(Self.drain(q, n) == want)
            }
            #expect(q.count == model.count && q.capacity == capacity && q.dropped == dropped && q.pushed == pushed)
            #expect(q.firstPending == pushed - UInt64(model.count) + 1)
        }
        #expect(Self.drain(q, model.count) == model)
        #expect(q.heldBytes == (base + room) * Self.eventBytes)
    }

    /// Through the engine: a reopened disk tier of 10 blocks grows the queue for its events;
    /// once they are drained the queue holds its base alone (`eventCapacity` + 1,
    /// `Engine.init`).
    @Test(arguments: [Layout.paged, .contiguous])
    func aRestartsEventsDrainedLeaveTheBaseQueue(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var config = offloadConfig(layout, dir: dir.path)
        config.eventCapacity = 4
        try spillPrompt(try Engine(config), 1, tokens(41, seed: 80))  // 10 blocks; closed at once
        let e = try Engine(config)
        let base = (config.eventCapacity + 1) * Self.eventBytes
        #expect(e.blocks.events.heldBytes > base, "grown for the 12 events of the restart")
        let events = drainAll(e)
        #expect(events.count == 12 && e.stats().eventsDropped == 0)
        #expect(e.blocks.events.heldBytes == base)
    }
}
