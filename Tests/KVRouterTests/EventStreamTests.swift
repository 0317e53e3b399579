import Glibc
import KVCache
import Testing
@testable import KVRouter

/// Numbered KV-event batches (`Router.observe(_:epoch:firstSequence:events:)`, `resync`) through
/// what a real event bus does: redelivery, a dead engine's late batch, lost batches, restarts
/// the control plane reports late. The unnumbered `observe` applied each as new (revchurn:
/// ghost credit, or every block's credit lost).
@Suite struct EventStreamTests {
    private static let clear = KVEvent(kind: .allCleared, blockHash: 0, parentHash: 0)
    private static func stored(_ hashes: ClosedRange<UInt64>) -> [KVEvent] {
        hashes.map { KVEvent(kind: .blockStored, blockHash: $0, parentHash: 0) }
    }
    private static func removed(_ hashes: ClosedRange<UInt64>) -> [KVEvent] {
        hashes.map { KVEvent(kind: .blockRemoved, blockHash: $0, parentHash: 0) }
    }

    private func observe(_ r: Router, _ epoch: UInt64, _ first: UInt64, _ events: [KVEvent]) throws(KVError) {
        try events.withUnsafeBufferPointer { (b) throws(KVError) in try r.observe(1, epoch: epoch, firstSequence: first, events: b) }
    }

    private func refusal(_ body: () throws(KVError) -> Void) -> KVError? {
        do throws(KVError) { try body() } catch { return error }
        return nil
    }

    /// Hashes instance 1 is credited with, sorted.
    private func held(_ r: Router) -> [UInt64] {
        (1...40).filter { r.view.table.slots($0) & 1 << UInt64(r.slot(of: 1)) != 0 }
    }

    /// Redelivery: a repeated stores batch after the blocks' removal credits nothing again; a
    /// repeated first batch (the clear) clears nothing; a straddling batch applies its tail.
    @Test func redeliveredBatchesAreSkipped() throws {
        let r = try makeRouter(.dualMap, instances: 2)
        try observe(r, 7, 1, [Self.clear] + Self.stored(1...3))  // events 1...4
        try observe(r, 7, 5, Self.removed(2...3))  // 5...6
        try observe(r, 7, 2, Self.stored(1...3))  // redelivered: 2...4
        try observe(r, 7, 1, [Self.clear])  // the first batch again
        #expect(held(r) == [1])
        try observe(r, 7, 5, Self.removed(2...3) + Self.stored(4...5))  // 5...8: 7 and 8 new
        #expect(held(r) == [1, 4, 5])
        #expect(r.duplicateEvents == 3 + 1 + 2 && r.staleEvents == 0 && r.refusedGaps == 0)
    }

    /// A dead engine's last batch delivered after its successor's first is stale: ignored
    /// (it was applied, crediting blocks the instance never held again).
    @Test func aDeadEnginesLateBatchIsStale() throws {
        let r = try makeRouter(.dualMap, instances: 2)
        try observe(r, 7, 1, [Self.clear] + Self.stored(1...3))
        try observe(r, 9, 1, [Self.clear] + Self.stored(10...11))  // the restarted engine
        try observe(r, 7, 5, Self.stored(4...6))  // the dead one's last batch, late
        try observe(r, 7, 1, [Self.clear] + Self.stored(1...3))  // and its first, redelivered
        #expect(held(r) == [10, 11])
        #expect(r.staleEvents == 7 && r.duplicateEvents == 0)
        // Every smaller epoch is stale, however many restarts ago (four epochs were remembered:
        // the fifth back was refused as a gap, and its first batch taken for a new engine's).
        for epoch: UInt64 in 20...23 { try observe(r, epoch, 1, [Self.clear]) }
        try observe(r, 9, 4, Self.stored(12...12))
        try observe(r, 7, 8, Self.stored(12...12))
        try observe(r, 7, 1, [Self.clear] + Self.stored(1...3))
        #expect(held(r).isEmpty && r.refusedGaps == 0 && r.staleEvents == 7 + 1 + 1 + 4)
        try observe(r, 23, 2, Self.stored(13...13))
        #expect(held(r) == [13])
    }

    /// A router restarted from nothing resyncs from the live engine's dump; a dead engine's
    /// first batch replayed afterwards is stale (review of the change: with random epochs it
    /// was taken for a new engine's, and the live engine's batches and dumps, now "earlier",
    /// were ignored for good: its blocks missed, the dead one's credited).
    @Test func aReplayedOlderFirstBatchAfterAResyncIsStale() throws {
        let r = try makeRouter(.dualMap, instances: 2)
        let dump = [Self.clear] + Self.stored(1...2)  // live engine, epoch 50, at event 6
        try dump.withUnsafeBufferPointer { (b) throws(KVError) in try r.resync(1, epoch: 50, nextSequence: 6, events: b) }
        try observe(r, 40, 1, [Self.clear] + Self.stored(30...31))  // the dead engine's, replayed
        try observe(r, 50, 6, Self.stored(3...3))
        #expect(held(r) == [1, 2, 3] && r.staleEvents == 3 && r.refusedGaps == 0)
    }

