import Foundation
import Testing
@testable import KVCacheABI
@testable import KVCache

/// `kvc_prefix_lookup` and `kvc_seq_create_chunked`: a server admits a long prompt whose
/// prefix is cached by looking the prefix up (allocating nothing) and committing memory for
/// the cached prefix and one chunk only, as vLLM's scheduler does (get_computed_blocks, then
/// allocate_slots). revserver's chunk.c: the whole-prompt create was refused, and a create of
/// the first chunk followed by appends re-allocated (and evicted) the cached blocks.
@Suite struct ChunkedAdmissionABITests {
    /// The small model (4-token blocks of 256 bytes over 4 tensors) with `blocks` blocks.
    private static func config(_ layout: UInt32, blocks: UInt64, indexOnSchedule: Bool = false) -> CConfig {
        var c = CConfig.small(layout, memoryBytes: blocks * 256)
        c.indexOnSchedule = indexOnSchedule ? 1 : 0
        return c
    }

    private static func lookup(_ f: ABIFixture, _ tokens: [Int32], salt: UInt64 = 0) -> (Int, Int, Int) {
        var memory = -1, disk = -1, peer = -1
        let rc = tokens.withUnsafeBufferPointer { kvc_prefix_lookup(f.handle, $0.baseAddress, $0.count, salt, &memory, &disk, &peer) }
        #expect(rc == KVC_OK, "\(String(cString: kvc_last_error()))")
        return (memory, disk, peer)
    }

    private static func createChunked(_ f: ABIFixture, _ seq: UInt64, _ tokens: [Int32], salt: UInt64 = 0,
                                      commit: Int) -> (status: kvc_status, cached: Int, held: Int) {
        var cached = -1, held = -1
        let rc = tokens.withUnsafeBufferPointer {
            kvc_seq_create_chunked(f.handle, seq, $0.baseAddress, $0.count, salt, commit, &cached, &held)
        }
        return (rc, cached, held)
    }

    /// revserver's scenario at this model's scale (paged: the contiguous layout's budget is in
    /// pages per sequence, not blocks): 128 blocks; prompt P (256 tokens, 64 blocks) computed,
    /// scheduled and freed, so cached; a filler holds 44 blocks; request Q = P + 150 tokens (102
    /// blocks, 64 of them cached). 20 blocks are free: the whole create needs 38 and is refused,
    /// the chunked one shares the 64 cached blocks and allocates the first chunk's 16.
    @Test func aPromptLongerThanTheFreeMemoryIsAdmittedWithItsCachedPrefixShared() throws {
        let f = try ABIFixture(Self.config(KVC_LAYOUT_PAGED, blocks: 128, indexOnSchedule: true))
        let q = f.uniqueTokens(1, count: 406)
        let p = Array(q[0..<256])
        try f.create(1, tokens: p)
        #expect(kvc_seq_schedule(f.handle, 1, 256) == KVC_OK)
        let pBlocks = try f.blockTable(1)
        #expect(kvc_seq_free(f.handle, 1) == KVC_OK)
        try f.create(2, tokens: f.uniqueTokens(2, count: 176))
        var s = try f.stats()
        #expect([s.blocksUsed, s.blocksCached, s.blocksTotal, s.blocksEvicted] == [44, 64, 128, 0])

        #expect(Self.lookup(f, q) == (256, 0, 0), "the lookup sees the whole cached prefix")
        #expect(try f.stats() == s, "the lookup changed a counter")

        try f.expectFailure(KVC_ERR_OUT_OF_MEMORY, mentioning: ["prompt needs 38 blocks, 20 are available"]) { h in
            var cached = -1
            return q.withUnsafeBufferPointer { kvc_seq_create(h, 3, $0.baseAddress, $0.count, &cached) }
        }
        try f.expectFailure(KVC_ERR_OUT_OF_MEMORY, mentioning: ["kvc_seq_create_chunked", "prompt needs 38 blocks, 20 are available"]) { _ in
            Self.createChunked(f, 3, q, commit: 150).status  // cached + 150 is the whole prompt
        }
        let admitted = Self.createChunked(f, 3, q, commit: 64)
        #expect(admitted.status == KVC_OK, "\(String(cString: kvc_last_error()))")
        #expect(admitted.cached == 256 && admitted.held == 320)
        #expect(try f.length(3) == 320)
        s = try f.stats()
        #expect([s.blocksUsed, s.blocksCached, s.blocksTotal, s.blocksEvicted] == [124, 0, 128, 0],
                "64 cached blocks shared, 16 allocated, none evicted")
        #expect([s.prefixQueryTokens, s.prefixHitTokens] == [256 + 176 + 406, 256], "the lookup covers the whole prompt")
        let table = try f.blockTable(3)
        #expect(Array(table[0..<64]) == pBlocks, "the cached blocks are shared, not re-allocated")
        var memory = -1, disk = -1, peer = -1
        #expect(kvc_seq_prefix_sources(f.handle, 3, &memory, &disk, &peer) == KVC_OK)
        #expect(memory == 256 && disk == 0 && peer == 0)

