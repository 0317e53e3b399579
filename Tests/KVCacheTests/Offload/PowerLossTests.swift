import Foundation
import TestSupport
import Testing
@testable import KVCache

/// A power loss may keep every completed slot write (O_DIRECT) and lose the journal records
/// appended after its last durable point (a sync's fdatasync, a compaction's fsynced copy).
/// Emulated here by cutting the journal back to that point (`offloadDurableJournalBytes`)
/// after the tier rewrote slots: the restart then recovers STORED records over other blocks'
/// bytes (revpower, 2026-11-25: a swap-out shared such slots, returning KVC_OK with the
/// sequence's blocks nowhere). Reads verify every slot, so such a block may fail its first
/// read, and is dropped then; a swap-out never shares a slot no read verified
/// (`DiskTier+Verification`).
@Suite("Disk tier: an emulated power loss after slot rewrites", .serialized)
struct PowerLossTests {
    /// Prompt `i`'s 33 tokens (8 full blocks of 4); each starts with its own token.
    static func prompt(_ i: Int) -> [Int32] { tokens(33, seed: Int32(100 + i)) }
    static let refills = 12

    /// A tier of 40 slots in `dir`: the refills' 96 blocks rewrite every slot at least twice.
    static func config(dir: String) -> EngineConfig {
        var c = offloadConfig(.paged, dir: dir)
        c.offloadBytes = 40 * tierSlotBytes(c)
        return c
    }

    /// Spills prompt 0, syncs, then spills the refills (rewriting prompt 0's slots, no
    /// compaction: about 170 records), destroys the engine and cuts its journal back to its
    /// last durable point.
    static func spillSyncRefillAndLosePower(dir: String) throws {
        var durable: UInt64 = 0
        do {
            let e = try Engine(config(dir: dir))
            func spill(_ i: Int) throws {
                let p = prompt(i)
                let cached = try e.createSequence(1, tokens: p)
                try waitReady(e, 1)
                try fillKV(e, 1, count: p.count - cached, from: cached) { p[$0] }
                try e.free(1)
                try e.trim()
            }
            try spill(0)
            try e.syncOffload()
            for i in 1...refills { try spill(i) }
            #expect(e.stats().disk.slotsEvicted >= 56, "the refills dropped prompt 0's slots and rewrote them")
            durable = e.offloadDurableJournalBytes
        }
        #expect(durable > 0)
        #expect(truncate(dir + "/kvcache.journal", off_t(durable)) == 0)
    }

    /// After the power loss every block the restart recovered either reads back byte-identical,
    /// or its read fails with `io` (the slot holds another block now): the failed block leaves
    /// the index, so it is spilled again and then reads back. A live sequence computed in
    /// memory meanwhile loses nothing.
    @Test func everyRecoveredBlockReadsBackOrFailsOnceAndIsSpilledAgain() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        try PowerLossTests.spillSyncRefillAndLosePower(dir: dir.path)
        let e = try Engine(PowerLossTests.config(dir: dir.path))
        #expect(e.stats().disk.recoveredSlots > 0)
        let live = PowerLossTests.prompt(PowerLossTests.refills + 1)
        #expect(try e.createSequence(99, tokens: live) == 0)
        try fillKV(e, 99, count: live.count) { live[$0] }
        var failedReads = 0, notReadBack: [Int] = []
        for i in 0...PowerLossTests.refills {
            let p = PowerLossTests.prompt(i)
            var readBack = false
            for _ in 0..<16 where !readBack {
                let cached = try e.createSequence(1, tokens: p)
                do throws(KVError) {
                    try waitReady(e, 1)
                } catch {
                    #expect(error.code == .io, "prompt \(i): \(error)")
                    failedReads += 1
                    try e.free(1)
                    continue
                }
                #expect(try kvDifferences(e, 1, count: cached) { p[$0] } == 0, "prompt \(i)")
                readBack = cached == 32
                // Not all on disk (never spilled, dropped by a failed read, or evicted): spill it.
                if !readBack { try fillKV(e, 1, count: p.count - cached, from: cached) { p[$0] } }
                try e.free(1)
                try e.trim()
            }
            if !readBack { notReadBack.append(i) }
        }
        #expect(notReadBack == [], "prompts whose blocks never read back from the tier")
        #expect(try kvDifferences(e, 99, count: live.count) { live[$0] } == 0, "the live sequence lost nothing")
        print("PowerLossTests: \(e.stats().disk.recoveredSlots) recovered, \(failedReads) failed reads")
    }

    /// revpower's plswap: a sequence computed in memory with prompt 0's blocks is swapped out
    /// after the power loss; the swap-out may share a slot only when it holds the block, and
    /// the slot it writes instead is the one a later lookup finds.
    @Test func aSwapOutAfterAPowerLossSharesNoSlotThatLostItsBlock() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        try PowerLossTests.spillSyncRefillAndLosePower(dir: dir.path)
        let e = try Engine(PowerLossTests.config(dir: dir.path))
        let p = PowerLossTests.prompt(0)
        #expect(try e.createSequence(1, tokens: [p[0]]) == 0)
        try e.append(1, tokens: Array(p[1...]))
        try fillKV(e, 1, count: p.count) { p[$0] }
        try e.swapOut(1)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: p.count) { p[$0] } == 0)
        try e.free(1)
        try e.trim()
        // The swap-out's slots replaced the recovered ones in the index: a create reads them.
        let cached = try e.createSequence(2, tokens: p)
        #expect(cached == 32)
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: cached) { p[$0] } == 0)
    }

    /// The cost of not trusting a recovered slot: a swap-out after a plain restart writes the
    /// blocks no read verified yet (8 full blocks and the partial one, the sequence's own), and
    /// shares them once a read verified them (only the partial block written).
    @Test func aSwapOutSharesARecoveredSlotOnlyOnceAReadVerifiedIt() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let p = PowerLossTests.prompt(0)
        do {
            let e = try Engine(PowerLossTests.config(dir: dir.path))
            #expect(try e.createSequence(1, tokens: p) == 0)
            try fillKV(e, 1, count: p.count) { p[$0] }
            try e.free(1)
            try e.trim()
        }
        func swapOutWrites(readFirst: Bool) throws -> UInt64 {
            let e = try Engine(PowerLossTests.config(dir: dir.path))
            #expect(e.stats().disk.recoveredSlots == 8)
            if readFirst {
                #expect(try e.createSequence(2, tokens: p) == 32)
                try waitReady(e, 2)
                try e.free(2)
                try e.trim()
            }
            #expect(try e.createSequence(1, tokens: [p[0]]) == 0)
            try e.append(1, tokens: Array(p[1...]))
            try fillKV(e, 1, count: p.count) { p[$0] }
            let before = e.stats().disk
            try e.swapOut(1)
            try e.swapIn(1)
            try waitReady(e, 1)
            #expect(try kvDifferences(e, 1, count: p.count) { p[$0] } == 0)
            try e.free(1)
            return (e.stats().disk.bytesWritten - before.bytesWritten) / before.slotBytes
        }
        #expect(try swapOutWrites(readFirst: false) == 9)
        #expect(try swapOutWrites(readFirst: true) == 1)
    }
}
