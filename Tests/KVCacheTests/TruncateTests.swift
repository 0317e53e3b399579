import CKVMemory
import Testing
@testable import KVCache

/// `Engine.truncate` (`kvc_seq_truncate`): a sequence gives back its last tokens, as a server
/// rolls back rejected speculative drafts, and its prefix, its sharing and the prefix index
/// stay right. Block size 4 unless a test says otherwise.
@Suite("Truncate")
struct TruncateTests {
    /// Drafts fill block 2 (indexed under the drafts' hash) and start block 3; three are
    /// rejected, cutting into block 2. Block 2 leaves the index (its drafts' hash), its kept
    /// token's bytes stay, and the accepted tokens refill it under the right hash, so the
    /// next turn's prompt hits all of it.
    @Test(arguments: [Layout.paged, .contiguous])
    func rejectedDraftsRollBackAndTheAcceptedTokensAreIndexed(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let prompt = tokens(10, seed: 1), drafts: [Int32] = [901, 902, 903, 904, 905], accepted: [Int32] = [7, 8, 9]
        #expect(try e.createSequence(1, tokens: prompt) == 0)
        try writeKV(e, 1, tokens: prompt, from: 0)
        try e.append(1, tokens: drafts)
        try writeKV(e, 1, tokens: drafts, from: 10)
        let draftHash = BlockHash.chain(prompt + drafts, blockTokens: 4)[2]
        _ = drain(e)
        try e.truncate(1, to: 11)  // keeps the first draft: block 2 now holds tokens 8, 9, 901
        #expect(try e.length(1) == 11)
        #expect(drain(e).map(\.blockHash) == [draftHash], "block 2 left the index (one blockRemoved)")
        #expect(try kvMismatches(e, 1, tokens: prompt + [901], from: 0) == 0)
        try e.append(1, tokens: accepted)
        try writeKV(e, 1, tokens: accepted, from: 11)
        let kept = prompt + [901] + accepted  // 14 tokens: blocks 0-2 full
        #expect(drain(e).map(\.blockHash) == [BlockHash.chain(kept, blockTokens: 4)[2]])
        #expect(try e.createSequence(2, tokens: kept + [1]) == 12)
        #expect(try kvMismatches(e, 2, tokens: Array(kept[0..<12]), from: 0) == 0)
        #expect(try e.createSequence(3, tokens: prompt + drafts) == 8, "the drafts' block is no longer served")
    }

    /// Blocks wholly past the cut: paged, they stay cached (a prompt of those tokens hits them);
    /// contiguous, their bytes are in the slot's pages, which appends rewrite, so they leave the
    /// index, and the page of the cut, which the kept indexed blocks still hold, is written in
    /// place: no copy (it would have a fresh group that nothing else holds).
    @Test(arguments: [Layout.paged, .contiguous])
    func blocksPastTheCutStayCachedPagedAndLeaveTheIndexContiguous(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let all = tokens(17, seed: 8)  // 4 full blocks, all indexed
        try e.createSequence(1, tokens: all)
        try writeKV(e, 1, tokens: all, from: 0)
        _ = drain(e)
        try e.truncate(1, to: 9)
        let chain = BlockHash.chain(all, blockTokens: 4)
        let removed = drain(e).filter { $0.kind == .blockRemoved }.map(\.blockHash)
        if layout == .paged {
            #expect(removed == [chain[2]], "only the cut block (2) leaves the index")
            #expect(e.blocks.indexedBlock(chain[3]) >= 0, "block 3 stays cached")
        } else {
            #expect(Set(removed) == [chain[2], chain[3]], "the cut block and the one past it leave the index")
            let s = e.sequences.slot(of: 1)
            #expect(e.contiguous!.isShared(slot: s, page: 0), "page 0 still the group blocks 0 and 1 hold: not copied")
        }
        #expect(try e.createSequence(2, tokens: all) == 8, "the chain ends at the cut block")
        try e.append(1, tokens: [5, 6, 7])
        try writeKV(e, 1, tokens: [5, 6, 7], from: 9)
        #expect(try kvMismatches(e, 1, tokens: Array(all[0..<9]) + [5, 6, 7], from: 0) == 0)
        #expect(try kvMismatches(e, 2, tokens: Array(all[0..<8]), from: 0) == 0, "what sequence 2 hit is intact")
    }

