import Testing
@testable import KVCacheABI
@testable import KVCache

/// `kvc_seq_prefix_sources`: a create's cached tokens by memory, own tier and peers, and the
/// refusals (NULL engine or output, unknown sequence) that write nothing.
@Suite struct PrefixSourcesABITests {
    @Test(arguments: bothLayouts)
    func aMemoryHitIsReportedAsMemoryAndBadInputWritesNothing(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        let tokens = f.uniqueTokens(1, count: 41)
        let prefix = 40 / f.blockTokens * f.blockTokens
        #expect(try f.create(1, tokens: tokens) == 0)
        #expect(try f.create(2, tokens: tokens) == prefix)
        var memory = 7, disk = 7, peer = 7
        #expect(kvc_seq_prefix_sources(f.handle, 2, &memory, &disk, &peer) == KVC_OK)
        #expect(memory == prefix && disk == 0 && peer == 0)
        #expect(kvc_seq_prefix_sources(f.handle, 1, &memory, &disk, &peer) == KVC_OK)
        #expect(memory == 0 && disk == 0 && peer == 0, "the first create found nothing")

        memory = 7; disk = 7; peer = 7
        expectStatus(kvc_seq_prefix_sources(nil, 2, &memory, &disk, &peer), KVC_ERR_INVALID_ARGUMENT, mentioning: ["engine is NULL"])
        expectStatus(kvc_seq_prefix_sources(f.handle, 2, nil, &disk, &peer), KVC_ERR_INVALID_ARGUMENT, mentioning: ["memory_tokens is NULL"])
        expectStatus(kvc_seq_prefix_sources(f.handle, 2, &memory, nil, &peer), KVC_ERR_INVALID_ARGUMENT, mentioning: ["disk_tokens is NULL"])
        expectStatus(kvc_seq_prefix_sources(f.handle, 2, &memory, &disk, nil), KVC_ERR_INVALID_ARGUMENT, mentioning: ["peer_tokens is NULL"])
        expectStatus(kvc_seq_prefix_sources(f.handle, 9, &memory, &disk, &peer), KVC_ERR_NOT_FOUND,
                     mentioning: ["kvc_seq_prefix_sources(seq 9", "sequence 9 does not exist"])
        #expect(memory == 7 && disk == 7 && peer == 7, "a refused query wrote an output")
    }
}
