import CKVMemory
import Testing
@testable import KVCache

/// Committing memory (`fallocate` on the pool's memfd) can fail for real, with ENOSPC or
/// ENOMEM under a memory-limited cgroup; `kvm_pool_fail_commits` makes the next commit fail
/// with EIO so that the engine's handling can be tested. A call that fails this way changes
/// nothing: no block leaked, none indexed for K/V the server will not write, other sequences
/// intact.
@Suite struct CommitFailureTests {
    private func engine() throws -> Engine { try Engine(smallConfig(.paged, memoryBytes: 1 << 20)) }

    /// Blocks that fit in memory already committed (the pool commits groups in batches), past
    /// which an allocation must commit more.
    private func committedFreeBlocks(_ e: Engine) -> Int {
        let s = e.stats(), c = e.config
        let groups = Int(s.committedBytes) / (c.tensors * Int(c.pageBytes))
        return groups * (Int(c.pageBytes) / c.blockBytes) - Int(s.blocksUsed)
    }

    @Test func anAppendWhoseMemoryCannotBeCommittedMidwayChangesNothing() throws {
        let e = try engine()
        let prompt = tokens(8, seed: 1)
        try e.createSequence(1, tokens: prompt)  // blocks 0 and 1 of the first group
        try writeKV(e, 1, tokens: prompt, from: 0)
        let other = tokens(12, seed: 2)
        try e.createSequence(2, tokens: other)
        try writeKV(e, 2, tokens: other, from: 0)
        let before = e.stats()
        kvm_pool_fail_commits(e.paged!.pool, 0)
        // Every committed free block, then 3 more from memory whose commit fails.
        let blocksMore = committedFreeBlocks(e) + 3
        #expect(blocksMore > 3)
        let more = tokens(blocksMore * 4, seed: 3)
        let error = caught { try e.append(1, tokens: more) }
        #expect(error?.code == .outOfMemory)
        #expect(error?.message.contains("injected fault") == true)
        #expect(e.stats() == before, "no block used, indexed or committed")
        #expect(try e.length(1) == 8)
        #expect(e.cachedPrefixTokens(prompt + more) == 8, "no appended block is a prefix hit")
        #expect(try kvMismatches(e, 1, tokens: prompt, from: 0) == 0)
        #expect(try kvMismatches(e, 2, tokens: other, from: 0) == 0)
        kvm_pool_fail_commits(e.paged!.pool, -1)
        try e.append(1, tokens: more)
        try writeKV(e, 1, tokens: more, from: 8)
        #expect(try kvMismatches(e, 1, tokens: prompt + more, from: 0) == 0)
        #expect(e.stats().blocksUsed == before.blocksUsed + UInt64(blocksMore))
        try e.free(1)
        try e.free(2)
        #expect(e.stats().blocksUsed == 0)
    }

    @Test func aCreateWhoseMemoryCannotBeCommittedMidwayChangesNothing() throws {
        let e = try engine()
        let other = tokens(12, seed: 2)
        try e.createSequence(2, tokens: other)
        try writeKV(e, 2, tokens: other, from: 0)
        let before = e.stats()
        kvm_pool_fail_commits(e.paged!.pool, 0)
        let prompt = tokens((committedFreeBlocks(e) + 3) * 4, seed: 4)  // past the committed memory
        #expect(caught { try e.createSequence(1, tokens: prompt) }?.code == .outOfMemory)
        #expect(e.stats().blocksUsed == before.blocksUsed && e.stats().sequences == 1)
        #expect(e.cachedPrefixTokens(prompt) == 0)
        #expect(try kvMismatches(e, 2, tokens: other, from: 0) == 0)
        kvm_pool_fail_commits(e.paged!.pool, -1)
        try e.createSequence(1, tokens: prompt)
        #expect(e.stats().sequences == 2)
    }

