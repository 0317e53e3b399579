import Testing
@testable import KVCacheABI

/// `kvc_seq_append_batch` and `kvc_seq_block_tables` (KVC_1.3): a decode step's appends and
/// block-table reads for many sequences in one call. Each entry must give exactly what the
/// single call (`kvc_seq_append`, `kvc_seq_block_table`) gives for it, in order: checked entry
/// by entry against a twin engine driven with single calls.
@Suite struct BatchABITests {
    /// A paged or contiguous engine on the small model, no witnesses, room for 16 sequences.
    private static func engine(_ layout: UInt32, memoryBytes: UInt64 = 1 << 20) throws -> ABIFixture {
        var c = CConfig.small(layout, memoryBytes: memoryBytes)
        c.maxSeqs = 16
        return try ABIFixture(c)
    }

    /// Sequences 1...5 of 1, 3, 4 (a full block), 5 and 8 tokens: appends that fill a block,
    /// begin one, or neither.
    private static func populate(_ f: ABIFixture) throws {
        for (seq, n) in zip(UInt64(1)...5, [1, 3, 4, 5, 8]) { try f.create(seq, tokens: f.uniqueTokens(seq, count: n)) }
    }

    /// `kvc_seq_append_batch` over `seqs` / `tokens`: the return value and the statuses.
    private static func appendBatch(_ f: ABIFixture, _ seqs: [UInt64], _ tokens: [Int32]) -> (kvc_status, [kvc_status]) {
        var statuses = [kvc_status](repeating: 99, count: seqs.count)
        let rc = kvc_seq_append_batch(f.handle, seqs, tokens, seqs.count, &statuses)
        return (rc, statuses)
    }

    /// What the engine shows of `seqs`: lengths (nil when not live) and, paged, block tables.
    private static func snapshot(_ f: ABIFixture, _ seqs: some Sequence<UInt64>) -> [String] {
        seqs.map { seq in
            var n = 0
            guard kvc_seq_length(f.handle, seq, &n) == KVC_OK else { return "\(seq): not live" }
            return "\(seq): \(n) tokens" + (f.isPaged ? ", blocks \((try? f.blockTable(seq)) ?? [])" : "")
        }
    }

