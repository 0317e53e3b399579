import KVCache

/// What the router believes each instance slot caches, as a `BlockMaskTable` of block hash ->
/// slots, fed one of two ways (`CacheViewMode`):
///
/// - *exact*: from the instances' KV events. After an instance's events are observed in order,
///   the view holds exactly the hashes its prefix index holds (as long as the view holds at
///   most `trackedBlocks` distinct hashes: `Router.observe` refuses a batch that could pass
///   it, and refused inserts are counted); also across a restart of the instance the router
///   was not told of, since a new engine's first event is an `allCleared` of its memory tier.
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
/// AND per block); an event is one probe, and a stored one an append to the slot's list (exact
/// mode, below). No allocation after creation, except per slot its list of hashes (`lists`, 8
/// bytes per entry), allocated by the first hash credited to it and kept: in approximate mode
/// a ring of `approximateBlocksPerInstance` entries, in exact mode grown by doubling. Not
/// thread-safe.
public final class CacheView {
    /// How the view is fed.
    public let mode: CacheViewMode
    /// Hash -> slot mask.
    public let table: BlockMaskTable
    private let fifoCapacity: Int
    /// Per slot, the hashes credited to it since its last `forget`: `listCount` entries from
    /// `listHead`, wrapping at `listCapacity`, so that `forget` clears exactly those without
    /// scanning the table.
    /// - Approximate mode: a FIFO ring of `fifoCapacity` entries, exactly the slot's hashes;
    ///   the oldest loses its bit when a new one comes and the ring is full.
    /// - Exact mode: a log from entry 0 of the stored events' hashes, in order, with those
    ///   removed since and repeats among them (a superset of the slot's entries). When full it
    ///   is compacted (entries the slot no longer holds and repeats dropped, one probe each and
    ///   a sort) and doubled if still over half full: amortized O(log n) per stored event, and
    ///   never more than `minimumLog` entries or four times the slot's blocks at its last
    ///   doubling.
    private let lists: UnsafeMutablePointer<UnsafeMutablePointer<UInt64>?>
    private let listHead: UnsafeMutablePointer<Int>
    private let listCount: UnsafeMutablePointer<Int>
    private let listCapacity: UnsafeMutablePointer<Int>
    /// An exact-mode log's first capacity.
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
        lists = .allocate(capacity: n)
        lists.initialize(repeating: nil, count: n)
        listHead = .allocate(capacity: n)
        listHead.initialize(repeating: 0, count: n)
        listCount = .allocate(capacity: n)
        listCount.initialize(repeating: 0, count: n)
        listCapacity = .allocate(capacity: n)
        listCapacity.initialize(repeating: 0, count: n)
        blocksPerSlot = .allocate(capacity: n)
        blocksPerSlot.initialize(repeating: 0, count: n)
    }

    deinit {
        for i in 0..<RouterConfig.maxInstances { lists[i]?.deallocate() }
        lists.deallocate()
        listHead.deallocate()
        listCount.deallocate()
        listCapacity.deallocate()
        blocksPerSlot.deallocate()
    }

    /// Writes into `matched[s]`, for every slot `s` in `slots`, how many leading blocks of
    /// `hashes` slot `s` caches; other entries are untouched. Cost: one probe per block while
    /// any slot of `slots` still matches.
    @inline(__always)
    public func match(_ hashes: UnsafeBufferPointer<UInt64>, slots: UInt64, into matched: UnsafeMutablePointer<Int>) {
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
                matched[dropped.trailingZeroBitCount] = i
                dropped &= dropped - 1
            }
            alive = holding
            i += 1
        }
        while alive != 0 {
            matched[alive.trailingZeroBitCount] = hashes.count
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

    /// Whether `apply` of `event` could add an entry to the table: in exact mode, a stored
    /// memory-tier event of a hash no slot holds; never in approximate mode. One probe.
    @inline(__always)
    public func mayAddEntry(_ event: KVEvent) -> Bool {
        mode == .exact && event.kind == .blockStored && event.tier == 0 && event.blockHash != 0
            && table.slots(event.blockHash) == 0
    }

    /// Approximate mode: credits `slot` with every block of `hashes`. Exact mode: no-op.
    /// Cost: one probe per block, plus one per block pushed out of the ring.
    public func recordRoute(_ hashes: UnsafeBufferPointer<UInt64>, slot: Int) {
        guard mode == .approximate else { return }
        let bit: UInt64 = 1 << UInt64(slot)
        let ring: UnsafeMutablePointer<UInt64>
        if let f = lists[slot] { ring = f } else {
            ring = .allocate(capacity: fifoCapacity)
            lists[slot] = ring
            listCapacity[slot] = fifoCapacity
        }
        var head = listHead[slot], count = listCount[slot]
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
        listHead[slot] = head
        listCount[slot] = count
        blocksPerSlot[slot] = count
    }

    /// Drops everything credited to `slot` (the instance left or cleared its cache); the table
    /// holds afterwards what a scan of every entry would leave. Cost: one probe per entry of the
    /// slot's list (approximate: exactly its hashes; exact: also those removed or repeated
    /// since the log's last compaction), nothing for an empty slot. The list keeps its memory.
    public func forget(slot: Int) {
        let bit: UInt64 = 1 << UInt64(slot)
        if let list = lists[slot] {
            var i = listHead[slot]
            for _ in 0..<listCount[slot] {
                table.clear(list[i], bit)
                i = i + 1 == listCapacity[slot] ? 0 : i + 1
            }
        }
        blocksPerSlot[slot] = 0
        listHead[slot] = 0
        listCount[slot] = 0
    }

    /// Entries in `slot`'s list (tests: the bound on an exact-mode log's length).
    func listedHashes(slot: Int) -> Int { listCount[slot] }

    /// Appends `hash`, just credited to `slot`, to the slot's log; a full log is compacted first
    /// (then doubled if still over half full).
    private func log(_ hash: UInt64, slot: Int) {
        if listCount[slot] == listCapacity[slot] {
            compactLog(slot: slot)
            if listCount[slot] * 2 > listCapacity[slot] || lists[slot] == nil {
                let capacity = max(CacheView.minimumLog, listCapacity[slot] * 2)
                let grown = UnsafeMutablePointer<UInt64>.allocate(capacity: capacity)
                if let old = lists[slot] {
                    grown.moveInitialize(from: old, count: listCount[slot])
                    old.deallocate()
                }
                lists[slot] = grown
                listCapacity[slot] = capacity
            }
        }
        lists[slot]![listCount[slot]] = hash
        listCount[slot] += 1
    }

    /// Drops from `slot`'s log the hashes the slot no longer holds and the repeats (sorted,
    /// then each kept once). O(n log n) for n entries.
    private func compactLog(slot: Int) {
        guard let log = lists[slot] else { return }
        let bit: UInt64 = 1 << UInt64(slot)
        var kept = 0
        for i in 0..<listCount[slot] where table.slots(log[i]) & bit != 0 {
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
        listCount[slot] = unique
    }
}
