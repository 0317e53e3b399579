import KVCache

/// What the router believes each instance slot caches, as a `BlockMaskTable` of block hash ->
/// slots, fed one of two ways (`CacheViewMode`):
///
/// - *exact*: from the instances' KV events. After an instance's events are observed in order,
///   the view holds exactly the hashes its prefix index holds (as long as `trackedBlocks` is
///   not exceeded: refused inserts are counted); also across a restart of the instance the
///   router was not told of, since a new engine's first event is an `allCleared` of its
///   memory tier.
/// - *approximate*: from routing history. Each block routed to a slot is assumed cached there;
///   each slot keeps a FIFO ring of the hashes it was credited with, of
///   `approximateBlocksPerInstance` entries, and the oldest loses its bit when the ring is full
///   (SGLang's router evicts its approximate tree by size in the same spirit).
///
/// Because block hashes are chained, "slot s holds hash h" implies it held h's whole prefix
/// when h was stored; a prefix match walks the request's hashes in order and stops at the
/// first miss, which equals a radix-tree match at block granularity.
///
/// Cost: a prefix match is one table probe per matched block, for all slots at once (a mask
/// AND per block); an event is one probe. No allocation after creation, except in approximate
/// mode the FIFO ring of a slot (8 bytes per `approximateBlocksPerInstance` hash), allocated by
/// the first `recordRoute` to that slot and kept. Not thread-safe.
public final class CacheView {
    /// How the view is fed.
    public let mode: CacheViewMode
    /// Hash -> slot mask.
    public let table: BlockMaskTable
    private let fifoCapacity: Int
    /// Approximate mode: per slot a ring of `fifoCapacity` hashes, allocated on first use.
    private let fifos: UnsafeMutablePointer<UnsafeMutablePointer<UInt64>?>
    private let fifoHead: UnsafeMutablePointer<Int>
    private let fifoCount: UnsafeMutablePointer<Int>
    /// Per slot (`RouterConfig.maxInstances` entries): blocks credited to it (exact: stored
    /// minus removed; approximate: ring fill). Read-only for callers.
    public let blocksPerSlot: UnsafeMutablePointer<Int>

    /// A view of up to `RouterConfig.maxInstances` slots.
    public init(mode: CacheViewMode, trackedBlocks: Int, approximateBlocksPerInstance: Int) {
        self.mode = mode
        table = BlockMaskTable(maxEntries: trackedBlocks)
        fifoCapacity = approximateBlocksPerInstance
        let n = RouterConfig.maxInstances
        fifos = .allocate(capacity: n)
        fifos.initialize(repeating: nil, count: n)
        fifoHead = .allocate(capacity: n)
        fifoHead.initialize(repeating: 0, count: n)
        fifoCount = .allocate(capacity: n)
        fifoCount.initialize(repeating: 0, count: n)
        blocksPerSlot = .allocate(capacity: n)
        blocksPerSlot.initialize(repeating: 0, count: n)
    }

    deinit {
        for i in 0..<RouterConfig.maxInstances { fifos[i]?.deallocate() }
        fifos.deallocate()
        fifoHead.deallocate()
        fifoCount.deallocate()
        blocksPerSlot.deallocate()
    }

    /// Writes into `matched[s]`, for every slot `s` in `slots`, how many leading blocks of
    /// `hashes` slot `s` caches; other entries are untouched. Cost: one probe per block while
    /// any slot of `slots` still matches.
    @inline(__always)
    public func match(_ hashes: UnsafeBufferPointer<UInt64>, slots: UInt64, into matched: UnsafeMutablePointer<Int32>) {
        var alive = slots
        var m = alive
        while m != 0 {
            matched[m.trailingZeroBitCount] = 0
            m &= m - 1
        }
        var i = 0
        while alive != 0 && i < hashes.count {
            let holding = table.slots(hashes[i]) & alive
            var dropped = alive & ~holding
            while dropped != 0 {
                matched[dropped.trailingZeroBitCount] = Int32(i)
                dropped &= dropped - 1
            }
            alive = holding
            i += 1
        }
        while alive != 0 {
            matched[alive.trailingZeroBitCount] = Int32(hashes.count)
            alive &= alive - 1
        }
    }

