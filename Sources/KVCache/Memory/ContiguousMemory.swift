import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The contiguous layout's memory: per slot and tensor one virtual range (`kvm_ranges`) backed
/// page by page by `kvm_pool` groups, plus the page references of cached logical blocks.
///
/// Sharing: a prefix hit or a fork maps the same group at the same page of the new slot when the
/// page lies wholly inside the shared tokens; the page holding the boundary is copied into a
/// fresh group, so a shared page is never written (appends only write at positions >= length).
///
/// Pinning: a group is *pinned* while a live slot maps it below its `pinnedPages`, or a used
/// (referenced) indexed block holds it. Every unpinned group can be reclaimed (free slots are
/// unmapped, pages mapped ahead are unmapped, cached blocks are evicted), so an operation that
/// needs `n` groups not yet pinned fits iff `pinnedGroups + n <= groups`: the check done before
/// any state changes, which makes out-of-memory leave everything as it was.
final class ContiguousMemory: BlockListener {
    let pool: OpaquePointer
    let ranges: OpaquePointer
    let tensors: Int
    let tokenBytes: Int
    let pageBytes: Int
    /// log2(`pageBytes`), a power of two (`EngineConfig.validate`): `pages(for:)`, on every append.
    private let pageShift: Int
    let blockBytes: Int
    let groups: Int
    let slots: Int
    /// The per-group and per-block arrays below, carved from one `calloc` block (`metadata`).
    private let metadata: UnsafeMutableRawPointer
    /// Per group: live slots pinning it.
    private let pins: UnsafeMutablePointer<UInt32>
    /// Groups with a pin.
    private(set) var pinnedGroups = 0
    /// Per slot: pages pinned (0 for a free slot).
    private let pinnedPages: UnsafeMutablePointer<Int>
    /// Per group: the operation that counted it last (dedupes counts without allocating).
    private let marks: UnsafeMutablePointer<UInt64>
    private var epoch: UInt64 = 0
    /// Per logical block: first page, page count and groups it references while indexed.
    private let maxPagesPerBlock: Int
    private let blockFirstPage: UnsafeMutablePointer<Int32>
    private let blockPages: UnsafeMutablePointer<Int32>
    private let blockGroups: UnsafeMutablePointer<Int32>
    /// Per logical block: where its bytes start within its first page.
    private let blockOffset: UnsafeMutablePointer<Int32>
    /// Per logical block: swapped-out tables keeping it (`holdPages`). While non-zero the
    /// block's page record (first page, groups, their index references and pins) stays when it
    /// leaves the index (`blockEvicted`), until the last one lets go.
    private let blockHolds: UnsafeMutablePointer<UInt32>
    /// Per group: references that indexed blocks hold on it (`retainPages`, `blockEvicted`).
    private let indexRefs: UnsafeMutablePointer<UInt32>
    /// Per group: true from when `mapOwned` takes it fresh or keeps it for the slot that alone
    /// holds it until it strays: an indexed block holding it leaves a sequence's table while
    /// staying indexed (`blockLeftTable`), or a slot maps a copy in its place (`unshare`: the
    /// slot's indexed blocks there stay in its table); false before it was ever taken. While
    /// true, every indexed block holding it lies in the table of a sequence that maps it and
    /// mapped it when indexing it, at the position it was indexed from (`holdsAlone`).
    private let settled: UnsafeMutablePointer<Bool>
    /// Scratch for one `open`: the pages it maps owned groups at (one per page of a slot's range).
    private let scratchOwned: UnsafeMutablePointer<Int>
    /// Scratch for one `unshare`: the group each of its pages mapped before (one per page).
    private let scratchOld: UnsafeMutablePointer<Int32>
    /// Frees memory held by the prefix cache: evicts one cached block, false when none is left.
    var evictCached: () -> Bool = { false }

