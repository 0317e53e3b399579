import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The engine's blocks: allocation, reference counts, the prefix index (block hash -> block) and
/// the LRU queue of cached blocks, in flat arrays indexed by block id.
///
/// The index is keyed by the public `BlockHash`, which a crafted prompt can collide with; each
/// indexed block also keeps its private `BlockFingerprint`, and a lookup with a fingerprint
/// hits only a block whose fingerprint equals it (`lookup`). Blocks of one hash and different
/// fingerprints each get their own entry (`HashChains`), so a crafted block neither keeps
/// another prompt's block out of the index nor tells whether it is there; the events stay a
/// set of hashes (`insert`, `unindex`). No prompt is served another's bytes.
///
/// A block is *free* (no references, not indexed), *used* (referenced by live sequences) or
/// *cached* (no references, still indexed, queued in LRU order oldest first). A used block may
/// be *prepared*: its hash is known (`prepare`) but it enters the index only later (`insert`
/// under `prepared`'s hashes, when the server schedules its tokens), or never. `allocate` takes a
/// free block and, when there is none, evicts the oldest cached one (emitting `blockRemoved`);
/// `release` of the last reference caches an indexed block and frees any other. Blocks come from
/// a page-aware `kvm_arena` (paged layout, real memory) or from a plain id stack (logical blocks
/// of the contiguous layout, and metadata-only engines).
///
/// Cost: `allocate`, `release`, `retain` and `lookup` are O(1) with no heap allocation, except
/// that with a disk tier an `allocate` that evicts spills the evicted block, and first its
/// cached ancestors the tier lacks (`BlockSpiller.spill`, `ancestorsFirst`): amortised
/// O(`OffloadCoordinator.ancestorsPerSpill`) hash lookups (a walk resumes the last one on the
/// chain; O(chain) when it starts a new one) and a copy per block written. A walk climbs by
/// parent hash and parent fingerprint, so a crafted block of a colliding hash never stands in
/// for a block's parent.
/// Not thread-safe: the engine serialises calls.
public final class BlockPool {
    /// Blocks in all.
    public let capacity: Int
    private let arena: OpaquePointer?
    private let freeIds: UnsafeMutablePointer<Int32>
    private var freeTop = 0
    private let refs: UnsafeMutablePointer<UInt32>
    /// Per block: its hash and its parent's while it is indexed (0 once it leaves the index), or
    /// as `prepare` recorded them (stale once a prepared block is freed: only a block in a
    /// sequence's unscheduled range, `SequenceTable.unscheduled`, is read through `prepared`).
    private let hashes: UnsafeMutablePointer<UInt64>
    private let parents: UnsafeMutablePointer<UInt64>
    /// Per block: its `BlockFingerprint` (0: unknown, indexed from hashes alone), kept like
    /// `hashes`.
    private let fingerprints: UnsafeMutablePointer<UInt64>
    /// Per indexed block: its parent's fingerprint (0: unknown, or a chain's first block), so
    /// that a walk up the chain (`OffloadCoordinator.missingAncestors`) takes the parent
    /// itself, not a block of a colliding hash (`parentFingerprint(of:)`).
    private let parentFingerprints: UnsafeMutablePointer<UInt64>
    /// Per block: true while it is in the prefix index (`hashes` then holds the key).
    private let indexed: UnsafeMutablePointer<Bool>
    /// The cached blocks, oldest first: a block is on it exactly while `refs` is 0 and
    /// `indexed` is true, so the pool needs no membership state of its own.
    private var lru: IndexList
    /// Per block: the ticket of the disk tier's copy of it running outside the engine's lock
    /// (`Writeback`), or 0. A marked block leaves the index (`unindex`: evicted, dropped,
    /// compacted, forgotten) only once that copy is done (`BlockSpiller.awaitCopy`), so its
    /// bytes and pages stay as they were while the copy reads them.
    private let copyTickets: UnsafeMutablePointer<UInt64>
    private let index: HashChains
    /// Used blocks of an indexed block's hash and fingerprint kept out of the index, one of
    /// which takes its place when it leaves (`recordDuplicate`, `unindex`).
    private let duplicates: DuplicateBlocks
    /// Blocks in the index (more than its hashes when public hashes collide).
    private var indexedCount = 0
    /// Pending KV events.
    let events: EventQueue
    /// Told when an indexed block changes state (the contiguous layout keeps page references
    /// and pins in step with it). Held strongly: the listener holds this pool unowned, so
    /// there is no cycle, and a weak reference would give the listener a side table, which
    /// sends every retain and release of it to the runtime's slow path (44% of a contiguous
    /// truncation's samples under `perf` in `spec-decode-contiguous`, docs/benchmarks.md).
    var listener: BlockListener?
    /// Told before a cached block leaves memory, while its bytes are still there (the disk tier
    /// writes it back instead of losing it).
    weak var spiller: BlockSpiller?

