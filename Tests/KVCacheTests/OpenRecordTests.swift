import Foundation
import Testing
@testable import KVCache

/// Open records (episodic offload): evicted tokens fill one slot payload in memory across
/// compactions, and the slot is written when full, so decode-step compactions write a slot per
/// `blockTokens` steps, not per step; per layer and per head (counts of head tokens: a record
/// holds `rowsPerLayer` times as many, of `1 / rowsPerLayer` the bytes).
extension EpisodicOffloadTests {
    /// Sequence `seq` of `n` tokens with the `kvByte` pattern and observed scores, compacted
    /// `steps` times by one token per row (a decode step's compaction).
    private func decodeStepCompactions(_ e: Engine, seq: UInt64 = 1, n: Int, steps: Int) throws -> [Int32] {
        let toks = tokens(n, seed: Int32(seq))
        try e.createSequence(seq, tokens: toks)
        try writeKV(e, seq, tokens: toks, from: 0)
        try observeAll(e, seq, scores(e, n: n, heavy: [1, 9]), n: n)
        for step in 1...max(1, steps) where steps > 0 {
            #expect(try e.compact(seq, budgetTokens: n - step) == n - step)
        }
        return toks
    }

    @Test(arguments: layouts, perHead)
    func decodeStepCompactionsFillOneSlotInsteadOfOnePerStep(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead) { $0.blockTokens = 16 }  // 32 layer tokens a record
        let baseline = e.stats().disk, rows = UInt64(rowsPerLayer(e))
        _ = try decodeStepCompactions(e, n: 64, steps: 16)
        try e.syncOffload()
        var s = e.stats().disk
        #expect(s.tokensOffloaded == 32 * rows && s.tokensOnDisk == 32 * rows && s.tokensInOpenRecords == 0)
        #expect(s.tokenRecords == 1, "one record of 32 layer tokens, not 16 records of 2")
        #expect(s.storedSlots == baseline.storedSlots + 1)
        #expect(s.bytesWritten == baseline.bytesWritten + s.slotBytes)
        for step in 17...19 { #expect(try e.compact(1, budgetTokens: 64 - step) == 64 - step) }
        try e.syncOffload()
        s = e.stats().disk
        #expect(s.tokensOffloaded == 38 * rows && s.tokensOnDisk == 32 * rows && s.tokensInOpenRecords == 6 * rows,
                "6 layer tokens wait in the open record")
        #expect(s.tokenRecords == 1 && s.storedSlots == baseline.storedSlots + 1)
        #expect(s.bytesWritten == baseline.bytesWritten + s.slotBytes)
    }

    /// After `compactedOnTopicA` (125 full records, none open) a focus on B displaces 20 A
    /// tokens: two whole records are written and the last 4 go to the open record. The focus
    /// back on A restores those 4 from the open record's buffer (no read) and the other 16
    /// from the two records, byte-identical.
    @Test(arguments: layouts, perHead)
    func aFocusRestoresTheOpenRecordsTokensFromItsBuffer(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead)
        let toks = try compactedOnTopicA(e).tokens
        #expect(try focus(e, Self.queryB) != -1)
        try waitReady(e, 1)
        try expectHolds(e, Self.heavyB, toks)
        let table = e.offload!.offloadedTokens[e.sequences.slot(of: 1)]!
        #expect(table.openRecord >= 0 && table.openCount == 4 * rowsPerLayer(e))
        let before = e.stats().disk
        #expect(try focus(e, Self.queryA) != -1)
        try waitReady(e, 1)
        try expectHolds(e, Self.heavyA, toks)
        let after = e.stats().disk
        #expect(after.blocksLoaded == before.blocksLoaded + 2, "two records read; the open record's tokens copied from memory")
        #expect(after.tokensRestored == before.tokensRestored + UInt64(rowsPerLayer(e)) * 2 * 10 && after.tokensLost == 0)
        #expect(table.openRecord < 0, "the 4 displaced B tokens filled it: written out")
        try expectFreeReleasesRecords(e)
    }

    /// More compacting sequences than open records: the least recently appended one is written
    /// out partly filled and its buffer changes hands; nothing is lost.
    @Test(arguments: layouts, perHead)
    func withNoFreeOpenRecordTheOldestIsWrittenOutPartlyFilled(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead) { $0.maxSeqs = 40 }
        let cap = e.offload!.openRecords.capacity, rows = UInt64(rowsPerLayer(e))
        #expect(cap == 32, "min(max_seqs, offload_queue_depth)")
        for seq in 1...UInt64(cap) { _ = try decodeStepCompactions(e, seq: seq, n: 16, steps: 1) }
        try e.syncOffload()
        var s = e.stats().disk
        #expect(s.storedSlots == 0 && s.tokensOnDisk == 0 && s.tokensInOpenRecords == rows * 2 * UInt64(cap), "every record is open")
        _ = try decodeStepCompactions(e, seq: UInt64(cap) + 1, n: 16, steps: 1)
        try e.syncOffload()
        s = e.stats().disk
        #expect(s.storedSlots == 1 && s.tokenRecords == 1, "sequence 1's record, written with 2 layer tokens")
        #expect(s.tokensOnDisk == rows * 2 && s.tokensInOpenRecords == rows * 2 * UInt64(cap) && s.tokensLost == 0)
        #expect(e.offload!.openRecords.buffer(of: e.sequences.slot(of: 1)) == nil)
        // Sequence 1 compacts again: it takes sequence 2's buffer (now the oldest).
        #expect(try e.compact(1, budgetTokens: 14) == 14)
        try e.syncOffload()
        s = e.stats().disk
        #expect(s.storedSlots == 2 && s.tokenRecords == 2 && s.tokensOnDisk == rows * 4 && s.tokensLost == 0)
        #expect(s.tokensInOpenRecords == rows * 2 * UInt64(cap), "sequence 2's tokens went to disk, sequence 1's new ones into its buffer")
        #expect(e.offload!.openRecords.buffer(of: e.sequences.slot(of: 2)) == nil)
        for seq in 1...UInt64(cap) + 1 { try e.free(seq) }
        try e.syncOffload()
        s = e.stats().disk
        #expect(s.storedSlots == 0 && s.tokenRecords == 0 && s.tokensOnDisk == 0 && s.tokensInOpenRecords == 0)
    }

    @Test(arguments: layouts, perHead)
    func freeingASequenceWithAnOpenRecordReleasesEverything(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead) { $0.blockTokens = 16 }
        _ = try decodeStepCompactions(e, n: 64, steps: 19)  // a written record and an open one
        let slot = e.sequences.slot(of: 1)
        #expect(e.offload!.openRecords.buffer(of: slot) != nil)
        try expectFreeReleasesRecords(e)
        let s = e.stats().disk
        #expect(s.tokenRecords == 0 && s.tokensOnDisk == 0 && s.tokensInOpenRecords == 0 && s.tokensLost == 0)
        #expect(e.offload!.openRecords.buffer(of: slot) == nil)
        #expect(e.offloadSlotAudit == (pinned: 0, unhashed: 0))
    }

    /// A fork writes the parent's open record out first (partly filled): the child's table
    /// describes it like any record, and both restore the same bytes from it.
    @Test(arguments: layouts, perHead)
    func aForkWritesTheOpenRecordOutAndTheChildRestoresTheSameBytes(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead)
        let toks = try compactedOnTopicA(e).tokens
        #expect(try focus(e, Self.queryB) != -1)  // 4 displaced A tokens in the open record
        try waitReady(e, 1)
        try e.syncOffload()
        let before = e.stats().disk
        try e.fork(parent: 1, child: 2)
        try e.syncOffload()
        let forked = e.stats().disk
        #expect(forked.storedSlots == before.storedSlots + 1 && forked.bytesWritten == before.bytesWritten + forked.slotBytes)
        #expect(forked.tokenRecords == before.tokenRecords + 1, "the written record; each record held by both counts once")
        let rows = UInt64(rowsPerLayer(e))
        #expect(forked.tokensOnDisk == before.tokensOnDisk + 4 * rows && before.tokensInOpenRecords == 4 * rows && forked.tokensInOpenRecords == 0)
        #expect(e.offload!.offloadedTokens[e.sequences.slot(of: 1)]!.openRecord < 0)
        for seq: UInt64 in [2, 1] {
            #expect(try focus(e, Self.queryA, seq: seq) != -1)
            try waitReady(e, seq)
            try expectHolds(e, Self.heavyA, toks, seq: seq)
        }
        #expect(try held(e, 2).bytes == held(e, 1).bytes, "byte for byte")
        #expect(e.stats().disk.tokensLost == 0)
        try e.free(2)
        try expectFreeReleasesRecords(e)
    }

    /// The write of a full open record fails on the device: a focus that would restore its
    /// tokens reads it back, finds it bad, serves nothing from it and loses those tokens,
    /// reported once by `ready`.
    @Test(arguments: layouts, perHead)
    func aFullOpenRecordWhoseWriteFailsLosesItsTokensOnce(layout: Layout, perHead: Bool) throws {
        let probeDir = ScratchDir(), dir = ScratchDir()
        defer {
            probeDir.remove()
            dir.remove()
        }
        // 32 layer tokens a record: compactedOnTopicA writes 31 and leaves 8 in the open one.
        let probe = try engine(layout, dir: probeDir.path, perHead: perHead) { $0.blockTokens = 16 }
        try compactedOnTopicA(probe)
        let writes = probe.stats().disk.requestsSubmitted  // every later write fails
        let e = try engine(layout, dir: dir.path, perHead: perHead) {
            $0.blockTokens = 16
            $0.offloadFault = OffloadFault(reads: false, writes: true, after: writes)
        }
        let toks = try compactedOnTopicA(e).tokens
        #expect(try focus(e, Self.queryB) != -1)  // the 20 displaced A tokens: open record at 28
        try waitReady(e, 1)
        try expectHolds(e, Self.heavyB, toks)
        for budget in [11, 10] { #expect(try e.compact(1, budgetTokens: budget) == budget) }  // full: written
        try e.syncOffload()
        let failed = e.stats().disk
        #expect(failed.tokensLost == 0, "the failure is not known yet")
        #expect(failed.writesFailed == 1 && failed.tokenRecords == 31 && failed.tokensOnDisk == 31 * 32 * UInt64(rowsPerLayer(e)) && failed.tokensInOpenRecords == 0,
                "the failed record counts as a failed write, not as on disk")
        let before = (try held(e, 1))
        _ = try focus(e, Self.queryA)
        var failure: KVError?
        do { try waitReady(e, 1) } catch { failure = error }
        #expect(failure?.code == .io && failure?.message.contains("stays usable") == true)
        #expect(try e.ready(1), "the loss is reported once")
        let s = e.stats().disk
        #expect(s.loadsFailed > failed.loadsFailed)
        #expect(s.tokensRestored == failed.tokensRestored, "nothing restored from the failed record")
        #expect(s.tokensLost == 32 * UInt64(rowsPerLayer(e)), "every token of the failed record (a read that fails loses its record)")
        #expect(s.tokensOnDisk == failed.tokensOnDisk && s.tokenRecords == failed.tokenRecords, "the lost tokens' record was never counted")
        let after = try held(e, 1)
        #expect(after.positions == before.positions && after.bytes == before.bytes, "the restores were undone")
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        try expectFreeReleasesRecords(e)
    }

    /// A full open record the tier refuses (full of this sequence's records): its tokens are
    /// lost at once, dropped from the state, counted and reported once; nothing else changes.
    @Test(arguments: layouts, perHead)
    func aFullOpenRecordTheTierRefusesLosesItsTokens(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let slotBytes = try Engine(offloadConfig(layout, dir: dir.path, offloadBytes: 1 << 20)).stats().disk.slotBytes
        let e = try engine(layout, dir: dir.path, perHead: perHead) {
            $0.blockTokens = 16
            $0.offloadBytes = slotBytes  // one slot
        }
        let rows = UInt64(rowsPerLayer(e))
        let toks = try decodeStepCompactions(e, n: 64, steps: 32)  // the second full record finds no slot
        var s = e.stats().disk
        #expect(s.tokenRecords == 1 && s.tokensOnDisk == 32 * rows && s.tokensLost == 32 * rows)
        let state = e.evictionStates[e.sequences.slot(of: 1)]!
        #expect((0..<state.rows).map { state.parkedCount(row: $0) } == [Int](repeating: 16, count: 2 * Int(rows)),
                "the lost tokens left the state")
        var failure: KVError?
        do { try waitReady(e, 1) } catch { failure = error }
        #expect(failure?.code == .io && failure?.message.contains("stays usable") == true)
        #expect(try e.ready(1), "reported once")
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        s = e.stats().disk
        #expect(s.tokensLost == 32 * rows)
        try expectFreeReleasesRecords(e)
    }
}
