import KVCache

/// `kvc_event` (include/kvcache.h), which `KVEvent` is laid out as (its doc): the engine's
/// calls copy events as they are, and `kvc_router_observe_events` reads them in place.
enum EventLayout {
    /// Byte offset of `kind`, which `kvc_router_observe_events` checks before reading events
    /// as `KVEvent`s.
    static let kind = 0
    /// `sizeof(kvc_event)`, the array stride.
    static let size = 24
    /// Events copied per batch from a misaligned array (`withEventBatches`) through a scratch
    /// buffer of 32 * 24 bytes, under the 1 KiB that `withUnsafeTemporaryAllocation` always
    /// puts on the stack, so that observing allocates nothing whatever the caller's count.
    static let chunk = 32
}

/// Calls `body` with the caller's `n` events at `events` as `KVEvent`s, in order: once with
/// the array itself when it is aligned for `KVEvent` (every C array of `kvc_event` is: 8 bytes),
/// else, so that a misaligned pointer is still accepted as before, with `EventLayout.chunk`
/// events at a time copied to an aligned stack buffer. Precondition: every event's kind is a
/// `KVEvent.Kind` (checked by the caller; `KVEvent.kind` traps on another). Cost: none per
/// event when aligned; a copy of 24 bytes per event otherwise. Allocates nothing.
@inline(__always) func withEventBatches(_ events: UnsafeRawPointer, _ n: Int, _ body: (UnsafeBufferPointer<KVEvent>) -> Void) {
    if Int(bitPattern: events) & (MemoryLayout<KVEvent>.alignment - 1) == 0 {
        events.withMemoryRebound(to: KVEvent.self, capacity: n) { body(UnsafeBufferPointer(start: $0, count: n)) }
        return
    }
    withUnsafeTemporaryAllocation(of: KVEvent.self, capacity: EventLayout.chunk) { scratch in
        var done = 0
        while done < n {
            let m = min(EventLayout.chunk, n - done)
            UnsafeMutableRawPointer(scratch.baseAddress!).copyMemory(from: events + done * EventLayout.size, byteCount: m * EventLayout.size)
            body(UnsafeBufferPointer(rebasing: scratch[0..<m]))
            done += m
        }
    }
}

/// The caller's `kvc_event` array of `capacity` entries as `KVEvent`s, which have its layout
/// (KVEvent's doc).
@inline(__always) private func eventArray(_ out: UnsafeMutableRawPointer, _ capacity: Int) -> UnsafeMutableBufferPointer<KVEvent> {
    UnsafeMutableBufferPointer(start: out.bindMemory(to: KVEvent.self, capacity: capacity), count: capacity)
}

/// The checked arguments of a call writing up to `capacity` events to `out` and their count
/// to `*nEvents`: the count's pointer and the capacity (`out` may be NULL only when capacity
/// is 0).
private func eventArguments(
    _ out: UnsafeMutableRawPointer?, _ capacity: Int, _ nEvents: UnsafeMutablePointer<Int>?
) throws(KVError) -> (UnsafeMutablePointer<Int>, Int) {
    let nEvents = try required(nEvents, "n_events")
    let capacity = try count(capacity, stride: EventLayout.size, "capacity")
    guard capacity == 0 || out != nil else { throw KVError(.invalidArgument, "out is NULL but capacity is \(capacity)") }
    return (nEvents, capacity)
}

/// `kvc_engine_index_events`: `Engine.indexEvents` (both tiers); BUFFER_TOO_SMALL with the full
/// count when `capacity` is short (the prefix that fits is written).
@c public func kvc_engine_index_events(
    _ e: OpaquePointer?, _ out: UnsafeMutableRawPointer?, _ capacity: Int, _ nEvents: UnsafeMutablePointer<Int>?
) -> kvc_status {
    status("kvc_engine_index_events") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in _ = try indexEvents(engine, out, capacity, nEvents) }
    }
}

/// `kvc_engine_index_events_seq`: `kvc_engine_index_events` with the dump's position in the
/// engine's event stream (`Engine.numberedIndexEvents`), written only on success.
@c public func kvc_engine_index_events_seq(
    _ e: OpaquePointer?, _ out: UnsafeMutableRawPointer?, _ capacity: Int, _ nEvents: UnsafeMutablePointer<Int>?,
    _ epoch: UnsafeMutablePointer<UInt64>?, _ nextSeq: UnsafeMutablePointer<UInt64>?
) -> kvc_status {
    status("kvc_engine_index_events_seq") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let epoch = try required(epoch, "epoch"), nextSeq = try required(nextSeq, "next_seq")
            nextSeq.pointee = try indexEvents(engine, out, capacity, nEvents)
            epoch.pointee = engine.eventEpoch
        }
    }
}

/// Writes `engine`'s index dump to `out` and its count to `*nEvents` (BUFFER_TOO_SMALL with
/// the full count when `capacity` is short, the prefix that fits written); returns the number
/// of the first event pushed after the dump.
private func indexEvents(
    _ engine: Engine, _ out: UnsafeMutableRawPointer?, _ capacity: Int, _ nEvents: UnsafeMutablePointer<Int>?
) throws(KVError) -> UInt64 {
    let (nEvents, capacity) = try eventArguments(out, capacity, nEvents)
    let (events, next) = engine.numberedIndexEvents()
    if let out { _ = eventArray(out, capacity).initialize(from: events.prefix(capacity)) }
    nEvents.pointee = events.count
    if events.count > capacity { throw KVError(.bufferTooSmall, "\(events.count) events, capacity \(capacity)") }
    return next
}

/// `kvc_drain_events`: moves up to `capacity` events, oldest first, from the engine's queue
/// into `out` as they are (`Engine.drainEvents`: at most two copies).
@c public func kvc_drain_events(
    _ e: OpaquePointer?, _ out: UnsafeMutableRawPointer?, _ capacity: Int, _ nEvents: UnsafeMutablePointer<Int>?
) -> kvc_status {
    status("kvc_drain_events") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in _ = try drain(engine, out, capacity, nEvents) }
    }
}

/// `kvc_drain_events_seq`: `kvc_drain_events` with the engine's epoch and the number of
/// `out[0]` (`Engine.drainNumberedEvents`; with nothing drained, the number the next event
/// gets).
@c public func kvc_drain_events_seq(
    _ e: OpaquePointer?, _ out: UnsafeMutableRawPointer?, _ capacity: Int, _ nEvents: UnsafeMutablePointer<Int>?,
    _ epoch: UnsafeMutablePointer<UInt64>?, _ firstSeq: UnsafeMutablePointer<UInt64>?
) -> kvc_status {
    status("kvc_drain_events_seq") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let epoch = try required(epoch, "epoch"), firstSeq = try required(firstSeq, "first_seq")
            firstSeq.pointee = try drain(engine, out, capacity, nEvents)
            epoch.pointee = engine.eventEpoch
        }
    }
}

/// Moves up to `capacity` pending events into `out` and their count to `*nEvents`; returns
/// the number of the first (`Engine.drainNumberedEvents`).
private func drain(
    _ engine: Engine, _ out: UnsafeMutableRawPointer?, _ capacity: Int, _ nEvents: UnsafeMutablePointer<Int>?
) throws(KVError) -> UInt64 {
    let (nEvents, capacity) = try eventArguments(out, capacity, nEvents)
    let into = out.map { eventArray($0, capacity) } ?? UnsafeMutableBufferPointer(start: nil, count: 0)
    let (n, first) = engine.drainNumberedEvents(into: into)
    nEvents.pointee = n
    return first
}
