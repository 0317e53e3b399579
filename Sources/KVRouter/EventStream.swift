import KVCache

/// A batch of KV events handed over in one or more pieces: `events(from, body)` calls `body`
/// with the batch's events from index `from` on, in order (the C ABI copies a misaligned
/// caller's array in pieces, `withEventBatches`; a Swift buffer is one piece).
public typealias EventPieces = (_ from: Int, _ body: (UnsafeBufferPointer<KVEvent>) -> Void) -> Void

/// The numbered KV-event stream an instance slot's view was built from: the engine's epoch
/// (`Engine.eventEpoch`: `EventEpoch`, greater for an engine created later) and the number of
/// the next event expected of it (`Engine.drainNumberedEvents`: numbered from 1, consecutive,
/// a drop leaving a gap). A batch of a smaller epoch is a dead engine's, late. vLLM's
/// KV-event publisher numbers its batches and Dynamo its workers' events for the same reason:
/// an event bus delivers at least once, in order per publisher, and a restarted publisher's
/// stream starts again. (Epochs were random, and the slot remembered its last four: an older
/// engine's first batch replayed after a resync, or five restarts later, was taken for a new
/// engine's and the live engine's batches for stale, for good; a review of the change.)
struct EventStream {
    /// The epoch whose events the view holds, 0 for none (a new slot: its first batch must
    /// start a stream, at event 1, or a resync sets one).
    private(set) var epoch: UInt64 = 0
    /// The number of the next event of `epoch` the view lacks.
    private(set) var next: UInt64 = 0

    /// What to do with a batch of `count` > 0 events numbered `first` ..< `first + count`.
    enum Admission: Equatable {
        /// Apply the batch's events from index `skip` on (those before are applied already),
        /// then `take` the stream to `first + count`.
        case apply(skip: Int)
        /// Every event is applied already (redelivered): nothing to do.
        case duplicate
        /// An earlier engine's batch: nothing to do.
        case stale
    }

    /// Decides a batch of `epoch` numbered `first` ..< `first + count` (`count` > 0, no
    /// overflow), changing nothing: same epoch, events below `next` are duplicates and the
    /// rest applies; a smaller epoch is stale; a greater one starting at event 1 is a new
    /// engine (its first event clears the view). Throws `notFound` for a gap (the batch
    /// starts past `next`, or at a greater epoch's event above 1), naming the missing events
    /// and the remedy. O(1).
    func admit(instance: UInt32, epoch: UInt64, first: UInt64, count: Int) throws(KVError) -> Admission {
        if epoch == self.epoch {
            guard first > next else { return first + UInt64(count) <= next ? .duplicate : .apply(skip: Int(next - first)) }
            throw gap(instance, epoch, from: next, to: first, held: "has applied its events up to \(next - 1)")
        }
        if isStale(epoch) { return .stale }
        if first == 1 { return .apply(skip: 0) }
        let held = self.epoch == 0 ? "holds no numbered stream of it" : "holds epoch \(hex(self.epoch)) up to event \(next - 1)"
        throw gap(instance, epoch, from: 1, to: first, held: held)
    }

    /// Whether `epoch` is an engine's older than the one whose stream the view holds.
    func isStale(_ epoch: UInt64) -> Bool { epoch < self.epoch }

    /// Records that the view holds `epoch`'s events before `next`. O(1).
    mutating func take(epoch: UInt64, next: UInt64) {
        self.epoch = epoch
        self.next = next
    }

    private func gap(_ instance: UInt32, _ epoch: UInt64, from: UInt64, to first: UInt64, held: String) -> KVError {
        KVError(.notFound, "events \(from)...\(first - 1) of epoch \(hex(epoch)) of instance \(instance) are missing (this batch "
                + "starts at \(first), the router \(held)): nothing applied; resync the instance from its engine's dump "
                + "(kvc_engine_index_events_seq, then kvc_router_resync_instance)")
    }
}

/// `value` as 0x and 16 hex digits.
private func hex(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: 16 - digits.count) + digits
}