    /// Blocks referenced by live sequences.
    private(set) var usedCount = 0
    /// Blocks held only by the index.
    private(set) var cachedCount = 0
    /// Cached blocks evicted to make room, in total: by allocations, and by swap-outs (the
    /// indexed blocks only the swapped-out sequence held, once on disk: `evict`); a trim's
    /// drops are taken back out.
    private(set) var evictedCount: UInt64 = 0

    /// A pool of `capacity` blocks with no memory behind them (ids only).
    public convenience init(capacity: Int) {
        do { try self.init(capacity: capacity, arena: nil, eventCapacity: 1 << 16) } catch { fatalError("BlockPool: \(error)") }
    }

    /// A pool over real paged memory of `config`'s shape and budget: exactly the allocator a
    /// paged engine uses (page-aware placement in a memfd pool), for benchmarks and tools.
    /// Throws like `Engine.init`.
    public convenience init(pagedMemory config: EngineConfig) throws(KVError) {
        try config.validate()
        let memory = try PagedMemory(config)
        try self.init(capacity: memory.blocks, arena: memory.arena, eventCapacity: 1 << 16)
        owner = memory
    }

    /// Keeps the memory behind `arena` alive when the pool owns it.
    private var owner: AnyObject?

    /// A pool over `arena` (which must hold `capacity` blocks) or, when nil, over ids alone.
    /// Throws `outOfMemory` when its per-block arrays (77 bytes per block, 73 over an arena,
    /// which keeps no free list, and 24 to 48 for the
    /// prefix index: `memory_bytes / (block bytes x tensors)` blocks, at most 2^24) or the
    /// event queue (`eventCapacity` events, with `eventRoom` more for the engine's creation
    /// events: `EventQueue.init`) cannot be allocated (`CheckedAllocations`).
    init(capacity: Int, arena: OpaquePointer?, eventCapacity: Int, eventRoom: Int = 0) throws(KVError) {
        precondition(capacity > 0 && capacity < Int(Int32.max))
        self.capacity = capacity
        self.arena = arena
        let a = CheckedAllocations()
        let perBlock = "the per-block state of \(capacity) blocks (memory_bytes / block bytes)"
        freeIds = try a.allocate(count: arena == nil ? capacity : 0, perBlock)
        if arena == nil {
            for i in 0..<capacity { freeIds[i] = Int32(capacity - 1 - i) }  // lowest ids first
            freeTop = capacity
        }
        refs = try a.allocate(repeating: 0, count: capacity, perBlock)
        hashes = try a.allocate(repeating: 0, count: capacity, perBlock)
        parents = try a.allocate(repeating: 0, count: capacity, perBlock)
        fingerprints = try a.allocate(repeating: 0, count: capacity, perBlock)
        parentFingerprints = try a.allocate(repeating: 0, count: capacity, perBlock)
        indexed = try a.allocate(repeating: false, count: capacity, perBlock)
        lru = try IndexList(capacity: capacity, perBlock)
        copyTickets = try a.allocate(repeating: 0, count: capacity, perBlock)
        index = try HashChains(ids: capacity, fingerprints: fingerprints,
                               "the prefix index of \(capacity) blocks (memory_bytes / block bytes)")
        duplicates = try DuplicateBlocks(ids: capacity, perBlock)
        events = try EventQueue(capacity: eventCapacity, room: eventRoom)
        a.keep()
    }

