import Foundation
import TestSupport
import Testing
@testable import KVCache

/// The walk up a chain for the cached ancestors the disk tier lacks
/// (`OffloadCoordinator.missingAncestors`), which an allocation's eviction and each writeback
/// round take before writing a block, costs O(chain) in all for a freed chain, not O(chain)
/// per eviction. Counts are asserted (`ancestorsExamined`), never a duration.
@Suite("Disk tier: the ancestor walk of spills", .serialized)
struct AncestorWalkTests {
    /// Cached blocks of the freed chain.
    static let chain = 1500

    /// 1 MiB of paged K/V (2048 blocks of 4 tokens) and a disk tier: a freed 6001-token prompt
    /// leaves one chain of 1500 cached blocks, a filler takes the free blocks, and a sequence
    /// grown one block per append then evicts one cached block per append, the chain's last
    /// first (the order a free caches them in), each eviction writing its block's oldest
    /// missing ancestors first. With writeback on, the thread writes the whole chain ahead
    /// first. Before, every eviction (and every writeback round) walked all the ancestors
    /// still missing and wrote only the oldest 8: about 1500^2/18 lookups (125,584
    /// counted, 141,188 with writeback). Now a walk resumes where the last one on the chain
    /// stopped: at most `ancestorsPerSpill + 4` per block. Every block still reaches the
    /// disk, reachable: the prompt comes back from disk byte for byte.
    @Test(arguments: [false, true])
    func evictingAFreedChainTailFirstWalksEachAncestorAboutOnce(writeback: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(.paged, dir: dir.path, memoryBytes: 1 << 20)
        c.maxSeqTokens = 8192
        c.offloadWriteback = writeback
        let e = try Engine(c)
        let prompt = tokens(4 * Self.chain + 1, seed: 61)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        try e.free(1)
        if writeback {
            #expect(waitUntil { e.stats().disk.blocksWrittenAhead == UInt64(Self.chain) }, "got \(e.stats().disk.blocksWrittenAhead)")
        }
        let cached = e.stats()
        #expect(cached.blocksCached == UInt64(Self.chain))
        let free = cached.blocksTotal - cached.blocksUsed - cached.blocksCached
        try e.createSequence(3, tokens: tokens(4 * Int(free), seed: 62))
        #expect(e.stats().blocksCached == UInt64(Self.chain), "the filler took only free blocks")
        let grown = tokens(4 * Self.chain, seed: 63)
        try e.createSequence(2, tokens: Array(grown[0..<4]))
        var appended = 4
        while e.stats().blocksCached > 0 {
            try e.append(2, tokens: Array(grown[appended..<appended + 4]))
            appended += 4
            e.poll(timeoutMicroseconds: 1000)
        }
        try e.syncOffload()
        let evicted = e.stats()
        #expect(evicted.blocksEvicted == UInt64(Self.chain))
        #expect(evicted.disk.blocksSpilled == UInt64(Self.chain) && evicted.disk.spillsSkipped == 0, "every block written once")
        let examined = try e.locked { () throws(KVError) in e.offload!.ancestorsExamined }
        let bound = UInt64((OffloadCoordinator.ancestorsPerSpill + 4) * Self.chain)
        #expect(examined <= bound, "ancestors examined: \(examined), bound \(bound)")

        try e.free(2)
        try e.free(3)
        #expect(try e.createSequence(4, tokens: prompt) == 4 * Self.chain, "the whole chain from disk")
        try waitReady(e, 4)
        #expect(try kvDifferences(e, 4, count: 4 * Self.chain) { prompt[$0] } == 0)
    }

    /// Hashes of looped chains (any values but 0: they are taken as given).
    static let (w, x, y, z): (UInt64, UInt64, UInt64, UInt64) = (0x5EED_0001, 0x5EED_0002, 0x5EED_0003, 0x5EED_0004)

