/// A bounded FIFO of KV events awaiting `drain`. When the server falls behind and the queue is
/// full, the oldest event is dropped and counted, so memory stays bounded and the loss is visible.
/// No allocation after the engine's creation (`grow`). Events are numbered from 1 in push
/// order (`pushed`), dropped ones included, so a consumer of numbered batches sees a drop as a
/// gap. Not thread-safe.
final class EventQueue {
    /// The buffer of `baseSlots` events allocated at creation, kept for the queue's life.
    private let base: UnsafeMutablePointer<KVEvent>
    private let baseSlots: Int
    /// The events the queue holds once the creation's room (`init`) and any burst (`grow`)
    /// are given back: the engine's `event_capacity`.
    private let baseCapacity: Int
    /// `base`, or a burst's buffer of `slots` events (`grow`) until a drain leaves no more
    /// pending events than `baseCapacity`.
    private var buffer: UnsafeMutablePointer<KVEvent>
    /// Events in `buffer`: the ring's length.
    private var slots: Int
    /// Events held before the oldest is dropped: `baseCapacity`, plus the creation's room and
    /// a burst's until a drain leaves at most `baseCapacity` pending. At most `slots`.
    private(set) var capacity: Int
    private var head = 0
    private(set) var count = 0
    /// Events dropped because the queue was full.
    private(set) var dropped: UInt64 = 0
    /// Events pushed so far: the number of the last one (0 before the first).
    private(set) var pushed: UInt64 = 0

    /// The number of the oldest pending event, or the one the next push gets when none is
    /// pending. O(1).
    var firstPending: UInt64 { pushed - UInt64(count) + 1 }

    /// The bytes the queue's buffers hold: the base's, plus a burst's while it is live. For
    /// tests. O(1).
    var heldBytes: Int { (baseSlots + (buffer == base ? 0 : slots)) * MemoryLayout<KVEvent>.stride }

    /// A queue holding at most `capacity` events (at least 1), with `room` more until the
    /// first drain that leaves at most `capacity` pending: for the events the engine pushes as
    /// it is created, so that they take none of the usual capacity. Allocates `capacity + room`
    /// events of 24 bytes, kept for the queue's life.
    /// Throws `outOfMemory` when they cannot be allocated (`CheckedAllocations`).
    init(capacity: Int, room: Int = 0) throws(KVError) {
        baseCapacity = max(1, capacity)
        baseSlots = baseCapacity + max(0, room)
        slots = baseSlots
        self.capacity = baseSlots
        let a = CheckedAllocations()
        base = try a.allocate(count: baseSlots, "the event queue of \(baseSlots) events")
        a.keep()
        buffer = base
    }

    deinit {
        if buffer != base { buffer.deallocate() }
        base.deallocate()
    }

    /// Adds room for `extra` events, keeping the pending ones in order: for a burst of known size
    /// while the engine is created (a reopened disk tier announces every block it found,
    /// `DiskTier.recover`), so that none of it is dropped before the first drain and the usual
    /// capacity stays for what follows. Allocates a burst buffer of `capacity + extra` events
    /// (24 bytes each) beside the base, which stays: creation only. The burst's buffer is freed
    /// by the first drain that leaves no more pending events than `baseCapacity` (`drain`).
    /// O(count).
    /// Throws `outOfMemory`, changing nothing, when the larger queue cannot be allocated.
    func grow(by extra: Int, _ what: @autoclosure () -> String) throws(KVError) {
        guard extra > 0 else { return }
        let a = CheckedAllocations()
        let bigger: UnsafeMutablePointer<KVEvent> = try a.allocate(count: capacity + extra, "the event queue of \(capacity + extra) events (\(what()))")
        a.keep()
        copyPending(count, to: bigger)
        if buffer != base { buffer.deallocate() }
        buffer = bigger
        capacity += extra
        slots = capacity
        head = 0
    }

    /// Appends an event, dropping the oldest when full. O(1), no division.
    func push(_ event: KVEvent) {
        if count == capacity {
            head = wrapped(head + 1)
            count -= 1
            dropped += 1
        }
        (buffer + wrapped(head + count)).initialize(to: event)
        count += 1
        pushed += 1
    }

    /// Moves up to `out.count` events, oldest first, into `out` (whose memory may be
    /// uninitialised: `KVEvent` is trivial); returns how many. Two block copies at most (the
    /// run up to the buffer's end, then the wrapped run), no division. While a burst's buffer
    /// is live (`grow`), a drain that leaves no more pending events than `baseCapacity` moves
    /// them into the base (O(count), at most `baseCapacity`; order and numbering unchanged)
    /// and frees the burst's buffer: a free, never an allocation. Such a drain also gives
    /// back the creation's room (`init`): the queue then holds `baseCapacity` events.
    func drain(into out: UnsafeMutableBufferPointer<KVEvent>) -> Int {
        let n = min(out.count, count)
        if n > 0, let to = out.baseAddress {
            copyPending(n, to: to)
            head = wrapped(head + n)
            count -= n
        }
        if capacity > baseCapacity && count <= baseCapacity {
            if buffer != base { endBurst() }
            capacity = baseCapacity
        }
        return n
    }

    /// Moves the pending events into the base and frees the burst's buffer.
    private func endBurst() {
        copyPending(count, to: base)
        buffer.deallocate()
        buffer = base
        slots = baseSlots
        head = 0
    }

    /// Copies the `n` oldest pending events (`n <= count`) in order to `to`, leaving the queue
    /// as it is: two block copies at most.
    private func copyPending(_ n: Int, to: UnsafeMutablePointer<KVEvent>) {
        let first = min(n, slots - head)
        to.initialize(from: buffer + head, count: first)
        (to + first).initialize(from: buffer, count: n - first)
    }

    /// `index` (below `2 * slots`) as a buffer index.
    @inline(__always) private func wrapped(_ index: Int) -> Int { index >= slots ? index - slots : index }
}
