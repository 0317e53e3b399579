import CKVMemory
import Testing
@testable import KVCacheABI
@testable import KVCache

/// 64 KiB over 4 tensors: 4 pages of 4 KiB per tensor. Paged: 256 blocks of 4 tokens (1024
/// tokens, the witnesses hold 5 blocks); contiguous: 4 pages per tensor, one per witness, so
/// 2 pages = 512 tokens are left. Either way less than max_seq_tokens (1024) fits.
private let tinyBudget: UInt64 = 64 << 10

@Suite struct BudgetABITests {
    @Test(arguments: bothLayouts)
    func createBeyondTheBudgetIsOutOfMemoryAndCreatesNothing(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout, memoryBytes: tinyBudget)
        let tokens = f.uniqueTokens(7, count: Int(f.config.maxSeqTokens))
        var cached = 0
        try f.expectFailure(KVC_ERR_OUT_OF_MEMORY, mentioning: ["kvc_seq_create(seq 7", "needs"]) {
            kvc_seq_create($0, 7, tokens, tokens.count, &cached)
        }
        var n = 0
        #expect(kvc_seq_length(f.handle, 7, &n) == KVC_ERR_NOT_FOUND, "a failed create left a sequence behind")
    }

    @Test(arguments: bothLayouts)
    func appendBeyondTheBudgetIsOutOfMemoryAndAppendsNothing(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout, memoryBytes: tinyBudget)
        var length = 4
        try f.create(7, tokens: f.uniqueTokens(7, count: length))
        try f.write(7, salt: 7, from: 0, to: length)
        // Decode 7 a token at a time, writing each token's bytes, until the budget runs out.
        var rc = KVC_OK
        while length < Int(f.config.maxSeqTokens) {
            LastError.clear()
            rc = kvc_seq_append(f.handle, 7, [Int32(length)], 1)
            if rc != KVC_OK { break }
            try f.write(7, salt: 7, from: length, to: length + 1)
            length += 1
        }
        expectStatus(rc, KVC_ERR_OUT_OF_MEMORY, mentioning: ["kvc_seq_append(seq 7", "needs"])
        #expect(try f.length(7) == length, "a failed append changed the length")
        #expect(try f.firstMismatch(7, salt: 7, to: length) == nil)
        try f.expectWitnessesIntact()
    }

    @Test(arguments: bothLayouts)
    func freeingASequenceMakesRoomAfterOutOfMemory(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout, memoryBytes: tinyBudget)
        try f.create(7, tokens: f.uniqueTokens(7, count: 4))
        while kvc_seq_append(f.handle, 7, [1, 2, 3, 4], 4) == KVC_OK {}
        #expect(kvc_seq_append(f.handle, 7, [1, 2, 3, 4], 4) == KVC_ERR_OUT_OF_MEMORY)
        #expect(kvc_seq_free(f.handle, 1001) == KVC_OK)
        #expect(kvc_seq_append(f.handle, 7, [1, 2, 3, 4], 4) == KVC_OK)
    }

    @Test func forkThatMustCopyAPageBeyondTheBudgetIsOutOfMemoryAndCreatesNothing() throws {
        // Contiguous only: a fork maps the parent's whole pages shared and copies the page
        // holding its last token (paged forks share every block and copy at the next append).
        let f = try ABIFixture(layout: KVC_LAYOUT_CONTIGUOUS, memoryBytes: tinyBudget)
        try f.addWitness(7, tokens: f.uniqueTokens(7, count: 300))  // 2 pages per tensor, the last partial
        try #require(try f.stats().committedBytes == tinyBudget, "the budget is full")
        try f.expectFailure(KVC_ERR_OUT_OF_MEMORY, mentioning: ["kvc_seq_fork(parent 7, child 8)", "page"]) {
            kvc_seq_fork($0, 7, 8)
        }
        var n = 0
        #expect(kvc_seq_length(f.handle, 8, &n) == KVC_ERR_NOT_FOUND, "a failed fork left a child behind")
    }

    @Test func appendToAForkThatMustCopyItsSharedBlockBeyondTheBudgetIsOutOfMemory() throws {
        // Paged: the fork shares the partly filled last block; the first append must copy it.
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED, memoryBytes: tinyBudget)
        try f.addWitness(7, tokens: f.uniqueTokens(7, count: 6))  // blocks of 4: the last holds 2
        #expect(kvc_seq_fork(f.handle, 7, 8) == KVC_OK)
        // Use up every free block with one filler sequence grown block by block.
        try f.create(100, tokens: f.uniqueTokens(100, count: 4))
        while kvc_seq_append(f.handle, 100, [1, 2, 3, 4], 4) == KVC_OK {}
        let s = try f.stats()
        try #require(s.blocksUsed == s.blocksTotal, "every block is used: \(s)")
        try f.expectFailure(KVC_ERR_OUT_OF_MEMORY, mentioning: ["kvc_seq_append(seq 8", "available"]) {
            kvc_seq_append($0, 8, [1], 1)
        }
        #expect(try f.length(8) == 6)
        #expect(try f.firstMismatch(8, salt: 7, to: 6) == nil, "the fork no longer reads its parent's bytes")
    }

    /// The OS refusing to commit memory (`kvm_pool_fail_commits` on the engine behind the
    /// handle: the next commit fails with EIO, as fallocate can in a memory-limited cgroup)
    /// during kvc_seq_create is KVC_ERR_OUT_OF_MEMORY with the C module's message in either
    /// layout (contiguous used to give KVC_ERR_INTERNAL), also when the create shares a cached
    /// prefix. Free memory is given back first (the engine's memory trim, not kvc_engine_trim,
    /// which would drop the cache) so that the create must commit. Nothing changes: every
    /// stat, the mapping count included (contiguous: the failed create unmaps the cached pages
    /// it had mapped shared; they used to stay in its free slot), the witnesses, and the cached
    /// prefix, which the same create hits with its bytes once commits work.
    @Test(arguments: bothLayouts)
    func createWhoseCommitTheOSRefusesIsOutOfMemoryAndChangesNothing(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        let cachedTokens = 512  // two contiguous pages, 128 paged blocks
        let tokens = f.uniqueTokens(7, count: 1000)
        try f.create(5, tokens: Array(tokens[0...cachedTokens]))
        try f.write(5, salt: 7, from: 0, to: cachedTokens)
        #expect(kvc_seq_free(f.handle, 5) == KVC_OK)
        let engine = Unmanaged<Engine>.fromOpaque(UnsafeRawPointer(f.handle)).takeUnretainedValue()
        engine.paged?.trim()
        engine.contiguous?.unmapAllUnpinned()
        engine.contiguous?.trimFree(keeping: 0)
        let pool = engine.paged?.pool ?? engine.contiguous!.pool
        let before = try f.stats()
        #expect(before.blocksCached == 128)
        kvm_pool_fail_commits(pool, 0)
        var cached = 0
        LastError.clear()
        expectStatus(kvc_seq_create(f.handle, 7, tokens, tokens.count, &cached), KVC_ERR_OUT_OF_MEMORY,
                     mentioning: ["kvc_seq_create(seq 7", "committing", "injected fault"])
        kvm_pool_fail_commits(pool, -1)
        let after = try f.stats()
        #expect(after.fields == before.fields, "\(after) vs \(before)")
        try f.expectWitnessesIntact()
        var n = 0
        #expect(kvc_seq_length(f.handle, 7, &n) == KVC_ERR_NOT_FOUND, "a failed create left a sequence behind")
        #expect(try f.create(7, tokens: tokens) == cachedTokens, "the cached prefix survived")
        #expect(try f.firstMismatch(7, salt: 7, to: cachedTokens) == nil)
    }
}