    deinit {
        freeIds.deallocate()
        refs.deallocate()
        hashes.deallocate()
        parents.deallocate()
        fingerprints.deallocate()
        parentFingerprints.deallocate()
        indexed.deallocate()
        copyTickets.deallocate()
    }

    /// Blocks that `allocate` can still hand out: free ones plus cached ones it may evict.
    var available: Int { freeCount + cachedCount }

    private var freeCount: Int {
        if let arena { return Int(kvm_arena_available(arena)) }
        return freeTop
    }

    /// A block with one reference. Evicts the oldest cached block when none is free (with a
    /// disk tier spilling it, see the type's cost).
    /// Throws `outOfMemory` when every block is used (or the arena could not commit memory).
    public func allocate() throws(KVError) -> Int32 {
        while true {
            let b: Int32
            if let arena {
                let r = kvm_arena_alloc(arena)
                if r == -Int64(ENOSPC) {
                    if cachedCount == 0 { throw .outOfMemory("all \(capacity) blocks are in use by live sequences") }
                    evictOldest(ancestorsFirst: true)
                    continue
                }
                try checkCommit(r)
                b = Int32(r)
            } else {
                if freeTop == 0 {
                    if cachedCount == 0 { throw .outOfMemory("all \(capacity) blocks are in use by live sequences") }
                    evictOldest(ancestorsFirst: true)
                    continue
                }
                freeTop -= 1
                b = freeIds[freeTop]
            }
            refs[Int(b)] = 1
            hashes[Int(b)] = 0  // neither prepared nor indexed: no earlier owner's hash survives
            parents[Int(b)] = 0
            fingerprints[Int(b)] = 0
            usedCount += 1
            return b
        }
    }

    /// Drops one reference to `block`; at zero an indexed block joins the LRU tail (cached)
    /// and any other is freed. An indexed block's release is told to the listener
    /// (`blockLeftTable`); a recorded duplicate's record ends (`DuplicateBlocks`: the sequence
    /// whose table it was recorded from may be the one letting it go). Precondition: the block
    /// is used.
    public func release(_ block: Int32) {
        let b = Int(block)
        precondition(refs[b] > 0, "release of an unreferenced block")
        endDuplicate(block)
        if indexed[b] { listener?.blockLeftTable(block) }
        refs[b] -= 1
        if refs[b] > 0 { return }
        usedCount -= 1
        if indexed[b] {
            lru.append(block)
            cachedCount += 1
            listener?.blockCached(block)
        } else {
            freeBlock(block)
        }
    }

    /// Adds a reference to a used or cached block (a cached one leaves the LRU queue).
    func retain(_ block: Int32) {
        let b = Int(block)
        if refs[b] == 0 {
            lru.remove(block)
            cachedCount -= 1
            usedCount += 1
            listener?.blockReused(block)
        }
        refs[b] += 1
    }

    /// References held on `block`.
    func references(_ block: Int32) -> UInt32 { refs[Int(block)] }

    /// True when `block` is used or cached (its memory holds data).
    func isLive(_ block: Int32) -> Bool {
        block >= 0 && Int(block) < capacity && (refs[Int(block)] > 0 || indexed[Int(block)])
    }

    /// The block indexed under `hash` whose fingerprint is `fingerprint`, or -1: a block of
    /// that hash with another fingerprint (a collision of the public hash, or a block whose
    /// fingerprint is unknown) is passed over. A `fingerprint` of 0 (a caller that knows the
    /// prompt by its hashes alone, `Engine.createSequence(_:blockHashes:tokens:)`) takes the
    /// first block indexed under `hash`, whatever its fingerprint: also a block a token-given
    /// prompt indexed (one way: a lookup with a fingerprint never takes a block of
    /// fingerprint 0). O(1) expected (`HashChains.find`).
    @inline(__always) func lookup(_ hash: UInt64, fingerprint: UInt64) -> Int32 {
        index.find(hash, fingerprint: fingerprint)
    }