        // The next pass's chunk fits the 4 blocks left; the one after does not, until the
        // filler goes. Q ends holding exactly the blocks a whole create would have held.
        #expect(kvc_seq_schedule(f.handle, 3, 320) == KVC_OK)
        try f.append(3, tokens: Array(q[320..<336]))
        s = try f.stats()
        #expect([s.blocksUsed, s.blocksCached, s.blocksEvicted] == [128, 0, 0])
        #expect(kvc_seq_free(f.handle, 2) == KVC_OK)
        try f.append(3, tokens: Array(q[336..<406]))
        s = try f.stats()
        #expect([s.blocksUsed, s.blocksEvicted] == [102, 0])
        #expect(try f.length(3) == 406)
        #expect(kvc_seq_free(f.handle, 3) == KVC_OK)
        #expect(Self.lookup(f, q) == (404, 0, 0), "Q's chunks were indexed under the whole prompt's chain")
    }

    /// The lookup moves no block in the LRU: three cached prompts (8 blocks each, freed in
    /// order 1, 2, 3); a lookup of the oldest, then a create that evicts 4 blocks. The eviction
    /// takes prompt 1's last 4 blocks with the lookup as without it (a lookup that made them
    /// recently used would have saved them and evicted prompt 2's).
    @Test(arguments: [false, true])
    func theLookupChangesNoLRUOrder(lookingUp: Bool) throws {
        let f = try ABIFixture(Self.config(KVC_LAYOUT_PAGED, blocks: 64))
        let prompts = (1...3).map { f.uniqueTokens(UInt64($0), count: 33) }
        for (i, prompt) in prompts.enumerated() {
            try f.create(UInt64(i + 1), tokens: prompt)
            #expect(kvc_seq_free(f.handle, UInt64(i + 1)) == KVC_OK)
        }
        let before = try f.stats()
        #expect([before.blocksUsed, before.blocksCached] == [0, 24])
        if lookingUp {
            #expect(Self.lookup(f, prompts[0]) == (32, 0, 0))
            #expect(try f.stats() == before, "the lookup changed a counter")
        }
        try f.create(9, tokens: f.uniqueTokens(9, count: 176))
        #expect(try f.stats().blocksEvicted == 4)
        #expect(Self.lookup(f, prompts[0]) == (16, 0, 0), "prompt 1, the oldest, lost its last 4 blocks")
        #expect(Self.lookup(f, prompts[1]) == (32, 0, 0))
        #expect(Self.lookup(f, prompts[2]) == (32, 0, 0))
    }

    /// Salts: the lookup and the chunked create find only blocks cached under the same salt,
    /// and the chunked create indexes its held blocks under its salt's chain.
    @Test(arguments: bothLayouts)
    func theLookupAndTheChunkedCreateFindOnlyTheirSaltsBlocks(layout: UInt32) throws {
        let f = try ABIFixture(Self.config(layout, blocks: 4096))
        let prompt = f.uniqueTokens(1, count: 41)
        var cached = -1
        #expect(prompt.withUnsafeBufferPointer { kvc_seq_create_salted(f.handle, 1, $0.baseAddress, $0.count, 5, &cached) } == KVC_OK)
        #expect(Self.lookup(f, prompt, salt: 5) == (40, 0, 0))
        #expect(Self.lookup(f, prompt, salt: 0) == (0, 0, 0))
        #expect(Self.lookup(f, prompt, salt: 6) == (0, 0, 0))
        let unsalted = Self.createChunked(f, 2, prompt, commit: 8)
        #expect(unsalted.status == KVC_OK && unsalted.cached == 0 && unsalted.held == 8)
        let salted = Self.createChunked(f, 3, prompt, salt: 5, commit: 8)
        #expect(salted.status == KVC_OK && salted.cached == 40 && salted.held == 41, "commit past the prompt holds it all")
        let most = Self.createChunked(f, 4, prompt, salt: 5, commit: Int.max)  // PTRDIFF_MAX: no overflow
        #expect(most.status == KVC_OK && most.cached == 40 && most.held == 41)
        // Sequence 2 indexed its 2 held blocks under no salt.
        #expect(Self.lookup(f, prompt, salt: 0) == (8, 0, 0))
        #expect(Self.lookup(f, prompt, salt: 5) == (40, 0, 0))
    }

    /// Disk tier: a prefix spilled to disk is reported as disk tokens by the lookup, which
    /// reads nothing and changes no counter; the chunked create reads it back asynchronously
    /// (ready, bytes intact) and holds one chunk past it. (Declined disk blocks,
    /// `prefill_tokens_per_s`: the lookup and the create share the rule, `tieredPrefix`;
    /// ReadOrRecomputeTests.theLookupWithoutCreatingCountsNoDeclinedBlock checks it.)
    @Test(arguments: bothLayouts)
    func aPrefixOnDiskIsReportedAndReadBackByTheChunkedCreate(layout: UInt32) throws {
        let dir = scratchDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = Self.config(layout, blocks: 4096)
        c.offloadBytes = 16 << 20
        let f = try ABIFixture(c, offloadDir: dir)
        let prompt = f.uniqueTokens(1, count: 100)
        try f.spill(1, prompt: Array(prompt[0..<41]), salt: 7)
        let before = try f.stats()
        #expect(before.blocksCached == 0 && before.diskStoredBytes > 0)
        #expect(Self.lookup(f, prompt) == (0, 40, 0))
        #expect(try f.stats() == before, "the lookup read or counted something")

        let admitted = Self.createChunked(f, 2, prompt, commit: 12)
        #expect(admitted.status == KVC_OK && admitted.cached == 40 && admitted.held == 52)
        #expect(waitReady(f, 2) == KVC_OK)
        #expect(try f.firstMismatch(2, salt: 7, to: 40) == nil)
        var memory = -1, disk = -1, peer = -1
        #expect(kvc_seq_prefix_sources(f.handle, 2, &memory, &disk, &peer) == KVC_OK)
        #expect(memory == 0 && disk == 40 && peer == 0)
        let after = try f.stats()
        #expect(after.diskHitTokens == 40 && after.blocksUsed == 13)
        #expect(Self.lookup(f, prompt) == (52, 0, 0), "the read blocks and the held chunk's 3 are in memory now")

    }

    /// Bad input: a clear status and message, nothing created, no counter moved, no output
    /// written.
    @Test(arguments: bothLayouts)
    func badInputIsRefusedAndChangesNothing(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        let prompt = f.uniqueTokens(1, count: 41)
        try f.create(1, tokens: prompt)
        let long = [Int32](repeating: 3, count: 1025)
        var cached = 7, held = 7
        func chunked(_ h: OpaquePointer?, _ seq: UInt64, _ tokens: [Int32]?, _ n: Int, commit: Int,
                     cachedOut: Bool = true, heldOut: Bool = true) -> kvc_status {
            withUnsafeMutablePointer(to: &cached) { c in
                withUnsafeMutablePointer(to: &held) { held in
                    withOptionalTokens(tokens) { t in
                        kvc_seq_create_chunked(h, seq, t, n, 0, commit, cachedOut ? c : nil, heldOut ? held : nil)
                    }
                }
            }
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_create_chunked", "engine is NULL"]) { _ in
            chunked(nil, 2, prompt, 41, commit: 4)
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["tokens is NULL"]) { chunked($0, 2, nil, 41, commit: 4) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_tokens is 0"]) { chunked($0, 2, prompt, 0, commit: 4) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_tokens 1025 exceeds max_seq_tokens 1024"]) {
            chunked($0, 2, long, 1025, commit: 4)
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["commit_tokens is 0"]) { chunked($0, 2, prompt, 41, commit: 0) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["commit_tokens"]) { chunked($0, 2, prompt, 41, commit: -1) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["cached_tokens is NULL"]) {
            chunked($0, 2, prompt, 41, commit: 4, cachedOut: false)
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["held_tokens is NULL"]) {
            chunked($0, 2, prompt, 41, commit: 4, heldOut: false)
        }
        try f.expectFailure(KVC_ERR_EXISTS, mentioning: ["kvc_seq_create_chunked(seq 1", "sequence 1 already exists"]) {
            chunked($0, 1, prompt, 41, commit: 4)
        }
        #expect(cached == 7 && held == 7, "a refused create wrote an output")

        var memory = 7, disk = 7, peer = 7
        func lookup(_ h: OpaquePointer?, _ tokens: [Int32]?, _ n: Int, outputs: Int = 0b111) -> kvc_status {
            withUnsafeMutablePointer(to: &memory) { m in
                withUnsafeMutablePointer(to: &disk) { d in
                    withUnsafeMutablePointer(to: &peer) { p in
                        withOptionalTokens(tokens) { t in
                            kvc_prefix_lookup(h, t, n, 0, outputs & 1 != 0 ? m : nil, outputs & 2 != 0 ? d : nil,
                                              outputs & 4 != 0 ? p : nil)
                        }
                    }
                }
            }
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_prefix_lookup", "engine is NULL"]) { _ in lookup(nil, prompt, 41) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["tokens is NULL"]) { lookup($0, nil, 41) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_tokens is 0"]) { lookup($0, prompt, 0) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_tokens 1025 exceeds max_seq_tokens 1024"]) { lookup($0, long, 1025) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["memory_tokens is NULL"]) { lookup($0, prompt, 41, outputs: 0b110) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["disk_tokens is NULL"]) { lookup($0, prompt, 41, outputs: 0b101) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["peer_tokens is NULL"]) { lookup($0, prompt, 41, outputs: 0b011) }
        #expect(memory == 7 && disk == 7 && peer == 7, "a refused lookup wrote an output")
        #expect(try f.length(1) == 41)
        #expect(kvc_seq_length(f.handle, 2, &held) == KVC_ERR_NOT_FOUND, "no refused create made sequence 2")
    }
}

/// `body` with a pointer to `tokens`, or nil.
private func withOptionalTokens<T>(_ tokens: [Int32]?, _ body: (UnsafePointer<Int32>?) -> T) -> T {
    guard let tokens else { return body(nil) }
    return tokens.withUnsafeBufferPointer { body($0.baseAddress) }
}