    /// A fork shares the block the cut falls in: the truncated sequence gets its own copy,
    /// and what it appends next leaves the fork's bytes alone.
    @Test(arguments: [Layout.paged, .contiguous])
    func aCutIntoABlockAForkSharesLeavesTheForkIntact(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let all = tokens(15, seed: 2)
        try e.createSequence(1, tokens: all)
        try writeKV(e, 1, tokens: all, from: 0)
        try e.fork(parent: 1, child: 2)
        try e.truncate(1, to: 6)
        let other: [Int32] = [61, 62, 63, 64, 65, 66]
        try e.append(1, tokens: other)
        try writeKV(e, 1, tokens: other, from: 6)
        #expect(try kvMismatches(e, 2, tokens: all, from: 0) == 0, "the fork keeps every byte")
        #expect(try kvMismatches(e, 1, tokens: Array(all[0..<6]) + other, from: 0) == 0)
    }

    /// Contiguous, at a full budget (a filler takes every page left): a cut whose page only the
    /// sequence and its own indexed blocks hold copies nothing and succeeds (the room check
    /// used to count any other reference to the page's group as a copy and refuse); a cut into
    /// a page a fork maps must copy it, finds no page free, is out of memory and changes
    /// nothing (the length, the stats, every byte of both sequences).
    @Test func aFullBudgetRefusesOnlyACutPageThatMustBeCopied() throws {
        let e = try Engine(smallConfig(.contiguous, memoryBytes: 256 << 10))
        let shared = tokens(128, seed: 4), alone = tokens(64, seed: 5)  // a page is 128 tokens of 32 bytes
        try e.createSequence(1, tokens: shared)
        try writeKV(e, 1, tokens: shared, from: 0)
        try e.fork(parent: 1, child: 2)  // a whole page: mapped shared, no copy
        try e.createSequence(4, tokens: alone)
        try writeKV(e, 4, tokens: alone, from: 0)
        var filler = 4096
        while filler > 1 && (try? e.createSequence(3, tokens: tokens(filler, seed: 9))) == nil { filler -= 1 }
        #expect(filler > 1 && !e.contiguous!.fits(1), "the budget is full")
        try e.truncate(4, to: 30)  // its page 0 holds its blocks 0-15, indexed
        #expect(try e.length(4) == 30 && kvMismatches(e, 4, tokens: Array(alone[0..<30]), from: 0) == 0)
        let before = e.stats()
        #expect(caught { try e.truncate(1, to: 30) }?.code == .outOfMemory)
        #expect(try e.length(1) == 128 && e.stats() == before)
        #expect(try kvMismatches(e, 1, tokens: shared, from: 0) == 0 && kvMismatches(e, 2, tokens: shared, from: 0) == 0)
    }

