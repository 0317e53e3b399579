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
        let s = try Self.evictTheOldest(e, seed: 71)  // x's block, the oldest
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

    /// Creates sequence 3 one block longer than the free blocks, so that exactly the oldest
    /// cached block is evicted, waits for the tier's writes and returns the stats then.
    static func evictTheOldest(_ e: Engine, seed: Int32) throws -> EngineStats {
        let free = e.stats().blocksTotal - e.stats().blocksUsed - e.stats().blocksCached
        try e.createSequence(3, tokens: tokens(4 * Int(free) + 4, seed: seed))
        try e.syncOffload()
        return e.stats()
    }

    /// An engine over `dir` caching the chain w, y, x, y, z, and the blocks of `x`, `y`, `z`.
    static func twoBlockLoop(_ dir: ScratchDir) throws -> (Engine, Int32, Int32, Int32) {
        var c = offloadConfig(.paged, dir: dir.path, memoryBytes: 1 << 20)
        c.maxSeqTokens = 8192
        let e = try Engine(c)
        try cacheALoop(e, [w, y, x, y, z])
        let (bx, by, bz) = try e.locked { () throws(KVError) in
            (e.blocks.lookup(x, fingerprint: 0), e.blocks.lookup(y, fingerprint: 0), e.blocks.lookup(z, fingerprint: 0))
        }
        return (e, bx, by, bz)
    }

    /// A loop of two blocks under a third (chain w, y, x, y, z: `x`'s parent is `y`, `y`'s
    /// is `x`, `z`'s is `y`): the walk from `y`'s block stops where the chain leads back to
    /// it (its ancestors: `x`'s block alone), the walk from `z`'s where it leads onto the
    /// stretch (`y`'s, then `x`'s); `z`'s eviction writes the three once each. Before, each
    /// walk returned 8 entries alternating between the two blocks.
    @Test func aLoopOfTwoBlocksIsWalkedOnce() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let (e, bx, by, bz) = try Self.twoBlockLoop(dir)
        #expect(try e.locked { () throws(KVError) in [e.blocks.parent(of: bx), e.blocks.parent(of: by), e.blocks.parent(of: bz)] } == [Self.y, Self.x, Self.y])
        #expect(try e.locked { () throws(KVError) in Array(e.offload!.missingAncestors(of: by)) } == [bx])
        #expect(try e.locked { () throws(KVError) in Array(e.offload!.missingAncestors(of: bz)) } == [by, bx])
        #expect(e.stats().blocksCached == 4)
        let s = try Self.evictTheOldest(e, seed: 72)  // z's block, the oldest
        #expect(s.blocksEvicted == 1 && s.disk.blocksSpilled == 3 && s.disk.storedSlots == 3, "\(s.blocksEvicted) evicted, \(s.disk.blocksSpilled) spilled")
        let stored = drain(e).filter { $0.tier == KVEvent.diskTier && $0.kind == .blockStored }.map(\.blockHash)
        #expect(stored == [Self.x, Self.y, Self.z], "oldest first, each once")
    }

    /// The same loop, walked from `z`'s block (leaving the stretch `y`'s, `x`'s), then from
    /// `x`'s: that walk resumes the stretch at its parent `y`'s block, where `x`'s own block
    /// lies above it, so it ends there: `y`'s alone (review of the change: the resumed
    /// stretch's entries were not checked against the block, and `x`'s came back as its own
    /// ancestor).
    @Test func aResumedStretchEndsBelowTheBlockItself() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let (e, bx, by, bz) = try Self.twoBlockLoop(dir)
        #expect(try e.locked { () throws(KVError) in Array(e.offload!.missingAncestors(of: bz)) } == [by, bx])
        #expect(try e.locked { () throws(KVError) in Array(e.offload!.missingAncestors(of: bx)) } == [by])
    }

    /// The kept stretch lives in room for twice the blocks (`walked`): a walk that resumes
    /// it moves its live part down when its end reaches `2 * capacity`. A chain no longer than
    /// memory never gets there (an entry's index is its depth below the first walk's start),
    /// but a chain known by hashes alone can be longer than memory: its older blocks may be
    /// cached after the walk passed the younger ones. Here, in 128 blocks of memory, a chain
    /// of 330 blocks is cached 32 at a time from its end down (each segment's first parent
    /// indexed nowhere, so a walk stops there), and after each the walk resumes from the
    /// segment above, then that segment leaves memory unwritten (a hit and a truncation); the
    /// 9th walk crosses index 256. Each returns the 8 oldest blocks, the newest segment's
    /// first 8, and looks at the segment, the entry it resumes from (twice: found, re-checked)
    /// and the parent that ends it (the first walk: its first entry twice, 30 more, the end).
    /// Without the move (the walk stopping at the end instead), the 9th returned 2 blocks.
    @Test func aStretchLongerThanMemoryOverTimeMovesDown() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Engine(offloadConfig(.paged, dir: dir.path, memoryBytes: 1 << 16))
        let capacity = try e.locked { () throws(KVError) in e.blocks.capacity }
        #expect(capacity == 128)
        let segment = 32, segments = 10, chain = (0...(segment * segments)).map { UInt64(0xC4A1_0000 + $0) }
        let top = chain.count - 1
        let block = { (k: Int) in e.blocks.lookup(chain[k], fingerprint: 0) }  // under the lock
        var examined: UInt64 = 0
        for r in 0..<segments {
            let (lo, hi) = (top - segment * (r + 1) + 1, top - segment * r)
            // chain[lo - 1] is held by sequence 1, so sequence 2's first block is not indexed;
            // then the truncation takes sequence 1's out of the index.
            try [chain[lo - 1]].withUnsafeBufferPointer { h throws(KVError) in _ = try e.createSequence(1, blockHashes: h, tokens: 4) }
            try [chain[lo - 1]].withUnsafeBufferPointer { h throws(KVError) in _ = try e.createSequence(2, blockHashes: h, tokens: 4) }
            try chain[(lo - 1)...hi].withUnsafeBufferPointer { h throws(KVError) in try e.append(2, tokens: 4 * segment, blockHashes: h) }
            try e.free(2)
            try e.truncate(1, to: 2)
            try e.free(1)
            let from = r == 0 ? top : hi + 2  // the block above the stretch's oldest
            let (ancestors, oldest) = try e.locked { () throws(KVError) in
                (Array(e.offload!.missingAncestors(of: block(from))), (lo..<(lo + 8)).reversed().map(block))
            }
            #expect(ancestors == oldest, "walk \(r)")
            let now = try e.locked { () throws(KVError) in e.offload!.ancestorsExamined }
            #expect(now - examined == UInt64(r == 0 ? segment + 1 : segment + 3), "walk \(r): \(now - examined) examined")
            examined = now
            if r > 0 {  // the segment above leaves memory, written nowhere
                try chain[(hi + 1)...(hi + segment)].withUnsafeBufferPointer { h throws(KVError) in
                    #expect(try e.createSequence(3, blockHashes: h, tokens: 4 * segment + 1) == 4 * segment)
                }
                try e.truncate(3, to: 2)
                try e.free(3)
            }
            #expect(e.stats().blocksCached == UInt64(segment), "walk \(r): one segment cached")
        }
        #expect(e.stats().blocksEvicted == 0 && e.stats().disk.blocksSpilled == 0)
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
