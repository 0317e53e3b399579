import Testing
@testable import KVCacheABI

/// kvcache.h, CONVENTIONS: on failure "output pointers are left untouched, except where a
/// function documents otherwise". Each call that writes an output is made to fail (unknown
/// sequence, layer out of range, a bad block, a bad argument) with sentinels in every output,
/// and the sentinels must still be there; the engine's state is checked by `expectFailure`.
@Suite struct FailureOutputABITests {
    static let sentinel = 0x5A5A_5A5A

    @Test(arguments: bothLayouts)
    func aFailingCallWritesNoOutput(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        let unknown: UInt64 = 77
        let tokens: [Int32] = [1, 2, 3, 4, 5]
        let s = Self.sentinel
        var cached = s, n = s, memory = s, disk = s, peer = s
        var ready: Int32 = 0x5A5A
        var k = UnsafeMutableRawPointer(bitPattern: 0x5A50), v = UnsafeMutableRawPointer(bitPattern: 0x5A50)
        var positions = [Int32](repeating: 0x5A5A, count: 8)
        var table = [Int32](repeating: 0x5A5A, count: 8)
        var episode: UInt32 = 0x5A5A
        var committed: UInt64 = 0x5A5A
        let query = [Float](repeating: 1, count: 4)

        // A sequence that exists (create: EXISTS) and ones that do not (NOT_FOUND).
        try f.expectFailure(KVC_ERR_EXISTS, mentioning: ["kvc_seq_create", "1001"]) {
            kvc_seq_create($0, 1001, tokens, tokens.count, &cached)
        }
        try f.expectFailure(KVC_ERR_EXISTS, mentioning: ["kvc_seq_create_salted", "1001"]) {
            kvc_seq_create_salted($0, 1001, tokens, tokens.count, 9, &cached)
        }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_length"]) { kvc_seq_length($0, unknown, &n) }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_prefix_sources"]) {
            kvc_seq_prefix_sources($0, unknown, &memory, &disk, &peer)
        }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_positions"]) {
            kvc_seq_positions($0, unknown, 0, &positions, positions.count, &n)
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_positions", "layer"]) {
            kvc_seq_positions($0, 1001, UInt32(f.layers), &positions, positions.count, &n)
        }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_layer_length"]) { kvc_seq_layer_length($0, unknown, 0, &n) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_layer_length", "layer"]) {
            kvc_seq_layer_length($0, 1001, UInt32(f.layers), &n)
        }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_focus"]) {
            kvc_seq_focus($0, unknown, query, UInt32(query.count), &episode)
        }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_ready"]) { kvc_seq_ready($0, unknown, &ready) }
        if layout == KVC_LAYOUT_PAGED {
            try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_block_table"]) {
                kvc_seq_block_table($0, unknown, &table, table.count, &n)
            }
            try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_block_kv"]) { kvc_block_kv($0, -1, 0, &k, &v) }
            try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_block_kv", "layer"]) {
                kvc_block_kv($0, 0, UInt32(f.layers), &k, &v)
            }
            try f.expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["kvc_seq_kv"]) { kvc_seq_kv($0, 1001, 0, &k, &v) }
        } else {
            try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_kv"]) { kvc_seq_kv($0, unknown, 0, &k, &v) }
            try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_kv", "layer"]) {
                kvc_seq_kv($0, 1001, UInt32(f.layers), &k, &v)
            }
            try f.expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["kvc_seq_block_table"]) {
                kvc_seq_block_table($0, 1001, &table, table.count, &n)
            }
            try f.expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["kvc_block_kv"]) { kvc_block_kv($0, 0, 0, &k, &v) }
        }
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_engine_reserve", "NULL"]) { kvc_engine_reserve(nil, 1, &committed) }
        var hashes = [UInt64](repeating: 0x5A5A, count: 4)
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_hash_tokens"]) {
            kvc_hash_tokens(tokens, tokens.count, 0, &hashes, hashes.count, &n)
        }

        #expect([cached, n, memory, disk, peer] == [s, s, s, s, s])
        #expect(ready == 0x5A5A && episode == 0x5A5A && committed == 0x5A5A)
        #expect(k == UnsafeMutableRawPointer(bitPattern: 0x5A50) && v == UnsafeMutableRawPointer(bitPattern: 0x5A50))
        #expect(positions.allSatisfy { $0 == 0x5A5A } && table.allSatisfy { $0 == 0x5A5A })
        #expect(hashes.allSatisfy { $0 == 0x5A5A })
    }
}