    /// Indexes used block `block` as the full block `hash` whose parent is `parent`, with
    /// fingerprint `fingerprint` (0: unknown) and its parent's `parentFingerprint` (0: unknown,
    /// or a chain's first block; `parentFingerprint(of:)`). Emits `blockStored` only when `hash` was not
    /// indexed (a block of a colliding hash and another fingerprint joins it silently: the
    /// events describe a set of hashes). Returns false (and changes nothing) when the block
    /// is already indexed, or `hash` holds a block of the same fingerprint, or `fingerprint`
    /// is 0 and `hash` holds any block (`HashChains.insert`).
    @discardableResult
    func insert(_ block: Int32, hash: UInt64, parent: UInt64, fingerprint: UInt64, parentFingerprint: UInt64 = 0) -> Bool {
        guard hash != 0, !indexed[Int(block)] else { return false }
        let insertion = index.insert(hash, block, fingerprint: fingerprint)
        guard insertion != .refused else { return false }
        hashes[Int(block)] = hash
        parents[Int(block)] = parent
        fingerprints[Int(block)] = fingerprint
        parentFingerprints[Int(block)] = parentFingerprint
        indexed[Int(block)] = true
        indexedCount += 1
        if insertion == .newHash { events.push(KVEvent(kind: .blockStored, blockHash: hash, parentHash: parent)) }
        return true
    }

    /// Records that used, unindexed block `block` is the full block `hash` whose parent is
    /// `parent`, without indexing it (see `prepared`). A free leaves it (the free touches no
    /// hash); `allocate` clears it, so a block's prepared hash is always its current owner's.
    /// O(1).
    func prepare(_ block: Int32, hash: UInt64, parent: UInt64, fingerprint: UInt64) {
        precondition(refs[Int(block)] > 0 && !indexed[Int(block)], "prepare of a block that is not used and unindexed")
        hashes[Int(block)] = hash
        parents[Int(block)] = parent
        fingerprints[Int(block)] = fingerprint
    }

    /// The hash, parent hash and fingerprint `prepare` recorded for `block` (to `insert` it
    /// under), or those it is indexed under; 0s for a block that is neither. O(1).
    func prepared(_ block: Int32) -> (hash: UInt64, parent: UInt64, fingerprint: UInt64) {
        (hashes[Int(block)], parents[Int(block)], fingerprints[Int(block)])
    }

    /// True when `block` is in the prefix index (used or cached).
    func isIndexed(_ block: Int32) -> Bool { indexed[Int(block)] }

    /// Records that used block `block`, which `insert` refused under `hash` and `fingerprint`
    /// (not 0) because the index holds `hash`'s block of that fingerprint, holds the same bytes
    /// at `position` of `slot`'s table: when that block leaves the index, this one (or another
    /// such) takes its place (`unindex`). No-op for a block indexed or recorded already, or when
    /// no other block of that fingerprint is indexed. O(1) expected (`HashChains.findEqual`).
    func recordDuplicate(_ block: Int32, hash: UInt64, fingerprint: UInt64, slot: Int, position: Int) {
        guard hash != 0, fingerprint != 0, !indexed[Int(block)], !duplicates.isRecorded(block) else { return }
        let original = index.findEqual(hash, fingerprint: fingerprint)
        if original >= 0 { duplicates.record(block, behind: original, slot: slot, position: position) }
    }

    /// Ends used `block`'s duplicate record, if any: its table's sequence is about to rewrite
    /// or remap its bytes (a compaction writing it, a truncation from its position on). Called
    /// before the operation takes a block or a page, since that may evict the indexed copy, and
    /// a promotion then would take its page record from the slot's pages mid-change (found by
    /// dupchain2: a compaction's block copies evicted the indexed copies, the forked
    /// duplicates took pages the compaction rewrote, and a later prefix hit read them).
    /// O(duplicates of its indexed block).
    func endDuplicate(_ block: Int32) {
        if duplicates.isRecorded(block) { duplicates.drop(block) }
    }