    /// Caches, through the public API, sequence 2 of block hashes `chain` in which `chain[1]`
    /// comes again later: that later block's parent is the one before it, so the chain loops
    /// (hashes are taken as given: `append(_:tokens:blockHashes:)` does not check them against
    /// the sequence's chain). Sequence 1 holds `chain[1]`'s block, so that sequence 2's block 1
    /// is not indexed; truncating sequence 1 inside its block takes that block out of the index
    /// (written nowhere); sequence 2's blocks from the repeat on are then indexed. Sequence 2's
    /// tokens are `looped(p)`. Both freed: its last block is the oldest cached one.
    static func cacheALoop(_ e: Engine, _ chain: [UInt64]) throws {
        let again = chain[2...].firstIndex(of: chain[1])!
        try [chain[1]].withUnsafeBufferPointer { h throws(KVError) in _ = try e.createSequence(1, blockHashes: h, tokens: 4) }
        try [chain[0]].withUnsafeBufferPointer { h throws(KVError) in _ = try e.createSequence(2, blockHashes: h, tokens: 4) }
        try chain[0..<again].withUnsafeBufferPointer { h throws(KVError) in try e.append(2, tokens: 4 * (again - 1), blockHashes: h) }
        try e.truncate(1, to: 2)
        try chain.withUnsafeBufferPointer { h throws(KVError) in try e.append(2, tokens: 4 * (chain.count - again), blockHashes: h) }
        try fillKV(e, 2, count: 4 * chain.count, token: looped)
        try e.free(2)
        try e.free(1)
    }

    static func looped(_ p: Int) -> Int32 { Int32(7000 + p) }