    /// The same commit failure in either layout is `outOfMemory` (a server preempts and
    /// retries), with the C module's message, and changes nothing: a create that shares cached
    /// blocks and must commit pages for the rest, and an append past the sequence's pages,
    /// leave the stats (blocks used and cached, committed bytes), the cached prefix and the
    /// other sequence's bytes as they were; both succeed once commits work again. (The
    /// contiguous layout used to report `internal`: its page mapping turned the pool's EIO into
    /// a bug report.) Free memory is given back first (`trim`), so that any new page must be
    /// committed; paged, the prompt also goes past the free blocks left in committed groups.
    /// Contiguous, the failed create unmaps the cached pages it had mapped shared into its free
    /// slot (they used to stay there, unpinned, and the mapping count grew), so the stats are
    /// equal, mappings included.
    @Test(arguments: [Layout.paged, .contiguous])
    func aCommitFailureIsOutOfMemoryInBothLayouts(layout: Layout) throws {
        let e = try Engine(smallConfig(layout, memoryBytes: 1 << 20))
        let other = tokens(300, seed: 2)
        try e.createSequence(2, tokens: other)
        try writeKV(e, 2, tokens: other, from: 0)
        let shared = tokens(256, seed: 5)  // two whole 4 KiB pages of 32-byte tokens, 64 blocks
        try e.createSequence(3, tokens: shared + [7])
        try writeKV(e, 3, tokens: shared, from: 0)
        try e.free(3)
        e.paged?.trim()
        e.contiguous?.unmapAllUnpinned()
        e.contiguous?.trimFree(keeping: 0)
        let pool = e.paged?.pool ?? e.contiguous!.pool
        let before = e.stats()
        #expect(before.blocksCached == 64 && e.cachedPrefixTokens(shared + [7]) == 256)
        let moreBlocks = layout == .paged ? committedFreeBlocks(e) + 3 : 100
        let prompt = shared + tokens(moreBlocks * 4, seed: 6)
        kvm_pool_fail_commits(pool, 0)
        let create = caught { try e.createSequence(1, tokens: prompt) }
        #expect(create?.code == .outOfMemory, "\(String(describing: create))")
        #expect(create?.message.contains("injected fault") == true)
        let append = caught { try e.append(2, tokens: tokens(moreBlocks * 4, seed: 7)) }
        #expect(append?.code == .outOfMemory, "\(String(describing: append))")
        kvm_pool_fail_commits(pool, -1)
        #expect(e.stats() == before, "no block used, cached or committed, no page mapped")
        #expect(e.cachedPrefixTokens(prompt) == 256)
        #expect(try e.length(2) == 300)
        #expect(try kvMismatches(e, 2, tokens: other, from: 0) == 0)
        #expect(try e.createSequence(1, tokens: prompt) == 256)
        #expect(try kvMismatches(e, 1, tokens: shared, from: 0) == 0, "the cached blocks kept their bytes")
        try e.append(2, tokens: tokens(moreBlocks * 4, seed: 7))
    }

    /// Contiguous: a fork whose boundary page cannot be committed is `outOfMemory` and maps
    /// nothing: the whole pages it had mapped shared into its free slot are unmapped again (they
    /// used to stay, and the mapping count grew), the parent keeps its bytes, and the fork
    /// succeeds once commits work.
    @Test func aForkWhoseBoundaryPageCannotBeCommittedMapsNothing() throws {
        let e = try Engine(smallConfig(.contiguous, memoryBytes: 1 << 20))
        let parent = tokens(300, seed: 3)  // pages 0 and 1 whole (128 tokens each), page 2 the boundary
        try e.createSequence(1, tokens: parent)
        try writeKV(e, 1, tokens: parent, from: 0)
        e.contiguous!.unmapAllUnpinned()
        e.contiguous!.trimFree(keeping: 0)
        let before = e.stats()
        kvm_pool_fail_commits(e.contiguous!.pool, 0)
        let fork = caught { try e.fork(parent: 1, child: 2) }
        kvm_pool_fail_commits(e.contiguous!.pool, -1)
        #expect(fork?.code == .outOfMemory, "\(String(describing: fork))")
        #expect(e.stats() == before, "nothing mapped, used or committed")
        #expect(try kvMismatches(e, 1, tokens: parent, from: 0) == 0)
        try e.fork(parent: 1, child: 2)
        #expect(try kvMismatches(e, 2, tokens: parent, from: 0) == 0)
    }
}
