import Testing
@testable import KVCacheABI
@testable import KVCache

/// `kvc_prefix_admit` (KVC_1.4), a create's dry run through the C ABI: the reviewer's two
/// states that `kvc_stats` and `kvc_prefix_lookup` cannot tell apart (revradix admit_paged.c)
/// get different, correct answers; a refusal says how much is missing; bad input is refused
/// with nothing written; nothing changes.
@Suite struct AdmitABITests {
    private static func admit(_ f: ABIFixture, _ tokens: [Int32], salt: UInt64 = 0, commit: Int, reserve: Int = 0)
        -> (status: kvc_status, cached: Int, short: Int)
    {
        var cached = -1, short = -1
        LastError.clear()
        let rc = tokens.withUnsafeBufferPointer {
            kvc_prefix_admit(f.handle, $0.baseAddress, $0.count, salt, commit, reserve, &cached, &short)
        }
        return (rc, cached, short)
    }

    /// admit_paged.c at the small model's scale (4-token blocks, 64 blocks): prompt Q is a
    /// 10-block prefix P plus 20 new blocks. A: P cached only, 40 other blocks live. B: P held
    /// by a live request, 30 other blocks live, another 10 cached. Both read blocks_used 40,
    /// blocks_cached 10 and a 40-token lookup hit; the create fits in B only (in A it takes P's
    /// 10 blocks out of the 24 free).
    @Test func theLookAlikeStatesAreToldApart() throws {
        let small = CConfig.small(KVC_LAYOUT_PAGED, memoryBytes: 64 * 256)
        let a = try ABIFixture(small), b = try ABIFixture(small)
        let p = a.uniqueTokens(1, count: 40), q = p + a.uniqueTokens(9, count: 80)
        try a.create(1, tokens: p)
        #expect(kvc_seq_free(a.handle, 1) == KVC_OK)
        try a.create(2, tokens: a.uniqueTokens(2, count: 160))
        try b.create(4, tokens: b.uniqueTokens(4, count: 40))
        #expect(kvc_seq_free(b.handle, 4) == KVC_OK)
        try b.create(1, tokens: p)
        try b.create(2, tokens: b.uniqueTokens(2, count: 120))
        for f in [a, b] {
            let s = try f.stats()
            #expect([s.blocksTotal, s.blocksUsed, s.blocksCached] == [64, 40, 10])
            var memory = -1, disk = -1, peer = -1
            #expect(q.withUnsafeBufferPointer { kvc_prefix_lookup(f.handle, $0.baseAddress, $0.count, 0, &memory, &disk, &peer) } == KVC_OK)
            #expect([memory, disk, peer] == [40, 0, 0])
        }
        let before = try a.stats()
        let answerA = Self.admit(a, q, commit: q.count)
        expectStatus(answerA.status, KVC_ERR_OUT_OF_MEMORY, mentioning: ["kvc_prefix_admit", "prompt needs 20 blocks, 14 are available"])
        #expect(answerA.cached == 40 && answerA.short == 6 * 4)
        #expect(try a.stats() == before, "the dry run changed a counter")
        try a.expectFailure(KVC_ERR_OUT_OF_MEMORY, mentioning: ["prompt needs 20 blocks, 14 are available"]) { h in
            var cached = -1
            return q.withUnsafeBufferPointer { kvc_seq_create(h, 9, $0.baseAddress, $0.count, &cached) }
        }
        let answerB = Self.admit(b, q, commit: q.count)
        #expect(answerB.status == KVC_OK && answerB.cached == 40 && answerB.short == 0)
        #expect(try b.create(9, tokens: q) == 40)
        // A chunk of 56 tokens (14 blocks) fits A; 4 tokens of decode room more do not.
        #expect(Self.admit(a, q, commit: 56) == (KVC_OK, 40, 0))
        let reserved = Self.admit(a, q, commit: 56, reserve: 4)
        expectStatus(reserved.status, KVC_ERR_OUT_OF_MEMORY, mentioning: ["15 blocks (with 4 tokens reserved), 14 are available"])
        #expect(reserved.cached == 40 && reserved.short == 4)
    }

    /// Contiguous, admit_contig.c: with every page group pinned a one-token prompt is refused,
    /// one group (a page of 256 16-byte tokens) short.
    @Test func contiguousFullMemoryIsRefusedWithWhatIsMissing() throws {
        var c = CConfig.small(KVC_LAYOUT_CONTIGUOUS, memoryBytes: 16 * 4096)
        c.maxSeqs = 5  // a slot free: the refusal is memory's
        let f = try ABIFixture(c)
        for s in 1...4 { try f.create(UInt64(s), tokens: f.uniqueTokens(UInt64(s), count: 1)) }
        var full = false
        while !full {
            for s in 1...4 where kvc_seq_append(f.handle, UInt64(s), [5], 1) != KVC_OK { full = true }
        }
        let s = try f.stats()
        #expect(s.committedBytes == s.budgetBytes)
        let answer = Self.admit(f, [9], commit: 1)
        #expect(answer.status == KVC_ERR_OUT_OF_MEMORY && answer.short == 256 && answer.cached == 0)
    }

    @Test func badInputIsRefusedWithNothingWritten() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        let tokens = f.uniqueTokens(1, count: 10)
        var cached = -1, short = -1
        func call(_ h: OpaquePointer?, _ t: UnsafePointer<Int32>?, _ n: Int, commit: Int = 1, reserve: Int = 0,
                  _ c: UnsafeMutablePointer<Int>?, _ s: UnsafeMutablePointer<Int>?) -> kvc_status {
            kvc_prefix_admit(h, t, n, 0, commit, reserve, c, s)
        }
        try tokens.withUnsafeBufferPointer { t in
            let p = t.baseAddress
            expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_prefix_admit"]) { call(nil, p, 10, &cached, &short) }
            try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["tokens"]) { call($0, nil, 10, &cached, &short) }
            try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["cached_tokens"]) { call($0, p, 10, nil, &short) }
            try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["short_tokens"]) { call($0, p, 10, &cached, nil) }
            try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_tokens is 0"]) { call($0, p, 0, &cached, &short) }
            try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["max_seq_tokens"]) { call($0, p, 1025, &cached, &short) }
            try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["commit_tokens is 0"]) {
                call($0, p, 10, commit: 0, &cached, &short)
            }
            try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["commit_tokens", "PTRDIFF_MAX"]) {
                call($0, p, 10, commit: -1, &cached, &short)
            }
            try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["reserve_tokens", "PTRDIFF_MAX"]) {
                call($0, p, 10, reserve: -1, &cached, &short)
            }
            try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["reserve_tokens 1015", "max_seq_tokens 1024"]) {
                call($0, p, 10, commit: 10, reserve: 1015, &cached, &short)
            }
        }
        #expect(cached == -1 && short == -1, "a refused call wrote an output")
        try f.create(1, tokens: tokens)
        let before = try f.stats()
        #expect(Self.admit(f, tokens + [7], commit: 1) == (KVC_OK, 8, 0))
        #expect(Self.admit(f, tokens + [7], salt: 0x5A17, commit: 1) == (KVC_OK, 0, 0), "an unknown salt is a miss")
        #expect(try f.stats() == before)
        try f.expectWitnessesIntact()
    }
}
