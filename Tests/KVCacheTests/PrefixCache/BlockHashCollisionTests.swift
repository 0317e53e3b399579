import TestSupport
import Testing
@testable import KVCache

/// revinterop findings 1 and 2: the engine must never serve a cached block's K/V to a prompt
/// whose tokens differ, however the public hash collides (memory, across salts, its own disk
/// tier after a restart, a peer's tier), and no chain may re-enter the unsalted root.
@Suite("Colliding block hashes")
struct BlockHashCollisionTests {
    private func config(_ layout: Layout) -> EngineConfig { smallConfig(layout, blockTokens: 16) }
    /// `offloadConfig` in the tests' 16-token blocks.
    private func diskConfig(_ layout: Layout, _ dir: ScratchDir) -> EngineConfig {
        var c = offloadConfig(layout, dir: dir.path)
        c.blockTokens = 16
        return c
    }
    /// `peerConfig` reading `owner`'s tier, in the tests' 16-token blocks.
    private func peerReader(_ dir: ScratchDir, of owner: ScratchDir) -> EngineConfig {
        var c = peerConfig(.paged, dir: dir.path, peers: [owner.path])
        c.blockTokens = 16
        return c
    }

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
        #expect(try e.createSequence(4, tokens: victim) == 16, "and the victim's got its own entry")
        #expect(try kvDifferences(e, 4, count: 16) { victim[$0] } == 0)
    }

    /// Tenant B's 4-block prompt under salt 2, whose first block's public hash is tenant A's
    /// crafted block's under salt 1 (`Collision.crossSaltAttacker`).
    private static let tenantB = Array(Int32(1000)..<1064) + [5]
    private static let tenantA = Collision.crossSaltAttacker + [5]

    /// helper-203's oracle (r/xsalt.c): whether tenant A's crafted block hits on its second
    /// send must not depend on whether tenant B's block is cached.
    @Test(arguments: [Layout.paged, .contiguous])
    func aCollidingBlockDoesNotRevealWhetherAnotherIsCached(layout: Layout) throws {
        for present in [false, true] {
            let e = try Engine(config(layout))
            if present {
                try e.createSequence(10, tokens: Self.tenantB, salt: 2)
                try e.free(10)
            }
            #expect(try e.createSequence(1, tokens: Self.tenantA, salt: 1) == 0)
            try e.free(1)
            #expect(try e.createSequence(2, tokens: Self.tenantA, salt: 1) == 16, "tenant B's block cached: \(present)")
            try e.free(2)
        }
    }

    /// helper-203's denial: once tenant A's crafted block is indexed, tenant B's prompt (and
    /// every block after its first) must still be cached.
    @Test(arguments: [Layout.paged, .contiguous])
    func aCollidingBlockDoesNotKeepAnotherPromptOutOfTheCache(layout: Layout) throws {
        let e = try Engine(config(layout))
        try e.createSequence(1, tokens: Self.tenantA, salt: 1)
        try fillKV(e, 1, count: 17) { Self.tenantA[$0] }
        try e.free(1)
        #expect(try e.createSequence(10, tokens: Self.tenantB, salt: 2) == 0)
        try fillKV(e, 10, count: 65) { Self.tenantB[$0] }
        try e.free(10)
        #expect(try e.createSequence(11, tokens: Self.tenantB, salt: 2) == 64)
        #expect(try kvDifferences(e, 11, count: 64) { Self.tenantB[$0] } == 0)
        #expect(try e.createSequence(12, tokens: Self.tenantA, salt: 1) == 16)
        #expect(try kvDifferences(e, 12, count: 16) { Self.tenantA[$0] } == 0)
    }

    /// Both tenants' blocks spilled to the disk tier, then a restart: each prompt finds its
    /// own block (the tier indexes both, under the same public hash).
    @Test(arguments: [Layout.paged, .contiguous])
    func collidingBlocksBothSurviveARestartOnDisk(layout: Layout) throws {
        let dir = ScratchDir("collisionBothDisk")
        defer { dir.remove() }
        let c = diskConfig(layout, dir)
        do { try spillBothTenants(try Engine(c)) }
        let e = try Engine(c)
        var view = DiskTierView()
        view.apply(drainAll(e))
        let shared = BlockHash.chain(Self.tenantA, blockTokens: 16, salt: 1)[0]
        #expect(view.contradictions.isEmpty && view.hashes == e.offload!.tier!.findableHashes.hashes)
        #expect(view.storedPairs.filter { $0[0] == shared }.count == 1, "the shared hash is announced once")
        try expectBothTenantsHit(e)
    }

    /// As above, read through a peer's tier.
    @Test func collidingBlocksBothHitThroughAPeer() throws {
        let dirA = ScratchDir("collisionBothPeerA"), dirB = ScratchDir("collisionBothPeerB")
        defer { dirA.remove(); dirB.remove() }
        let a = diskConfig(.paged, dirA), b = peerReader(dirB, of: dirA)
        let owner = try Engine(a)
        try spillBothTenants(owner)
        let e = try Engine(b)
        try expectBothTenantsHit(e)
    }

    /// Both tenants' prompts on `e` hit their own blocks (B: 4 blocks, A: its 1 cached block),
    /// with their own bytes.
    private func expectBothTenantsHit(_ e: Engine) throws {
        #expect(try e.createSequence(11, tokens: Self.tenantB, salt: 2) == 64)
        #expect(try e.createSequence(12, tokens: Self.tenantA, salt: 1) == 16)
        try waitReady(e, 11)
        try waitReady(e, 12)
        #expect(try kvDifferences(e, 11, count: 64) { Self.tenantB[$0] } == 0)
        #expect(try kvDifferences(e, 12, count: 16) { Self.tenantA[$0] } == 0)
    }

    /// Caches tenant A's crafted block, then tenant B's prompt, and spills both to `e`'s tier.
    private func spillBothTenants(_ e: Engine) throws {
        try e.createSequence(1, tokens: Self.tenantA, salt: 1)
        try fillKV(e, 1, count: 17) { Self.tenantA[$0] }
        try e.free(1)
        try e.createSequence(10, tokens: Self.tenantB, salt: 2)
        try fillKV(e, 10, count: 65) { Self.tenantB[$0] }
        try e.free(10)
        try e.trim()
        try e.syncOffload()
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
        let c = diskConfig(layout, dir)
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
        let a = diskConfig(.paged, dirA), b = peerReader(dirB, of: dirA)
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

    /// A swap-out's room check counts its blocks as `DiskTier.reserveSwap` places them, by
    /// hash and fingerprint: a block whose hash the tier holds only under another fingerprint
    /// (the attacker's crafted block, pinned by its swapped-out sequence) needs a slot of its
    /// own. Counted by hash alone it needed none, so the check passed a swap-out the tier could
    /// not hold, which dropped another prompt's cached disk blocks and failed anyway.
    @Test(arguments: [Layout.paged, .contiguous])
    func aCollidingPinnedBlockDoesNotPassASwapOutTheTierCannotHold(layout: Layout) throws {
        let dir = ScratchDir("collisionSwapOutRoom")
        defer { dir.remove() }
        var c = diskConfig(layout, dir)
        c.offloadBytes = 6 * tierSlotBytes(c)
        let e = try Engine(c)
        let other = Array(Int32(9000)..<9032) + [5]  // 2 full blocks, spilled: 2 cached slots
        try e.createSequence(5, tokens: other, salt: 3)
        try fillKV(e, 5, count: other.count) { other[$0] }
        try e.free(5)
        try e.trim()
        try e.syncOffload()
        let attacker = Collision.crossSaltAttacker + [5]  // swapped out: 2 slots pinned
        try e.createSequence(1, tokens: attacker, salt: 1)
        try fillKV(e, 1, count: attacker.count) { attacker[$0] }
        try e.swapOut(1)
        let cached = other.withUnsafeBufferPointer { e.cachedPrefixTokens($0, salt: 3) }
        #expect(cached == 32)
        // 5 slots, the first block's hash the attacker's: 4 can be had (2 free, 2 cached).
        let victim = Array(Int32(1000)..<1064) + [5]
        try e.createSequence(10, tokens: victim, salt: 2)
        try fillKV(e, 10, count: victim.count) { victim[$0] }
        let failure = thrown { () throws(KVError) in try e.swapOut(10) }
        #expect(failure?.code == .io && failure?.message.contains("needs 5 slots and 4 can be had") == true,
                "\(String(describing: failure))")
        #expect(e.stats().disk.slotsEvicted == 0)
        #expect(other.withUnsafeBufferPointer { e.cachedPrefixTokens($0, salt: 3) } == cached)
        #expect(try kvDifferences(e, 10, count: victim.count) { victim[$0] } == 0)
    }

    /// An evicted block's spill first writes its cached ancestors the tier lacks
    /// (`OffloadCoordinator.missingAncestors`), climbing by parent hash and fingerprint. Tenant
    /// A's crafted block shares the public hash of tenant B's first block: walked by hash alone,
    /// the climb stopped there when A's block was on disk (B's own first block was not written
    /// ahead of its chain), or climbed A's block when memory indexed it first (A's was written
    /// instead of B's).
    @Test(arguments: [Layout.paged, .contiguous], [false, true])
    func aSpillWritesTheBlocksOwnAncestorsNotACollidingOne(layout: Layout, attackerOnDisk: Bool) throws {
        let dir = ScratchDir("collisionAncestors")
        defer { dir.remove() }
        let c = diskConfig(layout, dir)
        let e = try Engine(c)
        try e.createSequence(1, tokens: Self.tenantA, salt: 1)
        try fillKV(e, 1, count: 17) { Self.tenantA[$0] }
        try e.free(1)
        if attackerOnDisk {
            try e.trim()
            try e.syncOffload()
        }
        try e.createSequence(10, tokens: Self.tenantB, salt: 2)
        try fillKV(e, 10, count: 65) { Self.tenantB[$0] }
        let table = Array(UnsafeBufferPointer(start: e.sequences.table(e.sequences.slot(of: 10)), count: 4))
        try e.free(10)
        let tier = e.offload!.tier!, spilled = e.stats().disk.blocksSpilled
        e.blocks.evict(table[3], ancestorsFirst: true)
        try e.syncOffload()
        #expect(e.stats().disk.blocksSpilled - spilled == 4, "the block and its 3 ancestors")
        #expect(tier.contains(e.blocks.hash(of: table[0]), fingerprint: e.blocks.fingerprint(of: table[0])),
                "tenant B's first block went ahead of its chain")
    }

    /// A swap-out shares a slot the tier holds only when the fingerprints are equal (0 with 0
    /// only): a sequence known by hashes alone (fingerprint 0) whose block's hash the tier
    /// holds under another fingerprint (a prompt given by tokens, spilled) writes its own
    /// copy. Sharing by hash alone, its swap-in read the other prompt's bytes.
    @Test(arguments: [Layout.paged, .contiguous])
    func aHashOnlySwapOutDoesNotShareASlotOfAnotherFingerprint(layout: Layout) throws {
        let dir = ScratchDir("collisionHashOnlySwap")
        defer { dir.remove() }
        let c = diskConfig(layout, dir)
        let e = try Engine(c)
        let victim = Collision.victim + [5], attacker = Collision.attacker + [5]
        let hashes = BlockHash.chain(victim, blockTokens: 16)
        #expect(try hashes.withUnsafeBufferPointer { h throws(KVError) in try e.createSequence(10, blockHashes: h, tokens: 17) } == 0)
        try fillKV(e, 10, count: 17) { victim[$0] }
        #expect(try e.createSequence(1, tokens: attacker) == 0, "a lookup with a fingerprint never takes fingerprint 0's block")
        try fillKV(e, 1, count: 17) { attacker[$0] }
        try e.free(1)
        try e.trim()  // the attacker's block on disk, under the victim's hash
        try e.syncOffload()
        #expect(e.offload!.tier!.contains(hashes[0], fingerprint: 0), "fingerprint 0: any block of the hash")
        try e.swapOut(10)
        try e.swapIn(10)
        try waitReady(e, 10)
        #expect(try kvDifferences(e, 10, count: 17) { victim[$0] } == 0, "the swap-in read the sequence's own bytes")
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