    @Test(arguments: bothLayouts)
    func appendBatchEqualsSingleAppendsEntryByEntry(layout: UInt32) throws {
        let single = try Self.engine(layout)
        let batch = try Self.engine(layout)
        try Self.populate(single)
        try Self.populate(batch)
        // Duplicates append twice, in order; 99 is not live; 3 fills its block, 4 begins one.
        let seqs: [UInt64] = [1, 2, 3, 4, 5, 3, 99, 1, 4]
        let tokens: [Int32] = (0..<Int32(seqs.count)).map { 7000 + $0 }
        let expected = zip(seqs, tokens).map { seq, token in [token].withUnsafeBufferPointer {
            kvc_seq_append(single.handle, seq, $0.baseAddress, 1)
        } }
        LastError.clear()
        let (rc, statuses) = Self.appendBatch(batch, seqs, tokens)
        #expect(statuses == expected)
        #expect(statuses.filter { $0 != KVC_OK } == [KVC_ERR_NOT_FOUND])
        expectStatus(rc, KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_append_batch", "entry 6", "seq 99", "does not exist",
                                                         "1 of 9 entries failed"])
        #expect(Self.snapshot(batch, 1...5) == Self.snapshot(single, 1...5))
        #expect(try batch.stats() == single.stats())
        // All entries succeeding: KVC_OK, every status KVC_OK.
        let again = Self.appendBatch(batch, [5, 4, 3, 2, 1], [1, 2, 3, 4, 5])
        #expect(again.0 == KVC_OK && again.1 == [KVC_OK, KVC_OK, KVC_OK, KVC_OK, KVC_OK])
        #expect(try batch.length(5) == 8 + 2 && batch.length(1) == 1 + 3)
    }

    @Test func appendBatchOutOfMemoryMidBatchChangesNothingForTheFailingEntries() throws {
        let f = try Self.engine(KVC_LAYOUT_PAGED, memoryBytes: 64 << 10)
        // Sequences 1...6 end on a block boundary: each append begins a block.
        for seq in UInt64(1)...6 { try f.create(seq, tokens: f.uniqueTokens(seq, count: f.blockTokens)) }
        // Fillers take every free block but 2.
        var filler: UInt64 = 100
        while true {
            let s = try f.stats()
            let spare = Int(s.blocksTotal - s.blocksUsed) - 2
            if spare <= 0 { break }
            try f.create(filler, tokens: f.uniqueTokens(filler, count: min(spare, 256) * f.blockTokens))
            filler += 1
        }
        try #require(f.stats().blocksTotal - f.stats().blocksUsed == 2)
        let before = Self.snapshot(f, 1...6)
        LastError.clear()
        let (rc, statuses) = Self.appendBatch(f, [1, 2, 3, 4, 5, 6], [11, 12, 13, 14, 15, 16])
        #expect(statuses == [KVC_OK, KVC_OK] + [kvc_status](repeating: KVC_ERR_OUT_OF_MEMORY, count: 4))
        expectStatus(rc, KVC_ERR_OUT_OF_MEMORY, mentioning: ["kvc_seq_append_batch", "entry 2", "seq 3", "4 of 6 entries failed"])
        let after = Self.snapshot(f, 1...6)
        #expect(Array(after[2...]) == Array(before[2...]), "failing entries changed")
        #expect(try f.length(1) == f.blockTokens + 1 && f.length(2) == f.blockTokens + 1)
        #expect(try f.blockTable(1).count == 2 && f.blockTable(2).count == 2)
        #expect(try f.stats().blocksTotal == f.stats().blocksUsed)
        // The preempted ones go on once memory is freed (a server's preemption, then retry).
        #expect(kvc_seq_free(f.handle, 100) == KVC_OK)
        let retry = Self.appendBatch(f, [3, 4, 5, 6], [13, 14, 15, 16])
        #expect(retry.0 == KVC_OK && retry.1 == [KVC_OK, KVC_OK, KVC_OK, KVC_OK])
    }

    @Test(arguments: bothLayouts)
    func appendBatchWithInvalidArgumentsChangesNothing(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        var statuses = [kvc_status](repeating: 99, count: 9)
        let seqs: [UInt64] = [1001, 1002]
        let tokens: [Int32] = [1, 2]
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_append_batch", "seqs is NULL", "n is 2"]) {
            kvc_seq_append_batch($0, nil, tokens, 2, &statuses)
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["tokens is NULL", "n is 2"]) {
            kvc_seq_append_batch($0, seqs, nil, 2, &statuses)
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["statuses is NULL", "n is 2"]) {
            kvc_seq_append_batch($0, seqs, tokens, 2, nil)
        }
        // More entries than max_seqs (8): a garbage count, refused before any array is read.
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n 9", "max_seqs 8"]) {
            kvc_seq_append_batch($0, seqs, tokens, 9, &statuses)
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["PTRDIFF_MAX"]) {
            kvc_seq_append_batch($0, seqs, tokens, -1, &statuses)
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["engine", "NULL"]) { _ in
            kvc_seq_append_batch(nil, seqs, tokens, 2, &statuses)
        }
        #expect(statuses == [kvc_status](repeating: 99, count: 9), "a refused call wrote statuses")
        // n 0: nothing to do, the arrays may be NULL.
        #expect(kvc_seq_append_batch(f.handle, nil, nil, 0, nil) == KVC_OK)
        try f.expectWitnessesIntact()
    }

    @Test func blockTablesEqualSingleTablesEntryByEntry() throws {
        let f = try Self.engine(KVC_LAYOUT_PAGED)
        try Self.populate(f)
        try f.append(5, tokens: f.uniqueTokens(500, count: 12))  // 20 tokens: 5 blocks
        // 3 rows of capacity 4: 5's table does not fit (BUFFER_TOO_SMALL, its first 4 written),
        // 99 is not live (row and count untouched); 1 repeats.
        let seqs: [UInt64] = [1, 5, 99, 4, 1]
        let rowCapacity = 4
        let sentinel: Int32 = 77
        var tables = [Int32](repeating: sentinel, count: seqs.count * rowCapacity)
        var counts = [Int](repeating: 1234, count: seqs.count)
        var statuses = [kvc_status](repeating: 99, count: seqs.count)
        LastError.clear()
        let rc = kvc_seq_block_tables(f.handle, seqs, seqs.count, &tables, rowCapacity, &counts, &statuses)
        expectStatus(rc, KVC_ERR_BUFFER_TOO_SMALL, mentioning: ["kvc_seq_block_tables", "entry 1", "seq 5", "2 of 5 entries failed"])
        for (i, seq) in seqs.enumerated() {
            var row = [Int32](repeating: sentinel, count: rowCapacity)
            var count = 1234
            let status = kvc_seq_block_table(f.handle, seq, &row, rowCapacity, &count)
            #expect(statuses[i] == status, "entry \(i)")
            #expect(counts[i] == count, "entry \(i)")
            #expect(Array(tables[i * rowCapacity ..< (i + 1) * rowCapacity]) == row, "entry \(i)")
        }
        #expect(statuses == [KVC_OK, KVC_ERR_BUFFER_TOO_SMALL, KVC_ERR_NOT_FOUND, KVC_OK, KVC_OK])
        #expect(counts == [1, 5, 1234, 2, 1])
        #expect(Array(tables[4..<8]) == Array(try f.blockTable(5)[0..<4]))
        #expect(tables[1...3] == [sentinel, sentinel, sentinel], "padding past a row's blocks is left untouched")
        // Every entry succeeding.
        var one = [Int32](repeating: sentinel, count: 8)
        var oneCount = [0, 0]
        var oneStatus = [kvc_status](repeating: 99, count: 2)
        #expect(kvc_seq_block_tables(f.handle, [4, 2], 2, &one, 4, &oneCount, &oneStatus) == KVC_OK)
        #expect(oneStatus == [KVC_OK, KVC_OK] && oneCount == [2, 1])
        let (table4, table2) = (try f.blockTable(4), try f.blockTable(2))
        #expect(Array(one[0..<2]) == table4 && Array(one[4..<5]) == table2)
    }

    @Test func blockTablesOnAContiguousEngineAreUnsupportedWhole() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_CONTIGUOUS)
        var tables = [Int32](repeating: 77, count: 8)
        var counts = [Int](repeating: 1234, count: 2)
        var statuses = [kvc_status](repeating: 99, count: 2)
        try f.expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["kvc_seq_block_tables", "paged"]) {
            kvc_seq_block_tables($0, [1001, 1002], 2, &tables, 4, &counts, &statuses)
        }
        #expect(tables == [Int32](repeating: 77, count: 8) && counts == [1234, 1234] && statuses == [99, 99])
    }

    @Test func blockTablesWithInvalidArgumentsWriteNothing() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var tables = [Int32](repeating: 77, count: 8)
        var counts = [Int](repeating: 1234, count: 2)
        var statuses = [kvc_status](repeating: 99, count: 2)
        let seqs: [UInt64] = [1001, 1002]
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_block_tables", "seqs is NULL"]) {
            kvc_seq_block_tables($0, nil, 2, &tables, 4, &counts, &statuses)
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["tables is NULL"]) {
            kvc_seq_block_tables($0, seqs, 2, nil, 4, &counts, &statuses)
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_blocks is NULL"]) {
            kvc_seq_block_tables($0, seqs, 2, &tables, 4, nil, &statuses)
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["statuses is NULL"]) {
            kvc_seq_block_tables($0, seqs, 2, &tables, 4, &counts, nil)
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n 9", "max_seqs 8"]) {
            kvc_seq_block_tables($0, seqs, 9, &tables, 4, &counts, &statuses)
        }
        // n x row_capacity int32s would overflow.
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["row_capacity", "PTRDIFF_MAX"]) {
            kvc_seq_block_tables($0, seqs, 2, &tables, Int.max / 4, &counts, &statuses)
        }
        #expect(tables == [Int32](repeating: 77, count: 8) && counts == [1234, 1234] && statuses == [99, 99])
        // n 0 (or row_capacity 0 with n 0): nothing to do, the arrays may be NULL.
        #expect(kvc_seq_block_tables(f.handle, nil, 0, nil, 0, nil, nil) == KVC_OK)
    }
}
