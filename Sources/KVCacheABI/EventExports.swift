import KVCache

/// Byte offsets of `kvc_event` (include/kvcache.h). `KVEvent` is converted field by field:
/// its Swift layout is not `kvc_event`'s (`Kind` is stored as a one-byte tag).
enum EventLayout {
    static let kind = 0
    static let tier = 4
    static let blockHash = 8
    static let parentHash = 16
    /// `sizeof(kvc_event)`, the array stride.
    static let size = 24
    /// Events moved per `Engine.drainEvents` call through a scratch buffer of 32 * 24 bytes,
    /// under the 1 KiB that `withUnsafeTemporaryAllocation` always puts on the stack, so that
    /// draining allocates nothing whatever the caller's capacity.
    static let chunk = 32
}

/// Writes `event` as one `kvc_event` at `slot`.
@inline(__always) private func store(_ event: KVEvent, at slot: UnsafeMutableRawPointer) {
    slot.storeBytes(of: event.kind.rawValue, toByteOffset: EventLayout.kind, as: UInt32.self)
    slot.storeBytes(of: event.tier, toByteOffset: EventLayout.tier, as: UInt32.self)
    slot.storeBytes(of: event.blockHash, toByteOffset: EventLayout.blockHash, as: UInt64.self)
    slot.storeBytes(of: event.parentHash, toByteOffset: EventLayout.parentHash, as: UInt64.self)
}

/// The checked arguments of a call writing up to `capacity` events to `out` and their count
/// to `*nEvents`: the count's pointer and the capacity (`out` may be NULL only when capacity
/// is 0).
private func eventArguments(
    _ out: UnsafeMutableRawPointer?, _ capacity: Int, _ nEvents: UnsafeMutablePointer<Int>?
) throws(KVError) -> (UnsafeMutablePointer<Int>, Int) {
    let nEvents = try required(nEvents, "n_events")
    let capacity = try size(capacity, "capacity")
    guard capacity == 0 || out != nil else { throw KVError(.invalidArgument, "out is NULL but capacity is \(capacity)") }
    return (nEvents, capacity)
}

/// `kvc_engine_index_events`: `Engine.indexEvents` (both tiers); BUFFER_TOO_SMALL with the full
/// count when `capacity` is short (the prefix that fits is written).
@c public func kvc_engine_index_events(
    _ e: OpaquePointer?, _ out: UnsafeMutableRawPointer?, _ capacity: Int, _ nEvents: UnsafeMutablePointer<Int>?
) -> kvc_status {
    status("kvc_engine_index_events") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let (nEvents, capacity) = try eventArguments(out, capacity, nEvents)
            let events = engine.indexEvents()
            if let out { for (i, event) in events.prefix(capacity).enumerated() { store(event, at: out + i * EventLayout.size) } }
            nEvents.pointee = events.count
            if events.count > capacity { throw KVError(.bufferTooSmall, "\(events.count) events, capacity \(capacity)") }
        }
    }
}

/// `kvc_drain_events`: moves up to `capacity` events, oldest first, from the engine into `out`
/// in chunks of `EventLayout.chunk`, stopping early once the engine's queue is empty. The
/// chunk buffer is left uninitialised (`KVEvent` is trivial; the drain writes what is read).
@c public func kvc_drain_events(
    _ e: OpaquePointer?, _ out: UnsafeMutableRawPointer?, _ capacity: Int, _ nEvents: UnsafeMutablePointer<Int>?
) -> kvc_status {
    status("kvc_drain_events") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let (nEvents, capacity) = try eventArguments(out, capacity, nEvents)
            guard let out, capacity > 0 else {
                nEvents.pointee = 0
                return
            }
            let drained = withUnsafeTemporaryAllocation(of: KVEvent.self, capacity: min(capacity, EventLayout.chunk)) {
                scratch -> Int in
                var total = 0
                while total < capacity {
                    let want = min(scratch.count, capacity - total)
                    let got = engine.drainEvents(into: UnsafeMutableBufferPointer(rebasing: scratch[0..<want]))
                    for (i, event) in scratch[0..<got].enumerated() { store(event, at: out + (total + i) * EventLayout.size) }
                    total += got
                    if got < want { break }
                }
                return total
            }
            nEvents.pointee = drained
        }
    }
}
