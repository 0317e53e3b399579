import TestSupport
import Testing
@testable import KVCacheABI

/// revinterop finding 1 through the C ABI (r1/coll_engine.c): blocks whose public hash
/// collides (`Collision`, 16-token blocks) never share K/V, within a salt or across salts.
@Suite struct HashCollisionABITests {
    private func fixture(_ layout: UInt32) throws -> ABIFixture {
        var c = CConfig.small(layout)
        c.blockTokens = 16
        return try ABIFixture(c)
    }

    private func create(_ f: ABIFixture, _ seq: UInt64, _ tokens: [Int32], salt: UInt64) throws -> Int {
        var cached = -1
        let rc = kvc_seq_create_salted(f.handle, seq, tokens, tokens.count, salt, &cached)
        try #require(rc == KVC_OK, "kvc_seq_create_salted(\(seq)): \(String(cString: kvc_last_error()))")
        return cached
    }

    private func hash(_ tokens: [Int32], salt: UInt64) -> UInt64 {
        var h: UInt64 = 0
        var n = 0
        #expect(kvc_hash_tokens_salted(tokens, tokens.count, 16, salt, &h, 1, &n) == KVC_OK)
        return h
    }

    @Test(arguments: bothLayouts)
    func aPromptWhoseBlockHashCollidesGetsItsOwnBlock(layout: UInt32) throws {
        for (attackerBlock, attackerSalt, victimSalt) in [(Collision.attacker, UInt64(0), UInt64(0)), (Collision.crossSaltAttacker, 1, 2)] {
            let f = try fixture(layout)
            let attacker = attackerBlock + [5], victim = Collision.victim + [5]
            #expect(hash(attacker, salt: attackerSalt) == hash(victim, salt: victimSalt), "kvc_hash_tokens collides")
            #expect(try create(f, 1, attacker, salt: attackerSalt) == 0)
            try f.write(1, salt: 0xAA, from: 0, to: 17)
            #expect(kvc_seq_free(f.handle, 1) == KVC_OK)
            #expect(try create(f, 2, victim, salt: victimSalt) == 0, "salts \(attackerSalt) / \(victimSalt)")
            try f.write(2, salt: 7, from: 0, to: 17)
            #expect(try f.firstMismatch(2, salt: 7, to: 17) == nil, "the victim's own bytes")
            #expect(kvc_seq_free(f.handle, 2) == KVC_OK)
            #expect(try create(f, 3, attacker, salt: attackerSalt) == 16, "the block indexed first stays")
            #expect(try f.firstMismatch(3, salt: 0xAA, to: 16) == nil, "with its bytes")
            #expect(kvc_seq_free(f.handle, 3) == KVC_OK)
            #expect(try create(f, 4, victim, salt: victimSalt) == 16, "the victim's block has its own entry")
            #expect(try f.firstMismatch(4, salt: 7, to: 16) == nil, "with the victim's bytes")
        }
    }

    /// helper-203's r/xsalt.c: tenant A (salt 1) sends a block whose public hash is tenant B's
    /// (salt 2) first block's. Whether A's second send hits must not say whether B's block is
    /// cached (the oracle), and A's block must not keep B's 4-block prompt out (the denial).
    @Test(arguments: bothLayouts)
    func aCrossSaltCollisionIsNeitherAnOracleNorADenial(layout: UInt32) throws {
        let tenantA = Collision.crossSaltAttacker + [5], tenantB = Array(Int32(1000)..<1064) + [5]
        for present in [false, true] {
            let f = try fixture(layout)
            if present {
                _ = try create(f, 10, tenantB, salt: 2)
                #expect(kvc_seq_free(f.handle, 10) == KVC_OK)
            }
            #expect(try create(f, 1, tenantA, salt: 1) == 0)
            #expect(kvc_seq_free(f.handle, 1) == KVC_OK)
            #expect(try create(f, 2, tenantA, salt: 1) == 16, "oracle: tenant B's block cached: \(present)")
            #expect(kvc_seq_free(f.handle, 2) == KVC_OK)
        }
        let f = try fixture(layout)
        #expect(try create(f, 1, tenantA, salt: 1) == 0)
        #expect(kvc_seq_free(f.handle, 1) == KVC_OK)
        var cached: [Int] = []
        for seq in UInt64(10)..<13 {
            cached.append(try create(f, seq, tenantB, salt: 2))
            #expect(kvc_seq_free(f.handle, seq) == KVC_OK)
        }
        #expect(cached == [0, 64, 64], "denial")
    }

    /// Finding 2 (r1/alias0.c): the block after a salted block whose fmix64 is 0 is not the
    /// unsalted chain's first block.
    @Test(arguments: bothLayouts)
    func aBlockAfterAZeroHashIsNotAnUnsaltedPromptsFirst(layout: UInt32) throws {
        let f = try fixture(layout)
        let attacker = Collision.zeroUnderSalt1 + Collision.follower + [7], victim = Collision.follower + [7]
        #expect(try create(f, 1, attacker, salt: 1) == 0)
        try f.write(1, salt: 0xAA, from: 0, to: 33)
        #expect(kvc_seq_free(f.handle, 1) == KVC_OK)
        #expect(try f.create(2, tokens: victim) == 0)
    }
}
