import Testing
@testable import KVCacheABI

/// 32 KiB: 8 pages of 4 KiB over 4 tensors. Paged: 2 pages = 128 blocks = 512 tokens per
/// tensor; contiguous: 2 pages = 512 tokens per tensor. Either way less than max_seq_tokens.
private let tinyBudget: UInt64 = 32 << 10

@Suite struct BudgetABITests {
    @Test(arguments: bothLayouts)
    func createBeyondTheBudgetIsOutOfMemoryAndKeepsExistingBytes(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout, memoryBytes: tinyBudget)
        let tokens = f.uniqueTokens(7, count: Int(f.config.maxSeqTokens))
        var cached = 0
        try f.expectFailure(KVC_ERR_OUT_OF_MEMORY, mentioning: ["kvc_seq_create"]) {
            kvc_seq_create($0, 7, tokens, tokens.count, &cached)
        }
        var n = 0
        #expect(kvc_seq_length(f.handle, 7, &n) == KVC_ERR_NOT_FOUND, "a failed create left a sequence behind")
    }

    @Test(arguments: bothLayouts)
    func appendBeyondTheBudgetIsOutOfMemoryAndKeepsTheSequence(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout, memoryBytes: tinyBudget)
        try f.addWitness(7, tokens: f.uniqueTokens(7, count: 4))
        var length = 4
        var rc = KVC_OK
        // Grow 7 a block at a time, writing each block's bytes, until the budget is exhausted.
        for step in 0..<Int(f.config.maxSeqTokens) / 4 - 1 {
            let more = f.uniqueTokens(70_000 + UInt64(step), count: 4)
            LastError.clear()
            rc = more.withUnsafeBufferPointer { kvc_seq_append(f.handle, 7, $0.baseAddress, $0.count) }
            if rc != KVC_OK { break }
            try f.write(7, salt: 7, from: length, to: length + 4)
            length += 4
        }
        expectStatus(rc, KVC_ERR_OUT_OF_MEMORY, mentioning: ["kvc_seq_append", "7"])
        #expect(try f.length(7) == length, "a failed append changed the length")
        #expect(try f.firstMismatch(7, salt: 7, to: length) == nil)
        try f.expectWitnessesIntact()
        // The failure is recoverable: freeing a sequence makes room again.
        #expect(kvc_seq_free(f.handle, 1001) == KVC_OK)
        #expect(kvc_seq_append(f.handle, 7, [1, 2, 3, 4], 4) == KVC_OK)
    }

    @Test(arguments: bothLayouts)
    func forkBeyondTheBudgetIsOutOfMemoryAndCreatesNothing(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout, memoryBytes: tinyBudget)
        // Fill the budget with one sequence whose last block is partial, so a fork must copy it.
        var cached = 0
        let before = try f.stats()
        var tokens = f.uniqueTokens(7, count: 2)
        while kvc_seq_create(f.handle, 7, tokens, tokens.count, &cached) == KVC_OK {
            #expect(kvc_seq_free(f.handle, 7) == KVC_OK)
            #expect(kvc_engine_trim(f.handle) == KVC_OK)
            tokens = f.uniqueTokens(7, count: tokens.count + 4)
            try #require(tokens.count <= Int(f.config.maxSeqTokens))
        }
        tokens = f.uniqueTokens(7, count: tokens.count - 4)
        try f.addWitness(7, tokens: tokens)
        _ = before
        try f.expectFailure(KVC_ERR_OUT_OF_MEMORY, mentioning: ["kvc_seq_fork"]) { kvc_seq_fork($0, 7, 8) }
        var n = 0
        #expect(kvc_seq_length(f.handle, 8, &n) == KVC_ERR_NOT_FOUND, "a failed fork left a child behind")
    }
}
