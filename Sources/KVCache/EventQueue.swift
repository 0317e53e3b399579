/// A bounded FIFO of KV events awaiting `drain`. When the server falls behind and the queue is
/// full, the oldest event is dropped and counted, so memory stays bounded and the loss is visible.
/// No allocation after creation. Not thread-safe.
final class EventQueue {
    private let buffer: UnsafeMutablePointer<KVEvent>
    private let capacity: Int
    private var head = 0
    private(set) var count = 0
    /// Events dropped because the queue was full.
    private(set) var dropped: UInt64 = 0

    /// A queue holding at most `capacity` events.
    init(capacity: Int) {
        self.capacity = max(1, capacity)
        buffer = .allocate(capacity: self.capacity)
    }

    deinit { buffer.deallocate() }

    /// Appends an event, dropping the oldest when full.
    func push(_ event: KVEvent) {
        if count == capacity {
            head = (head + 1) % capacity
            count -= 1
            dropped += 1
        }
        (buffer + (head + count) % capacity).initialize(to: event)
        count += 1
    }

    /// Moves up to `out.count` events, oldest first, into `out`; returns how many.
    func drain(into out: UnsafeMutableBufferPointer<KVEvent>) -> Int {
        let n = min(out.count, count)
        for i in 0..<n { out[i] = buffer[(head + i) % capacity] }
        head = (head + n) % capacity
        count -= n
        return n
    }
}