    /// Leading blocks of `hashes` that `slot` caches. Cost: one probe per matched block.
    public func matchedBlocks(_ hashes: UnsafeBufferPointer<UInt64>, slot: Int) -> Int {
        let bit: UInt64 = 1 << UInt64(slot)
        var i = 0
        while i < hashes.count && table.slots(hashes[i]) & bit != 0 { i += 1 }
        return i
    }

    /// Exact mode: applies one KV event of `slot` (memory tier only; other tiers, unknown ones
    /// included, are ignored, since a disk hit still costs a read; a stored or removed hash 0
    /// names no block and is ignored too, as the table never holds key 0). Approximate mode
    /// ignores events.
    public func apply(_ event: KVEvent, slot: Int) {
        guard mode == .exact, event.tier == 0 else { return }
        let bit: UInt64 = 1 << UInt64(slot)
        switch event.kind {
        case .blockStored:
            if event.blockHash != 0, table.slots(event.blockHash) & bit == 0, table.set(event.blockHash, bit) { blocksPerSlot[slot] += 1 }
        case .blockRemoved:
            if table.slots(event.blockHash) & bit != 0 {
                table.clear(event.blockHash, bit)
                blocksPerSlot[slot] -= 1
            }
        case .allCleared:
            forget(slot: slot)
        }
    }

    /// Approximate mode: credits `slot` with every block of `hashes`. Exact mode: no-op.
    /// Cost: one probe per block, plus one per block pushed out of the ring.
    public func recordRoute(_ hashes: UnsafeBufferPointer<UInt64>, slot: Int) {
        guard mode == .approximate else { return }
        let bit: UInt64 = 1 << UInt64(slot)
        let ring: UnsafeMutablePointer<UInt64>
        if let f = fifos[slot] { ring = f } else {
            ring = .allocate(capacity: fifoCapacity)
            fifos[slot] = ring
        }
        var head = fifoHead[slot], count = fifoCount[slot]
        for h in hashes where h != 0 && table.slots(h) & bit == 0 {
            if count == fifoCapacity {
                table.clear(ring[head], bit)
                head = head + 1 == fifoCapacity ? 0 : head + 1
                count -= 1
            }
            guard table.set(h, bit) else { break }
            let tail = head + count
            ring[tail >= fifoCapacity ? tail - fifoCapacity : tail] = h
            count += 1
        }
        fifoHead[slot] = head
        fifoCount[slot] = count
        blocksPerSlot[slot] = count
    }

    /// Drops everything credited to `slot` (the instance left or cleared its cache); the table
    /// holds afterwards what a scan of every entry would leave. Cost: approximate mode, one
    /// probe per hash in the slot's FIFO ring (it lists exactly the slot's hashes); exact mode,
    /// a scan of the table up to its last entry holding the slot (`blocksPerSlot[slot]` counts
    /// exactly those entries: an insert the table refused is not counted), nothing for an
    /// empty slot but about the whole table for one holding many blocks: knowing a slot's
    /// hashes in exact mode would take a per-slot set updated by every event.
    public func forget(slot: Int) {
        let bit: UInt64 = 1 << UInt64(slot)
        if mode == .approximate, let ring = fifos[slot] {
            var i = fifoHead[slot]
            for _ in 0..<fifoCount[slot] {
                table.clear(ring[i], bit)
                i = i + 1 == fifoCapacity ? 0 : i + 1
            }
        } else {
            table.clearEverywhere(bit, holders: blocksPerSlot[slot])
        }
        blocksPerSlot[slot] = 0
        fifoHead[slot] = 0
        fifoCount[slot] = 0
    }
}