    /// Contiguous: a spec-decoding cut's page, which only the slot and the sequence's own
    /// indexed blocks before the cut hold, is proved so by counts alone
    /// (`ContiguousMemory.holdsAlone`, no scan), agreeing with the scan, and is not copied.
    /// Once indexed blocks on it leave the table while another sequence keeps them, the proof
    /// fails and the scan decides: the page is copied, so a later prompt that hits those
    /// blocks reads their bytes, not the truncated sequence's new tokens.
    @Test func aSpecDecodingCutPageIsProvedUnsharedByCounts() throws {
        let e = try Engine(smallConfig(.contiguous))  // a page is 128 tokens of 32 bytes
        let prompt = tokens(40, seed: 6), hit = prompt + [0]  // its 10 blocks, then another token
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        let s = e.sequences.slot(of: 1), c = e.contiguous!
        for round in 0..<6 {  // 8 drafts, 3 accepted
            try e.append(1, tokens: tokens(8, seed: Int32(20 + round)))
            try e.truncate(1, to: 43 + 3 * round)
            #expect(c.holdsAlone(slot: s, page: 0), "round \(round)")
            #expect(!c.isHeldElsewhere(slot: s, page: 0, table: e.sequences.table(s), blocks: e.sequences.blockCount(s)))
        }
        #expect(c.isShared(slot: s, page: 0), "not copied: its own indexed blocks still hold it")
        #expect(try e.createSequence(2, tokens: hit) == 40, "blocks 0-9 shared (their page copied)")
        try e.truncate(1, to: 20)  // blocks 5-9 leave its table, indexed: sequence 2 holds them
        #expect(!c.isShared(slot: s, page: 0), "copied: a fresh group, which nothing else holds")
        let other = tokens(20, seed: 40)
        try e.append(1, tokens: other)
        try writeKV(e, 1, tokens: other, from: 20)
        #expect(try e.createSequence(3, tokens: hit) == 40)
        #expect(try kvMismatches(e, 3, tokens: prompt, from: 0) == 0, "blocks 5-9 kept their bytes")
        #expect(try kvMismatches(e, 1, tokens: Array(prompt[0..<20]) + other, from: 0) == 0)
    }

    /// Contiguous, a block spanning two pages (256 tokens of 32 bytes, 4 KiB pages): counts
    /// alone cannot prove a cut page the slot's own when an indexed block on it lies in no
    /// live table. A and its fork B share page 2 (the first half of block 1); each fills
    /// block 1 with its own tokens, indexed on that page. B is freed (its block 1 cached) and
    /// its slot's next sequence drops the page, so A's mapping and the two indexed blocks are
    /// all that hold it: references == 1 + index references, as for a page only A's blocks
    /// hold. A cut into that page must copy it (B's cached block 1 has bytes there): the
    /// group was `settled` until B's block left its table. Ignoring that, A's next tokens
    /// overwrote B's block 1, and a prompt of B's tokens was served A's K/V.
    @Test func aCutPageACachedForeignBlockHoldsIsCopied() throws {
        let e = try Engine(smallConfig(.contiguous, blockTokens: 256))
        let prompt = tokens(384, seed: 11), ownTail = tokens(128, seed: 12), forkTail = tokens(128, seed: 13)
        try e.createSequence(1, tokens: prompt)  // block 0 on pages 0-1, half of block 1 on page 2
        try writeKV(e, 1, tokens: prompt, from: 0)
        try e.fork(parent: 1, child: 2)  // a whole number of pages: pages 0-2 shared, none copied
        try e.append(1, tokens: ownTail)  // block 1 filled (pages 2-3) and indexed, each its own
        try writeKV(e, 1, tokens: ownTail, from: 384)
        try e.append(2, tokens: forkTail)
        try writeKV(e, 2, tokens: forkTail, from: 384)
        let forkSlot = e.sequences.slot(of: 2)
        try e.free(2)  // its block 1 stays cached, holding page 2's group
        try e.createSequence(3, tokens: tokens(8, seed: 14))  // in the freed slot: drops its pages
        #expect(e.sequences.slot(of: 3) == forkSlot)
        let s = e.sequences.slot(of: 1), c = e.contiguous!
        #expect(!c.holdsAlone(slot: s, page: 2), "a block on the page left a table, indexed")
        #expect(c.isHeldElsewhere(slot: s, page: 2, table: e.sequences.table(s), blocks: e.sequences.blockCount(s)))
        try e.truncate(1, to: 320)  // into page 2
        #expect(!c.isShared(slot: s, page: 2), "copied: a fresh group, which nothing else holds")
        let next = tokens(192, seed: 15)
        try e.append(1, tokens: next)
        try writeKV(e, 1, tokens: next, from: 320)
        #expect(try e.createSequence(4, tokens: prompt + forkTail + [0]) == 512, "B's block 1 is still cached")
        #expect(try kvMismatches(e, 4, tokens: prompt + forkTail, from: 0) == 0, "B's block 1 kept its bytes")
        #expect(try kvMismatches(e, 1, tokens: Array(prompt[0..<320]) + next, from: 0) == 0)
    }

