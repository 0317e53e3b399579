import CKVMemory
import Foundation
import TestSupport
import Testing
@testable import KVCache

/// `offloadConfig` in `dir` reading the tiers of `peers` too.
func peerConfig(_ layout: Layout, dir: String, peers: [String], offloadBytes: UInt64 = 64 << 20) -> EngineConfig {
    var c = offloadConfig(layout, dir: dir, offloadBytes: offloadBytes)
    c.peerOffloadDirs = peers
    return c
}

/// Creates `seq` of `prompt` in `e`, writes its K/V with the test pattern, frees it, spills
/// every cached block (`trim`) and makes the tier durable (the journal lists them).
func spillPrompt(_ e: Engine, _ seq: UInt64, _ prompt: [Int32]) throws {
    try e.createSequence(seq, tokens: prompt)
    try fillKV(e, seq, count: prompt.count) { prompt[$0] }
    try e.free(seq)
    try e.trim()
    try e.syncOffload()
}

/// The files in `dir`, sorted, with their sizes.
func listing(_ dir: String) -> [String] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
    return names.sorted().map { name in
        let size = (try? FileManager.default.attributesOfItem(atPath: dir + "/" + name)[.size] as? Int) ?? -1
        return "\(name) \(size)"
    }
}

@Suite("Peer disk tiers: another engine's spilled blocks, read-only", .serialized)
struct PeerTierTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    @Test(arguments: layouts)
    func aPromptOneEngineSpilledIsServedByteIdenticalByItsPeer(layout: Layout) throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        let a = try Engine(offloadConfig(layout, dir: dirA.path))
        let prompt = tokens(203, seed: 7)
        try spillPrompt(a, 1, prompt)
        #expect(a.stats().disk.blocksSpilled == 50)
        let before = listing(dirA.path)

        let b = try Engine(peerConfig(layout, dir: dirB.path, peers: [dirA.path]))
        let other = tokens(37, seed: 99)  // B's own sequence, written before the peer reads
        try b.createSequence(5, tokens: other)
        try fillKV(b, 5, count: 37) { other[$0] }
        _ = drain(b)
        #expect(b.cachedPrefixTokens(prompt) == 200, "the lookup continues into the peer")
        let cached = try b.createSequence(2, tokens: prompt)
        #expect(cached == 200, "the peer's blocks count in cached_tokens")
        try waitReady(b, 2)
        #expect(try kvDifferences(b, 2, count: 200) { prompt[$0] } == 0, "B's K/V equals what A wrote")
        #expect(try kvDifferences(b, 5, count: 37) { other[$0] } == 0, "B's other sequence is unaffected")
        let s = b.stats()
        #expect(s.disk.peerHits == 50)
        #expect(s.disk.peerStale == 0)
        #expect(s.disk.peerHitTokens == 200)
        #expect(s.prefixHitTokens == 200)
        #expect(s.disk.prefixHitTokens == 0, "nothing came from B's own tier")
        #expect(s.disk.blocksLoaded == 0)
        let stored = drain(b).filter { $0.kind == .blockStored }
        #expect(stored.count == 50 && stored.allSatisfy { $0.tier == 0 }, "a peer hit is stored in memory, as a disk hit is")
        #expect(listing(dirA.path) == before, "nothing was written in the peer's directory")

        // The peer's blocks are B's own now: trimmed, they go to B's tier and come back from it.
        try b.free(2)
        try b.trim()
        #expect(b.stats().disk.blocksSpilled == 50)
        #expect(try b.createSequence(3, tokens: prompt) == 200)
        try waitReady(b, 3)
        #expect(try kvDifferences(b, 3, count: 200) { prompt[$0] } == 0)
        #expect(b.stats().disk.prefixHitTokens == 200, "served by B's own tier this time")
        #expect(b.stats().disk.peerHits == 50)
    }

    @Test func blocksThePeerSpillsAfterTheEngineOpenedAreFoundByTailingItsJournal() throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        var a: Engine? = try Engine(offloadConfig(.paged, dir: dirA.path))
        let b = try Engine(peerConfig(.paged, dir: dirB.path, peers: [dirA.path]))
        let first = tokens(41, seed: 1)
        #expect(b.cachedPrefixTokens(first) == 0)
        try spillPrompt(a!, 1, first)  // after B indexed A's (empty) journal
        #expect(try b.createSequence(1, tokens: first) == 40)
        try waitReady(b, 1)
        #expect(try kvDifferences(b, 1, count: 40) { first[$0] } == 0)
        try b.free(1)

        // A restarts: its journal is compacted (written anew and renamed over the old one).
        a = nil
        a = try Engine(offloadConfig(.paged, dir: dirA.path))
        #expect(a!.stats().disk.recoveredSlots == 10)
        let second = tokens(29, seed: 2)
        try spillPrompt(a!, 2, second)  // recorded only in the new journal
        #expect(try b.createSequence(2, tokens: second) == 28, "the rewritten journal was replayed")
        try waitReady(b, 2)
        #expect(try kvDifferences(b, 2, count: 28) { second[$0] } == 0)
        // What A still holds from before its restart is still found (B's copy of it was
        // only cached in memory; drop it so the lookup goes to the peer again).
        try b.free(2)
        _ = drain(b)
        try b.trim()
        let own = b.stats().disk.blocksSpilled
        let cached = try b.createSequence(3, tokens: first)
        #expect(cached == 40)
        try waitReady(b, 3)
        #expect(try kvDifferences(b, 3, count: 40) { first[$0] } == 0)
        #expect(own > 0 && b.stats().disk.peerStale == 0)
    }

    @Test func aSlotThePeerRewroteAfterItWasIndexedIsRefusedNeverServed() throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        // A's tier holds 2 slots of 8 KiB: two more spills reuse the slot of the first.
        let a = try Engine(offloadConfig(.paged, dir: dirA.path, offloadBytes: 16 << 10))
        let p = tokens(5, seed: 1), q1 = tokens(5, seed: 2), q2 = tokens(5, seed: 3), q3 = tokens(5, seed: 4)
        try spillPrompt(a, 1, p)
        var cb = peerConfig(.paged, dir: dirB.path, peers: [dirA.path])
        cb.offloadForceThreads = true  // so that the read can be held (`pauseOffloadIO`)
        let b = try Engine(cb)
        #expect(b.pauseOffloadIO(true))
        #expect(try b.createSequence(1, tokens: p) == 4, "indexed from the peer's journal")
        // Meanwhile A drops p's block and writes others into its slot: q1 takes the free slot,
        // q2 drops both and takes q1's, q3 takes p's.
        try spillPrompt(a, 2, q1)
        try spillPrompt(a, 3, q2)
        try spillPrompt(a, 4, q3)
        #expect(a.stats().disk.slotsEvicted == 2)
        #expect(b.pauseOffloadIO(false))
        #expect(throws: KVError.self, "the stale slot is not served") { try waitReady(b, 1) }
        #expect(b.stats().disk.peerStale == 1)
        #expect(b.stats().disk.peerHits == 0)
        try b.free(1)
        // The journal now says the slot was freed: the prompt is a miss, not a stale read.
        #expect(try b.createSequence(4, tokens: p) == 0)
        #expect(b.stats().disk.peerStale == 1)
        try b.free(4)
        // What A holds now is served.
        #expect(try b.createSequence(5, tokens: q3) == 4)
        try waitReady(b, 5)
        #expect(try kvDifferences(b, 5, count: 4) { q3[$0] } == 0)
    }

    @Test func aStaleBlockEndsTheChainThereForTheNextCreate() throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        let a = try Engine(offloadConfig(.paged, dir: dirA.path))
        let prompt = tokens(13, seed: 4)  // 3 blocks
        try spillPrompt(a, 1, prompt)
        let b = try Engine(peerConfig(.paged, dir: dirB.path, peers: [dirA.path]))
        // The peer's second block changes on disk behind its journal (a torn rewrite).
        let tier = b.offload!.tier!
        var refreshed = false
        let second = tier.findInPeers(BlockHash.chain(prompt, blockTokens: 4)[1], refreshed: &refreshed) { _, _ in 0 }!
        corruptSlots(dir: dirA.path, slotBytes: Int(b.stats().disk.slotBytes), Int(second.slot)..<Int(second.slot) + 1)
        #expect(try b.createSequence(1, tokens: prompt) == 12)
        #expect(throws: KVError.self) { try waitReady(b, 1) }
        #expect(b.stats().disk.peerStale == 1)
        try b.free(1)
        #expect(try b.createSequence(2, tokens: prompt) == 4, "memory holds the first block; the second is refused")
        try waitReady(b, 2)
        #expect(try kvDifferences(b, 2, count: 4) { prompt[$0] } == 0)
    }

    /// `peerHitTokens` counts the tokens of peer blocks that verified, when their reads
    /// complete: a corrupt peer slab's blocks count in `peerStale` only (they still count in
    /// the engine's `prefixHitTokens`, which is what the create returned). Before, the tokens
    /// were counted at the create, refused or not.
    @Test func aPeerBlockThatFailsVerificationIsNotCountedAsAPeerHitToken() throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        let a = try Engine(offloadConfig(.paged, dir: dirA.path))
        let corrupt = tokens(13, seed: 8), intact = tokens(9, seed: 9)  // 3 and 2 blocks
        try spillPrompt(a, 1, corrupt)  // A's slots 0, 1, 2
        let b = try Engine(peerConfig(.paged, dir: dirB.path, peers: [dirA.path]))
        corruptSlots(dir: dirA.path, slotBytes: Int(b.stats().disk.slotBytes), 0..<3)
        #expect(try b.createSequence(1, tokens: corrupt) == 12, "found in the peer's journal")
        #expect(throws: KVError.self, "no corrupt block is served") { try waitReady(b, 1) }
        var s = b.stats()
        #expect(s.disk.peerStale == 3 && s.disk.peerHits == 0)
        #expect(s.disk.peerHitTokens == 0, "nothing verified, nothing counted")
        #expect(s.prefixHitTokens == 12, "the create's answer, counted at the create")
        try b.free(1)

        try spillPrompt(a, 2, intact)
        #expect(try b.createSequence(2, tokens: intact) == 8)
        try waitReady(b, 2)
        #expect(try kvDifferences(b, 2, count: 8) { intact[$0] } == 0)
        s = b.stats()
        #expect(s.disk.peerHits == 2 && s.disk.peerStale == 3)
        #expect(s.disk.peerHitTokens == 8, "the verified blocks' tokens")
    }

    /// A peer's slab grows as its engine spills (an extent of 64 slots at a time): blocks in
    /// slots beyond its size when this engine opened it, and beyond this engine's own (2-slot)
    /// tier, are found; the index grows with the slots the peer's journal names. Before, it
    /// covered max(own tier, peer slab at open) slots and ignored records of the others.
    @Test func blocksInSlotsBeyondThePeersSlabAtOpenAreFound() throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        let a = try Engine(offloadConfig(.paged, dir: dirA.path))
        let b = try Engine(peerConfig(.paged, dir: dirB.path, peers: [dirA.path], offloadBytes: 16 << 10))
        #expect(b.stats().disk.capacitySlots == 2)
        let peer = b.offload!.tier.peers[0]
        let indexed = peer.capacity
        let prompt = tokens(401, seed: 12)  // 100 full blocks, spilled into A's slots 0...99
        try spillPrompt(a, 1, prompt)
        #expect(a.stats().disk.blocksSpilled == 100 && indexed < 100)
        #expect(b.cachedPrefixTokens(prompt) == 400)
        #expect(try b.createSequence(1, tokens: prompt) == 400)
        try waitReady(b, 1)
        #expect(try kvDifferences(b, 1, count: 400) { prompt[$0] } == 0)
        #expect(b.stats().disk.peerHits == 100 && b.stats().disk.peerStale == 0)
        #expect(peer.capacity >= 100 && peer.indexedHashes == 100)
    }

    @Test func aPromptFoundPartlyInTheOwnTierAndPartlyInAPeerIsReadFromBoth() throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        let a = try Engine(offloadConfig(.paged, dir: dirA.path))
        let prompt = tokens(9, seed: 6)  // 2 blocks
        try spillPrompt(a, 1, tokens(5, seed: 5))  // A's slot 0
        try spillPrompt(a, 2, prompt)  // last block first: block 1 in slot 1, block 0 in slot 2
        let b = try Engine(peerConfig(.paged, dir: dirB.path, peers: [dirA.path]))
        try spillPrompt(b, 1, Array(prompt[0..<5]))  // B's own slot 0: block 0
        // Own slot 0 and the peer's slot 1 are adjacent offsets in adjacent staging buffers,
        // but in two files: they must not merge into one request.
        let before = b.stats().disk  // block 0 came from the peer there too
        #expect(try b.createSequence(2, tokens: prompt) == 8)
        try waitReady(b, 2)
        #expect(try kvDifferences(b, 2, count: 8) { prompt[$0] } == 0)
        let s = b.stats().disk
        #expect(s.prefixHitTokens - before.prefixHitTokens == 4, "block 0 from the own tier")
        #expect(s.peerHitTokens - before.peerHitTokens == 4, "block 1 from the peer")
        #expect(s.blocksLoaded - before.blocksLoaded == 1 && s.peerHits - before.peerHits == 1 && s.peerStale == 0)
        #expect(s.requestsSubmitted - before.requestsSubmitted == 2)
    }

    @Test func aPartlyWrittenJournalRecordIsNotActedOnUntilItIsWhole() throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        let a = try Engine(offloadConfig(.paged, dir: dirA.path))
        try spillPrompt(a, 1, tokens(5, seed: 1))
        let b = try Engine(peerConfig(.paged, dir: dirB.path, peers: [dirA.path]))
        let prompt = tokens(5, seed: 2)
        try spillPrompt(a, 2, prompt)  // one more 64-byte STORED record
        // Cut the new record in half, as a reader may see a write in progress.
        let journal = dirA.path + "/kvcache.journal"
        let fd = open(journal, O_RDWR)
        #expect(fd >= 0)
        defer { close(fd) }
        let size = Int(lseek(fd, 0, SEEK_END))
        var tail = [UInt8](repeating: 0, count: 32)
        #expect(pread(fd, &tail, 32, off_t(size - 32)) == 32)
        #expect(ftruncate(fd, off_t(size - 32)) == 0)
        #expect(b.cachedPrefixTokens(prompt) == 0, "half a record indexes nothing")
        #expect(pwrite(fd, tail, 32, off_t(size - 32)) == 32)
        #expect(b.cachedPrefixTokens(prompt) == 4, "the whole record is read on the next look")
        #expect(try b.createSequence(1, tokens: prompt) == 4)
        try waitReady(b, 1)
        #expect(try kvDifferences(b, 1, count: 4) { prompt[$0] } == 0)
    }

    /// A corrupt record in a peer's journal is read again while it is the last one (the peer
    /// may be appending it), and skipped once a valid record follows it: the tailing goes on,
    /// as a restart's replay does, and the corrupt record's block is never indexed. So is a run
    /// of corrupt records (one bad sector holds 8): the tailing stopped at the second for good.
    @Test(arguments: [1, 2])
    func aCorruptPeerJournalRecordIsSkippedOnceAValidOneFollows(damaged: Int) throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        let a = try Engine(offloadConfig(.paged, dir: dirA.path))
        try spillPrompt(a, 1, tokens(5, seed: 1))
        let b = try Engine(peerConfig(.paged, dir: dirB.path, peers: [dirA.path]))
        let spoiled = (0..<damaged).map { tokens(5, seed: Int32(10 + $0)) }, after = tokens(5, seed: 3)
        for (i, prompt) in spoiled.enumerated() { try spillPrompt(a, UInt64(10 + i), prompt) }  // one 64-byte STORED record each
        let journal = dirA.path + "/kvcache.journal"
        let fd = open(journal, O_RDWR)
        #expect(fd >= 0)
        defer { close(fd) }
        let end = lseek(fd, 0, SEEK_END)
        for r in 0..<damaged {
            let at = off_t(end - 64 * off_t(r + 1) + 16)  // the record's block hash
            var byte: UInt8 = 0
            #expect(pread(fd, &byte, 1, at) == 1)
            byte ^= 0xFF
            #expect(pwrite(fd, &byte, 1, at) == 1)
        }
        for prompt in spoiled { #expect(b.cachedPrefixTokens(prompt) == 0, "bad last records index nothing") }
        try spillPrompt(a, 3, after)
        #expect(b.cachedPrefixTokens(after) == 4, "the record after the corrupt ones is read")
        for prompt in spoiled { #expect(b.cachedPrefixTokens(prompt) == 0) }
        #expect(try b.createSequence(1, tokens: after) == 4)
        try waitReady(b, 1)
        #expect(try kvDifferences(b, 1, count: 4) { after[$0] } == 0)
    }

    /// A peer whose directory is removed gives misses, not errors; once the directory holds a
    /// tier of this engine's identity again (its engine restarted on a recreated directory),
    /// the new slab is opened and read, through io_uring's file table or the thread backend's.
    @Test(arguments: [false, true])
    func aPeerThatVanishesGivesMissesAndIsReadAgainOnceItsDirectoryHoldsATier(threads: Bool) throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        var a: Engine? = try Engine(offloadConfig(.paged, dir: dirA.path))
        let prompt = tokens(9, seed: 3), second = tokens(13, seed: 4)
        try spillPrompt(a!, 1, prompt)
        var cb = peerConfig(.paged, dir: dirB.path, peers: [dirA.path])
        cb.offloadForceThreads = threads
        let b = try Engine(cb)
        #expect(b.cachedPrefixTokens(prompt) == 8)
        a = nil
        dirA.remove()
        #expect(try b.createSequence(1, tokens: prompt) == 0, "a miss")
        #expect(b.offload!.tier.peers[0].unavailable?.contains("removed or replaced") == true)
        try b.free(1, computedTokens: 0)
        #expect(b.stats().disk.peerHits == 0 && b.stats().disk.peerStale == 0)

        // The directory comes back holding another model's tier: still misses, saying why.
        #expect(mkdir(dirA.path, 0o700) == 0)
        var other = offloadConfig(.paged, dir: dirA.path)
        other.modelTag = testModelTag + 1
        var x: Engine? = try Engine(other)
        try spillPrompt(x!, 1, second)
        #expect(b.cachedPrefixTokens(second) == 0)
        #expect(b.offload!.tier.peers[0].unavailable?.contains("another model") == true)
        x = nil
        dirA.remove()

        // Then a tier of this model: its blocks are served, byte-identical; the old ones are gone.
        #expect(mkdir(dirA.path, 0o700) == 0)
        a = try Engine(offloadConfig(.paged, dir: dirA.path))
        try spillPrompt(a!, 2, second)
        #expect(try b.createSequence(2, tokens: second) == 12)
        try waitReady(b, 2)
        #expect(try kvDifferences(b, 2, count: 12) { second[$0] } == 0)
        #expect(b.offload!.tier.peers[0].unavailable == nil && !b.offload!.tier.peers[0].replaced)
        #expect(b.cachedPrefixTokens(prompt) == 0, "the removed tier's blocks are not found")
        #expect(b.stats().disk.peerHits == 3 && b.stats().disk.peerStale == 0)
    }

    /// A peer whose journal is removed (its slab kept) gives misses, at every lookup while it is
    /// away, and its blocks are found again, byte-identical, once a journal is back: replayed
    /// from its start.
    @Test func aPeerWhoseJournalIsRemovedGivesMissesUntilItIsBack() throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        var a: Engine? = try Engine(offloadConfig(.paged, dir: dirA.path))
        let prompt = tokens(9, seed: 5)
        try spillPrompt(a!, 1, prompt)
        a = nil
        let b = try Engine(peerConfig(.paged, dir: dirB.path, peers: [dirA.path]))
        #expect(b.cachedPrefixTokens(prompt) == 8)
        let journal = dirA.path + "/" + DiskTierFiles.names[1]
        let saved = try Data(contentsOf: URL(fileURLWithPath: journal))
        #expect(unlink(journal) == 0)
        for _ in 0..<3 { #expect(b.cachedPrefixTokens(prompt) == 0, "a miss while the journal is away") }
        #expect(b.offload!.tier.peers[0].unavailable?.contains("cannot reopen") == true)
        #expect(!b.offload!.tier.peers[0].replaced)

        try saved.write(to: URL(fileURLWithPath: journal))
        #expect(try b.createSequence(1, tokens: prompt) == 8)
        try waitReady(b, 1)
        #expect(try kvDifferences(b, 1, count: 8) { prompt[$0] } == 0)
        #expect(b.offload!.tier.peers[0].unavailable == nil)
        #expect(b.stats().disk.peerHits == 2 && b.stats().disk.peerStale == 0)
    }

    /// A peer directory moved aside and made anew, where its engine restarts, is read anew: the
    /// moved files stay linked (under the old name), so their link counts said nothing, and the
    /// old tier was read on, the new one never (until the old files were deleted).
    @Test func aPeerDirectoryMovedAsideAndRecreatedIsReadAnew() throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        let moved = dirA.path + ".old"
        defer { dirA.remove(); dirB.remove(); try? FileManager.default.removeItem(atPath: moved) }
        var a: Engine? = try Engine(offloadConfig(.paged, dir: dirA.path))
        let prompt = tokens(9, seed: 7), second = tokens(9, seed: 8)
        try spillPrompt(a!, 1, prompt)
        a = nil
        let b = try Engine(peerConfig(.paged, dir: dirB.path, peers: [dirA.path]))
        #expect(b.cachedPrefixTokens(prompt) == 8)
        #expect(rename(dirA.path, moved) == 0)
        #expect(mkdir(dirA.path, 0o755) == 0)
        a = try Engine(offloadConfig(.paged, dir: dirA.path))
        try spillPrompt(a!, 1, second)
        #expect(b.cachedPrefixTokens(prompt) == 0, "the moved tier is not this peer's any more")
        #expect(b.cachedPrefixTokens(second) == 8, "the new tier at the peer's path is read")
        #expect(try b.createSequence(1, tokens: second) == 8)
        try waitReady(b, 1)
        #expect(try kvDifferences(b, 1, count: 8) { second[$0] } == 0)
    }

    /// A peer directory whose journal and identity are removed (its slab kept) and claimed by
    /// an engine of another model is not read: the new journal's records are that model's K/V,
    /// which verify against their own checksums. The identity was checked only at open and when
    /// the slab was replaced, not when the journal was.
    @Test func aPeerReclaimedByAnotherModelOverItsSlabIsNotRead() throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        var a: Engine? = try Engine(offloadConfig(.paged, dir: dirA.path))
        let prompt = tokens(9, seed: 5), other = tokens(9, seed: 6)
        try spillPrompt(a!, 1, prompt)
        a = nil
        let b = try Engine(peerConfig(.paged, dir: dirB.path, peers: [dirA.path]))
        #expect(b.cachedPrefixTokens(prompt) == 8)
        #expect(unlink(dirA.path + "/" + DiskTierFiles.names[1]) == 0)
        #expect(unlink(dirA.path + "/" + TierIdentity.fileName) == 0)
        var foreign = offloadConfig(.paged, dir: dirA.path)
        foreign.modelTag = testModelTag &+ 1
        var c: Engine? = try Engine(foreign)
        try spillPrompt(c!, 1, other)
        c = nil
        #expect(b.cachedPrefixTokens(other) == 0, "another model's blocks are not served")
        #expect(b.cachedPrefixTokens(prompt) == 0)
        #expect(b.offload!.tier.peers[0].unavailable?.contains("another model") == true)
    }

    /// A peer journal naming a slot far past the index (its slab grew, or a forged record) grows
    /// the index to cover it; when the process may not map that much (~56 bytes x 4 Mi slots
    /// under RLIMIT_AS), that block is a miss and the engine goes on serving the rest: before,
    /// the growth's allocation trapped, the engine down. In a child: the limit is process-wide.
    @Test func aPeerIndexThatCannotGrowLeavesThatBlockAMiss() async {
        await #expect(processExitsWith: .success) {
            let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
            defer { dirA.remove(); dirB.remove() }
            let prompt = tokens(9, seed: 8)
            var a: Engine? = try Engine(offloadConfig(.paged, dir: dirA.path))
            try spillPrompt(a!, 1, prompt)
            let slotBytes = a!.offload!.tier.slotBytes
            a = nil
            let b = try Engine(peerConfig(.paged, dir: dirB.path, peers: [dirA.path]))
            guard b.cachedPrefixTokens(prompt) == 8 else { exit(2) }
            let indexed = b.offload!.tier.peers[0].capacity

            // A copy of A's last record, for the last slot a tier can have.
            var config = kvm_slab_config()
            config.slot_bytes = UInt64(slotBytes)
            config.max_bytes = 64 << 20  // A's offload_bytes: a smaller one would cut its slab
            var slab: OpaquePointer?
            guard (dirA.path.withCString { config.dir = $0; return kvm_slab_open(&config, &slab) }) == 0 else { exit(3) }
            var record = kvm_journal_record()
            var st = stat()
            guard stat(dirA.path + "/" + DiskTierFiles.names[1], &st) == 0 else { exit(4) }
            let end = UInt64(st.st_size)
            guard kvm_slab_journal_read(slab, end - 64, &record, 1) == 1 else { exit(4) }
            record.slot = UInt32(DiskTier.maxSlots - 1)
            record.block_hash ^= 1
            guard kvm_slab_journal_append(slab, &record, 1) == 0 else { exit(5) }
            kvm_slab_close(slab)

            var limit = rlimit()
            getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit)
            limit.rlim_cur = rlim_t(addressSpaceBytes() + (64 << 20))
            guard setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit) == 0 else { exit(6) }
            guard b.cachedPrefixTokens(prompt) == 8 else { exit(7) }  // the refresh read the record
            guard b.offload!.tier.peers[0].capacity == indexed else { exit(8) }
            guard try b.createSequence(1, tokens: prompt) == 8 else { exit(9) }
            try waitReady(b, 1)
            guard try kvDifferences(b, 1, count: 8, token: { prompt[$0] }) == 0 else { exit(10) }
            exit(0)
        }
    }

    /// A peer whose reopen keeps failing (an empty directory, then another model's tier) is
    /// not read again at every lookup: only when its directory or identity changed, and once
    /// more a second after a failure (`DirectoryStamp.confirms`: a change in the tick of the
    /// failed try's `stat` shows in no stamp), and a tier of this model that appears there is
    /// still served at the first lookup after. The directory's times are set an hour ahead, as
    /// on a shared file system whose clock runs ahead of ours: before, such a directory (or any
    /// that changed within the last second) was read again at every lookup.
    @Test func aPeerThatKeepsFailingToReopenIsReadAgainOnlyOnceItsDirectoryChanged() throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        /// Sets `path`'s access and modification times an hour ahead of this machine's clock.
        func aheadOfOurClock(_ path: String) {
            let future = timeval(tv_sec: time(nil) + 3600, tv_usec: 0)
            #expect(utimes(path, [future, future]) == 0, "\(path)")
        }
        /// Waits past `DirectoryStamp.racySeconds`.
        func waitPastTheRacyTick() { usleep(useconds_t(DirectoryStamp.racySeconds) * 1_000_000 + 100_000) }
        var a: Engine? = try Engine(offloadConfig(.paged, dir: dirA.path))
        let prompt = tokens(9, seed: 3), second = tokens(13, seed: 4)
        try spillPrompt(a!, 1, prompt)
        let b = try Engine(peerConfig(.paged, dir: dirB.path, peers: [dirA.path]))
        let peer = b.offload!.tier.peers[0]
        a = nil
        dirA.remove()
        #expect(mkdir(dirA.path, 0o700) == 0)
        aheadOfOurClock(dirA.path)
        #expect(b.cachedPrefixTokens(prompt) == 0)
        #expect(peer.replaced && peer.reopenAttempts == 1 && peer.unavailable?.contains("no engine has used it") == true)
        for seq: UInt64 in 1...20 {
            #expect(try b.createSequence(seq, tokens: prompt) == 0)
            try b.free(seq, computedTokens: 0)
        }
        #expect(peer.reopenAttempts == 1, "nothing changed there: not read again within the second")
        waitPastTheRacyTick()
        for _ in 0..<20 { #expect(b.cachedPrefixTokens(prompt) == 0) }
        #expect(peer.reopenAttempts == 2, "read once more a second after the failure, which confirms it")
        waitPastTheRacyTick()
        for _ in 0..<20 { #expect(b.cachedPrefixTokens(prompt) == 0) }
        #expect(peer.reopenAttempts == 2, "confirmed: not read again until the directory changes")

        // Another model's tier appears: read once, refused, then not again within the second.
        var other = offloadConfig(.paged, dir: dirA.path)
        other.modelTag = testModelTag + 1
        var x: Engine? = try Engine(other)
        try spillPrompt(x!, 1, second)
        x = nil
        aheadOfOurClock(dirA.path)
        aheadOfOurClock(dirA.path + "/" + TierIdentity.fileName)
        #expect(b.cachedPrefixTokens(second) == 0)
        #expect(peer.reopenAttempts == 3 && peer.unavailable?.contains("another model") == true)
        for _ in 0..<20 { #expect(b.cachedPrefixTokens(second) == 0) }
        #expect(peer.reopenAttempts == 3, "nothing changed there: not read again")

        // A tier of this model replaces it: served at the next lookup (the change shows in
        // the directory's stamp).
        try DiskTierFiles.remove(in: dirA.path)
        a = try Engine(offloadConfig(.paged, dir: dirA.path))
        try spillPrompt(a!, 2, second)
        #expect(try b.createSequence(30, tokens: second) == 12)
        try waitReady(b, 30)
        #expect(try kvDifferences(b, 30, count: 12) { second[$0] } == 0)
        #expect(peer.reopenAttempts == 4 && !peer.replaced && peer.unavailable == nil)
        #expect(b.stats().disk.peerHits == 3 && b.stats().disk.peerStale == 0)
    }

    /// A reopen that failed only because the process was out of descriptors (EMFILE, an
    /// `outOfMemory` of `KVError.file`) says nothing of the directory: the next lookup tries
    /// again. Before, two such failures a second apart confirmed the failure like an empty
    /// directory, and the valid tier there was never read until the directory changed. Exit
    /// test (the descriptor limit is the process's): 0 when served once descriptors are back.
    @Test func aReopenThatFailedForWantOfDescriptorsIsTriedAgain() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
            defer { dirA.remove(); dirB.remove() }
            do {
                var a: Engine? = try Engine(offloadConfig(.paged, dir: dirA.path))
                try spillPrompt(a!, 1, tokens(9, seed: 3))
                let b = try Engine(peerConfig(.paged, dir: dirB.path, peers: [dirA.path]))
                let peer = b.offload!.tier.peers[0]
                a = nil
                dirA.remove()
                guard mkdir(dirA.path, 0o700) == 0 else { exit(10) }
                let second = tokens(13, seed: 4)
                a = try Engine(offloadConfig(.paged, dir: dirA.path))
                try spillPrompt(a!, 2, second)
                // Every descriptor from the lowest free one on is refused (EMFILE).
                var limit = rlimit()
                getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
                let lowest = dup(0)
                close(lowest)
                var low = limit
                low.rlim_cur = rlim_t(lowest)
                setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &low)
                let starved = b.cachedPrefixTokens(second)
                usleep(useconds_t(DirectoryStamp.racySeconds) * 1_000_000 + 200_000)
                let starvedAgain = b.cachedPrefixTokens(second)  // a second later: confirmed, before
                setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
                guard starved == 0 && starvedAgain == 0 && peer.reopenAttempts == 2 else { exit(11) }
                guard peer.unavailable?.contains("reopening it failed") == true else { exit(12) }
                guard b.cachedPrefixTokens(second) == 12 && peer.reopenAttempts == 3 && !peer.replaced else { exit(13) }
                withExtendedLifetime(a) {}
                exit(0)
            } catch {
                ExitReport.exit("PeerTierTests: ", ["the set-up threw: \(error)"])  // was exit(14), which named nothing
            }
        }
        ExitReport.expectNothingReported("PeerTierTests: ", result)
    }

    /// A replaced slab is not swapped in while reads of the old one are in flight (held by the
    /// paused thread backend, which reads the descriptor they were submitted with): those land
    /// from the old file, verified, and the next lookup after them opens the new one.
    @Test func aReplacedPeerSlabIsReopenedOnlyAfterTheReadsOfTheOldOneLand() throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        var a: Engine? = try Engine(offloadConfig(.paged, dir: dirA.path))
        let prompt = tokens(17, seed: 5), second = tokens(9, seed: 6)
        try spillPrompt(a!, 1, prompt)
        var cb = peerConfig(.paged, dir: dirB.path, peers: [dirA.path])
        cb.offloadForceThreads = true
        let b = try Engine(cb)
        #expect(b.pauseOffloadIO(true))
        #expect(try b.createSequence(1, tokens: prompt) == 16)
        #expect(try b.ready(1) == false, "its four reads are held in flight")
        a = nil
        dirA.remove()
        #expect(mkdir(dirA.path, 0o700) == 0)
        a = try Engine(offloadConfig(.paged, dir: dirA.path))
        try spillPrompt(a!, 2, second)
        for _ in 0..<2 { #expect(b.cachedPrefixTokens(second) == 0, "not reopened while the old slab's reads are in flight") }
        #expect(b.offload!.tier.peers[0].replaced)
        #expect(b.pauseOffloadIO(false))
        try waitReady(b, 1)
        #expect(try kvDifferences(b, 1, count: 16) { prompt[$0] } == 0, "read from the old file")
        #expect(b.stats().disk.peerHits == 4 && b.stats().disk.peerStale == 0)
        #expect(try b.createSequence(2, tokens: second) == 8)
        try waitReady(b, 2)
        #expect(try kvDifferences(b, 2, count: 8) { second[$0] } == 0)
        #expect(b.stats().disk.peerHits == 6 && b.stats().disk.peerStale == 0)
    }

    @Test func badPeersAreRefusedAtCreateAndNothingIsCreated() throws {
        let dirA = ScratchDir("peerA"), dirB = ScratchDir("peerB"), empty = ScratchDir("peerEmpty")
        defer { dirA.remove(); dirB.remove(); empty.remove() }
        let missing = dirA.path + "/nope"
        var e = refusal(peerConfig(.paged, dir: dirB.path, peers: [missing]))
        #expect(e?.code == .io && e!.message.contains(missing), "\(e?.message ?? "created")")
        e = refusal(peerConfig(.paged, dir: dirB.path, peers: [empty.path]))
        #expect(e?.code == .io && e!.message.contains("no engine has used it"), "\(e?.message ?? "created")")
        e = refusal(peerConfig(.paged, dir: dirB.path, peers: [dirB.path + "/."]))
        #expect(e?.code == .invalidArgument && e!.message.contains("own offload_dir"), "\(e?.message ?? "created")")
        var noTier = smallConfig(.paged)
        noTier.peerOffloadDirs = [dirA.path]
        e = refusal(noTier)
        #expect(e?.code == .invalidArgument && e!.message.contains("peer_offload_dirs"), "\(e?.message ?? "created")")
        // No model named: two models of one shape that both leave the tag at 0 would pass the
        // identity check, so sharing needs a tag (a tier of one engine does not).
        var untagged = peerConfig(.paged, dir: dirB.path, peers: [empty.path])
        untagged.modelTag = 0
        e = refusal(untagged)
        #expect(e?.code == .invalidArgument && e!.message.contains("needs a model_tag other than 0"), "\(e?.message ?? "created")")

        // A peer written by an engine of another shape (twice the head size: other blocks).
        var wide = offloadConfig(.paged, dir: dirA.path)
        wide.headDim = 16
        let a = try Engine(wide)
        try spillPrompt(a, 1, tokens(9, seed: 3))
        e = refusal(peerConfig(.paged, dir: dirB.path, peers: [dirA.path]))
        #expect(e?.code == .invalidArgument && e!.message.contains("another model or shape (head_dim 8 here, 16 there)"),
                "\(e?.message ?? "created")")
        e = refusal(peerConfig(.paged, dir: dirB.path, peers: [empty.path, empty.path]))
        #expect(e?.code == .invalidArgument && e!.message.contains("twice"), "\(e?.message ?? "created")")
        #expect(listing(dirB.path).isEmpty, "a refused engine created nothing in its own directory")
        #expect(listing(empty.path).isEmpty, "nor in a peer's")
    }

    @Test func anEngineWithoutPeersAllocatesNoPeerStateAndLooksUpNothingMore() throws {
        let dir = ScratchDir("peerless")
        defer { dir.remove() }
        let e = try Engine(offloadConfig(.paged, dir: dir.path))
        #expect(e.offload!.tier.peers.isEmpty)
        #expect(try e.createSequence(1, tokens: tokens(9, seed: 1)) == 0)
        #expect(e.stats().disk.peerHits == 0 && e.stats().disk.peerStale == 0)
    }

    /// A peer held by a running engine of another process (`kvcache spill-child --hold`,
    /// which keeps its directory locked): its spilled blocks are read while it holds the lock.
    @Test func aPeerHeldByAnotherProcessIsReadWhileItHoldsItsDirectory() throws {
        let dirA = ScratchDir("peerChild"), dirB = ScratchDir("peerB")
        defer { dirA.remove(); dirB.remove() }
        let cli = cliPath()
        try #require(FileManager.default.isExecutableFile(atPath: cli), "build kvcache-cli first: \(cli)")
        let log = dirB.path + "/../" + URL(fileURLWithPath: dirB.path).lastPathComponent + ".log"
        #expect(FileManager.default.createFile(atPath: log, contents: nil))
        defer { try? FileManager.default.removeItem(atPath: log) }
        let child = Process()
        child.executableURL = URL(fileURLWithPath: cli)
        child.arguments = ["spill-child", "--dir", dirA.path, "--offload-bytes", "\(2 << 20)", "--prompts", "100", "--hold"]
        child.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try child.run()
        defer {
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
        }
        let holding = waitUntil(seconds: 30) { ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("holding") }
        try #require(holding && child.isRunning, "the child spilled its prompts and holds its directory")
        // The child holds the directory: it cannot be this engine's own, but it can be a peer.
        #expect(thrown { () throws(KVError) in _ = try Engine(SpillChildConfig.config(dir: dirA.path, offloadBytes: 2 << 20)) }?.code == .io)
        var c = SpillChildConfig.config(dir: dirB.path, offloadBytes: 2 << 20)
        c.peerOffloadDirs = [dirA.path]
        let b = try Engine(c)
        var wrongBytes = 0
        for i in 0..<100 {
            let prompt = (0..<5).map { Int32(truncatingIfNeeded: i &* 1000 &+ $0) }
            #expect(try b.createSequence(UInt64(i + 1), tokens: prompt) == 4, "prompt \(i)")
            try waitReady(b, UInt64(i + 1))
            wrongBytes += try kvDifferences(b, UInt64(i + 1), count: 4) { prompt[$0] }
            try b.free(UInt64(i + 1))
        }
        #expect(wrongBytes == 0)
        #expect(b.stats().disk.peerHits == 100)
        #expect(b.stats().disk.peerStale == 0)
        #expect(child.isRunning, "reading never disturbed the owner")
    }
}
