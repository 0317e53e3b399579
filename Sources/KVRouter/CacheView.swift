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
/// AND per block); an event is one probe, and a stored one an append to the slot's log (exact
/// mode, below). No allocation after creation, except per slot: in approximate mode its FIFO
/// ring (8 bytes per `approximateBlocksPerInstance` hash), allocated by the first `recordRoute`
/// to it and kept; in exact mode its log of stored hashes (8 bytes per entry, `logs`), grown
/// by doubling and kept. Not thread-safe.
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
    /// Exact mode: per slot, the hashes credited to it by stored events since its last
    /// `forget`, in order, with those removed since and repeats among them: a superset of the
    /// table's entries holding the slot, so that `forget` clears exactly those without scanning
    /// the table. When full it is compacted (entries the slot no longer holds and repeats
    /// dropped, one probe each and a sort) and doubled if still over half full: amortized
    /// O(log n) per stored event, and it never holds more than `minimumLog` entries or four
    /// times the slot's blocks at its last doubling.
    private let logs: UnsafeMutablePointer<UnsafeMutablePointer<UInt64>?>
    private let logCount: UnsafeMutablePointer<Int>
    private let logCapacity: UnsafeMutablePointer<Int>
    /// A log's first capacity.
    static let minimumLog = 64
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
        logs = .allocate(capacity: n)
        logs.initialize(repeating: nil, count: n)
        logCount = .allocate(capacity: n)
        logCount.initialize(repeating: 0, count: n)
        logCapacity = .allocate(capacity: n)
        logCapacity.initialize(repeating: 0, count: n)
        blocksPerSlot = .allocate(capacity: n)
        blocksPerSlot.initialize(repeating: 0, count: n)
    }

    deinit {
        for i in 0..<RouterConfig.maxInstances {
            fifos[i]?.deallocate()
            logs[i]?.deallocate()
        }
        fifos.deallocate()
        fifoHead.deallocate()
        fifoCount.deallocate()
        logs.deallocate()
        logCount.deallocate()
        logCapacity.deallocate()
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
            if event.blockHash != 0, table.slots(event.blockHash) & bit == 0, table.set(event.blockHash, bit) {
                blocksPerSlot[slot] += 1
                log(event.blockHash, slot: slot)
            }
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
    /// holds afterwards what a scan of every entry would leave. Cost: one probe per hash in the
    /// slot's FIFO ring (approximate: exactly the slot's hashes) or log (exact: the slot's
    /// hashes, and those it dropped or repeated since the log's last compaction), nothing for
    /// an empty slot. The log keeps its memory.
    public func forget(slot: Int) {
        let bit: UInt64 = 1 << UInt64(slot)
        if mode == .approximate, let ring = fifos[slot] {
            var i = fifoHead[slot]
            for _ in 0..<fifoCount[slot] {
                table.clear(ring[i], bit)
                i = i + 1 == fifoCapacity ? 0 : i + 1
            }
        } else if let log = logs[slot] {
            for i in 0..<logCount[slot] { table.clear(log[i], bit) }
        }
        blocksPerSlot[slot] = 0
        fifoHead[slot] = 0
        fifoCount[slot] = 0
        logCount[slot] = 0
    }

    /// Exact mode: entries in `slot`'s log (tests: the bound on its length).
    func loggedHashes(slot: Int) -> Int { logCount[slot] }

    /// Appends `hash`, just credited to `slot`, to the slot's log; a full log is compacted first
    /// (then doubled if still over half full).
    private func log(_ hash: UInt64, slot: Int) {
        if logCount[slot] == logCapacity[slot] {
            compactLog(slot: slot)
            if logCount[slot] * 2 > logCapacity[slot] || logs[slot] == nil {
                let capacity = max(CacheView.minimumLog, logCapacity[slot] * 2)
                let grown = UnsafeMutablePointer<UInt64>.allocate(capacity: capacity)
                if let old = logs[slot] {
                    grown.moveInitialize(from: old, count: logCount[slot])
                    old.deallocate()
                }
                logs[slot] = grown
                logCapacity[slot] = capacity
            }
        }
        logs[slot]![logCount[slot]] = hash
        logCount[slot] += 1
    }

    /// Drops from `slot`'s log the hashes the slot no longer holds and the repeats (sorted,
    /// then each kept once). O(n log n) for n entries.
    private func compactLog(slot: Int) {
        guard let log = logs[slot] else { return }
        let bit: UInt64 = 1 << UInt64(slot)
        var kept = 0
        for i in 0..<logCount[slot] where table.slots(log[i]) & bit != 0 {
            log[kept] = log[i]
            kept += 1
        }
        var entries = UnsafeMutableBufferPointer(start: log, count: kept)
        entries.sort()
        var unique = 0
        for i in 0..<kept where i == 0 || entries[i] != entries[i - 1] {
            entries[unique] = entries[i]
            unique += 1
        }
        logCount[slot] = unique
    }
}
