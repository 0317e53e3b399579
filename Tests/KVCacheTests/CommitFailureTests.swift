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
}
