import Foundation
import TestSupport
import Testing
@testable import KVCache

/// What the writeback thread (`Writeback`) may make room with, and when it stops: it never
/// drops a disk slot whose block memory still holds (`DiskTier.reserveAhead`), and it writes
/// nothing ahead from a failed write until a later write succeeded (`DiskTier.writesFailing`).
/// Each test idles the engine while polling it every 10 ms, as a server's calls would process
/// completions, and asserts exact counts of writes and disk-tier events, never a duration.
@Suite("Disk tier: writeback room and back-off", .serialized)
struct WritebackRoomTests {
    /// 1 MiB of K/V (2048 blocks of 512 bytes), writeback on, a tier of `offloadBytes` in
    /// `dir` (slots of 8 KiB: 245,760 bytes are 30 slots).
    static func engine(_ layout: Layout, dir: ScratchDir, offloadBytes: UInt64 = 64 << 20, fault: OffloadFault? = nil) throws -> Engine {
        var c = offloadConfig(layout, dir: dir.path, memoryBytes: 1 << 20, offloadBytes: offloadBytes)
        c.maxSeqTokens = 8192
        c.offloadWriteback = true
        c.offloadFault = fault
        return try Engine(c)
    }

    /// Creates `seq` of `prompt`, writes its K/V and frees it: its full blocks stay cached.
    static func cache(_ e: Engine, _ seq: UInt64, _ prompt: [Int32]) throws {
        try e.createSequence(seq, tokens: prompt)
        try fillKV(e, seq, count: prompt.count) { prompt[$0] }
        try e.free(seq)
    }

