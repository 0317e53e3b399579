/// Disk reads waiting for a staging buffer, oldest first: a fixed-capacity ring of per-block
/// entries, allocated once (`DiskTier.load` and `loadPeer` queue a read here instead of
/// waiting for the device under the engine's lock when no buffer is free, and every `reap`
/// submits the oldest as completions free buffers).
///
/// An entry is what a read needs to be submitted later: the slot to read (`read.peer` -1:
/// the own tier, whose slot the caller pinned; else that peer's, with the journal record
/// captured at lookup) and where its verified bytes go.
///
/// Invariant: at most `capacity` entries. Capacity is the engine's block count: every queued
/// read fills a distinct memory block (a create's or swap-in's freshly allocated one, which
/// nothing else reads into while it is loading), so the ring never overflows.
/// Cost: push and pop O(1); `remove(where:)` O(entries), order kept. 64 bytes per entry of
/// capacity, allocated at init; no allocation after.
/// Not thread-safe: the engine serialises calls.
final class PendingReads {
    struct Entry {
        var read: PeerRead
        var target: LoadTarget
    }

    let capacity: Int
    private let entries: UnsafeMutablePointer<Entry>
    private var head = 0
    private(set) var count = 0

    /// Throws `outOfMemory` when its entries cannot be allocated (`CheckedAllocations`).
    init(capacity: Int) throws(KVError) {
        precondition(capacity > 0)
        self.capacity = capacity
        let a = CheckedAllocations()
        entries = try a.allocate(count: capacity, "the disk tier's queue of reads waiting for a staging buffer, one per block: \(capacity) blocks (memory_bytes / block bytes)")
        a.keep()
    }

    deinit { entries.deallocate() }

    var isEmpty: Bool { count == 0 }

    /// Appends `entry` as the youngest. Precondition: not full (see the invariant).
    func push(_ entry: Entry) {
        precondition(count < capacity, "pending-read queue full (\(capacity) entries)")
        entries[(head + count) % capacity] = entry
        count += 1
    }

    /// Removes and returns the oldest entry. Precondition: not empty.
    func pop() -> Entry {
        precondition(count > 0, "pop from an empty pending-read queue")
        let entry = entries[head]
        head = (head + 1) % capacity
        count -= 1
        return entry
    }

    /// Calls `body` with every entry, oldest first.
    func forEach(_ body: (Entry) -> Void) {
        for i in 0..<count { body(entries[(head + i) % capacity]) }
    }

    /// Removes every entry `cancel` returns true for (it is called once per entry, oldest
    /// first, and may act on the entries it removes), keeping the others in order. Returns how
    /// many were removed.
    @discardableResult
    func remove(where cancel: (Entry) -> Bool) -> Int {
        var kept = 0
        for i in 0..<count {
            let entry = entries[(head + i) % capacity]
            if cancel(entry) { continue }
            entries[(head + kept) % capacity] = entry
            kept += 1
        }
        let removed = count - kept
        count = kept
        return removed
    }
}
