/// A bounded FIFO of KV events awaiting `drain`. When the server falls behind and the queue is
/// full, the oldest event is dropped and counted, so memory stays bounded and the loss is visible.
/// No allocation after the engine's creation (`grow`). Events are numbered from 1 in push
/// order (`pushed`), dropped ones included, so a consumer of numbered batches sees a drop as a
/// gap. Not thread-safe.
final class EventQueue {
    /// The buffer of `baseCapacity` events allocated at creation, kept for the queue's life.
    private let base: UnsafeMutablePointer<KVEvent>
    private let baseCapacity: Int
    /// `base`, or a burst's buffer of `capacity` events (`grow`) until a drain leaves no more
    /// pending events than `base` holds.
    private var buffer: UnsafeMutablePointer<KVEvent>
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
    var heldBytes: Int { (baseCapacity + (buffer == base ? 0 : capacity)) * MemoryLayout<KVEvent>.stride }

    /// A queue holding at most `capacity` events.
    /// Throws `outOfMemory` when its 24 bytes per event cannot be allocated (`CheckedAllocations`).
    init(capacity: Int) throws(KVError) {
        baseCapacity = max(1, capacity)
        self.capacity = baseCapacity
        let a = CheckedAllocations()
        base = try a.allocate(count: baseCapacity, "the event queue of \(baseCapacity) events")
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
    /// by the first drain that leaves no more pending events than the base holds (`drain`).
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
    /// is live (`grow`), a drain that leaves no more pending events than the base holds moves
    /// them into the base (O(count), at most the base's capacity; order and numbering
    /// unchanged) and frees the burst's buffer: a free, never an allocation.
    func drain(into out: UnsafeMutableBufferPointer<KVEvent>) -> Int {
        let n = min(out.count, count)
        if n > 0, let to = out.baseAddress {
            copyPending(n, to: to)
            head = wrapped(head + n)
            count -= n
        }
        if buffer != base && count <= baseCapacity { endBurst() }
        return n
    }

    /// Moves the pending events into the base and frees the burst's buffer.
    private func endBurst() {
        copyPending(count, to: base)
        buffer.deallocate()
        buffer = base
        capacity = baseCapacity
        head = 0
    }

    /// Copies the `n` oldest pending events (`n <= count`) in order to `to`, leaving the queue
    /// as it is: two block copies at most.
    private func copyPending(_ n: Int, to: UnsafeMutablePointer<KVEvent>) {
        let first = min(n, capacity - head)
        to.initialize(from: buffer + head, count: first)
        (to + first).initialize(from: buffer, count: n - first)
    }

    /// `index` (below `2 * capacity`) as a buffer index.
    @inline(__always) private func wrapped(_ index: Int) -> Int { index >= capacity ? index - capacity : index }
}