    /// Duplicates recorded (`recordDuplicate`): 0 once every sequence holding one let it go.
    var duplicateCount: Int { duplicates.count }

    /// Removes used block `block` from the prefix index (emitting `blockRemoved`) because its
    /// bytes are about to change (compaction, a truncation's cut); it stays used. The
    /// contiguous layout drops the page pins and references the index held. For an unindexed
    /// block, ends its duplicate record, if any. Precondition: used.
    func unindexUsed(_ block: Int32) {
        precondition(refs[Int(block)] > 0)
        guard indexed[Int(block)] else {
            endDuplicate(block)
            return
        }
        listener?.blockCached(block)
        unindex(block, emit: true)
    }

    /// Evicts the least recently used cached block, if any; returns whether one was evicted.
    /// A block being copied outside the lock (`markCopy`) is passed over for the next one,
    /// which need not wait for the copy; only when every cached block is being copied does
    /// the oldest go, after its copy. `ancestorsFirst`: an allocation's eviction, whose spill
    /// may be skipped (`BlockSpiller.spill`). O(1) plus the marked blocks passed over (at most
    /// a writeback batch).
    @discardableResult
    func evictOldest(emit: Bool = true, ancestorsFirst: Bool = false) -> Bool {
        var b = lru.first
        guard b >= 0 else { return false }
        if copyTickets[Int(b)] != 0 { b = oldestUnmarked() }
        evict(b, emit: emit, ancestorsFirst: ancestorsFirst)
        return true
    }

    /// The oldest cached block not being copied, or the oldest when every one is (`evictOldest`,
    /// whose common path stays small enough to inline into `allocate`). Precondition: one is cached.
    @inline(never)
    private func oldestUnmarked() -> Int32 {
        var b = lru.first
        while copyTickets[Int(b)] != 0 && lru.next(after: b) >= 0 { b = lru.next(after: b) }
        return copyTickets[Int(b)] != 0 ? lru.first : b
    }

    /// Evicts cached block `block` now (a swapped-out sequence's blocks that are already on
    /// disk): the spiller is told, unless a duplicate takes its place in memory (its own
    /// eviction spills it later), then it leaves the index and is freed. Precondition: cached.
    func evict(_ block: Int32, emit: Bool = true, ancestorsFirst: Bool = false) {
        precondition(refs[Int(block)] == 0 && indexed[Int(block)], "evict of a block that is not cached")
        lru.remove(block)
        cachedCount -= 1
        evictedCount += 1
        if !duplicates.hasDuplicates(block) {
            spiller?.spill(block, hash: hashes[Int(block)], parent: parents[Int(block)], fingerprint: fingerprints[Int(block)],
                           ancestorsFirst: ancestorsFirst)
        }
        unindex(block, emit: emit)
        freeBlock(block)
    }

    /// Removes used block `block` from the index (its bytes turned out wrong: a failed disk
    /// read, or were never computed), emitting `blockRemoved`; it is freed when its last
    /// reference goes. An unindexed block's duplicate record ends. No-op for a free block.
    func forget(_ block: Int32) {
        guard refs[Int(block)] > 0 else { return }
        unindexUsed(block)
    }

    /// Appends to `out` one `blockStored` (memory tier) per indexed hash (its first block's,
    /// `HashChains.first`: blocks of a colliding hash are listed once), each after its parent
    /// when the index holds that parent, a block whose parent it lacks (a chain's first block,
    /// parent 0; a parent only on disk or in no index) starting a run
    /// (`HashChains.forEachParentsFirst`). Changes nothing.
    /// Cost: O(capacity), two hash lookups per block with a hash, 8 bytes per block of scratch
    /// (one allocation), no allocation beyond that and `out`'s growth (none when it has room
    /// for `usedCount + cachedCount` more).
    func appendIndexed(to out: inout [KVEvent]) {
        index.forEachParentsFirst(ids: capacity, hashes: hashes, parents: parents, tier: KVEvent.memoryTier) {
            out.append($0)
        }
    }

