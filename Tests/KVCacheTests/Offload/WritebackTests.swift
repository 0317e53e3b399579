import Foundation
import TestSupport
import Testing
@testable import KVCache

/// `EngineConfig.offloadWriteback`: a thread writes the coldest cached blocks to the disk tier
/// ahead of their eviction, copying them outside the engine's lock (`Writeback`), so that an
/// allocation evicting them copies nothing; a block being copied leaves memory only once its
/// copy is done. Counts and the order of events are asserted, never a duration.
@Suite("Disk tier: writeback ahead of eviction", .serialized)
struct WritebackTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    /// 1 MiB of K/V (2048 blocks of 512 bytes; contiguous, 64 page groups of 128 tokens), a
    /// disk tier in `dir`, writeback on.
    static func engine(_ layout: Layout, dir: ScratchDir) throws -> Engine {
        var c = offloadConfig(layout, dir: dir.path, memoryBytes: 1 << 20)
        c.maxSeqTokens = 8192
        c.offloadWriteback = true
        return try Engine(c)
    }

    /// Holds `e`'s thread after its first round marked its blocks, before it copies them:
    /// `marked` is signalled then, and the thread goes on once `go` is. Later rounds run free.
    static func holdFirstRound(_ e: Engine) throws -> (marked: DispatchSemaphore, go: DispatchSemaphore) {
        let marked = DispatchSemaphore(value: 0), go = DispatchSemaphore(value: 0)
        let once = HoldOnce()
        try e.locked { () throws(KVError) in
            e.offload!.writeback!.afterMark = {
                guard once.first() else { return }
                marked.signal()
                go.wait()
            }
        }
        return (marked, go)
    }

    /// Runs `call` (named `name`) while another thread signals `go` 200 ms from now; returns
    /// the order in which the call returned and `go` was signalled. Rethrows the call's error.
    static func order(_ name: String, lettingGoAfter200ms go: DispatchSemaphore, _ call: () throws(KVError) -> Void) throws -> [String] {
        let order = EventLog()
        let releaser = TestThread {
            usleep(200_000)
            order.add("copies let go")
            go.signal()
        }
        let result = Result(catching: call)
        order.add("\(name) returned")
        releaser.join()
        try result.get()
        return order.events
    }

    /// A freed 1601-token prompt's 400 cached blocks (all within the thread's horizon of 1024)
    /// are written ahead; an 8000-token prompt then evicts most of them without copying
    /// anything (no spill beyond those written ahead, none skipped); the first prompt comes
    /// back byte for byte, its evicted blocks read from disk. Then the second prompt's blocks,
    /// cached, are written while a third create evicts them, and a trim writes the rest.
    @Test(arguments: layouts)
    func coldBlocksAreWrittenAheadAndTheirEvictionCopiesNothing(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Self.engine(layout, dir: dir)
        let a = tokens(1601, seed: 41), b = tokens(8000, seed: 42)
        try e.createSequence(1, tokens: a)
        try fillKV(e, 1, count: a.count) { a[$0] }
        try e.free(1)
        #expect(waitUntil(seconds: 30) { e.stats().disk.blocksWrittenAhead == 400 }, "got \(e.stats().disk.blocksWrittenAhead)")
        let ahead = e.stats()
        #expect(ahead.blocksCached == 400 && ahead.disk.blocksSpilled == 400 && ahead.disk.spillsSkipped == 0)

        #expect(try e.createSequence(2, tokens: b) == 0)
        let evicted = e.stats()
        #expect(evicted.blocksEvicted > 300, "got \(evicted.blocksEvicted)")
        #expect(evicted.disk.blocksSpilled == 400 && evicted.disk.blocksWrittenAhead == 400, "no eviction copied a block")
        #expect(evicted.disk.spillsSkipped == 0, "every evicted block was on disk already")
        try fillKV(e, 2, count: b.count) { b[$0] }
        try e.free(2)

        #expect(try e.createSequence(3, tokens: a) == 1600)
        try waitReady(e, 3)
        #expect(try kvDifferences(e, 3, count: 1600) { a[$0] } == 0)
        #expect(e.stats().disk.prefixHitTokens == UInt64(4 * (400 - Int(evicted.blocksCached))), "the evicted ones from disk")
        try e.free(3)
        try e.trim()
        try e.syncOffload()
        let trimmed = e.stats()
        #expect(trimmed.blocksCached == 0)
        #expect(trimmed.disk.spillsFailed == 0 && trimmed.disk.writesFailed == 0)
    }

    /// The engine stops its thread (as `deinit` does) while the thread copies a round: the
    /// round is given up, nothing written or announced. It was submitted once, so a block was
    /// journaled and served to a later engine reading the directory as a peer while its
    /// BLOCK_STORED event died with the engine (an ABI soak's seed 110064, ~1 run in 80).
    @Test(arguments: layouts)
    func aRoundBeingCopiedWhenTheThreadStopsIsGivenUp(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Self.engine(layout, dir: dir)
        let (marked, go) = try Self.holdFirstRound(e)
        let a = tokens(33, seed: 45)
        try e.createSequence(1, tokens: a)
        try fillKV(e, 1, count: a.count) { a[$0] }
        try e.free(1)
        marked.wait()
        _ = drain(e)
        let order = try Self.order("stop", lettingGoAfter200ms: go) { () throws(KVError) in e.offload!.stopWriteback() }
        #expect(order == ["copies let go", "stop returned"])
        try e.syncOffload()
        let d = e.stats().disk
        #expect(d.blocksSpilled == 0 && d.blocksWrittenAhead == 0 && d.storedSlots == 0, "\(d)")
        #expect(drain(e).filter { $0.tier == KVEvent.diskTier }.isEmpty, "no disk-tier event")
        #expect(e.offloadSlotAudit.pinned == 0)
        try e.trim()  // without the thread: spilled in the call, announced
        #expect(e.stats().disk.blocksSpilled == 8)
        #expect(drain(e).filter { $0.tier == KVEvent.diskTier && $0.kind == .blockStored }.count == 8)
        #expect(try e.createSequence(2, tokens: a) == 32)
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 32) { a[$0] } == 0)
    }

    /// The thread is held after marking a freed 33-token prompt's 8 blocks, before copying
    /// them. A create that needs all 2048 blocks evicts those 8: it returns only after the
    /// copies were let go, and the disk copies hold the first prompt's bytes, not the ones the
    /// second prompt wrote into the same memory afterwards.
    @Test(arguments: layouts)
    func aBlockBeingCopiedLeavesMemoryOnlyAfterItsCopy(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Self.engine(layout, dir: dir)
        let (marked, go) = try Self.holdFirstRound(e)
        let a = tokens(33, seed: 51), b = tokens(8192, seed: 52)
        try e.createSequence(1, tokens: a)
        try fillKV(e, 1, count: a.count) { a[$0] }
        try e.free(1)
        #expect(marked.wait(timeout: .now() + 30) == .success, "the thread marked the 8 blocks")

        var cached = -1
        let events = try Self.order("create", lettingGoAfter200ms: go) { () throws(KVError) in cached = try e.createSequence(2, tokens: b) }
        #expect(cached == 0 && events == ["copies let go", "create returned"])
        #expect(e.stats().blocksCached == 0, "all 8 evicted")
        try fillKV(e, 2, count: b.count) { b[$0] }
        try e.free(2)

        #expect(try e.createSequence(3, tokens: a) == 32)
        try waitReady(e, 3)
        #expect(try kvDifferences(e, 3, count: 32) { a[$0] } == 0, "the disk copies hold the first prompt's bytes")
        #expect(e.stats().disk.prefixHitTokens == 32)
    }

    /// With the thread held after marking a freed 33-token prompt's 8 blocks (the oldest
    /// cached), a create that must evict some of another freed prompt's 100 cached blocks
    /// (paged: 50; contiguous: a page's worth, 60 of its 64 pages of 128 tokens) passes the
    /// marked ones over: it returns before the copies are let go, and the 8 stay cached. The
    /// blocks it evicts, which the held thread has not reached, it spills itself, so the other
    /// prompt comes back whole, its evicted blocks from disk.
    @Test(arguments: layouts)
    func anEvictionPassesOverBlocksBeingCopied(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Self.engine(layout, dir: dir)
        let (marked, go) = try Self.holdFirstRound(e)
        let a = tokens(33, seed: 61), c = tokens(401, seed: 62)
        let b = tokens(layout == .paged ? 4 * (2048 - 8 - 50) : 60 * 128, seed: 63)
        try e.createSequence(1, tokens: a)
        try fillKV(e, 1, count: a.count) { a[$0] }
        try e.free(1)
        #expect(marked.wait(timeout: .now() + 30) == .success, "the thread marked the 8 blocks")
        try e.createSequence(3, tokens: c)
        try fillKV(e, 3, count: c.count) { c[$0] }
        try e.free(3)
        #expect(e.stats().blocksCached == 108)

        var cached = -1
        var inCreate = EngineStats()
        let events = try Self.order("create", lettingGoAfter200ms: go) { () throws(KVError) in
            cached = try e.createSequence(2, tokens: b)
            inCreate = e.stats()  // the thread still held
        }
        #expect(cached == 0 && events == ["create returned", "copies let go"])
        let s = e.stats()
        if layout == .paged {
            #expect(s.blocksCached == 58 && s.blocksEvicted == 50, "\(s.blocksCached) cached, \(s.blocksEvicted) evicted")
        } else {
            #expect(s.blocksEvicted > 0 && s.blocksCached == 108 - s.blocksEvicted, "\(s.blocksCached) cached, \(s.blocksEvicted) evicted")
        }
        let disk = inCreate.disk
        #expect(disk.blocksWrittenAhead == 0 && disk.blocksSpilled >= inCreate.blocksEvicted && disk.spillsSkipped == 0,
                "\(inCreate.blocksEvicted) evicted, \(disk.blocksSpilled) spilled in the create, \(disk.spillsSkipped) skipped")
        #expect(try e.createSequence(4, tokens: a) == 32, "the marked blocks are still in memory")
        #expect(try e.ready(4))
        #expect(try kvDifferences(e, 4, count: 32) { a[$0] } == 0)
        try e.free(2)
        #expect(try e.createSequence(5, tokens: c) == 400)
        try waitReady(e, 5)
        #expect(e.stats().disk.prefixHitTokens > 0, "the evicted blocks from disk")
        #expect(try kvDifferences(e, 5, count: 400) { c[$0] } == 0)
    }

    /// With the thread held after marking a freed 33-token prompt's 8 blocks, a trim writes
    /// them itself (it copies in the call) and then waits for the thread's copies before they
    /// leave memory; the thread, let go, finds them on disk and gives its 8 slots and buffers
    /// back: 8 blocks stored once, none counted as written ahead, and the prompt comes back
    /// from disk byte for byte.
    @Test(arguments: layouts)
    func aBlockATrimWroteMeanwhileIsNotWrittenTwice(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Self.engine(layout, dir: dir)
        let (marked, go) = try Self.holdFirstRound(e)
        let a = tokens(33, seed: 71)
        try e.createSequence(1, tokens: a)
        try fillKV(e, 1, count: a.count) { a[$0] }
        try e.free(1)
        #expect(marked.wait(timeout: .now() + 30) == .success, "the thread marked the 8 blocks")

        let events = try Self.order("trim", lettingGoAfter200ms: go) { () throws(KVError) in try e.trim() }
        #expect(events == ["copies let go", "trim returned"])
        #expect(waitUntil(seconds: 30) { (try? e.locked { () throws(KVError) in !e.offload!.writeback!.hasRoundInFlight }) == true })
        try e.syncOffload()
        let s = e.stats()
        #expect(s.blocksCached == 0 && s.disk.blocksSpilled == 8 && s.disk.blocksWrittenAhead == 0 && s.disk.spillsFailed == 0,
                "\(s.disk.blocksSpilled) spilled, \(s.disk.blocksWrittenAhead) ahead")
        #expect(s.disk.storedSlots == 8, "each block stored once")
        #expect(try e.createSequence(2, tokens: a) == 32)
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 32) { a[$0] } == 0)
    }

    @Test func writebackNeedsADiskTier() {
        var c = smallConfig(.paged)
        c.offloadWriteback = true
        #expect(refusal(c)?.message.contains("offload_writeback needs a disk tier") == true)
    }
}

/// True at the first call only (one thread calls it).
private final class HoldOnce: @unchecked Sendable {
    private var done = false
    func first() -> Bool {
        defer { done = true }
        return !done
    }
}