    /// Engines' epochs grow with their creation: each drawn is greater than every one before
    /// in the process, and within a second of the real-time clock.
    @Test func epochsIncrease() {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let clock = UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
        let epochs = (0..<1000).map { _ in EventEpoch.next() }
        #expect(zip(epochs, epochs.dropFirst()).allSatisfy { $0 < $1 })
        #expect(epochs[0] >= clock && epochs[0] - clock < 1_000_000_000)
    }

    /// A lost batch: the next is refused (`notFound`, the missing events named), changing
    /// nothing; a resync from the engine's dump restores the view and the position, after
    /// which the refused batch, redelivered, is a duplicate and the next applies.
    @Test func aGapIsRefusedUntilAResync() throws {
        let r = try makeRouter(.dualMap, instances: 2)
        try observe(r, 0xAB, 1, [Self.clear] + Self.stored(1...3))  // 1...4
        // 5...6 (stores of 4, 5) lost; 7...8 arrives.
        let error = refusal { () throws(KVError) in try observe(r, 0xAB, 7, Self.removed(1...1) + Self.stored(6...6)) }
        #expect(error?.code == .notFound)
        #expect(error?.message == "events 5...6 of epoch 0x00000000000000ab of instance 1 are missing (this batch starts at 7, "
                + "the router has applied its events up to 4): nothing applied; resync the instance from its engine's dump "
                + "(kvc_engine_index_events_seq, then kvc_router_resync_instance)")
        #expect(held(r) == [1, 2, 3] && r.refusedGaps == 1)
        let dump = [Self.clear] + Self.stored(2...6)  // the engine's index at event 9
        try dump.withUnsafeBufferPointer { (b) throws(KVError) in try r.resync(1, epoch: 0xAB, nextSequence: 9, events: b) }
        #expect(held(r) == [2, 3, 4, 5, 6])
        try observe(r, 0xAB, 7, Self.removed(1...1) + Self.stored(6...6))  // redelivered: in the dump
        try observe(r, 0xAB, 9, Self.stored(7...7))
        #expect(held(r) == [2, 3, 4, 5, 6, 7] && r.duplicateEvents == 2)
    }

    /// The control plane removes and adds the instance after its new engine's first batch
    /// was applied: the add starts with no stream, so the engine's next batch is a gap (not
    /// applied onto an empty view, missing the blocks before it); the resync credits them all.
    @Test func anAddAfterTheFirstBatchNeedsAResync() throws {
        let r = try makeRouter(.dualMap, instances: 2)
        try observe(r, 5, 1, [Self.clear] + Self.stored(1...2))
        try r.removeInstance(1)
        try r.addInstance(1)
        let error = refusal { () throws(KVError) in try observe(r, 5, 4, Self.stored(3...3)) }
        #expect(error?.message.hasPrefix("events 1...3 of epoch 0x0000000000000005 of instance 1 are missing (this batch starts "
                                         + "at 4, the router holds no numbered stream of it)") == true, "\(error?.message ?? "")")
        #expect(held(r).isEmpty)
        let dump = [Self.clear] + Self.stored(1...3)
        try dump.withUnsafeBufferPointer { (b) throws(KVError) in try r.resync(1, epoch: 5, nextSequence: 5, events: b) }
        try observe(r, 5, 4, Self.stored(3...3))
        #expect(held(r) == [1, 2, 3])
    }

    /// Arguments no engine produces are refused; a dump must start with the memory tier's
    /// clear; a dump of an earlier epoch is stale; an empty batch changes nothing.
    @Test func badPositionsAndDumpsAreRefused() throws {
        let r = try makeRouter(.dualMap, instances: 2)
        #expect(refusal { () throws(KVError) in try observe(r, 0, 1, [Self.clear]) }?.code == .invalidArgument)
        #expect(refusal { () throws(KVError) in try observe(r, 3, 0, [Self.clear]) }?.code == .invalidArgument)
        #expect(refusal { () throws(KVError) in try observe(r, 3, .max, [Self.clear]) }?.code == .invalidArgument)
        try observe(r, 3, 9, [])
        let bad = Self.stored(1...2)
        let e = refusal { () throws(KVError) in
            try bad.withUnsafeBufferPointer { (b) throws(KVError) in try r.resync(1, epoch: 3, nextSequence: 3, events: b) }
        }
        #expect(e?.code == .invalidArgument && held(r).isEmpty)
        try observe(r, 3, 1, [Self.clear] + Self.stored(1...1))
        try observe(r, 4, 1, [Self.clear] + Self.stored(2...2))
        let stale = [Self.clear] + Self.stored(1...1)
        try stale.withUnsafeBufferPointer { (b) throws(KVError) in try r.resync(1, epoch: 3, nextSequence: 3, events: b) }
        #expect(held(r) == [2] && r.staleEvents == 2)
    }
}
