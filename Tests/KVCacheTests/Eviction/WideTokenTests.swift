import Testing
@testable import KVCache

/// Contiguous tokens wider than two pages (tokenBytes 10240 with 4 KiB pages, as 40 KV heads
/// of 128 fp16 elements): a token slot then covers a page it neither starts nor ends on, which
/// a compaction writing the slot must make the sequence's own like the two it touches at the
/// ends.
@Suite struct WideTokenTests {
    /// A fork shares its parent's whole pages; the parent's compaction moves its recent tokens
    /// down to slots whose middle pages the fork still maps. Every page a moved token covers is
    /// copied first, so the fork's K/V stay as written.
    @Test func aCompactionCopiesTheMiddlePageOfATokenItMovesIntoASharedPage() throws {
        var c = smallConfig(.contiguous)
        c.headDim = 2560  // 2 heads x 2560 x 2 bytes: 10240-byte tokens, 2.5 pages
        c.maxSeqTokens = 64
        c.eviction = EvictionConfig(.streamingLLM)
        c.eviction.sinkTokens = 1
        let e = try Engine(c)
        let toks = tokens(12, seed: 5)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try e.fork(parent: 1, child: 2)
        // Keeps position 0 and 9..<12, moved to slots 1..<4: slot 1 covers pages 2, 3 and 4.
        #expect(try e.compact(1, budgetTokens: 4) == 4)
        #expect(try positions(e, 1, layer: 0) == [0, 9, 10, 11])
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        #expect(try kvMismatches(e, 2, tokens: toks, from: 0) == 0, "the fork's K/V changed")
    }
}