    /// Contiguous, blocks of 192 tokens (1.5 pages of 128): page 1 holds block 0's tail and
    /// block 1's head. A (unknown tokens, nothing indexed) and its fork B share pages 0-1; B
    /// fills block 1 under caller hashes (indexed on page 1), then compacts, evicting a token
    /// of block 0 on page 1: block 0 is copied (shared, unindexed) and page 1 too (A maps it),
    /// while B's block 1, untouched, stays indexed in B's table on the old group. Now A's
    /// mapping and that block are the group's only holders: references == 1 + index
    /// references, with no block of the group having left a table. A's cut into page 1 must
    /// still copy it; before, `unshare` left the group `settled`, the count check passed, A's
    /// appends overwrote B's cached block 1, and a prompt hitting it read A's K/V.
    @Test func aCutPageWhoseForeignBlockACompactionUnsharedIsCopied() throws {
        let e = try Engine(smallConfig(.contiguous, blockTokens: 192))
        let prompt = tokens(256, seed: 21), forkTail = tokens(192, seed: 22)
        try e.createSequence(1, blockHashes: UnsafeBufferPointer(start: nil, count: 0), tokens: 256)
        try writeKV(e, 1, tokens: prompt, from: 0)
        try e.fork(parent: 1, child: 2)  // pages 0-1 shared; block 0 shared, unindexed
        try e.append(1, tokens: tokens(128, seed: 23))  // A's own block 1 (unindexed)
        let hashes: [UInt64] = [0x5e771ed, 0x5e771ee]
        try hashes.withUnsafeBufferPointer { try e.append(2, tokens: 192, blockHashes: $0) }  // block 1 indexed
        try writeKV(e, 2, tokens: forkTail, from: 256)
        var config = EvictionConfig(.heavyHitter)
        config.recentTokens = 4
        try e.setEviction(2, config)
        var light = [Float](repeating: 1, count: 2 * 448)
        light[150] = 0; light[448 + 150] = 0  // slot 150 (block 0, page 1) is the lightest
        try observeAll(e, 2, light, n: 448)
        #expect(try e.compact(2, budgetTokens: 447) == 447)
        #expect(try positions(e, 2, layer: 0)[150] == 447, "the last token filled the hole; block 1 untouched")
        let s = e.sequences.slot(of: 1), c = e.contiguous!
        #expect(!c.holdsAlone(slot: s, page: 1), "B's indexed block 1 holds the page and is in no table of its mappers")
        #expect(c.isHeldElsewhere(slot: s, page: 1, table: e.sequences.table(s), blocks: e.sequences.blockCount(s)))
        try e.truncate(1, to: 200)  // into A's block 1, page 1
        let next = tokens(56, seed: 24)
        try e.append(1, tokens: next)
        try writeKV(e, 1, tokens: next, from: 200)
        // Block 0's hash indexed by another sequence: a prompt of the chain hits B's block 1.
        try [hashes[0]].withUnsafeBufferPointer { _ = try e.createSequence(3, blockHashes: $0, tokens: 192) }
        try writeKV(e, 3, tokens: Array(prompt[0..<192]), from: 0)
        #expect(try hashes.withUnsafeBufferPointer { try e.createSequence(4, blockHashes: $0, tokens: 385) } == 384)
        #expect(try kvMismatches(e, 4, tokens: prompt + forkTail[0..<128], from: 0) == 0, "B's block 1 kept its bytes")
        #expect(try kvMismatches(e, 1, tokens: Array(prompt[0..<200]) + next, from: 0) == 0)
    }