    init(_ config: EngineConfig, logicalBlocks: Int) throws(KVError) {
        tensors = config.tensors
        tokenBytes = config.tokenBytes
        pageBytes = Int(config.pageBytes)
        pageShift = pageBytes.trailingZeroBitCount
        blockBytes = config.blockBytes
        slots = config.maxSeqs
        let p = try makePagePool(config, groupBytes: config.pageBytes)
        var r: OpaquePointer?
        let rc = kvm_ranges_create(p, UInt32(config.maxSeqs), UInt64(config.maxSeqTokens * config.tokenBytes), &r)
        if rc < 0 {
            kvm_pool_destroy(p)
            try check(rc)
        }
        pool = p
        ranges = r!
        groups = Int(kvm_pool_groups(pool))
        // A block's bytes lie in one slot's range, so it spans at most the range's pages.
        let blockSpan = (config.blockBytes + pageBytes - 1) / pageBytes + 1
        maxPagesPerBlock = min(blockSpan, Int(kvm_ranges_pages(ranges)))
        // One calloc for the arrays sized by the budget: its failure is a status, where Swift's
        // `allocate` would end the process, and its pages stay untouched zero pages until used,
        // so a large memory_bytes costs no RSS and no time at creation. Widest elements first.
        // With them, the scratch `open` and `unshare` use, so that they allocate nothing.
        let perGroup = 8 + 4 + 4 + 1, perBlock = 4 * (4 + maxPagesPerBlock), perRangePage = 8 + 4
        let rangePages = Int(kvm_ranges_pages(ranges))
        let (groupArrays, o1) = groups.multipliedReportingOverflow(by: perGroup)
        let (blockArrays, o2) = logicalBlocks.multipliedReportingOverflow(by: perBlock)
        let (withScratch, o3) = blockArrays.addingReportingOverflow(perRangePage * rangePages)
        let (total, o4) = groupArrays.addingReportingOverflow(withScratch)
        guard !o1 && !o2 && !o3 && !o4, let m = calloc(1, total) else {
            kvm_ranges_destroy(ranges)
            kvm_pool_destroy(pool)
            throw .outOfMemory("the contiguous layout's metadata needs \(o1 || o2 || o3 || o4 ? "more than 2^63" : "\(total)") bytes "
                + "(\(perGroup) per page group of memory_bytes / page_bytes, \(perBlock) per block), which the OS refused: "
                + "lower memory_bytes or raise page_bytes")
        }
        metadata = m
        marks = m.bindMemory(to: UInt64.self, capacity: groups)
        scratchOwned = (m + 8 * groups).bindMemory(to: Int.self, capacity: rangePages)
        let base4 = m + 8 * groups + 8 * rangePages
        pins = base4.bindMemory(to: UInt32.self, capacity: groups)
        indexRefs = (base4 + 4 * groups).bindMemory(to: UInt32.self, capacity: groups)
        let blocksBase = base4 + 8 * groups
        blockFirstPage = blocksBase.bindMemory(to: Int32.self, capacity: logicalBlocks)
        blockPages = (blocksBase + 4 * logicalBlocks).bindMemory(to: Int32.self, capacity: logicalBlocks)
        blockOffset = (blocksBase + 8 * logicalBlocks).bindMemory(to: Int32.self, capacity: logicalBlocks)
        blockHolds = (blocksBase + 12 * logicalBlocks).bindMemory(to: UInt32.self, capacity: logicalBlocks)
        blockGroups = (blocksBase + 16 * logicalBlocks).bindMemory(to: Int32.self, capacity: logicalBlocks * maxPagesPerBlock)
        scratchOld = (blocksBase + blockArrays).bindMemory(to: Int32.self, capacity: rangePages)
        settled = (blocksBase + blockArrays + 4 * rangePages).bindMemory(to: Bool.self, capacity: groups)
        pinnedPages = .allocate(capacity: slots)
        pinnedPages.initialize(repeating: 0, count: slots)
    }

    deinit {
        unmap()
        free(metadata)
        pinnedPages.deallocate()
    }

    /// Unmaps the ranges and frees the pool (`kvm_pool_destroy`; in a forked child it only
    /// unmaps and closes). Once: by `deinit`, or by an inherited engine's `deinit` that keeps
    /// this object from being released (`Engine.deinit`).
    func unmap() {
        kvm_ranges_destroy(ranges)
        kvm_pool_destroy(pool)
    }

    /// The address range of every slot's ranges.
    var region: (start: UInt, bytes: UInt) { (UInt(bitPattern: kvm_ranges_base(ranges)), UInt(kvm_ranges_reserved_bytes(ranges))) }

    /// Physical bytes held.
    var committedBytes: UInt64 { kvm_pool_committed_bytes(pool) }
    /// Mappings in use, as the kernel has them (`kvm_ranges_mappings`).
    var mappings: UInt64 { kvm_ranges_mappings(ranges) }

    /// Base of tensor `tensor` of `slot`.
    @inline(__always) func base(_ slot: Int, tensor: Int) -> UnsafeMutableRawPointer {
        Self.base(in: ranges, slot, tensor: tensor)
    }

