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
/// AND per block); an event is one probe, and a stored one an append to the slot's list (exact
/// mode, below); a routed block (approximate mode) one probe of the slot's recency map, plus,
/// when it is new, a table probe to set its bit and, when the slot is full, one to clear the
/// evicted block's. Allocation after creation: the shared block table doubles when an entry
/// would take it past half full (`BlockMaskTable`: incrementally, at most
/// `BlockMaskTable.migrationSteps` entries moved per later insert or removal; an observed
/// event or, in approximate mode, a routed block), and
/// per slot, allocated by the first hash credited to it and kept: in exact mode its log
/// (`lists`, 8 bytes per entry, grown by doubling), in approximate mode its recency map
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
    /// Exact mode, per slot, the hashes credited to it since its last `forget`: `listCount`
    /// entries from entry 0, of `listCapacity`: a log of the stored events' hashes, in order,
    /// with those removed since and repeats among them (a superset of the slot's entries). When full it is compacted (entries the slot no longer holds and
    /// repeats dropped, one probe each and a sort) and doubled if still over half full:
    /// amortized O(log n) per stored event, and never more than `minimumLog` entries or four
    /// times the slot's blocks at its last doubling.
    private let lists: UnsafeMutablePointer<UnsafeMutablePointer<UInt64>?>
    private let listCount: UnsafeMutablePointer<Int>
    private let listCapacity: UnsafeMutablePointer<Int>
    /// An exact-mode log's first capacity.
    static let minimumLog = 64
    /// The most entries of a slot's record of its hashes that one call has moved or
    /// compacted (tests: the bound on the work of one call).
    private(set) var mostLogWork = 0

    /// A view of up to `RouterConfig.maxInstances` slots.
    public init(mode: CacheViewMode, trackedBlocks: Int, approximateBlocksPerInstance: Int) {
        self.mode = mode
        table = BlockMaskTable(maxEntries: trackedBlocks)
        approximateLimit = approximateBlocksPerInstance
        let n = RouterConfig.maxInstances
        recency = .allocate(capacity: n)
        recency.initialize(repeating: RecencyList(), count: n)
        lists = .allocate(capacity: n)
        lists.initialize(repeating: nil, count: n)
        listCount = .allocate(capacity: n)
        listCount.initialize(repeating: 0, count: n)
        listCapacity = .allocate(capacity: n)
        listCapacity.initialize(repeating: 0, count: n)
    }

    deinit {
        for i in 0..<RouterConfig.maxInstances {
            lists[i]?.deallocate()
            recency[i].deallocate()
        }
        lists.deallocate()
        recency.deinitialize(count: RouterConfig.maxInstances)
        recency.deallocate()
        listCount.deallocate()
        listCapacity.deallocate()
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
                log(event.blockHash, slot: slot)
            }
        case .blockRemoved:
            if table.slots(event.blockHash) & bit != 0 { table.clear(event.blockHash, bit) }
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
    /// holds afterwards what a scan of every entry would leave. Cost: one probe per entry of the
    /// slot's list (approximate: exactly its hashes, walked in recency order; exact: also those
    /// removed or repeated since the log's last compaction), nothing for an empty slot. The
    /// list keeps its memory.
    public func forget(slot: Int) {
        let bit: UInt64 = 1 << UInt64(slot)
        recency[slot].removeAll { table.clear($0, bit) }
        if let list = lists[slot] {
            for i in 0..<listCount[slot] { table.clear(list[i], bit) }
        }
        listCount[slot] = 0
    }

    /// Hashes the table holds for `slot` (tests: what the view credits the slot with, read from
    /// the table itself). O(table capacity).
    func heldBlocks(slot: Int) -> Int { table.holders(of: 1 << UInt64(slot)) }

    /// Entries in `slot`'s list (tests: the bound on an exact-mode log's length; approximate:
    /// the slot's recency list).
    func listedHashes(slot: Int) -> Int { mode == .exact ? listCount[slot] : recency[slot].count }

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
        mostLogWork = max(mostLogWork, listCount[slot])
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
