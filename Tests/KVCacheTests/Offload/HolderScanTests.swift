import TestSupport
import Testing
@testable import KVCache

/// The disk tier's completions find the sequence slots they concern without scanning every
/// one of `max_seqs`: a call that processes completions while a freed sequence waits for its
/// reads looks at the detached slots only (`OffloadCoordinator.finishDeferredFrees`), and a
/// read of a block several sequences hold (contiguous layout) copies into those holders only
/// (`OffloadCoordinator.scatter`). Counts are asserted (`deferredFreeSlotsExamined`,
/// `scatterSlotsExamined`), never a duration; the I/O is held by the paused thread backend.
@Suite("Disk tier: completions find their slots without a scan", .serialized)
struct HolderScanTests {
    static let maxSeqs = 4096
    /// Calls made while the freed sequence's reads are held.
    static let calls = 100
    /// Full blocks of the prompt read back from disk.
    static let blocksOnDisk = 50

    private func config(_ layout: Layout, dir: ScratchDir) -> EngineConfig {
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadForceThreads = true
        c.maxSeqs = Self.maxSeqs
        c.maxSeqTokens = 1024
        return c
    }

    /// Paged, 4096 sequence slots: sequence 1, created from a prompt on disk with the I/O held,
    /// is freed with its reads in flight (its slot detached). Each of 100 polls and 100 `ready`
    /// calls on another sequence then looks at that one slot. Before, each scanned all 4096
    /// (819,200 counted). Once the reads land, the slot is released and the other sequence's
    /// bytes are intact.
    @Test func callsWhileAFreedSequenceWaitsForItsReadsLookAtItsSlotOnly() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Engine(config(.paged, dir: dir))
        let prompt = tokens(4 * Self.blocksOnDisk + 1, seed: 41), other = tokens(4 * 3 + 1, seed: 42)
        try spillPrompt(e, 1, prompt)
        try e.createSequence(3, tokens: other)
        try fillKV(e, 3, count: other.count) { other[$0] }
        let created = callWithIOHeld(e, "create", order: EventLog()) {
            let hit = try e.createSequence(1, tokens: prompt)
            #expect(hit == 4 * Self.blocksOnDisk)
        }
        #expect(created, "the create did not wait for the device")
        try e.free(1)  // never waits: its slot keeps the memory the held reads land in
        #expect(e.offload!.deferredFreeCount == 1)
        let before = try e.locked { () throws(KVError) in e.offload!.deferredFreeSlotsExamined }
        for _ in 0..<Self.calls {
            e.poll(timeoutMicroseconds: 0)
            #expect(try e.ready(3))
        }
        let examined = try e.locked { () throws(KVError) in e.offload!.deferredFreeSlotsExamined } - before
        #expect(examined == UInt64(2 * Self.calls), "slots examined by 200 calls with one detached: \(examined)")
        #expect(e.offload!.deferredFreeCount == 1, "its reads are still held")
        #expect(e.pauseOffloadIO(false))
        try e.syncOffload()
        #expect(e.offload!.deferredFreeCount == 0 && e.stats().sequences == 1)
        #expect(try kvDifferences(e, 3, count: other.count) { other[$0] } == 0)
        try e.free(3)
        #expect(e.offloadSlotAudit == (0, 0))
    }

    /// Contiguous, 4096 sequence slots: sequence 1 is created from a 50-block prompt on disk
    /// with the I/O held, then sequences 2 and 4 from the same prompt, which share its blocks
    /// while they load (`Engine.tieredPrefix`); sequence 1 is freed meanwhile (detached). Each
    /// landing read copies into the two other holders only: 100 slots examined. Before, each
    /// read scanned all 4096 (204,800). Every holder gets every byte.
    @Test func aReadOfABlockSeveralSequencesHoldCopiesIntoItsHoldersOnly() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Engine(config(.contiguous, dir: dir))
        let prompt = tokens(4 * Self.blocksOnDisk + 1, seed: 43)
        try spillPrompt(e, 1, prompt)
        let created = callWithIOHeld(e, "create", order: EventLog()) {
            let hit = try e.createSequence(1, tokens: prompt)
            #expect(hit == 4 * Self.blocksOnDisk)
        }
        #expect(created, "the create did not wait for the device")
        #expect(try e.createSequence(2, tokens: prompt) == 4 * Self.blocksOnDisk, "its blocks are shared while they load")
        #expect(try e.createSequence(4, tokens: prompt) == 4 * Self.blocksOnDisk)
        #expect(e.stats().disk.prefixHitTokens == UInt64(4 * Self.blocksOnDisk), "only sequence 1 reads")
        try e.free(1)
        #expect(e.offload!.deferredFreeCount == 1)
        let before = try e.locked { () throws(KVError) in e.offload!.scatterSlotsExamined }
        #expect(e.pauseOffloadIO(false))
        try waitReady(e, 2)
        try waitReady(e, 4)
        try e.syncOffload()
        let examined = try e.locked { () throws(KVError) in e.offload!.scatterSlotsExamined } - before
        #expect(examined == UInt64(2 * Self.blocksOnDisk), "slots examined by 50 reads of blocks 3 slots hold: \(examined)")
        #expect(e.offload!.deferredFreeCount == 0)
        #expect(try kvDifferences(e, 2, count: 4 * Self.blocksOnDisk) { prompt[$0] } == 0)
        #expect(try kvDifferences(e, 4, count: 4 * Self.blocksOnDisk) { prompt[$0] } == 0)
        try e.free(2)
        try e.free(4)
        #expect(e.offloadSlotAudit == (0, 0))
    }
}