extension Router {
    /// Applies instance `id`'s batch of KV events numbered `firstSequence` ..<
    /// `firstSequence + events.count` of the engine stream `epoch` (`Engine.drainNumberedEvents`),
    /// so that a bus delivering batches at least once, late, or after a restart leaves the view
    /// exact: a batch repeating events the view holds applies only its new tail (the repeated
    /// events counted in `duplicateEvents`); a batch of a smaller epoch than the instance's
    /// (an engine created before its current one, `EventEpoch`) is ignored (`staleEvents`); a
    /// greater epoch's batch starting at event 1 is a new engine's, applied (its first event,
    /// an `allCleared`, empties the view) and its epoch taken. Anything else is a gap, refused (`refusedGaps`): resync
    /// (`resync`). `addInstance` and `removeInstance` reset the stream: the first batch after
    /// must start at event 1 of an engine, or follow a resync. An empty batch changes nothing.
    /// Throws `notFound` (no such instance, or a gap: the message names the missing events),
    /// `invalidArgument` (epoch 0, firstSequence 0, numbers past `UInt64.max`), `outOfMemory`
    /// (`checkRoom`); nothing changes then. Cost: `observe(_:events:)`'s for the events applied,
    /// O(1) for those skipped.
    public func observe(_ id: UInt32, epoch: UInt64, firstSequence: UInt64, events: UnsafeBufferPointer<KVEvent>) throws(KVError) {
        try observe(slot: liveSlot(id), epoch: epoch, firstSequence: firstSequence, count: events.count) { from, body in
            body(UnsafeBufferPointer(rebasing: events[from...]))
        }
    }

    /// `observe(_:epoch:firstSequence:events:)` for live slot `slot`, the batch's `count`
    /// events handed over by `events` (`EventPieces`).
    package func observe(slot s: Int, epoch: UInt64, firstSequence first: UInt64, count: Int, _ events: EventPieces) throws(KVError) {
        try checkPosition(epoch: epoch, sequence: first, count: count, "first_seq")
        guard count > 0 else { return }
        let admission: EventStream.Admission
        do throws(KVError) {
            admission = try streams[s].admit(instance: id(ofSlot: s), epoch: epoch, first: first, count: count)
        } catch {
            refusedGaps += 1
            throw error
        }
        switch admission {
        case .duplicate: duplicateEvents += UInt64(count)
        case .stale: staleEvents += UInt64(count)
        case .apply(let skip):
            try checkRoom(slot: s, from: skip, events)
            events(skip) { for e in $0 { view.apply(e, slot: s) } }
            duplicateEvents += UInt64(skip)
            streams[s].take(epoch: epoch, next: first + UInt64(count))
        }
    }

    /// Replaces instance `id`'s view with an engine's dump (`Engine.numberedIndexEvents`:
    /// `events` starts with its memory tier's `allCleared`) taken at `nextSequence` of stream
    /// `epoch`, and sets the stream there: the next batch applied starts at or straddles
    /// `nextSequence` (earlier events are duplicates: the dump holds them). The remedy for a
    /// refused gap, a view rebuilt after the router restarted, or an instance added while its
    /// engine was running. A dump of a smaller epoch than the instance's is ignored
    /// (`staleEvents`). Throws `notFound`, `invalidArgument` (epoch 0, nextSequence 0, a dump
    /// not starting with a memory-tier `allCleared`), `outOfMemory` (`checkRoom`, judged after
    /// the clear); nothing changes then. Cost: `observe(_:events:)`'s.
    public func resync(_ id: UInt32, epoch: UInt64, nextSequence: UInt64, events: UnsafeBufferPointer<KVEvent>) throws(KVError) {
        try resync(slot: liveSlot(id), epoch: epoch, nextSequence: nextSequence, count: events.count) { from, body in
            body(UnsafeBufferPointer(rebasing: events[from...]))
        }
    }

    /// `resync(_:epoch:nextSequence:events:)` for live slot `slot`, the dump's `count` events
    /// handed over by `events` (`EventPieces`).
    package func resync(slot s: Int, epoch: UInt64, nextSequence: UInt64, count: Int, _ events: EventPieces) throws(KVError) {
        try checkPosition(epoch: epoch, sequence: nextSequence, count: 0, "next_seq")
        var head: KVEvent?
        events(0) { batch in if head == nil { head = batch.first } }
        guard let head, head.kind == .allCleared, head.tier == KVEvent.memoryTier else {
            throw KVError(.invalidArgument, "a dump starts with its memory tier's all-cleared event (kvc_engine_index_events_seq); "
                          + "these \(count) events do not")
        }
        if streams[s].isStale(epoch) {
            staleEvents += UInt64(count)
            return
        }
        try checkRoom(slot: s, events)
        events(0) { for e in $0 { view.apply(e, slot: s) } }
        streams[s].take(epoch: epoch, next: nextSequence)
    }

    /// Refuses (`invalidArgument`) epoch 0 (no engine's), event number 0 (streams count from
    /// 1) and a batch of `count` events numbered past `UInt64.max`.
    private func checkPosition(epoch: UInt64, sequence: UInt64, count: Int, _ name: String) throws(KVError) {
        guard epoch != 0 else { throw KVError(.invalidArgument, "epoch 0 names no engine's event stream (engines' epochs are not 0)") }
        guard sequence != 0 else { throw KVError(.invalidArgument, "\(name) 0: events are numbered from 1") }
        guard UInt64(count) <= UInt64.max - sequence else {
            throw KVError(.invalidArgument, "\(name) \(sequence) + \(count) events is past the largest event number")
        }
    }
}
