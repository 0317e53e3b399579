import Testing
@testable import KVCacheABI

@Suite struct KVMemoryABITests {
    // MARK: contiguous: kvc_seq_kv

    @Test func seqKVOnAPagedEngineIsUnsupported() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var k: UnsafeMutableRawPointer?
        var v: UnsafeMutableRawPointer?
        try f.expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["kvc_seq_kv"]) { kvc_seq_kv($0, 1001, 0, &k, &v) }
    }

    @Test func seqKVOfALayerOutOfRangeIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_CONTIGUOUS)
        var k: UnsafeMutableRawPointer?
        var v: UnsafeMutableRawPointer?
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["layer", "2"]) { kvc_seq_kv($0, 1001, 2, &k, &v) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["layer", "\(UInt32.max)"]) {
            kvc_seq_kv($0, 1001, .max, &k, &v)
        }
    }

    @Test func seqKVOfAnUnknownSequenceIsNotFound() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_CONTIGUOUS)
        var k: UnsafeMutableRawPointer?
        var v: UnsafeMutableRawPointer?
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_kv", "sequence 12 does not exist"]) { kvc_seq_kv($0, 12, 0, &k, &v) }
    }

    @Test func seqKVWithNullKIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_CONTIGUOUS)
        var v: UnsafeMutableRawPointer?
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["k is NULL"]) { kvc_seq_kv($0, 1001, 0, nil, &v) }
    }

    @Test func seqKVWithNullVIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_CONTIGUOUS)
        var k: UnsafeMutableRawPointer?
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["v is NULL"]) { kvc_seq_kv($0, 1001, 0, &k, nil) }
    }

    @Test func seqKVWithNullEngineIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_CONTIGUOUS)
        var k: UnsafeMutableRawPointer?
        var v: UnsafeMutableRawPointer?
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["engine", "NULL"]) { _ in kvc_seq_kv(nil, 1001, 0, &k, &v) }
    }

    @Test func seqKVPointersDoNotMoveWhenTheSequenceGrows() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_CONTIGUOUS)
        try f.create(5, tokens: f.uniqueTokens(5, count: 3))
        var k0: UnsafeMutableRawPointer?, v0: UnsafeMutableRawPointer?, k1: UnsafeMutableRawPointer?, v1: UnsafeMutableRawPointer?
        #expect(kvc_seq_kv(f.handle, 5, 1, &k0, &v0) == KVC_OK)
        try f.append(5, tokens: f.uniqueTokens(5000, count: 600))  // crosses pages
        #expect(kvc_seq_kv(f.handle, 5, 1, &k1, &v1) == KVC_OK)
        #expect(k0 != nil && v0 != nil && k0 != v0)
        #expect(k0 == k1 && v0 == v1)
        try f.expectWitnessesIntact()
    }

    // MARK: paged: kvc_seq_block_table

    @Test func blockTableOnAContiguousEngineIsUnsupported() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_CONTIGUOUS)
        var blocks = [Int32](repeating: 0, count: 8)
        var n = 0
        try f.expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["kvc_seq_block_table"]) {
            kvc_seq_block_table($0, 1001, &blocks, blocks.count, &n)
        }
    }

    @Test func blockTableOfAnUnknownSequenceIsNotFound() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var blocks = [Int32](repeating: 0, count: 8)
        var n = 0
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_block_table", "sequence 13 does not exist"]) {
            kvc_seq_block_table($0, 13, &blocks, blocks.count, &n)
        }
    }

    @Test func blockTableTooSmallReportsTheFullCountAndWritesThePrefix() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        let full = try f.blockTable(1001)
        try #require(full.count == 4)  // 14 tokens in blocks of 4
        var blocks: [Int32] = [-7, -7, -7]
        var n = 0
        try f.expectFailure(KVC_ERR_BUFFER_TOO_SMALL, mentioning: ["capacity 2", "4 blocks"]) {
            kvc_seq_block_table($0, 1001, &blocks, 2, &n)
        }
        #expect(n == 4)
        #expect(Array(blocks[0..<2]) == Array(full[0..<2]))
        #expect(blocks[2] == -7, "wrote past capacity")
    }

    @Test func blockTableSizeQueryWithNullBlocksIsBufferTooSmallWithTheCount() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var n = 0
        try f.expectFailure(KVC_ERR_BUFFER_TOO_SMALL, mentioning: ["capacity 0"]) { kvc_seq_block_table($0, 1001, nil, 0, &n) }
        #expect(n == 4)
    }

    @Test func blockTableWithNullBlocksAndACapacityIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var n = 0
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["blocks", "NULL"]) { kvc_seq_block_table($0, 1001, nil, 4, &n) }
    }

    @Test func blockTableWithNullCountIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var blocks = [Int32](repeating: 0, count: 8)
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_blocks", "NULL"]) {
            kvc_seq_block_table($0, 1001, &blocks, blocks.count, nil)
        }
    }

    @Test func blockTableWithNullEngineIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var blocks = [Int32](repeating: 0, count: 8)
        var n = 0
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["engine", "NULL"]) { _ in
            kvc_seq_block_table(nil, 1001, &blocks, blocks.count, &n)
        }
    }

    @Test func blockTableWithACapacityAbovePtrdiffMaxIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var blocks = [Int32](repeating: 0, count: 8)
        var n = 0
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["capacity", "PTRDIFF_MAX"]) {
            kvc_seq_block_table($0, 1001, &blocks, Int.min, &n)
        }
    }

    // MARK: paged: kvc_block_kv

    @Test func blockKVOnAContiguousEngineIsUnsupported() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_CONTIGUOUS)
        var k: UnsafeMutableRawPointer?
        var v: UnsafeMutableRawPointer?
        try f.expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["kvc_block_kv"]) { kvc_block_kv($0, 0, 0, &k, &v) }
    }

    @Test(arguments: [-1, Int32.min])
    func blockKVOfANegativeBlockIsInvalid(block: Int32) throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var k: UnsafeMutableRawPointer?
        var v: UnsafeMutableRawPointer?
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["block", "\(block)"]) { kvc_block_kv($0, block, 0, &k, &v) }
    }

    @Test func blockKVOfABlockPastTheTotalIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        let total = Int32(try f.stats().blocksTotal)
        var k: UnsafeMutableRawPointer?
        var v: UnsafeMutableRawPointer?
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["block", "\(total)"]) { kvc_block_kv($0, total, 0, &k, &v) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["block", "\(Int32.max)"]) {
            kvc_block_kv($0, .max, 0, &k, &v)
        }
    }

    @Test func blockKVOfALayerOutOfRangeIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        let block = try f.blockTable(1001)[0]
        var k: UnsafeMutableRawPointer?
        var v: UnsafeMutableRawPointer?
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["layer", "2"]) { kvc_block_kv($0, block, 2, &k, &v) }
    }

    @Test func blockKVWithNullKIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var v: UnsafeMutableRawPointer?
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["k is NULL"]) { kvc_block_kv($0, 0, 0, nil, &v) }
    }

    @Test func blockKVWithNullVIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var k: UnsafeMutableRawPointer?
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["v is NULL"]) { kvc_block_kv($0, 0, 0, &k, nil) }
    }

    @Test func blockKVWithNullEngineIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var k: UnsafeMutableRawPointer?
        var v: UnsafeMutableRawPointer?
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["engine", "NULL"]) { _ in kvc_block_kv(nil, 0, 0, &k, &v) }
    }

    @Test func blockKVOnAMetadataOnlyEngineIsUnsupported() throws {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.metadataOnly = 1
        let f = try ABIFixture(c)
        try f.create(1, tokens: [1, 2, 3, 4, 5])
        let block = try f.blockTable(1)[0]
        var k: UnsafeMutableRawPointer?
        var v: UnsafeMutableRawPointer?
        try f.expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["kvc_block_kv"]) { kvc_block_kv($0, block, 0, &k, &v) }
    }
}