    /// `base` given the ranges alone (`Engine.contiguousRanges`: no reference to this object).
    @inline(__always) static func base(in ranges: OpaquePointer, _ slot: Int, tensor: Int) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(kvm_ranges_tensor(ranges, UInt32(slot), UInt32(tensor)))
    }

    /// Pages covering `tokens` tokens.
    @inline(__always) func pages(for tokens: Int) -> Int { (tokens * tokenBytes + pageBytes - 1) >> pageShift }

    private func group(_ slot: Int, _ page: Int) -> Int32 { Int32(kvm_ranges_group(ranges, UInt32(slot), UInt32(page))) }

    /// True when indexed `block` was indexed at block position `position`: its bytes and the
    /// groups it holds are those of that position. O(1).
    @inline(__always) func holds(_ block: Int32, at position: Int) -> Bool {
        Int(blockFirstPage[Int(block)]) * pageBytes + Int(blockOffset[Int(block)]) == position * blockBytes
    }

    /// The group at `page` of block `block` (which must cover it and be indexed).
    private func blockGroup(_ block: Int32, page: Int) -> Int32 {
        blockGroups[Int(block) * maxPagesPerBlock + page - Int(blockFirstPage[Int(block)])]
    }

    // MARK: planning (no state changes)

    /// The group a new slot can map at `page`, which lies wholly inside the `hitTokens` tokens
    /// of `hit`: the one every hit block covering the page agrees on, or -1 (then it is copied,
    /// or, where a block of `hit` is -1, read from disk into it).
    private func sharedGroup(_ hit: UnsafeBufferPointer<Int32>, hitTokens: Int, page: Int) -> Int32 {
        let lo = page * pageBytes, hi = lo + pageBytes
        guard hi <= hitTokens * tokenBytes else { return -1 }
        var agreed: Int32 = -1
        for j in lo / blockBytes...(hi - 1) / blockBytes {
            if hit[j] < 0 { return -1 }
            let g = blockGroup(hit[j], page: page)
            if agreed >= 0 && g != agreed { return -1 }
            agreed = g
        }
        return agreed
    }

    /// Groups not yet pinned that a new sequence with prefix `hit` (covering
    /// `hitTokens`: per block position the indexed block it shares, or -1 where its bytes come
    /// from disk) and `tokens` tokens would pin, counting the pages of the hit blocks it keeps.
    func groupsNeeded(hit: UnsafeBufferPointer<Int32>, hitTokens: Int, tokens: Int) -> Int {
        epoch += 1
        var need = 0
        func count(_ g: Int32) {
            if g >= 0 && pins[Int(g)] == 0 && marks[Int(g)] != epoch { marks[Int(g)] = epoch; need += 1 }
        }
        for page in 0..<pages(for: tokens) {
            let shared = sharedGroup(hit, hitTokens: hitTokens, page: page)
            if shared >= 0 { count(shared) } else { need += 1 }
        }
        for b in hit where b >= 0 {
            for i in 0..<Int(blockPages[Int(b)]) { count(blockGroups[Int(b) * maxPagesPerBlock + i]) }
        }
        return need
    }

    /// How many of `slot`'s pages, from page 0, it pins (0 for a free slot). O(1). Tests: the
    /// engine reads `pinnedPages` itself.
    func pinnedPageCount(slot: Int) -> Int { pinnedPages[slot] }

    /// Groups not yet pinned that growing live `slot` to `tokens` tokens would pin.
    func groupsNeeded(slot: Int, growingTo tokens: Int) -> Int { max(0, pages(for: tokens) - pinnedPages[slot]) }

    /// Groups not yet pinned that forking `parent` (holding `tokens`) would pin: its boundary page.
    func groupsNeededForFork(tokens: Int) -> Int { (tokens * tokenBytes) % pageBytes == 0 ? 0 : 1 }

    /// True when `need` more pinned groups fit the budget.
    func fits(_ need: Int) -> Bool { pinnedGroups + need <= groups }

    // MARK: changes

    /// Maps and pins the pages of a new sequence in free `slot`: shared hit pages, then fresh or
    /// reused pages, copying the hit tokens that fall on unshared pages. `hit` holds, per block
    /// position below `hitTokens`, the indexed block shared there, or -1 for a block read from
    /// disk into the slot's own pages (its page is never shared).
    /// Precondition: `fits(groupsNeeded(...))` held for the same arguments.
    /// Throws (a commit or a mapping the OS refuses, a failed read) with the slot mapping no
    /// page, the groups it took free (`undoingMaps`), so `mappings` does not grow.
    func open(slot: Int, hit: UnsafeBufferPointer<Int32>, hitTokens: Int, tokens: Int) throws(KVError) {
        let needPages = pages(for: tokens)
        busy = (slot, needPages)
        defer { busy = (-1, 0) }
        dropStale(slot) { page in page < needPages ? sharedGroup(hit, hitTokens: hitTokens, page: page) : -1 }
        var ownedCount = 0
        for page in 0..<needPages where sharedGroup(hit, hitTokens: hitTokens, page: page) < 0 {
            scratchOwned[ownedCount] = page
            ownedCount += 1
        }
        let owned = UnsafeBufferPointer(start: scratchOwned, count: ownedCount)
        try undoingMaps(slot: slot) { () throws(KVError) in
            try mapGroups(slot: slot, pages: 0..<needPages) { page in sharedGroup(hit, hitTokens: hitTokens, page: page) }
            try mapOwned(slot: slot, pages: owned)
            for page in owned where page * pageBytes < hitTokens * tokenBytes {
                try copyHit(hit, hitTokens: hitTokens, page: page, slot: slot)
            }
        }
        pin(slot, upTo: needPages)
    }

    /// Runs `body`, which maps pages of free `slot` after `dropStale`; when it throws, unmaps
    /// every page the slot maps (freeing the groups only they held) before rethrowing, so that a
    /// failed create or fork leaves the slot mapping nothing and `mappings` no higher than
    /// before. Unmapping only what `body` mapped is not enough: `dropStale` unmapped the pages
    /// the slot could not keep, and one between two kept ones split a run in two (blocks
    /// spanning pages indexed from two sequences, a page a disk read fills; found by helper-176:
    /// 8 more mappings after a refused create, `RefusedOpenMappingTests`). The pages
    /// a freed sequence left mapped for the slot's next one go too: a refusal is rare. Cost: on
    /// failure, one unmap per tensor.
    private func undoingMaps(slot: Int, _ body: () throws(KVError) -> Void) throws(KVError) {
        do throws(KVError) { try body() } catch {
            unmap(slot, 0..<Int(kvm_ranges_mapped(ranges, UInt32(slot))))
            throw error
        }
    }

    /// Maps and pins pages of live `slot` so it holds `tokens` tokens.
    func grow(slot: Int, to tokens: Int) throws(KVError) {
        let needPages = pages(for: tokens)
        guard needPages > pinnedPages[slot] else { return }
        busy = (slot, needPages)
        defer { busy = (-1, 0) }
        try mapOwned(slot: slot, pages: pinnedPages[slot]..<needPages)  // a range: no heap allocation
        pin(slot, upTo: needPages)
    }

    /// Maps and pins `child`'s pages for a fork of `parent` holding `tokens` tokens: whole
    /// pages shared, the boundary page copied. Throws with the child's slot mapping no page, as
    /// `open`.
    func fork(parent: Int, child: Int, tokens: Int) throws(KVError) {
        let bytes = tokens * tokenBytes
        let whole = bytes / pageBytes
        busy = (child, pages(for: tokens))
        defer { busy = (-1, 0) }
        dropStale(child) { page in page < whole ? group(parent, page) : -1 }
        try undoingMaps(slot: child) { () throws(KVError) in
            try mapGroups(slot: child, pages: 0..<whole) { page in group(parent, page) }
            if bytes % pageBytes != 0 {
                try mapOwned(slot: child, pages: whole..<whole + 1)  // a range: no heap allocation
                let g = UInt32(group(parent, whole))
                for t in 0..<tensors {
                    try check(kvm_pool_read(pool, UInt32(t), g, 0, base(child, tensor: t) + whole * pageBytes, UInt64(bytes % pageBytes)))
                }
            }
        }
        pin(child, upTo: pages(for: tokens))
    }

    /// Unpins a freed slot's pages; they stay mapped for the slot's next sequence (deferred
    /// reclamation) until memory is needed or `trim`, unless the process's engines are near
    /// the mapping limit they share (`kvm_ranges_process_near_limit`): then they are unmapped
    /// at once, since an engine reclaims only its own mappings and another one may be refused
    /// for want of them. Cost: one unpin per page, and near the limit one munmap per tensor.
    func close(slot: Int) {
        for page in 0..<pinnedPages[slot] { unpin(group(slot, page)) }
        pinnedPages[slot] = 0
        if kvm_ranges_process_near_limit() { unmapUnpinned(slot) }
    }

    /// Makes newly indexed, used logical block `block` (position `position` of `slot`) hold
    /// references to (and pin) the groups its bytes lie in, so they outlive the slot's mapping.
    func retainPages(block: Int32, slot: Int, position: Int) {
        let first = position * blockBytes / pageBytes
        let last = ((position + 1) * blockBytes - 1) / pageBytes
        blockFirstPage[Int(block)] = Int32(first)
        blockOffset[Int(block)] = Int32(position * blockBytes - first * pageBytes)
        blockPages[Int(block)] = Int32(last - first + 1)
        for page in first...last {
            let g = group(slot, page)
            blockGroups[Int(block) * maxPagesPerBlock + page - first] = g
            kvm_pool_ref(pool, UInt32(g))
            indexRefs[Int(g)] += 1
        }
        blockReused(block)
    }

    func blockPromoted(_ block: Int32, slot: Int, position: Int) {
        retainPages(block: block, slot: slot, position: position)
    }

    func blockCached(_ block: Int32) {
        for i in 0..<Int(blockPages[Int(block)]) { unpin(blockGroups[Int(block) * maxPagesPerBlock + i]) }
    }

    func blockReused(_ block: Int32) {
        for i in 0..<Int(blockPages[Int(block)]) { pinGroup(Int(blockGroups[Int(block) * maxPagesPerBlock + i])) }
    }

    func blockEvicted(_ block: Int32) {
        guard blockHolds[Int(block)] == 0 else {
            // Kept by a swapped-out table (a sharer's abort, a failed read): the record stays
            // as if indexed, pinned again, until the last hold goes (`holdPages`).
            blockReused(block)
            return
        }
        for i in 0..<Int(blockPages[Int(block)]) {
            let g = blockGroups[Int(block) * maxPagesPerBlock + i]
            kvm_pool_unref(pool, UInt32(g))
            indexRefs[Int(g)] -= 1
        }
        blockPages[Int(block)] = 0
    }

    /// Adds (`hold`) or drops a reference to each group indexed `block` holds, standing for the
    /// mapping a swap-out keeping the block releases (`SwapHolds`; taken when the swap-out
    /// starts, so the record is held while it is pending too, `SwapHolds.reserve`): a sequence
    /// writing one of those pages then finds it held elsewhere and copies it first
    /// (`holdsAlone`, `isHeldElsewhere`), so the kept bytes stay. While held, the block's page
    /// record outlives its leaving the index (`blockEvicted`), so the swap-in maps the pages
    /// the record names and a free drops the references it added; the last hold dropped from a
    /// block no longer `indexed` drops the record as `blockEvicted` would have.
    /// O(pages of the block).
    func holdPages(of block: Int32, _ hold: Bool, indexed: Bool) {
        for i in 0..<Int(blockPages[Int(block)]) {
            let g = UInt32(blockGroups[Int(block) * maxPagesPerBlock + i])
            if hold { kvm_pool_ref(pool, g) } else { _ = kvm_pool_unref(pool, g) }
        }
        blockHolds[Int(block)] = hold ? blockHolds[Int(block)] + 1 : blockHolds[Int(block)] - 1
        if !hold && !indexed && blockHolds[Int(block)] == 0 {
            blockCached(block)
            blockEvicted(block)
        }
    }

    func blockLeftTable(_ block: Int32) {
        for i in 0..<Int(blockPages[Int(block)]) { settled[Int(blockGroups[Int(block) * maxPagesPerBlock + i])] = false }
    }

    // MARK: compaction (Engine+Compaction.swift)

    /// True when page `page` of `slot` maps a group something else also references (another
    /// slot, or an indexed block, the slot's own included). Tests: whether a page was copied.
    /// Whether writing the page needs a copy is `isHeldElsewhere`'s question, not this one.
    func isShared(slot: Int, page: Int) -> Bool {
        let g = group(slot, page)
        return g >= 0 && kvm_pool_refs(pool, UInt32(g)) > 1
    }

    /// True when O(1) counts and a flag prove that only `slot`'s mapping and indexed blocks
    /// in `slot`'s table hold the group page `page` maps: it is `settled` (not strayed since
    /// taken fresh), and its references are the slot's mapping and the indexed blocks' (no
    /// other slot maps it, no copy or disk write holds it). Each such block was indexed from a
    /// sequence mapping the group, which was this slot (another slot mapping it since it was
    /// fresh maps it still, or released the block or copied the page away: strayed), and it
    /// still lies at the position it was indexed from. So `isHeldElsewhere` with `own`
    /// accepting every block of the table (`blocks` its length) is false. With an `own` that
    /// rejects some (a truncation's: blocks another sequence shares) it may be true; skipping
    /// that scan is right only when the rejected blocks' bytes on the page are not written (a
    /// truncation's, below the cut). False here proves nothing (then scan). A truncation's
    /// spec-decoding cut usually passes: its page's other holders are the sequence's own full
    /// blocks before the cut. The count alone is no proof: with blocks spanning pages, a block
    /// another slot filled onto a page it shared with this one stays on the old group when
    /// that slot is freed (cached) or copies the page away (a compaction keeps the block), and
    /// the references are again one mapping's and the index's
    /// (`TruncateTests.aCutPageACachedForeignBlockHoldsIsCopied`,
    /// `aCutPageWhoseForeignBlockACompactionUnsharedIsCopied`: the cut page went uncopied and
    /// the cached block served the truncated sequence's new K/V).
    @inline(__always) func holdsAlone(slot: Int, page: Int) -> Bool {
        let g = group(slot, page)
        return g >= 0 && settled[Int(g)] && kvm_pool_refs(pool, UInt32(g)) == 1 + indexRefs[Int(g)]
    }

    /// True when page `page` of `slot` maps a group that something holds besides the slot's
    /// mapping and the indexed blocks `table[i]`, `i < blocks`, that lie on the page and that
    /// `own(i)` accepts (default all): the slot's own, each holding the groups it was indexed
    /// on, whose bytes the caller does not write and which either stay the slot's or leave the
    /// index before the next write. Anything else (another slot's mapping, a block another
    /// sequence or the prefix cache holds) has bytes on the page that a write from the slot
    /// would change: the rule for every write into a live slot's pages (a truncation's appends
    /// from the cut on, a compaction's moves). O(blocks on the page).
    func isHeldElsewhere(slot: Int, page: Int, table: UnsafePointer<Int32>, blocks: Int,
                         own: (Int) -> Bool = { _ in true }) -> Bool {
        let g = group(slot, page)
        guard g >= 0 else { return false }
        var held: UInt32 = 1
        for i in page * pageBytes / blockBytes..<min(blocks, ((page + 1) * pageBytes - 1) / blockBytes + 1) {
            let b = Int(table[i]), first = Int(blockFirstPage[b])
            if page >= first && page < first + Int(blockPages[b]) && blockGroups[b * maxPagesPerBlock + page - first] == g && own(i) {
                held += 1
            }
        }
        return kvm_pool_refs(pool, UInt32(g)) > held
    }

    /// Gives pinned pages `pages` of `slot` (ascending) fresh groups holding copies of their
    /// bytes (every tensor), so that they can be written without touching the old groups'
    /// other holders. Consecutive pages are mapped as runs (`mapOwned`: an mmap per tensor per
    /// run) and copied with one read per tensor for each run whose old groups are consecutive
    /// too (a prompt's pages usually are). Precondition: `fits(pages.count)` was checked.
    /// Throws (a commit, mapping or read the OS refuses) with every page mapping and pinning
    /// its old group again, as before the call (the fresh groups taken are free, committed
    /// until a trim), unless mapping one again fails too: then that page maps nothing and the
    /// error says its K/V is lost.
    /// `pages` is indexed from 0 (an array, `CollectionOfOne`).
    /// Cost: the commits and mappings of `mapOwned`, and a copy of `pages.count` pages per
    /// tensor; no allocation (the old groups go to a scratch).
    func unshare<Pages: RandomAccessCollection<Int>>(slot: Int, pages: Pages) throws(KVError) where Pages.Index == Int {
        guard !pages.isEmpty else { return }
        precondition(pages.startIndex == 0)
        let olds = UnsafeMutableBufferPointer(start: scratchOld, count: pages.count)  // distinct pages of the range
        for (j, page) in pages.enumerated() { olds[j] = group(slot, page) }
        for (page, old) in zip(pages, olds) { precondition(old >= 0 && page < pinnedPages[slot]) }
        for old in olds { kvm_pool_ref(pool, UInt32(old)) }  // keep the bytes while the pages are remapped
        defer { for old in olds { kvm_pool_unref(pool, UInt32(old)) } }
        busy = (slot, pinnedPages[slot])
        defer { busy = (-1, 0) }
        for old in olds { unpin(old) }
        // Only a failing system call stops `mapOwned` (capacity was checked), possibly after some
        // runs (the run whose mmap failed maps nothing, `kvm_ranges_map`), or a copy (a read of
        // the pool): then every page maps its old group again, held by the references above
        // and pinned again, the fresh groups go back free, and the failure is thrown, so that
        // `makeWritable`, which unshares before changing anything else, changes nothing when
        // this throws. (Before, found by helper-119: the pages mapped so far kept their fresh
        // groups; earlier, found by helper-103, a page whose run failed stayed unmapped.)
        do throws(KVError) {
            try mapOwned(slot: slot, pages: pages)
            var i = 0
            while i < pages.count {
                guard group(slot, pages[i]) != olds[i] else {
                    i += 1
                    continue
                }
                var run = 1
                while i + run < pages.count && pages[i + run] == pages[i] + run && olds[i + run] == olds[i] + Int32(run)
                    && group(slot, pages[i + run]) != olds[i + run] { run += 1 }
                for t in 0..<tensors {
                    try check(kvm_pool_read(pool, UInt32(t), UInt32(olds[i]), 0, base(slot, tensor: t) + pages[i] * pageBytes,
                                            UInt64(run * pageBytes)))
                }
                i += run
            }
        } catch {
            var failure = error
            for (page, old) in zip(pages, olds) where group(slot, page) != old {
                guard kvm_ranges_map(ranges, UInt32(slot), UInt32(page), UInt32(old), 1) != 0 else { continue }
                // A second failed mmap: the page maps nothing and pins nothing; the sequence's
                // K/V there is gone, and the error says so.
                failure = .outOfMemory("\(failure.message); page \(page) of the sequence could not be mapped again "
                                       + "(\(kvmMessage())): its K/V there is lost and reading it faults; free the sequence")
            }
            for (page, old) in zip(pages, olds) where group(slot, page) == old { pinGroup(Int(old)) }
            throw failure
        }
        for page in pages { pinGroup(Int(group(slot, page))) }
        // The slot's indexed blocks on these pages that it does not write (a compaction keeps
        // them) stay in its table holding the old groups, which it no longer maps: strayed.
        for old in olds { settled[Int(old)] = false }
    }

    /// Unpins live `slot`'s pages past its first `tokens` tokens and leaves them mapped, as
    /// `close` leaves a freed slot's: appends that grow back into them pin the same groups
    /// again without a system call (`mapOwned` keeps a page the slot owns alone), and a need
    /// for memory or `trim` reclaims them (`reclaimMappings`). For truncation: a speculative
    /// decoder's drafts cross into a page, are rolled back, and cross again the next round;
    /// with `shrink` (unmap, the free commit batch punched out, committed again by the next
    /// append) a round of 8 drafts and 3 accepted cost 78.7x appending the 3 (about 10 us),
    /// with this 2.29x, 1.95x since the block pool holds this listener strongly
    /// (`tools/bench_ratio.sh --filter '.*spec-decode.*'`, docs/benchmarks.md).
    /// Cost: one unpin per page released.
    func release(slot: Int, past tokens: Int) {
        let keep = pages(for: tokens)
        guard keep < pinnedPages[slot] else { return }
        for page in keep..<pinnedPages[slot] { unpin(group(slot, page)) }
        pinnedPages[slot] = keep
    }

    /// Shrinks live `slot` to `tokens` tokens: unpins and unmaps the pages past them and gives
    /// free groups back to the OS while more than `committed` bytes stay committed and more than
    /// `spare` free groups are left committed (`kvm_pool_trim`). Cost: one munmap per tensor and
    /// a pool trim (O(1) when no more than `spare` groups are free and committed).
    func shrink(slot: Int, to tokens: Int, keeping committed: UInt64, spare: UInt32) {
        let keep = pages(for: tokens)
        guard keep < pinnedPages[slot] else { return }
        release(slot: slot, past: tokens)
        let mapped = Int(kvm_ranges_mapped(ranges, UInt32(slot)))
        if mapped > keep { unmap(slot, keep..<mapped) }
        kvm_pool_trim(pool, committed, spare)
    }
    /// Copies indexed block `block`'s bytes of every tensor into `out` (tensor t at
    /// `t * blockBytes`), from the groups it holds, without mapping them (the disk tier's spill).
    func readBlock(_ block: Int32, into out: UnsafeMutableRawPointer) throws(KVError) {
        let first = Int(blockFirstPage[Int(block)])
        for t in 0..<tensors {
            var done = 0
            var page = first
            var offset = Int(blockOffset[Int(block)])
            while done < blockBytes {
                let n = min(blockBytes - done, pageBytes - offset)
                let g = UInt32(blockGroup(block, page: page))
                try check(kvm_pool_read(pool, UInt32(t), g, UInt64(offset), out + t * blockBytes + done, UInt64(n)))
                done += n
                page += 1
                offset = 0
            }
        }
    }

    /// Unmaps every unpinned page of `slot` (a swapped-out sequence's), so its memory returns.
    func releaseUnpinned(slot: Int) { unmapUnpinned(slot) }

    /// Gives free groups back to the OS while more than `committed` bytes stay committed
    /// (`kvm_pool_trim`), unmapping nothing. Returns the bytes released. Cost: the pool's trim.
    @discardableResult
    func trimFree(keeping committed: UInt64) -> UInt64 { kvm_pool_trim(pool, committed, 0) }

    /// Unmaps every page not pinned by a live sequence (for `Engine.trim`, which then releases
    /// the free groups in steps: `trimFree`). Cost: one unmap per slot with unpinned pages.
    func unmapAllUnpinned() {
        for slot in 0..<slots { unmapUnpinned(slot) }
    }

    // MARK: internals

    /// The slot an operation is mapping, and the pages it needs there: reclaim leaves those alone.
    private var busy = (slot: -1, pages: 0)

    /// The first page of `slot` that reclaim may unmap.
    private func reclaimable(_ slot: Int) -> Int { max(pinnedPages[slot], slot == busy.slot ? busy.pages : 0) }

    /// Unmaps `pages` of `slot` (`kvm_ranges_unmap`). Its failure needs no handling: the pages
    /// leave the table all the same, and a tensor that kept its old mapping there (mmap refused
    /// at vm.max_map_count) holds a page nothing reaches until a later map replaces it.
    private func unmap(_ slot: Int, _ pages: Range<Int>) {
        _ = kvm_ranges_unmap(ranges, UInt32(slot), UInt32(pages.lowerBound), UInt32(pages.upperBound))
    }

    private func unmapUnpinned(_ slot: Int) {
        let mapped = Int(kvm_ranges_mapped(ranges, UInt32(slot)))
        let first = reclaimable(slot)
        if mapped > first { unmap(slot, first..<mapped) }
    }

    /// Reclaims memory for `want` more groups: unmaps an unpinned tail of some slot, else evicts
    /// cached blocks, oldest first, until `want` groups are free (or none is left). Evicting
    /// for the whole need at once rather than a block per page matters: the evicted blocks'
    /// sequences took their groups as runs, so groups freed together merge back into runs and
    /// one mmap per tensor covers many pages; a block at a time, each freed group was taken at
    /// once as a run of one (measured: about 2,200 mmaps per Mooncake prompt, 14 us each).
    /// False when nothing is left to reclaim.
    private func reclaim(groups want: Int) -> Bool {
        if reclaimMappings() { return true }
        guard evictCached() else { return false }
        while Int(kvm_pool_free_groups(pool)) < want && evictCached() {}
        return true
    }

    /// Unmaps the unpinned tail of one slot (freeing its mappings and, unless cached blocks
    /// hold them, its groups). False when no slot has one.
    private func reclaimMappings() -> Bool {
        for slot in 0..<slots where Int(kvm_ranges_mapped(ranges, UInt32(slot))) > reclaimable(slot) {
            unmapUnpinned(slot)
            return true
        }
        return false
    }

    /// Maps at each page in `pages` of `slot` the group `wanted(page)` asks for (>= 0) where the
    /// slot does not map it yet: consecutive pages wanting consecutive groups (a prefix hit or a
    /// parent whose pages were taken as a run) in one mmap per tensor, not one per page.
    private func mapGroups(slot: Int, pages: Range<Int>, _ wanted: (Int) -> Int32) throws(KVError) {
        var page = pages.lowerBound
        while page < pages.upperBound {
            let g = wanted(page)
            if g < 0 || group(slot, page) == g {
                page += 1
                continue
            }
            var n = 1
            while page + n < pages.upperBound && wanted(page + n) == g + Int32(n) && group(slot, page + n) != g + Int32(n) { n += 1 }
            try check(kvm_ranges_map(ranges, UInt32(slot), UInt32(page), UInt32(g), UInt32(n)))
            page += n
        }
    }

    /// Makes each page in `pages` (ascending) of `slot` hold a group only this slot references:
    /// keeps one that already does (reuse), else maps fresh groups taken as runs of consecutive
    /// groups, so that one mmap per tensor covers a run. When the mapping limit rather than
    /// memory is what stops it, unmaps free slots' pages and tries again.
    private func mapOwned<Pages: RandomAccessCollection<Int>>(slot: Int, pages: Pages) throws(KVError) where Pages.Index == Int {
        // While little is free, a run shorter than `minRun` is left for appends (which take single
        // groups, `kvm_pool_alloc_run_fit`) and more cached blocks are evicted for longer runs:
        // each run costs an mmap per tensor, and the free runs of one group (appends of many
        // sequences interleave, so their groups come back one by one) made most of a create's.
        var avoidShort = Int(kvm_pool_free_groups(pool)) < groups / 32
        var i = pages.startIndex
        while i < pages.endIndex {
            let page = pages[i]
            if ownsAlone(slot, page) {
                settled[Int(group(slot, page))] = true  // only its mapping holds it: no block
                i += 1
                continue
            }
            var want = 1  // the consecutive pages from here that need a fresh group
            while i + want < pages.endIndex && pages[i + want] == page + want && !ownsAlone(slot, page + want) { want += 1 }
            let hint = page > 0 ? group(slot, page - 1) + 1 : -1
            var got: UInt32 = 0
            let first = kvm_pool_alloc_run_fit(pool, hint < 0 ? UInt32.max : UInt32(hint), UInt32(want), avoidShort ? UInt32(minRun) : 1, &got)
            if first == -Int64(EAGAIN) {
                if !reclaim(groups: Int(kvm_pool_free_groups(pool)) + needFresh(slot: slot, pages[i...])) { avoidShort = false }
                continue
            }
            if first < 0 {
                if first == -Int64(ENOSPC) && reclaim(groups: needFresh(slot: slot, pages[i...])) { continue }
                try checkCommit(first)
            }
            let rc = kvm_ranges_map(ranges, UInt32(slot), UInt32(page), UInt32(first), got)
            for g in UInt32(first)..<UInt32(first) + got {
                kvm_pool_unref(pool, g)  // the range holds them now
                settled[Int(g)] = true  // fresh: no block holds it
            }
            if rc == -ENOMEM && reclaimMappings() { continue }
            try check(rc)
            i += Int(got)
        }
    }

    /// The shortest run of groups `mapOwned` maps while memory is short and cached blocks can be
    /// evicted for longer ones.
    let minRun = 16

    /// Whether `page` of `slot` holds a group that only this slot references and no live slot
    /// pins: one the slot may keep writing.
    @inline(__always) private func ownsAlone(_ slot: Int, _ page: Int) -> Bool {
        let g = group(slot, page)
        return g >= 0 && kvm_pool_refs(pool, UInt32(g)) == 1 && pins[Int(g)] == 0
    }

    /// Fresh groups `mapOwned` still needs for `pages` of `slot`.
    private func needFresh(slot: Int, _ pages: some Sequence<Int>) -> Int {
        var n = 0
        for page in pages where !ownsAlone(slot, page) { n += 1 }
        return n
    }

    /// Unmaps the pages of free `slot` that its next sequence cannot keep: those not holding the
    /// group `wanted(page)` asks for (>= 0), or, where it asks for none, not owned by the slot
    /// alone. Afterwards every unpinned page of a slot is exclusively its own.
    private func dropStale(_ slot: Int, wanted: (Int) -> Int32) {
        let mapped = Int(kvm_ranges_mapped(ranges, UInt32(slot)))
        var page = 0
        while page < mapped {
            let first = page
            while page < mapped && isStale(slot, page, wanted(page)) { page += 1 }
            if page > first { unmap(slot, first..<page) } else { page += 1 }
        }
    }

    private func isStale(_ slot: Int, _ page: Int, _ wanted: Int32) -> Bool {
        let g = group(slot, page)
        if g < 0 || g == wanted { return false }
        return wanted >= 0 || kvm_pool_refs(pool, UInt32(g)) != 1
    }

    /// Copies the hit tokens that fall on `page` from the hit blocks' groups into `slot` (none
    /// where `hit` holds -1: a disk read fills those).
    private func copyHit(_ hit: UnsafeBufferPointer<Int32>, hitTokens: Int, page: Int, slot: Int) throws(KVError) {
        let pageLo = page * pageBytes
        let pageHi = min(pageLo + pageBytes, hitTokens * tokenBytes)
        for j in pageLo / blockBytes...(pageHi - 1) / blockBytes where hit[j] >= 0 {
            let lo = max(j * blockBytes, pageLo), hi = min((j + 1) * blockBytes, pageHi)
            let g = UInt32(blockGroup(hit[j], page: page))
            for t in 0..<tensors {
                try check(kvm_pool_read(pool, UInt32(t), g, UInt64(lo - pageLo), base(slot, tensor: t) + lo, UInt64(hi - lo)))
            }
        }
    }

    private func pin(_ slot: Int, upTo pageCount: Int) {
        for page in pinnedPages[slot]..<max(pinnedPages[slot], pageCount) { pinGroup(Int(group(slot, page))) }
        pinnedPages[slot] = max(pinnedPages[slot], pageCount)
    }

    private func pinGroup(_ g: Int) {
        pins[g] += 1
        if pins[g] == 1 { pinnedGroups += 1 }
    }

    /// Unpins `group`; -1 (a page `unshare` could not map again) pins nothing.
    private func unpin(_ group: Int32) {
        guard group >= 0 else { return }
        pins[Int(group)] -= 1
        if pins[Int(group)] == 0 { pinnedGroups -= 1 }
    }
}