    /// Creates `sequence` of `blocks` 4-token blocks, which evicts A's 30 (the oldest) and
    /// leaves `cachedAfter` cached, none spilled by the create itself (the thread wrote them
    /// ahead); waits until the thread has written `aheadAfter` blocks in all and its round
    /// ended, syncs, and returns the tier's counters then.
    static func evictA(_ e: Engine, sequence: UInt64, blocks: Int, seed: Int32, cachedAfter: Int, aheadAfter: UInt64) throws
        -> DiskTierStats
    {
        #expect(try e.createSequence(sequence, tokens: tokens(4 * blocks, seed: seed)) == 0)
        let evicted = e.stats()
        #expect(evicted.blocksEvicted == 30 && evicted.blocksCached == cachedAfter
                && evicted.disk.blocksSpilled == evicted.disk.blocksWrittenAhead,
                "\(evicted.blocksEvicted) evicted, \(evicted.disk.blocksSpilled) spilled, none in the create")
        #expect(waitUntil(seconds: 30) { e.stats().disk.blocksWrittenAhead >= aheadAfter }, "got \(e.stats().disk.blocksWrittenAhead)")
        idle(e, milliseconds: 500)
        try e.syncOffload()
        return e.stats().disk
    }

    /// Polls `e` every 10 ms for `milliseconds`, as a server's calls would.
    static func idle(_ e: Engine, milliseconds: Int) {
        for _ in 0..<(milliseconds / 10) {
            _ = e.poll(timeoutMicroseconds: 0)
            usleep(10_000)
        }
    }

    /// The disk tier's events drained from `e`: hashes stored and removed, in order.
    static func diskEvents(_ e: Engine) -> (stored: [UInt64], removed: [UInt64]) {
        let events = drain(e).filter { $0.tier == KVEvent.diskTier }
        return (events.filter { $0.kind == .blockStored }.map(\.blockHash), events.filter { $0.kind == .blockRemoved }.map(\.blockHash))
    }

    /// A tier of 30 slots under 100 cached blocks: the thread writes 30 (the prefix's first,
    /// a chain's ancestors going first) and then, idle for 2 s, nothing more: no slot
    /// dropped, 30 BLOCK_STORED events and no BLOCK_REMOVED. It used to drop the slots it
    /// had written itself (their blocks still cached) for the next blocks and take them again
    /// on its next pass: thousands of writes and events per second on an idle engine.
    @Test(arguments: [Layout.paged, .contiguous])
    func anIdleEngineWritesEachCachedBlockOnceWhenTheTierIsSmaller(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Self.engine(layout, dir: dir, offloadBytes: 245_760)
        try Self.cache(e, 1, tokens(401, seed: 81))
        #expect(e.stats().blocksCached == 100)
        #expect(waitUntil(seconds: 30) { e.stats().disk.blocksWrittenAhead >= 30 }, "got \(e.stats().disk.blocksWrittenAhead)")
        Self.idle(e, milliseconds: 2000)
        try e.syncOffload()
        let d = e.stats().disk
        #expect(d.capacitySlots == 30)
        #expect(d.blocksWrittenAhead == 30 && d.blocksSpilled == 30 && d.slotsEvicted == 0 && d.storedSlots == 30,
                "\(d.blocksWrittenAhead) ahead, \(d.blocksSpilled) spilled, \(d.slotsEvicted) dropped, \(d.storedSlots) stored")
        let events = Self.diskEvents(e)
        #expect(events.stored.count == 30 && Set(events.stored).count == 30 && events.removed.isEmpty,
                "\(events.stored.count) stored, \(events.removed.count) removed")
        #expect(e.stats().blocksCached == 100, "memory untouched")
    }

    /// The rule's other side: a slot whose block left memory is taken. A 30-slot tier holds
    /// prompt A's 30 cached blocks; prompt B's 20, cached later, wait (A's blocks are still
    /// in memory). A create that evicts exactly A's 30 (on disk already: nothing copied) lets
    /// the thread drop A's slots for B's: 50 written ahead in all, the 30 dropped exactly
    /// A's, and nothing more while the engine idles again.
    @Test func aSlotWhoseBlockLeftMemoryIsTakenForTheNextBlocks() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Self.engine(.paged, dir: dir, offloadBytes: 245_760)
        try Self.cache(e, 1, tokens(121, seed: 91))
        #expect(waitUntil(seconds: 30) { e.stats().disk.blocksWrittenAhead >= 30 })
        try e.syncOffload()
        let a = Self.diskEvents(e)
        #expect(a.stored.count == 30 && a.removed.isEmpty)

        try Self.cache(e, 2, tokens(81, seed: 92))
        Self.idle(e, milliseconds: 500)
        var d = e.stats().disk
        #expect(d.blocksWrittenAhead == 30 && d.slotsEvicted == 0, "B waits while A's blocks are in memory: \(d.blocksWrittenAhead) ahead")
        #expect(e.stats().blocksCached == 50)

        // 2048 blocks: 50 cached, 1998 free; 2028 needed, so A's 30 (the oldest) are evicted.
        d = try Self.evictA(e, sequence: 3, blocks: 2028, seed: 93, cachedAfter: 20, aheadAfter: 50)
        #expect(d.blocksWrittenAhead == 50 && d.slotsEvicted == 30 && d.storedSlots == 20,
                "\(d.blocksWrittenAhead) ahead, \(d.slotsEvicted) dropped, \(d.storedSlots) stored")
        let b = Self.diskEvents(e)
        #expect(b.stored.count == 20 && Set(b.stored).isDisjoint(with: a.stored), "B's 20 blocks")
        #expect(Set(b.removed) == Set(a.stored) && b.removed.count == 30, "the slots dropped are exactly A's")
    }

    /// The rule asks memory by hash and fingerprint (`DiskTier.reserveAhead`'s `keeping:`): a
    /// slot whose hash memory holds only under another fingerprint is taken. Sequence B, known
    /// by prompt A's first 10 block hashes alone (fingerprint 0, bytes of its own), then prompt
    /// A by tokens (which never takes a fingerprint-0 block) cache 10 + 30 blocks; the 30-slot
    /// tier holds A's (B's count as on disk: a fingerprint-0 block is any block of its hash).
    /// Prompt C's 20 wait while A's blocks are in memory. A create that evicts exactly A's 30
    /// lets the thread drop all 30 of A's slots, also the 10 whose hashes B's blocks hold,
    /// and write B's 10 (now missing from the tier) and C's 20: 60 written ahead in all.
    /// Then B's prompt still hits memory with its own bytes, and A's misses everywhere.
    /// Asked by hash alone, B's blocks kept A's first 10 slots: 20 dropped, 50 written.
    @Test func aSlotWhoseHashMemoryHoldsOnlyUnderAnotherFingerprintIsTaken() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Self.engine(.paged, dir: dir, offloadBytes: 245_760)
        let a = tokens(121, seed: 111), bBytes = tokens(41, seed: 112), c = tokens(81, seed: 113)
        let hashes = BlockHash.chain(a, blockTokens: 4), bHashes = Array(hashes[0..<10])
        let byHash = { (seq: UInt64) throws(KVError) -> Int in
            try bHashes.withUnsafeBufferPointer { h throws(KVError) in try e.createSequence(seq, blockHashes: h, tokens: 41) }
        }
        #expect(try byHash(2) == 0)
        try fillKV(e, 2, count: 41) { bBytes[$0] }
        #expect(try e.createSequence(1, tokens: a) == 0, "a prompt given by tokens never takes a fingerprint-0 block")
        try fillKV(e, 1, count: 121) { a[$0] }
        try e.free(1)
        #expect(waitUntil(seconds: 30) { e.stats().disk.blocksWrittenAhead >= 30 })
        try e.free(2)
        try Self.cache(e, 3, c)
        Self.idle(e, milliseconds: 500)
        try e.syncOffload()
        var d = e.stats().disk
        #expect(d.blocksWrittenAhead == 30 && d.slotsEvicted == 0 && d.storedSlots == 30,
                "C waits while A's blocks are in memory: \(d.blocksWrittenAhead) ahead, \(d.slotsEvicted) dropped")
        let written = Self.diskEvents(e)
        #expect(written.stored == hashes && written.removed.isEmpty, "A's blocks, oldest first")
        #expect(e.stats().blocksCached == 60)

        // 2048 blocks: 60 cached, 1988 free; 2018 needed, so A's 30 (the oldest) are evicted.
        d = try Self.evictA(e, sequence: 4, blocks: 2018, seed: 114, cachedAfter: 30, aheadAfter: 60)
        #expect(d.blocksWrittenAhead == 60 && d.slotsEvicted == 30 && d.storedSlots == 30,
                "\(d.blocksWrittenAhead) ahead, \(d.slotsEvicted) dropped, \(d.storedSlots) stored")
        let then = Self.diskEvents(e)
        #expect(Set(then.removed) == Set(hashes) && then.removed.count == 30, "the slots dropped are exactly A's")
        #expect(Set(then.stored) == Set(bHashes + BlockHash.chain(c, blockTokens: 4)) && then.stored.count == 30, "B's 10 and C's 20")

        try e.free(4)
        #expect(try byHash(5) == 40)
        #expect(try kvDifferences(e, 5, count: 40) { bBytes[$0] } == 0, "B's own bytes, from memory")
        try e.free(5)
        #expect(try e.createSequence(6, tokens: a) == 0, "A's blocks are in no tier")
    }

    /// Every write fails on the device: the thread tries each of 100 cached blocks at most
    /// once (all its writes failed, no block twice) and then, over 1 s of polling, nothing
    /// more; nor once the device works again, until a write succeeds: a swap-out's. Then it
    /// writes all 100 blocks. It used to take the failed blocks again on every pass (their
    /// failures freed their slots): 2,472-2,596 attempts in this test's first 1.2 s.
    @Test(arguments: [Layout.paged, .contiguous])
    func aFailingDeviceSeesEachBlockOnceUntilAWriteSucceeds(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Self.engine(layout, dir: dir, fault: OffloadFault(reads: false, writes: true))
        let live = tokens(33, seed: 102)
        try e.createSequence(9, tokens: live)
        try fillKV(e, 9, count: live.count) { live[$0] }
        try Self.cache(e, 1, tokens(401, seed: 101))
        #expect(waitUntil(seconds: 30) {
            _ = e.poll(timeoutMicroseconds: 0)
            return e.stats().disk.spillWritesFailed > 0
        })
        Self.idle(e, milliseconds: 200)  // rounds under way end
        let failed = e.stats().disk
        Self.idle(e, milliseconds: 1000)
        let d = e.stats().disk
        #expect(d.blocksWrittenAhead == failed.blocksWrittenAhead, "nothing tried again: \(failed.blocksWrittenAhead) then \(d.blocksWrittenAhead)")
        #expect(d.blocksWrittenAhead <= 100 && d.blocksSpilled == d.blocksWrittenAhead && d.spillWritesFailed == d.blocksWrittenAhead
                && d.spillsFailed == d.spillWritesFailed && d.storedSlots == 0,
                "\(d.blocksWrittenAhead) ahead, \(d.spillWritesFailed) failed, \(d.storedSlots) stored")
        let tried = Self.diskEvents(e)
        #expect(tried.stored.count == Int(d.blocksWrittenAhead) && Set(tried.stored).count == tried.stored.count, "no block twice")
        #expect(Set(tried.removed) == Set(tried.stored), "each failed block left the tier")

        try e.locked { () throws(KVError) in e.offload!.tier.setFault(nil) }
        Self.idle(e, milliseconds: 300)
        #expect(e.stats().disk.blocksWrittenAhead == d.blocksWrittenAhead, "no write has succeeded since: still paused")

        try e.swapOut(9)
        #expect(waitUntil(seconds: 30) { e.stats().disk.blocksWrittenAhead >= d.blocksWrittenAhead + 100 })
        Self.idle(e, milliseconds: 200)
        try e.syncOffload()
        let resumed = e.stats().disk
        #expect(resumed.blocksWrittenAhead == d.blocksWrittenAhead + 100 && resumed.spillWritesFailed == d.spillWritesFailed,
                "\(resumed.blocksWrittenAhead) ahead, \(resumed.spillWritesFailed) failed")
        let written = Self.diskEvents(e)
        #expect(Set(written.stored).isSuperset(of: tried.stored) && written.removed.isEmpty, "every block written once, none dropped")
        #expect(resumed.swapOuts == 1)
    }
}
