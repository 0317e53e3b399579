import CKVMemory
import TestSupport
import Testing
@testable import KVCache

/// A create's prefix lookup looks at every block position in memory first, then in the own
/// disk tier (then peers), and stops only at the first block found nowhere (`Engine.create`):
/// a block cached in memory after one found on disk is shared, not missed (the chain used to
/// stay on disk after the first memory miss) nor read a second time, and a block a disk read
/// is still filling is shared in both layouts (the contiguous layout used to read it again).
/// Block positions are kept: a hash sits at the same position in every sequence that holds it.
@Suite("Prefix lookup: memory first at every block", .serialized)
struct PrefixLookupOrderTests {
    static let layouts: [Layout] = [.paged, .contiguous]
    /// Blocks of the prompt on disk only, then blocks in memory (4-token blocks of 128 bytes:
    /// the 60 in memory cover whole 4 KiB pages, which the contiguous layout maps shared, and
    /// the page where disk and memory blocks meet, which it copies).
    static let onDisk = 40, inMemory = 60

    /// An engine whose cache holds the first `onDisk` full blocks of `prompt` on disk only
    /// and the next `inMemory` blocks in memory only (with `bothPlaces`, on disk too).
    /// Construction: sequence 1, created by the hashes of the first `onDisk` blocks, is filled,
    /// freed and trimmed (spilled to disk, dropped from memory). Sequence 2 is created by
    /// `onDisk` decoy hashes (found nowhere, so it hits nothing) followed by the prompt's next
    /// `inMemory` hashes, at their positions, filled with the prompt's K/V and freed: those
    /// blocks are cached in memory and not on disk. With `bothPlaces` it is also trimmed and
    /// created again (all its blocks read back from disk) and freed: then they are cached in
    /// memory and on disk. Its blocks, indexed from hashes alone, carry no fingerprint: the
    /// tests look the prompt up by its hashes too (`cachedByHash`, `createByHash`).
    private final class SplitCache {
        let dir = ScratchDir()
        let e: Engine
        let prompt: [Int32]
        let hashes: [UInt64]

        init(_ layout: Layout, seed: Int32, bothPlaces: Bool = false) throws {
            let bt = 4, chain = PrefixLookupOrderTests.onDisk + PrefixLookupOrderTests.inMemory
            prompt = tokens(chain * bt + 1, seed: seed)
            hashes = BlockHash.chain(prompt, blockTokens: bt)
            var c = offloadConfig(layout, dir: dir.path)
            c.offloadForceThreads = true  // so that tests can hold reads in flight
            e = try Engine(c)
            let onDisk = PrefixLookupOrderTests.onDisk
            try Self.create(e, 1, Array(hashes[0..<onDisk]), tokens: onDisk * bt)
            try fillKV(e, 1, count: onDisk * bt) { [prompt] in prompt[$0] }
            try e.free(1)
            try e.trim()
            let decoys = (0..<onDisk).map { UInt64(0xDEC0_0000 + $0) }
            let second = decoys + Array(hashes[onDisk...])
            #expect(try Self.create(e, 2, second, tokens: chain * bt + 1) == 0)
            try fillKV(e, 2, count: chain * bt) { [prompt] in prompt[$0] }
            try e.free(2)
            if bothPlaces {
                try e.trim()
                #expect(try Self.create(e, 2, second, tokens: chain * bt + 1) == chain * bt)
                try waitReady(e, 2)
                try e.free(2)
            }
            try e.syncOffload()
            let s = e.stats()
            #expect(s.blocksCached == UInt64(chain) && s.disk.storedSlots == UInt64(bothPlaces ? onDisk + chain : onDisk))
        }

        @discardableResult
        static func create(_ e: Engine, _ seq: UInt64, _ hashes: [UInt64], tokens: Int) throws -> Int {
            try hashes.withUnsafeBufferPointer { try e.createSequence(seq, blockHashes: $0, tokens: tokens) }
        }