    /// Contiguous: a page a freed sequence left mapped, whose indexed blocks were evicted
    /// since, is kept by the slot's next sequence (only the mapping held it) and counts as its
    /// own again: that sequence's spec-decoding cuts on it pass the count check too.
    @Test func aReusedPageOfAFreedSequenceIsProvedUnsharedByCounts() throws {
        let e = try Engine(smallConfig(.contiguous))
        try e.createSequence(1, tokens: tokens(40, seed: 6))
        let s = e.sequences.slot(of: 1), c = e.contiguous!
        try e.append(1, tokens: tokens(8, seed: 20))
        try e.free(1)
        e.blocks.dropCached()  // its blocks leave the index: only the slot's mapping holds the page
        try e.createSequence(2, tokens: tokens(40, seed: 7))
        #expect(e.sequences.slot(of: 2) == s)
        try e.append(2, tokens: tokens(8, seed: 21))
        try e.truncate(2, to: 43)
        #expect(c.holdsAlone(slot: s, page: 0))
        #expect(!c.isHeldElsewhere(slot: s, page: 0, table: e.sequences.table(s), blocks: e.sequences.blockCount(s)))
    }

    /// A cut further back than the last full block: the engine no longer knows the tokens
    /// before it in that block, so the sequence stops indexing what it appends.
    @Test func aDeepCutStopsIndexingAppends() throws {
        let e = try Engine(smallConfig(.paged))
        let all = tokens(17, seed: 3)
        try e.createSequence(1, tokens: all)
        try e.truncate(1, to: 5)  // into block 1; the last full block was 3
        try e.append(1, tokens: tokens(7, seed: 4))
        _ = drain(e)
        try e.append(1, tokens: tokens(4, seed: 5))
        #expect(drain(e).isEmpty, "no block filled after the cut is indexed")
        #expect(try e.length(1) == 16)
    }

    @Test(arguments: [Layout.paged, .contiguous])
    func refusedTruncationsChangeNothing(layout: Layout) throws {
        var c = smallConfig(layout)
        c.indexOnSchedule = true
        c.eviction = EvictionConfig(.heavyHitter)
        let e = try Engine(c)
        let all = tokens(14, seed: 6)
        try e.createSequence(1, tokens: all)
        try e.schedule(1, tokens: 14)
        try e.createSequence(2, tokens: tokens(14, seed: 7))  // nothing scheduled yet
        let before = e.stats()
        func refusal(_ seq: UInt64, _ n: Int) -> KVError.Code? {
            do throws(KVError) { try e.truncate(seq, to: n); return nil } catch { return error.code }
        }
        #expect(refusal(1, 0) == .invalidArgument)
        #expect(refusal(1, 15) == .invalidArgument)
        #expect(refusal(9, 3) == .notFound)
        #expect(refusal(2, 5) == .invalidArgument, "below blocks not scheduled yet")
        let scores = [Float](repeating: 0.1, count: 14 * c.numKVHeads)
        try scores.withUnsafeBufferPointer { (s) throws(KVError) in try e.observe(1, layer: 0, scores: s.baseAddress!, nHeads: c.numKVHeads, nTokens: 14) }
        #expect(e.stats() == before)
        #expect(try e.length(1) == 14 && e.length(2) == 14)
        try e.truncate(1, to: 14)  // its own length: nothing to do, even with eviction state
        try e.truncate(1, to: 5)  // observed: truncates (EvictionTruncateTests)
        #expect(try e.length(1) == 5)
    }

