import TestSupport
import Testing
@testable import KVCache

/// revinterop findings 1 and 2: the engine must never serve a cached block's K/V to a prompt
/// whose tokens differ, however the public hash collides (memory, across salts, its own disk
/// tier after a restart, a peer's tier), and no chain may re-enter the unsalted root.
@Suite("Colliding block hashes")
struct BlockHashCollisionTests {
    private func config(_ layout: Layout) -> EngineConfig { smallConfig(layout, blockTokens: 16) }

    @Test func theConstantsCollideUnderThePublicHashWhichStaysAsDocumented() {
        #expect(BlockHash.chain(Collision.victim, blockTokens: 16) == BlockHash.chain(Collision.attacker, blockTokens: 16))
        #expect(BlockHash.chain(Collision.victim, blockTokens: 16, salt: 2)
            == BlockHash.chain(Collision.crossSaltAttacker, blockTokens: 16, salt: 1))
        #expect(BlockHash.chain(Collision.victim, blockTokens: 16) == [0x7398_2B9A_A08D_64D2], "r1's collide.out")
    }

    /// The attacker's block is cached with its K/V; the victim's prompt, of the same hash,
    /// gets none of it (cached 0, its own block) and the attacker's block stays as it was.
    @Test(arguments: [Layout.paged, .contiguous])
    func aCollidingBlockInMemoryIsAMiss(layout: Layout) throws {
        let e = try Engine(config(layout))
        let attacker = Collision.attacker + [5], victim = Collision.victim + [5]
        try e.createSequence(1, tokens: attacker)
        try fillKV(e, 1, count: 17) { attacker[$0] }
        try e.free(1)
        #expect(e.cachedPrefixTokens(victim) == 0)
        #expect(try e.createSequence(2, tokens: victim) == 0, "the victim computes its own block")
        try fillKV(e, 2, count: 17) { victim[$0] }
        try e.free(2)
        #expect(try e.createSequence(3, tokens: attacker) == 16, "the block indexed first stays")
        #expect(try kvDifferences(e, 3, count: 16) { attacker[$0] } == 0)
        #expect(try e.createSequence(4, tokens: victim) == 0)
    }

    @Test(arguments: [Layout.paged, .contiguous])
    func aCollisionAcrossSaltsIsAMiss(layout: Layout) throws {
        let e = try Engine(config(layout))
        let attacker = Collision.crossSaltAttacker + [5], victim = Collision.victim + [5]
        try e.createSequence(1, tokens: attacker, salt: 1)
        try fillKV(e, 1, count: 17) { attacker[$0] }
        try e.free(1)
        #expect(try e.createSequence(2, tokens: victim, salt: 2) == 0)
        #expect(try e.createSequence(3, tokens: attacker, salt: 1) == 16)
    }

    /// The attacker's block is spilled to the disk tier and the engine restarted: the tier's
    /// journal keeps the block's fingerprint and the directory its key, so the victim's
    /// prompt misses while the attacker's own prompt still hits, with its bytes.
    @Test(arguments: [Layout.paged, .contiguous])
    func aCollidingBlockOnDiskIsAMissAfterARestart(layout: Layout) throws {
        let dir = ScratchDir("collisionDisk")
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.blockTokens = 16
        let attacker = Collision.attacker + [5], victim = Collision.victim + [5]
        do { try spillPrompt(try Engine(c), 1, attacker) }
        let e = try Engine(c)
        #expect(e.cachedPrefixTokens(victim) == 0)
        #expect(try e.createSequence(2, tokens: victim) == 0)
        #expect(try e.createSequence(3, tokens: attacker) == 16, "a verified hit survives the restart")
        try waitReady(e, 3)
        #expect(try kvDifferences(e, 3, count: 16) { attacker[$0] } == 0)
    }

    @Test func aCollidingBlockInAPeersTierIsAMiss() throws {
        let dirA = ScratchDir("collisionPeerA"), dirB = ScratchDir("collisionPeerB")
        defer { dirA.remove(); dirB.remove() }
        var a = offloadConfig(.paged, dir: dirA.path), b = peerConfig(.paged, dir: dirB.path, peers: [dirA.path])
        a.blockTokens = 16
        b.blockTokens = 16
        let attacker = Collision.attacker + [5], victim = Collision.victim + [5]
        let owner = try Engine(a)
        try spillPrompt(owner, 1, attacker)
        let e = try Engine(b)
        #expect(e.cachedPrefixTokens(victim) == 0)
        #expect(try e.createSequence(2, tokens: victim) == 0)
        #expect(try e.createSequence(3, tokens: attacker) == 16, "the peer's block, checked under the peer's key")
        #expect(try e.prefixSources(of: 3).peerTokens == 16)
        try waitReady(e, 3)
        #expect(try kvDifferences(e, 3, count: 16) { attacker[$0] } == 0)
    }

    /// Finding 2: a block whose `fmix64` is 0 hashes to the seed instead, so the block after
    /// it is not the unsalted chain's first block of the same tokens.
    @Test func aChainedHashIsNeverZero() {
        let chain = BlockHash.chain(Collision.zeroUnderSalt1 + Collision.follower, blockTokens: 16, salt: 1)
        #expect(chain[0] == BlockHash.seed)
        #expect(chain[1] != BlockHash.chain(Collision.follower, blockTokens: 16)[0])
    }

    @Test(arguments: [Layout.paged, .contiguous])
    func aBlockAfterAZeroHashDoesNotAliasTheUnsaltedRoot(layout: Layout) throws {
        let e = try Engine(config(layout))
        let attacker = Collision.zeroUnderSalt1 + Collision.follower + [7], victim = Collision.follower + [7]
        try e.createSequence(1, tokens: attacker, salt: 1)
        try fillKV(e, 1, count: 33) { attacker[$0] }
        try e.free(1)
        #expect(try e.createSequence(2, tokens: victim) == 0)
    }
}