    /// A chain known by hashes alone may lead back to a block: here `x`'s parent is `x`
    /// (chain w, x, x). The
    /// walk stops there (at the evicted block itself, or at a block already on its stretch)
    /// rather than pushing the same block again until the stretch holds `capacity` entries:
    /// the eviction of `x`'s block examines one ancestor and writes the block once, and it
    /// comes back from disk byte for byte (the walk does not depend on the layout). Before, the walk examined 2049 ancestors (the
    /// stretch filled with the one block, 2048 times).
    @Test func aChainLeadingBackToItsOwnBlockIsWalkedOnce() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(.paged, dir: dir.path, memoryBytes: 1 << 20)
        c.maxSeqTokens = 8192
        let e = try Engine(c)
        try Self.cacheALoop(e, [Self.w, Self.x, Self.x])
        let loop = try e.locked { () throws(KVError) in e.blocks.lookup(Self.x, fingerprint: 0) }
        #expect(try e.locked { () throws(KVError) in e.blocks.parent(of: loop) } == Self.x, "the block's parent is its own hash")
        #expect(e.stats().blocksCached == 2)
        let free = e.stats().blocksTotal - e.stats().blocksUsed - e.stats().blocksCached
        try e.createSequence(3, tokens: tokens(4 * Int(free) + 4, seed: 71))  // evicts x's block, the oldest
        try e.syncOffload()
        let s = e.stats()
        #expect(s.blocksEvicted == 1 && s.disk.blocksSpilled == 1 && s.disk.storedSlots == 1, "\(s.blocksEvicted) evicted, \(s.disk.blocksSpilled) spilled")
        let examined = try e.locked { () throws(KVError) in e.offload!.ancestorsExamined }
        #expect(examined == 1, "ancestors examined: \(examined)")
        try e.free(3)
        #expect(try [Self.x].withUnsafeBufferPointer { h throws(KVError) in try e.createSequence(4, blockHashes: h, tokens: 5) } == 4)
        try waitReady(e, 4)
        var differences = 0  // the block held positions 8...11 of sequence 2
        for layer in 0..<c.numLayers {
            for p in 0..<4 {
                let (k, v) = try tokenAddress(e, 4, layer: layer, position: p)
                for i in 0..<c.tokenBytes {
                    let (wantK, wantV) = (kvByte(layer: layer, kv: 0, position: p + 8, token: Self.looped(p + 8), i: i),
                                          kvByte(layer: layer, kv: 1, position: p + 8, token: Self.looped(p + 8), i: i))
                    if k.load(fromByteOffset: i, as: UInt8.self) != wantK || v.load(fromByteOffset: i, as: UInt8.self) != wantV { differences += 1 }
                }
            }
        }
        #expect(differences == 0, "x's block from disk, byte for byte")
    }

    /// A loop of two blocks under a third (chain w, y, x, y, z: `x`'s parent is `y`, `y`'s
    /// is `x`, `z`'s is `y`): the walk from `y`'s block stops where the chain leads back to
    /// it (its ancestors: `x`'s block alone), the walk from `z`'s where it leads onto the
    /// stretch (`y`'s, then `x`'s); `z`'s eviction writes the three once each. Before, each
    /// walk returned 8 entries alternating between the two blocks.
    @Test func aLoopOfTwoBlocksIsWalkedOnce() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(.paged, dir: dir.path, memoryBytes: 1 << 20)
        c.maxSeqTokens = 8192
        let e = try Engine(c)
        try Self.cacheALoop(e, [Self.w, Self.y, Self.x, Self.y, Self.z])
        let (bx, by, bz) = try e.locked { () throws(KVError) in
            (e.blocks.lookup(Self.x, fingerprint: 0), e.blocks.lookup(Self.y, fingerprint: 0), e.blocks.lookup(Self.z, fingerprint: 0))
        }
        #expect(try e.locked { () throws(KVError) in [e.blocks.parent(of: bx), e.blocks.parent(of: by), e.blocks.parent(of: bz)] } == [Self.y, Self.x, Self.y])
        #expect(try e.locked { () throws(KVError) in Array(e.offload!.missingAncestors(of: by)) } == [bx])
        #expect(try e.locked { () throws(KVError) in Array(e.offload!.missingAncestors(of: bz)) } == [by, bx])
        #expect(e.stats().blocksCached == 4)
        let free = e.stats().blocksTotal - e.stats().blocksUsed - e.stats().blocksCached
        try e.createSequence(3, tokens: tokens(4 * Int(free) + 4, seed: 72))  // evicts z's block, the oldest
        try e.syncOffload()
        let s = e.stats()
        #expect(s.blocksEvicted == 1 && s.disk.blocksSpilled == 3 && s.disk.storedSlots == 3, "\(s.blocksEvicted) evicted, \(s.disk.blocksSpilled) spilled")
        let stored = drain(e).filter { $0.tier == KVEvent.diskTier && $0.kind == .blockStored }.map(\.blockHash)
        #expect(stored == [Self.x, Self.y, Self.z], "oldest first, each once")
    }

    /// The writeback thread takes the looped block's walk too: it writes `x`'s block and `w`'s,
    /// once each. Before, the walk returned the block among its own ancestors (8 times), the
    /// round marked it for a second copy, and `BlockPool.markCopy`'s precondition stopped the
    /// process. In a child process, for that reason.
    @Test func aLoopedChainIsWrittenAheadOnce() async {
        await #expect(processExitsWith: .success) {
            let dir = ScratchDir()
            defer { dir.remove() }
            var c = offloadConfig(.paged, dir: dir.path, memoryBytes: 1 << 20)
            c.offloadWriteback = true
            guard let e = try? Engine(c), (try? Self.cacheALoop(e, [Self.w, Self.x, Self.x])) != nil else { exit(2) }
            guard waitUntil(seconds: 30, { e.stats().disk.blocksWrittenAhead >= 2 }) else { exit(3) }
            usleep(200_000)  // a round under way ends
            guard (try? e.syncOffload()) != nil else { exit(4) }
            let d = e.stats().disk
            guard d.blocksWrittenAhead == 2 && d.blocksSpilled == 2 && d.storedSlots == 2 else {
                FileHandle.standardError.write(Data("\(d.blocksWrittenAhead) ahead, \(d.blocksSpilled) spilled, \(d.storedSlots) stored\n".utf8))
                exit(1)
            }
            exit(0)
        }
    }
}
