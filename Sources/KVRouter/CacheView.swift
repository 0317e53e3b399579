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
///   each slot keeps the hashes credited to it in order of last use (`RecencyList`), at most
///   `approximateBlocksPerInstance` distinct ones, and a new one past that evicts the least
///   recently routed. A block routed again is refreshed, so a hot prefix stays however many
///   other blocks stream through; within one route the first block counts as the most recent,
///   so a chain loses its tail before its head. SGLang's router evicts its approximate tree's
///   least recently used leaves per tenant in the same spirit. (It was a FIFO ring that never
///   refreshed: a prefix routed on every request was evicted as the oldest entry every
///   `approximateBlocksPerInstance` routed blocks, head first; docs/routing.md.)
///
/// Because block hashes are chained, "slot s holds hash h" implies it held h's whole prefix
/// when h was stored; a prefix match walks the request's hashes in order and stops at the
/// first miss, which equals a radix-tree match at block granularity.
///
/// Cost: a prefix match is one table probe per matched block, for all slots at once (a mask
/// AND per block); an event is one probe, and a stored or removed one that changes the slot's
/// bit also one probe of the slot's own set of hashes (exact mode, below); a routed block (approximate mode) one probe of the slot's recency map, plus,
/// when it is new, a table probe to set its bit and, when the slot is full, one to clear the
/// evicted block's. Allocation after creation: the shared block table doubles when an entry
/// would take it past half full and halves when a removal leaves it under an eighth full
/// (`BlockMaskTable`: incrementally, at most `BlockMaskTable.migrationSteps` entries moved
/// per later insert, removal or route, or a large halving's share, the outgrown array
/// unmapped 2 MiB at a time), and
/// per slot, allocated by the first hash credited to it: in exact mode its set of hashes
/// (`held`, a `BlockMaskTable` of its own: 32-128 bytes per hash, growing and shrinking as
/// the shared one does; released by `forget` once it has grown past its first 4,096 entries,
/// emptied and kept before that), in approximate mode its recency map
/// (`recency`, 16 bytes per entry of a power of two at least twice
/// `approximateBlocksPerInstance`: 512 KiB at the default 16,384). Not thread-safe.
public final class CacheView {
    /// How the view is fed.
    public let mode: CacheViewMode
    /// Hash -> slot mask.
    public let table: BlockMaskTable
    /// Approximate mode: distinct blocks a slot may be credited with.
    private let approximateLimit: Int
    /// Approximate mode, per slot: exactly the hashes whose bit the slot holds in `table`, in
    /// order of last use (at most `approximateLimit` of them),
    /// so that `recordRoute` finds the least recently used in O(1) and `forget` clears exactly
    /// those without scanning the table. Storage allocated by the slot's first route.
    private let recency: UnsafeMutablePointer<RecencyList>
    /// Exact mode, per slot: exactly the hashes whose bit the slot holds in `table` (each with
    /// mask 1), so that `forget` clears them without scanning the table. Kept at O(1) per
    /// event, with no pass over all of them in any call but `forget`: a stored event that
    /// sets the slot's bit inserts its hash, a removed one that clears it removes it. (It was
    /// a log of stored hashes, compacted with a probe per entry and a sort inside the one call
    /// that filled it: 100-150 ms at 2 million entries; docs/routing.md.) Allocated by the
    /// slot's first stored hash; `forget` releases it, or empties it in place while it is at
    /// its first 4,096 entries (64 KiB a slot at most kept: its `munmap` was most of an empty
    /// slot's forget, 0.02 -> 0.075 ms).
    private let held: UnsafeMutablePointer<BlockMaskTable?>
    /// Distinct hashes a slot's set may hold (the shared table's limit: it holds a subset).
    private let trackedBlocks: Int

    /// A view of up to `RouterConfig.maxInstances` slots.
    public init(mode: CacheViewMode, trackedBlocks: Int, approximateBlocksPerInstance: Int) {
        self.mode = mode
        table = BlockMaskTable(maxEntries: trackedBlocks)
        approximateLimit = approximateBlocksPerInstance
        let n = RouterConfig.maxInstances
        recency = .allocate(capacity: n)
        recency.initialize(repeating: RecencyList(), count: n)
        held = .allocate(capacity: n)
        held.initialize(repeating: nil, count: n)
        self.trackedBlocks = trackedBlocks
    }