        deinit { dir.remove() }
    }

    /// Block `onDisk - 1` is on disk only and block `onDisk` in memory (with `bothPlaces`, on
    /// disk too): the create hits the whole chain (and `cachedPrefixTokens` says so first),
    /// reads exactly the blocks memory lacks, once each (the lookup used to miss the memory
    /// blocks after the first disk block, or, with `bothPlaces`, read them from disk again into
    /// second copies the index refused), shares the memory ones (they leave the LRU queue),
    /// announces only what it read (`blockStored`, in chain order) and serves the prompt's bytes.
    @Test(arguments: layouts, [false, true])
    func aMemoryBlockAfterADiskBlockIsShared(layout: Layout, bothPlaces: Bool) throws {
        let split = try SplitCache(layout, seed: bothPlaces ? 37 : 31, bothPlaces: bothPlaces)
        let (e, prompt, hashes) = (split.e, split.prompt, split.hashes)
        let bt = 4, chain = Self.onDisk + Self.inMemory
        _ = drain(e)
        #expect(cachedByHash(e, prompt) == chain * bt)
        let before = e.stats()
        #expect(try createByHash(e, 3, prompt) == chain * bt)
        let created = e.stats()
        #expect(created.prefixHitTokens - before.prefixHitTokens == UInt64(chain * bt))
        #expect(created.disk.prefixHitTokens - before.disk.prefixHitTokens == UInt64(Self.onDisk * bt))
        #expect(created.blocksCached == before.blocksCached - UInt64(Self.inMemory), "the memory blocks are shared")
        #expect(created.blocksUsed == before.blocksUsed + UInt64(chain + 1))
        let stored = (0..<Self.onDisk).map { KVEvent(kind: .blockStored, blockHash: hashes[$0], parentHash: $0 > 0 ? hashes[$0 - 1] : 0) }
        #expect(drain(e) == stored)
        try waitReady(e, 3)
        let after = e.stats()
        #expect(after.disk.blocksLoaded - before.disk.blocksLoaded == UInt64(Self.onDisk), "each missing block read once, no other")
        #expect(after.disk.peerHits == before.disk.peerHits && after.disk.loadsFailed == before.disk.loadsFailed)
        #expect(try kvDifferences(e, 3, count: chain * bt) { prompt[$0] } == 0)
        #expect(e.offloadSlotAudit.pinned == 0, "every pin of the lookup was released")
    }

