import Testing
@testable import KVCacheABI

/// The block hash of include/kvcache.h, written out independently from its documentation.
private func referenceChain(_ tokens: [Int32], blockTokens: Int, salt: UInt64 = 0) -> [UInt64] {
    func fmix(_ v: UInt64) -> UInt64 {
        var h = v
        h ^= h >> 33; h = h &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 33; h = h &* 0xC4CE_B9FE_1A85_EC53
        h ^= h >> 33
        return h
    }
    var parent = fmix(salt &* 0x9E37_79B1_85EB_CA87)  // root(salt)
    var out: [UInt64] = []
    for b in 0..<(tokens.count / blockTokens) {
        var h = parent ^ 0x6b76_6361_6368_6531 ^ (UInt64(blockTokens) &* 0x9E37_79B1_85EB_CA87)
        for t in tokens[(b * blockTokens)..<((b + 1) * blockTokens)] {
            let x = h ^ (UInt64(UInt32(bitPattern: t)) &* 0xC2B2_AE3D_27D4_EB4F)
            h = ((x << 31) | (x >> 33)) &* 0x9E37_79B1_85EB_CA87
        }
        parent = fmix(h)
        if parent == 0 { parent = 0x6b76_6361_6368_6531 }  // never 0: SEED instead
        out.append(parent)
    }
    return out
}

@Suite struct HashABITests {
    @Test func hashesFollowTheDocumentedAlgorithm() {
        let tokens: [Int32] = (0..<37).map { Int32($0 * 7919 - 100_000) }
        var out = [UInt64](repeating: 0, count: 16)
        var n = 0
        #expect(kvc_hash_tokens(tokens, tokens.count, 8, &out, out.count, &n) == KVC_OK)
        #expect(n == 4)
        #expect(Array(out[0..<n]) == referenceChain(tokens, blockTokens: 8))
    }

    @Test func aKnownInputHasAFixedHash() {
        // Pinned value: any change to the algorithm breaks cross-process and cross-version reuse.
        var h: UInt64 = 0
        var n = 0
        #expect(kvc_hash_tokens([1, 2, 3, 4], 4, 4, &h, 1, &n) == KVC_OK)
        #expect(h == referenceChain([1, 2, 3, 4], blockTokens: 4)[0])
        #expect(h == 0x6da9_a02a_efab_d451)  // computed by an independent Python transcription of the header
    }

    @Test func saltedHashesFollowTheDocumentedRootAndSaltZeroIsUnsalted() {
        let tokens: [Int32] = (0..<37).map { Int32($0 * 7919 - 100_000) }
        var salted = [UInt64](repeating: 0, count: 16), plain = salted
        var n = 0
        #expect(kvc_hash_tokens_salted(tokens, tokens.count, 8, 0xDEAD_BEEF, &salted, salted.count, &n) == KVC_OK)
        #expect(n == 4)
        #expect(Array(salted[0..<n]) == referenceChain(tokens, blockTokens: 8, salt: 0xDEAD_BEEF))
        #expect(kvc_hash_tokens(tokens, tokens.count, 8, &plain, plain.count, &n) == KVC_OK)
        #expect(zip(salted[0..<4], plain[0..<4]).allSatisfy { $0 != $1 }, "every block differs")
        #expect(kvc_hash_tokens_salted(tokens, tokens.count, 8, 0, &salted, salted.count, &n) == KVC_OK)
        #expect(salted == plain, "salt 0: the unsalted chain")
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_hash_tokens_salted", "salt 9", "block_tokens"]) {
            kvc_hash_tokens_salted(tokens, tokens.count, 0, 9, &salted, salted.count, &n)
        }
    }

    @Test func aPartialBlockIsNotHashed() {
        var out = [UInt64](repeating: 7, count: 4)
        var n = -1
        #expect(kvc_hash_tokens([1, 2, 3], 3, 4, &out, out.count, &n) == KVC_OK)
        #expect(n == 0)
        #expect(out == [7, 7, 7, 7])
    }

    @Test func zeroTokensWithNullPointersHashesNothing() {
        var n = -1
        #expect(kvc_hash_tokens(nil, 0, 4, nil, 0, &n) == KVC_OK)
        #expect(n == 0)
    }

    @Test func tooSmallAnOutputReportsTheFullCountAndWritesThePrefix() {
        let tokens: [Int32] = Array(1...20)
        var out: [UInt64] = [9, 9, 9]
        var n = 0
        expectFailure(KVC_ERR_BUFFER_TOO_SMALL, mentioning: ["kvc_hash_tokens", "capacity 2", "5"]) {
            kvc_hash_tokens(tokens, tokens.count, 4, &out, 2, &n)
        }
        #expect(n == 5)
        #expect(Array(out[0..<2]) == Array(referenceChain(tokens, blockTokens: 4)[0..<2]))
        #expect(out[2] == 9)
    }

    @Test func blockTokensZeroIsInvalid() {
        var out = [UInt64](repeating: 0, count: 4)
        var n = 0
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["block_tokens", "0"]) {
            kvc_hash_tokens([1, 2, 3, 4], 4, 0, &out, out.count, &n)
        }
    }

    @Test func nullTokensWithACountIsInvalid() {
        var out = [UInt64](repeating: 0, count: 4)
        var n = 0
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["tokens", "NULL"]) { kvc_hash_tokens(nil, 8, 4, &out, out.count, &n) }
    }

    @Test func nullHashesWithACapacityIsInvalid() {
        var n = 0
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["hashes", "NULL"]) { kvc_hash_tokens([1, 2, 3, 4], 4, 4, nil, 1, &n) }
    }

    @Test func nullCountIsInvalid() {
        var out = [UInt64](repeating: 0, count: 4)
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_hashes", "NULL"]) {
            kvc_hash_tokens([1, 2, 3, 4], 4, 4, &out, out.count, nil)
        }
    }

    @Test func aTokenCountAbovePtrdiffMaxIsInvalid() {
        var out = [UInt64](repeating: 0, count: 4)
        var n = 0
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_tokens", "PTRDIFF_MAX"]) {
            kvc_hash_tokens([1, 2, 3, 4], -4, 4, &out, out.count, &n)
        }
    }
}