    /// With a disk tier: a swapped-out sequence, and one whose disk reads have not landed, are
    /// refused (`invalidArgument`) and keep every token; once ready it truncates.
    @Test(arguments: [Layout.paged, .contiguous])
    func swappedOutAndUnreadySequencesAreRefused(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadForceThreads = true
        let e = try Engine(c)
        let prompt = tokens(17, seed: 9)
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        try e.swapOut(1)
        func refusal(_ seq: UInt64) -> KVError.Code? {
            do throws(KVError) { try e.truncate(seq, to: 5); return nil } catch { return error.code }
        }
        #expect(refusal(1) == .invalidArgument, "swapped out")
        #expect(e.pauseOffloadIO(true))
        try e.swapIn(1)
        #expect(refusal(1) == .invalidArgument, "its reads are held")
        #expect(e.pauseOffloadIO(false))
        try waitReady(e, 1)
        #expect(try e.length(1) == 17)
        #expect(try kvMismatches(e, 1, tokens: prompt, from: 0) == 0)
        try e.truncate(1, to: 5)
        #expect(try e.length(1) == 5)
        #expect(try kvMismatches(e, 1, tokens: Array(prompt[0..<5]), from: 0) == 0)
    }

    /// Contiguous: drafts that crossed into later pages and were rejected leave those pages
    /// mapped and committed (unpinned), so the next drafts grow back over them with no new
    /// mapping; a truncation used to unmap them and give every free group back to the OS, and
    /// a speculative decoder then paid an mmap and a commit per tensor each time its drafts
    /// crossed a page (`kvcache load --draft-tokens`: 33x the fallocate calls).
    @Test func rejectedDraftsLeaveTheirPagesMappedForTheNextDrafts() throws {
        let e = try Engine(smallConfig(.contiguous))  // 32 bytes per token and tensor: 128 tokens per 4 KiB page
        let prompt = tokens(120, seed: 3)
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        let drafts = tokens(300, seed: 4)  // to token 420: pages 1-3
        try e.append(1, tokens: drafts)
        try writeKV(e, 1, tokens: drafts, from: 120)
        let before = e.stats()
        try e.truncate(1, to: 121)
        let after = e.stats()
        #expect(after.committedBytes == before.committedBytes, "the pages past the cut stay committed")
        #expect(after.mappings == before.mappings, "and mapped")
        let next = tokens(300, seed: 5)
        try e.append(1, tokens: next)
        try writeKV(e, 1, tokens: next, from: 121)
        #expect(e.stats().mappings == before.mappings, "growing back over them maps nothing")
        #expect(e.stats().committedBytes == before.committedBytes)
        #expect(try kvMismatches(e, 1, tokens: prompt + [drafts[0]] + next, from: 0) == 0)
    }

    /// The pages a truncation leaves mapped are reclaimed when another sequence needs the
    /// memory, and the truncated sequence keeps its tokens and grows again.
    @Test func pagesLeftMappedAreReclaimedForOtherSequences() throws {
        // 8 groups of 4 tensors x 4 KiB.
        let e = try Engine(smallConfig(.contiguous, memoryBytes: 8 * 4 * 4096))
        let prompt = tokens(120, seed: 6)
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        let drafts = tokens(300, seed: 7)
        try e.append(1, tokens: drafts)
        try writeKV(e, 1, tokens: drafts, from: 120)
        try e.truncate(1, to: 121)  // 1 page pinned, 4 mapped
        let other = tokens(7 * 128, seed: 8)  // 7 pages: only fits once sequence 1's 3 spare pages are unmapped
        #expect(try e.createSequence(2, tokens: other) == 0)
        try writeKV(e, 2, tokens: other, from: 0)
        #expect(try kvMismatches(e, 1, tokens: prompt + [drafts[0]], from: 0) == 0)
        try e.free(2)
        let more = tokens(200, seed: 9)
        try e.append(1, tokens: more)
        try writeKV(e, 1, tokens: more, from: 121)
        #expect(try kvMismatches(e, 1, tokens: prompt + [drafts[0]] + more, from: 0) == 0)
    }