    /// The disk blocks before the memory ones fail their reads (every slot corrupted under the
    /// running engine; the trim wrote block 39 - k into slot k) for a prompt two blocks longer
    /// than the cached chain: `ready` fails and nothing is served. What leaves the memory
    /// index is exactly what the failures spoiled: the 40 failed blocks and the 2 blocks past
    /// the prefix hit, which the create indexed for the server to compute (one `blockRemoved`
    /// each, no other memory-tier event). The 60 memory blocks the create shared after the
    /// failed ones hold K/V another sequence computed and stay cached (they used to leave the
    /// index with everything after the first failed block, `OffloadCoordinator.loadFinished`).
    /// The chain cannot reach them until a later sequence recomputes the first 40 blocks; then
    /// the prompt hits all 100 and is served byte for byte. No disk slot stays pinned. With
    /// `fork`, the sequence is forked: paged, before its reads land, and the child fails with
    /// it, dropping no more (it inherits where the parent's prefix hit ends); contiguous, the
    /// fork waits for the reads (it copies the boundary page) and is refused, changing nothing.
    @Test(arguments: layouts, [false, true])
    func failedReadsBeforeSharedMemoryBlocksDropOnlyWhatTheySpoiled(layout: Layout, fork: Bool) throws {
        let split = try SplitCache(layout, seed: 41)
        let (e, prompt) = (split.e, split.prompt)
        let bt = 4, chain = Self.onDisk + Self.inMemory
        let longer = Array(prompt[0..<chain * bt]) + tokens(2 * bt + 1, seed: 42)
        let hashes = BlockHash.chain(longer, blockTokens: bt)
        corruptSlots(dir: split.dir.path, slotBytes: Int(e.stats().disk.slotBytes), 0..<Self.onDisk)
        _ = drain(e)
        // Paged, the reads land after the fork; a contiguous fork waits for them (it copies the
        // boundary page), and a failed one refuses it.
        let hold = fork && layout == .paged
        if hold { #expect(e.pauseOffloadIO(true)) }
        #expect(try createByHash(e, 3, longer) == chain * bt, "the journal still lists the disk blocks")
        if hold {
            try e.fork(parent: 3, child: 6)
        } else if fork {
            #expect(thrown { () throws(KVError) in try e.fork(parent: 3, child: 6) }?.code == .io, "the fork waited for the failed reads")
        }
        if hold { #expect(e.pauseOffloadIO(false)) }
        for seq: UInt64 in hold ? [3, 6] : [3] {
            var failure: KVError?
            do { try waitReady(e, seq) } catch { failure = error }
            #expect(failure?.code == .io)
            try e.free(seq)
        }
        try e.syncOffload()
        _ = e.poll(timeoutMicroseconds: 0)
        let memoryEvents = drain(e).filter { $0.tier == KVEvent.memoryTier }
        let stored = memoryEvents.filter { $0.kind == .blockStored }.map(\.blockHash)
        let removed = memoryEvents.filter { $0.kind == .blockRemoved }.map(\.blockHash)
        let spoiled = Array(hashes[0..<Self.onDisk]) + Array(hashes[chain..<chain + 2])
        #expect(stored == spoiled, "the create announced the blocks it read and the 2 it indexed past its hit")
        #expect(removed.count == spoiled.count && Set(removed) == Set(spoiled), "only they left")
        #expect(memoryEvents.count == 2 * spoiled.count)
        let s = e.stats()
        #expect(s.disk.loadsFailed == UInt64(Self.onDisk))
        #expect(s.blocksUsed == 0 && s.blocksCached == UInt64(Self.onDisk + Self.inMemory), "the decoys and the 60 shared blocks")
        #expect(cachedByHash(e, prompt) == 0, "the chain breaks at the failed first block")
        #expect(e.offloadSlotAudit.pinned == 0)
        // Recomputing the failed blocks makes the kept ones reachable again, with their bytes.
        #expect(try createByHash(e, 4, Array(prompt[0...(Self.onDisk * bt)])) == 0)
        try fillKV(e, 4, count: Self.onDisk * bt) { prompt[$0] }
        try e.free(4)
        #expect(cachedByHash(e, prompt) == chain * bt)
        #expect(try createByHash(e, 5, prompt) == chain * bt)
        try waitReady(e, 5)
        #expect(try kvDifferences(e, 5, count: chain * bt) { prompt[$0] } == 0)
        #expect(e.stats().disk.blocksLoaded == s.disk.blocksLoaded, "all 100 from memory")
    }

    /// One disk block in the middle of the chain fails its read (block 10: the trim wrote block
    /// 39 - k into slot k, so slot 29 is corrupted), the other 39 read fine: `ready` fails, and
    /// the only blocks that leave the memory index are the failed one and the 2 past the prefix
    /// hit. The 29 blocks read after the failed one verified their own bytes and stay cached
    /// with the 10 before it and the 60 shared from memory (`OffloadCoordinator.loadFinished`
    /// keeps them). Once a sequence recomputes block 10, the prompt hits all 100 blocks from
    /// memory, byte for byte, with no further read.
    @Test(arguments: layouts)
    func verifiedReadsAfterAFailedOneStayCached(layout: Layout) throws {
        let split = try SplitCache(layout, seed: 43)
        let (e, prompt) = (split.e, split.prompt)
        let bt = 4, chain = Self.onDisk + Self.inMemory, failed = 10
        let longer = Array(prompt[0..<chain * bt]) + tokens(2 * bt + 1, seed: 44)
        let hashes = BlockHash.chain(longer, blockTokens: bt)
        let slot = Self.onDisk - 1 - failed
        corruptSlots(dir: split.dir.path, slotBytes: Int(e.stats().disk.slotBytes), slot..<slot + 1)
        _ = drain(e)
        let before = e.stats()
        #expect(try createByHash(e, 3, longer) == chain * bt)
        var failure: KVError?
        do { try waitReady(e, 3) } catch { failure = error }
        #expect(failure?.code == .io)
        try e.free(3)
        try e.syncOffload()
        _ = e.poll(timeoutMicroseconds: 0)
        let memoryEvents = drain(e).filter { $0.tier == KVEvent.memoryTier }
        let removed = memoryEvents.filter { $0.kind == .blockRemoved }.map(\.blockHash)
        #expect(Set(removed) == [hashes[failed], hashes[chain], hashes[chain + 1]] && removed.count == 3)
        let s = e.stats()
        #expect(s.disk.loadsFailed - before.disk.loadsFailed == 1)
        #expect(s.disk.blocksLoaded - before.disk.blocksLoaded == UInt64(Self.onDisk - 1), "the other 39 reads landed")
        #expect(s.blocksUsed == 0 && s.blocksCached == before.blocksCached + UInt64(Self.onDisk - 1))
        #expect(cachedByHash(e, prompt) == failed * bt, "the chain breaks at the failed block")
        #expect(e.offloadSlotAudit.pinned == 0)
        // Recomputing block 10 alone makes the 29 verified reads after it reachable again.
        let upToFailed = Array(prompt[0...((failed + 1) * bt)])
        #expect(try createByHash(e, 4, upToFailed) == failed * bt)
        try waitReady(e, 4)
        try fillKV(e, 4, count: bt, from: failed * bt) { prompt[$0] }
        try e.free(4)
        #expect(cachedByHash(e, prompt) == chain * bt)
        let loaded = e.stats().disk.blocksLoaded
        #expect(try createByHash(e, 5, prompt) == chain * bt)
        try waitReady(e, 5)
        #expect(try kvDifferences(e, 5, count: chain * bt) { prompt[$0] } == 0)
        #expect(e.stats().disk.blocksLoaded == loaded, "all 100 from memory")
    }

    /// The create's memory cannot be committed (`kvm_pool_fail_commits`: the next commit fails)
    /// while it allocates the blocks for the disk positions (paged: past the free blocks left
    /// in committed page groups; contiguous: when it maps the sequence's pages): it throws
    /// `outOfMemory` (the contiguous layout used to throw `internal`) and changes nothing —
    /// the memory blocks it had taken after the disk positions go back to the cache (the undo
    /// moves them down the table so that the release finds them), no slot stays pinned, no
    /// event — and the same create succeeds once commits work again.
    @Test(arguments: layouts)
    func aCreateWhoseCommitFailsAfterSharingMemoryBlocksChangesNothing(layout: Layout) throws {
        let split = try SplitCache(layout, seed: 47)
        let (e, prompt) = (split.e, split.prompt)
        let bt = 4, chain = Self.onDisk + Self.inMemory
        let pool = e.paged?.pool ?? e.contiguous!.pool
        // Free memory goes back to the OS, the cache stays: the create must commit memory for
        // its disk positions (paged: past the few free blocks left in the cache's page groups).
        e.paged?.trim()
        e.contiguous?.unmapAllUnpinned()
        e.contiguous?.trimFree(keeping: 0)
        _ = drain(e)
        let before = e.stats()
        kvm_pool_fail_commits(pool, 0)
        let error = caught { try createByHash(e, 3, prompt) }
        kvm_pool_fail_commits(pool, -1)
        #expect(error?.code == .outOfMemory, "both layouts: a refused commit is out of memory, not a bug")
        #expect(error?.message.contains("injected fault") == true, "\(String(describing: error))")
        let after = e.stats()
        #expect(after.blocksUsed == before.blocksUsed && after.blocksCached == before.blocksCached && after.sequences == 0)
        #expect(after.prefixHitTokens == before.prefixHitTokens && after.disk.blocksLoaded == before.disk.blocksLoaded)
        #expect(drain(e).isEmpty)
        #expect(e.offloadSlotAudit.pinned == 0)
        #expect(try createByHash(e, 3, prompt) == chain * bt)
        try waitReady(e, 3)
        #expect(try kvDifferences(e, 3, count: chain * bt) { prompt[$0] } == 0)
    }

    /// Two creates of the same prompt while the first one's disk reads are held in flight (two
    /// requests with one system prompt arriving together): the second shares the blocks being
    /// read instead of reading them again, is not ready before they landed, and then holds the
    /// prompt's bytes (contiguous: also on its copied boundary page, which the landing read
    /// fills in every sequence holding the block). With `freeFirst` the first sequence is freed
    /// while its reads are held: they still land, for the second.
    @Test(arguments: layouts, [false, true])
    func aSecondCreateSharesBlocksStillBeingRead(layout: Layout, freeFirst: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadForceThreads = true
        let e = try Engine(c)
        let bt = 4, blocks = 70  // 280 tokens: two whole 4 KiB pages and a boundary page
        let prompt = tokens(blocks * bt + 1, seed: 43)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        try e.free(1)
        try e.trim()
        try e.syncOffload()
        _ = drain(e)
        let before = e.stats()
        #expect(e.pauseOffloadIO(true))
        #expect(try e.createSequence(1, tokens: prompt) == blocks * bt)
        #expect(e.cachedPrefixTokens(prompt) == blocks * bt)
        #expect(try e.createSequence(2, tokens: prompt) == blocks * bt)
        #expect(drain(e).count == blocks, "the second create announces nothing")
        #expect(try e.ready(2) == false, "the shared blocks have not landed")
        if freeFirst { try e.free(1) }
        #expect(e.pauseOffloadIO(false))
        if !freeFirst { try waitReady(e, 1) }
        try waitReady(e, 2)
        let after = e.stats()
        #expect(after.disk.blocksLoaded - before.disk.blocksLoaded == UInt64(blocks), "each block read once")
        #expect(after.disk.prefixHitTokens - before.disk.prefixHitTokens == UInt64(blocks * bt))
        #expect(after.prefixHitTokens - before.prefixHitTokens == UInt64(2 * blocks * bt))
        #expect(after.blocksUsed == UInt64(blocks + (freeFirst ? 1 : 2)))
        if !freeFirst { #expect(try kvDifferences(e, 1, count: blocks * bt) { prompt[$0] } == 0) }
        #expect(try kvDifferences(e, 2, count: blocks * bt) { prompt[$0] } == 0)
        #expect(e.offloadSlotAudit.pinned == 0)
    }

    /// Every tier in one chain: blocks 0-9 are in the peer's tier only, 10-19 in memory only,
    /// 20-29 in the own tier only, 30-39 in the peer's only (each placed by a sequence created
    /// by hashes, decoys before the placed ones so that each block keeps its position, filled,
    /// freed and trimmed where the tier is disk). The create hits all 40 blocks (the lookup
    /// used to stop at block 10, found nowhere on disk), reads the 30 disk blocks, each from
    /// where it is (own-tier and peer counters exact), announces them in chain order and serves
    /// the prompt's bytes.
    @Test(arguments: layouts)
    func memoryOwnTierAndPeerBlocksInterleave(layout: Layout) throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        let bt = 4, chain = 40
        let prompt = tokens(chain * bt + 1, seed: 53)
        let hashes = BlockHash.chain(prompt, blockTokens: bt)
        func decoys(_ count: Int, _ base: UInt64) -> [UInt64] { (0..<count).map { base + UInt64($0) } }
        func place(_ e: Engine, _ seq: UInt64, _ blocks: [UInt64], spill: Bool) throws {
            let n = blocks.count * bt + 1
            _ = try blocks.withUnsafeBufferPointer { try e.createSequence(seq, blockHashes: $0, tokens: n) }
            try fillKV(e, seq, count: n - 1) { prompt[$0] }
            try e.free(seq)
            if spill {
                try e.trim()
                try e.syncOffload()
            }
        }
        let a = try Engine(offloadConfig(layout, dir: dirA.path))
        try place(a, 1, Array(hashes[0..<10]) + decoys(20, 0xA000) + Array(hashes[30..<40]), spill: true)
        var c = peerConfig(layout, dir: dirB.path, peers: [dirA.path])
        c.offloadForceThreads = true
        let b = try Engine(c)
        try place(b, 1, decoys(20, 0xB000) + Array(hashes[20..<30]), spill: true)
        try place(b, 2, decoys(10, 0xC000) + Array(hashes[10..<20]), spill: false)
        _ = drain(b)
        #expect(cachedByHash(b, prompt) == chain * bt)
        let before = b.stats()
        #expect(try createByHash(b, 3, prompt) == chain * bt)
        let read = Array(0..<10) + Array(20..<40)
        #expect(drain(b) == read.map { KVEvent(kind: .blockStored, blockHash: hashes[$0], parentHash: $0 > 0 ? hashes[$0 - 1] : 0) })
        try waitReady(b, 3)
        let after = b.stats()
        #expect(after.prefixHitTokens - before.prefixHitTokens == UInt64(chain * bt))
        #expect(after.disk.prefixHitTokens - before.disk.prefixHitTokens == UInt64(10 * bt), "own tier: blocks 20-29")
        #expect(after.disk.blocksLoaded - before.disk.blocksLoaded == 10)
        #expect(after.disk.peerHits - before.disk.peerHits == 20 && after.disk.peerHitTokens - before.disk.peerHitTokens == UInt64(20 * bt))
        #expect(after.disk.peerStale == before.disk.peerStale)
        #expect(after.blocksCached == before.blocksCached - 10, "blocks 10-19 shared from memory")
        #expect(try kvDifferences(b, 3, count: chain * bt) { prompt[$0] } == 0)
        #expect(b.offloadSlotAudit.pinned == 0)
    }
}

/// `createSequence(_:blockHashes:tokens:)` takes any non-zero hashes, so one may come back at
/// another position than the one its block was indexed at. Contiguous: a block's pages are
/// those of its position, so such a hit is a miss (before, the page lookup read another
/// block's entries, past the block's own).
@Suite("Prefix lookup, hashes at another position")
struct MovedHashTests {
    @Test func aHashIndexedAtAnotherPositionIsAMissInTheContiguousLayout() throws {
        let e = try Engine(smallConfig(.contiguous, pageBytes: 4096, blockTokens: 4))
        let first: [UInt64] = [0x11, 0x22, 0x33, 0x44]
        _ = try first.withUnsafeBufferPointer { (h) throws(KVError) in try e.createSequence(1, blockHashes: h, tokens: 17) }
        let moved: [UInt64] = [0x44, 0x33, 0x22, 0x11]
        let cached = try moved.withUnsafeBufferPointer { (h) throws(KVError) in try e.createSequence(2, blockHashes: h, tokens: 17) }
        #expect(cached == 0)
        #expect(moved.withUnsafeBufferPointer { e.cachedPrefixBlocks($0) } == 0)
        let same = try first.withUnsafeBufferPointer { (h) throws(KVError) in try e.createSequence(3, blockHashes: h, tokens: 17) }
        #expect(same == 16, "at their own positions they hit")
    }
}