    /// The hash `block` is indexed under (0 when it is not, also when it is only prepared), and
    /// its parent's.
    func hash(of block: Int32) -> UInt64 { indexed[Int(block)] ? hashes[Int(block)] : 0 }
    func parent(of block: Int32) -> UInt64 { indexed[Int(block)] ? parents[Int(block)] : 0 }
    func fingerprint(of block: Int32) -> UInt64 { indexed[Int(block)] ? fingerprints[Int(block)] : 0 }

    /// The fingerprint of the parent `block` was indexed under (`insert`; 0: unknown, a chain's
    /// first block, or `block` is not indexed): with `parent(of:)`, what a walk up the chain
    /// looks up (`lookup(parent(of: b), fingerprint: parentFingerprint(of: b))`), which takes
    /// the parent itself when memory indexes it, whatever else its hash holds. O(1).
    func parentFingerprint(of block: Int32) -> UInt64 { indexed[Int(block)] ? parentFingerprints[Int(block)] : 0 }

    /// Drops the `limit` oldest cached blocks, or every one when fewer are cached (trim; the
    /// spiller is told of each first). Emits one `allCleared` when that empties the index (no
    /// duplicate takes a dropped block's place), else one `blockRemoved` per hash that leaves
    /// (`unindex`). Not counted as evictions. Returns how many were dropped.
    /// O(dropped) besides the spiller's work.
    @discardableResult
    func dropCached(limit: Int = .max) -> Int {
        let n = min(cachedCount, limit)
        let clearsAll = indexedCount == n && duplicates.count == 0
        var dropped = 0
        while dropped < n && evictOldest(emit: !clearsAll) { dropped += 1 }
        evictedCount -= UInt64(dropped)  // trimming is not eviction under pressure
        if clearsAll && dropped > 0 { events.push(KVEvent(kind: .allCleared, blockHash: 0, parentHash: 0)) }
        return dropped
    }

    /// Takes `block` out of the index; `blockRemoved` (when `emit`) only when it was the last
    /// block of its hash. A duplicate waiting behind it (`DuplicateBlocks`) takes its place
    /// under the same hash, parent and fingerprints, silently: the set of hashes the events
    /// describe is unchanged (a `blockRemoved` then `blockStored` would tell a tree consumer the
    /// hash's subtree left), and the contiguous layout gives it its page record
    /// (`BlockListener.blockPromoted`).
    private func unindex(_ block: Int32, emit: Bool) {
        let b = Int(block)
        if copyTickets[b] != 0 {
            spiller?.awaitCopy(copyTickets[b])
            copyTickets[b] = 0
        }
        let hashLeft = index.remove(hashes[b], block)
        indexedCount -= 1
        listener?.blockEvicted(block)
        if duplicates.hasDuplicates(block) {
            promote(from: block)
        } else if emit && hashLeft {
            events.push(KVEvent(kind: .blockRemoved, blockHash: hashes[b], parentHash: parents[b]))
        }
        hashes[b] = 0
        parents[b] = 0
        fingerprints[b] = 0
        parentFingerprints[b] = 0
        indexed[b] = false
    }

    /// Indexes the first duplicate behind `block`, which just left the index, in its place.
    @inline(never)
    private func promote(from block: Int32) {
        let b = Int(block)
        let (d, slot, position) = duplicates.promote(from: block)
        let inserted = index.insert(hashes[b], d, fingerprint: fingerprints[b])
        precondition(inserted != .refused, "a duplicate's hash holds its fingerprint")
        hashes[Int(d)] = hashes[b]
        parents[Int(d)] = parents[b]
        fingerprints[Int(d)] = fingerprints[b]
        parentFingerprints[Int(d)] = parentFingerprints[b]
        indexed[Int(d)] = true
        indexedCount += 1
        listener?.blockPromoted(d, slot: slot, position: position)
    }

    // MARK: copies outside the lock (`Writeback`)