    /// The copy of a shared cut block needs memory the OS refuses (`kvm_pool_fail_commits`: the
    /// next page group's commit fails): the truncate is refused as `outOfMemory` and changes
    /// nothing, and both sequences free cleanly. Before, the blocks past the cut were released
    /// before the copy's block was taken: refused with them still in the table, a later free
    /// released them again and the fork's block went to the LRU while held (a trap at its free).
    @Test func aTruncateWhoseCopyCannotCommitChangesNothing() throws {
        let e = try Engine(smallConfig(.paged))
        let prompt = tokens(128, seed: 7)  // 32 blocks: one page group
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        try e.fork(parent: 1, child: 2)
        e.paged!.trim()  // no held group left: the copy's block needs a commit
        var table = [Int32](repeating: -1, count: 32)
        _ = try table.withUnsafeMutableBufferPointer { try e.blockTable(2, into: $0) }
        kvm_pool_fail_commits(e.paged!.pool, 0)
        let error = caught { try e.truncate(2, to: 122) }  // block 31 past the cut, block 30 cut and shared
        kvm_pool_fail_commits(e.paged!.pool, -1)
        #expect(error?.code == .outOfMemory)
        #expect(try e.length(2) == 128)
        let shared = table.allSatisfy { e.blocks.references($0) == 2 }
        #expect(shared, "every block still held by both sequences")
        guard shared else { return }  // freeing would trap
        #expect(try kvMismatches(e, 2, tokens: prompt, from: 0) == 0)
        try e.truncate(2, to: 122)  // memory back: the same cut succeeds
        #expect(try kvMismatches(e, 2, tokens: Array(prompt[..<122]), from: 0) == 0)
        #expect(try kvMismatches(e, 1, tokens: prompt, from: 0) == 0)
        try e.free(2)
        try e.free(1)
        #expect(e.stats().blocksUsed == 0)
    }

    /// Contiguous: B forks A (300 tokens); B is cut to 200, inside a page both map, whose copy
    /// the OS refuses (its commit, or its mapping). The truncate is refused and changes nothing;
    /// once memory is back the same cut succeeds and B's appends leave A's K/V alone. Before,
    /// the page was copied after the cut: refused, the cut stood with the page still shared,
    /// a retry returned at once (nothing left to cut) and B's appends wrote into A's K/V.
    @Test(arguments: ["commit", "mmap"])
    func aRefusedCopyOfTheCutPageChangesNothing(failing: String) throws {
        let e = try Engine(smallConfig(.contiguous, memoryBytes: 1 << 20))
        let a = tokens(300, seed: 1)
        try e.createSequence(1, tokens: a)
        try writeKV(e, 1, tokens: a, from: 0)
        try e.fork(parent: 1, child: 2)
        let memory = e.contiguous!
        memory.unmapAllUnpinned()
        memory.trimFree(keeping: 0)
        let before = e.stats()
        if failing == "commit" { kvm_pool_fail_commits(memory.pool, 0) } else { kvm_ranges_fail_mmaps(memory.ranges, 0, 1) }
        let error = caught { try e.truncate(2, to: 200) }
        kvm_pool_fail_commits(memory.pool, -1)
        kvm_ranges_fail_mmaps(memory.ranges, 0, 0)
        #expect(error?.code == .outOfMemory)
        #expect(try e.length(2) == 300)
        let after = e.stats()
        #expect(after.blocksUsed == before.blocksUsed && after.blocksCached == before.blocksCached)
        #expect(after.committedBytes == before.committedBytes && after.mappings == before.mappings)
        #expect(try kvMismatches(e, 2, tokens: a, from: 0) == 0)
        try e.truncate(2, to: 200)
        let more = tokens(56, seed: 9)
        try e.append(2, tokens: more)
        try writeKV(e, 2, tokens: more, from: 200)
        #expect(try kvMismatches(e, 1, tokens: a, from: 0) == 0, "the fork's K/V is unchanged")
        #expect(try kvMismatches(e, 2, tokens: Array(a[..<200]) + more, from: 0) == 0)
    }
}