    deinit {
        for i in 0..<RouterConfig.maxInstances { recency[i].deallocate() }
        held.deinitialize(count: RouterConfig.maxInstances)
        held.deallocate()
        recency.deinitialize(count: RouterConfig.maxInstances)
        recency.deallocate()
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
                heldSet(slot).set(event.blockHash, 1)
            }
        case .blockRemoved:
            if table.slots(event.blockHash) & bit != 0 {
                table.clear(event.blockHash, bit)
                held[slot]!.clear(event.blockHash, 1)
            }
        case .allCleared:
            forget(slot: slot)
        }
    }

    /// Whether `apply` of `event` could add an entry to the table: in exact mode, a stored
    /// memory-tier event of a hash no slot holds, the slots of `cleared` aside (their blocks
    /// counted as gone: a batch judged as if its leading `allCleared` had been applied); never
    /// in approximate mode. One probe.
    @inline(__always)
    public func mayAddEntry(_ event: KVEvent, cleared: UInt64 = 0) -> Bool {
        mode == .exact && event.kind == .blockStored && event.tier == 0 && event.blockHash != 0
            && table.slots(event.blockHash) & ~cleared == 0
    }

    /// Exact mode: the table's entries that only `slot` holds, which an `allCleared` of it
    /// frees; 0 in approximate mode (events never add entries there). Cost: one probe per hash
    /// the slot holds, as the clear itself.
    public func entriesHeldAlone(slot: Int) -> Int {
        let bit: UInt64 = 1 << UInt64(slot)
        var n = 0
        held[slot]?.forEachHash { if table.slots($0) == bit { n += 1 } }
        return n
    }

    /// Approximate mode: credits `slot` with the blocks of `hashes` and makes them its most
    /// recently used, in route order: afterwards the first block is the most recent and each
    /// later one just less recent than the one before it (a hash repeated in the route takes
    /// the place of its last occurrence), so eviction takes a chain's last blocks before its
    /// first and a prefix match, which stops at the first missing block, keeps what is left.
    /// Hash 0 names no block and is skipped. Exact mode: no-op.
    ///
    /// A block the slot holds is refreshed (moved into place, the table untouched). A new one
    /// first evicts the least recently used block when the slot holds `approximateLimit`
    /// (its bit cleared), then sets its bit; the route stops there, crediting no later block,
    /// when the table refuses it (full: the view underestimates; the eviction stands) or when
    /// the slot already holds nothing but this route's blocks (a route longer than the slot
    /// keeps its first `approximateLimit` distinct blocks).
    ///
    /// Cost: per block one probe of the slot's recency map and O(1) relinking; per new block
    /// one table probe, plus per eviction one table probe and the map's backward shift. No
    /// allocation but the slot's first route (its `RecencyList`).
    public func recordRoute(_ hashes: UnsafeBufferPointer<UInt64>, slot: Int) {
        guard mode == .approximate else { return }
        let bit: UInt64 = 1 << UInt64(slot)
        let list = recency + slot
        if list.pointee.entries == nil { list.pointee.allocate(limit: approximateLimit) }
        // The entry placed last by this route (-1: none yet, so the next goes to the head). The
        // route's entries so far are exactly those from the head to `cursor`.
        var cursor: Int32 = -1
        for h in hashes where h != 0 {
            var i = list.pointee.find(h)
            if i >= 0 {
                list.pointee.moveAfter(i, cursor)
            } else {
                if list.pointee.count == approximateLimit {
                    if cursor == list.pointee.tail { break }  // only this route's blocks are left
                    table.clear(list.pointee.removeTail(cursor: &cursor), bit)
                }
                guard table.set(h, bit) else { break }
                i = list.pointee.insert(h, after: cursor)
            }
            cursor = i
        }
    }

    /// Drops everything credited to `slot` (the instance left or cleared its cache); the table
    /// holds afterwards what a scan of every entry would leave. Cost: one probe per hash the
    /// slot holds (approximate: walked in recency order, the list keeping its memory; exact:
    /// read from its set, which examines at most 24 entries per hash held or 12,288, three
    /// times its first 4,096, as the set shrinks with its hashes; then released, or emptied
    /// in place at its first size), nothing for an empty slot. The shared table's clears here
    /// advance no drain (`BlockMaskTable.clearWithoutDrain`): a halving they start is drained
    /// by later events and routes (two drains, `4 * BlockMaskTable.drainCalls` calls at most;
    /// an emptied table's unmapped without reading, two chunks a call), so the cost follows
    /// the hashes held (each clear drove up to
    /// 32 passes and 4 moves: scaling 64 -> 4 instances of 60,000 blocks, `remove_instance`
    /// 5.3 -> 10.1 ms mean, 14 -> 47.7 ms max; docs/routing.md).
    public func forget(slot: Int) {
        let bit: UInt64 = 1 << UInt64(slot)
        recency[slot].removeAll { table.clearWithoutDrain($0, bit) }
        guard let set = held[slot] else { return }
        set.forEachHash { table.clearWithoutDrain($0, bit) }
        if set.isAtFirstCapacity { set.removeAll() } else { held[slot] = nil }
    }

    /// Exact mode: `slot`'s set of hashes, allocated (4,096 entries) when it has none.
    @inline(__always)
    private func heldSet(_ slot: Int) -> BlockMaskTable {
        if let set = held[slot] { return set }
        let set = BlockMaskTable(maxEntries: trackedBlocks)
        held[slot] = set
        return set
    }

    /// Hashes the table holds for `slot` (tests: what the view credits the slot with, read from
    /// the table itself). O(table capacity).
    func heldBlocks(slot: Int) -> Int { table.holders(of: 1 << UInt64(slot)) }

    /// Entries in `slot`'s list (tests: exact, its set of hashes; approximate, its recency
    /// list).
    func listedHashes(slot: Int) -> Int { mode == .exact ? held[slot]?.count ?? 0 : recency[slot].count }

    /// Entries `forget(slot:)` would examine in `slot`'s set of hashes (tests).
    func heldScanLength(slot: Int) -> Int { held[slot]?.scanLength ?? 0 }

    /// The most entries one call has moved within a slot's record of its hashes, over the
    /// slots' current sets (tests: the bound on the work of one event; `forget` aside).
    var mostHeldWork: Int { (0..<RouterConfig.maxInstances).reduce(0) { max($0, held[$1]?.mostMoved ?? 0) } }

    /// Approximate mode (tests): `slot`'s hashes, most recently used first.
    func recencyOrder(slot: Int) -> [UInt64] {
        var keys: [UInt64] = []
        var i = recency[slot].head
        while i >= 0 {
            keys.append(recency[slot].key(at: i))
            i = recency[slot].next(i)
        }
        return keys
    }
}