    /// Calls `body` with the cached blocks from the oldest on, at most `limit` of them, until
    /// it returns false. O(blocks visited).
    func forEachOldestCached(limit: Int, _ body: (Int32) -> Bool) {
        var b = lru.first
        var visited = 0
        while b >= 0 && visited < limit && body(b) {
            b = lru.next(after: b)
            visited += 1
        }
    }

    /// Marks indexed `block` as being copied under `ticket` (> 0) outside the engine's lock:
    /// until `clearCopy`, its leaving the index waits for the copy (`copyTickets`). O(1).
    func markCopy(_ block: Int32, ticket: UInt64) {
        precondition(ticket > 0 && indexed[Int(block)] && copyTickets[Int(block)] == 0)
        copyTickets[Int(block)] = ticket
    }

    /// The ticket `block` is being copied under, or 0. O(1).
    func copyTicket(_ block: Int32) -> UInt64 { copyTickets[Int(block)] }

    /// Ends `block`'s mark when it is still `ticket`'s (its copy is done). O(1).
    func clearCopy(_ block: Int32, ticket: UInt64) {
        if copyTickets[Int(block)] == ticket { copyTickets[Int(block)] = 0 }
    }

    private func freeBlock(_ block: Int32) {
        if let arena { kvm_arena_free(arena, UInt32(block)) } else {
            freeIds[freeTop] = block
            freeTop += 1
        }
    }
}

/// Writes cached blocks somewhere before they leave memory (the disk tier).
protocol BlockSpiller: AnyObject {
    /// Cached block `block` (indexed under `hash`, child of `parent`, with `fingerprint`) is about to be freed; its
    /// bytes are intact during the call, and so are every other cached block's. Called inside
    /// allocations, under the engine's lock: it must not wait for I/O (the disk tier skips the
    /// write instead, `DiskTier.spill`). `ancestorsFirst` (an allocation's eviction, which may
    /// skip): the oldest of the block's cached ancestors the spiller lacks are written first,
    /// then the block if room remains (`OffloadCoordinator.spill`).
    func spill(_ block: Int32, hash: UInt64, parent: UInt64, fingerprint: UInt64, ancestorsFirst: Bool)
    /// Returns once the copy of ticket `ticket` (`BlockPool.markCopy`) is done; it runs outside
    /// the engine's lock, which this keeps. Bounded by one block's copy per batch entry ahead.
    func awaitCopy(_ ticket: UInt64)
}

/// Observes indexed blocks moving between used, cached and evicted. The calls pair up: an
/// indexed block gets `blockCached` when whatever its users held for it is to be dropped, and
/// `blockReused` when it is to be held again; `blockEvicted` drops what the index held for it
/// and always comes while the block is in the `blockCached` state. (ContiguousMemory: page pins
/// for `blockCached`/`blockReused`, page references for `blockEvicted`.)
protocol BlockListener: AnyObject {
    /// Indexed block `block` is no longer held by users: it lost its last reference and is now
    /// cached (`release`), or it is still used but about to leave the index (`forget`,
    /// `unindexUsed`), when `blockEvicted` follows at once and the block stays used, unindexed.
    func blockCached(_ block: Int32)
    /// A cached block got a reference again (a prefix hit).
    func blockReused(_ block: Int32)
    /// Indexed block `block` is leaving the index, after `blockCached`: a cached block evicted
    /// (it is freed next), or a used one `forget` or `unindexUsed` takes out (it stays used
    /// by its sequences, freed when its last reference goes).
    func blockEvicted(_ block: Int32)
    /// A sequence released indexed block `block`, which stays indexed (used by others, or
    /// cached): it no longer lies in that sequence's table.
    func blockLeftTable(_ block: Int32)
    /// Used block `block`, at `position` of `slot`'s table, entered the index in place of a
    /// block of its hash and bytes that left it (`BlockPool.unindex`): as a block indexed
    /// from that table (`ContiguousMemory.retainPages`).
    func blockPromoted(_ block: Int32, slot: Int, position: Int)
}
