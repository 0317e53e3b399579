import Foundation
import CKVMemory
import TestSupport
import Testing
@testable import KVCache

/// The journal stays bounded while the tier runs: past 64 KiB plus 3 records per slot of the
/// slab a flush compacts it from the tier's own arrays (one STORED record per stored slot),
/// not only the next start.
@Suite("Disk tier: the journal is compacted while the tier runs", .serialized)
struct JournalCompactionTests {
    /// 60 rounds of a 20-block prompt replacing the previous one in a 20-slot tier append 40
    /// records a round (20 FREED, 20 STORED: 2560 bytes, 150 KiB in all); the journal never
    /// passes the mark (65536 + 192 x 20 bytes) by more than a round's records, and a restart
    /// finds the last prompt's 20 blocks, nothing dropped, served byte for byte. Before, the
    /// journal held every record until the next start (an audit: 59 MB for a 768 KiB slab
    /// after 10 s of churn).
    @Test(arguments: [Layout.paged, .contiguous])
    func theJournalIsCompactedWhileTheTierRuns(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var config = offloadConfig(layout, dir: dir.path)
        config.offloadBytes = 20 * 8192
        let journal = dir.path + "/kvcache.journal"
        var last: [Int32] = []
        var largest = 0
        do {
            let e = try Engine(config)
            #expect(e.stats().disk.slotBytes == 8192)
            for round in 0..<60 {
                last = tokens(81, seed: Int32(300 + round))
                try spillPrompt(e, UInt64(round + 1), last)
                let size = try FileManager.default.attributesOfItem(atPath: journal)[.size] as? Int ?? 0
                largest = max(largest, size)
            }
            #expect(e.stats().disk.journalAppendsFailed == 0)
        }
        #expect(largest <= 65536 + 192 * 20 + 40 * 64, "the journal reached \(largest) bytes")
        let e = try Engine(config)
        #expect(e.stats().disk.recoveredSlots == 20 && e.stats().disk.journalRecordsDropped == 0,
                "\(e.stats().disk.recoveredSlots) recovered, \(e.stats().disk.journalRecordsDropped) dropped")
        #expect(try e.createSequence(1, tokens: last) == 80)
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 80) { last[$0] } == 0)
    }

    /// A compaction renames the rewritten journal over the old one; until the directory's
    /// fsync succeeds a power loss may bring back the old journal, which lacks the records
    /// appended since. When that fsync fails (injected: `kvm_slab_fail_dir_syncs`) the
    /// compaction stands, the tier keeps working, and `kvc_engine_sync` reports KVC_ERR_IO
    /// until a later fsync of the directory succeeds (it returned OK for blocks a power loss
    /// could lose).
    @Test func aCompactionWhoseDirectoryFsyncFailedMakesSyncFailUntilOneSucceeds() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var config = offloadConfig(.paged, dir: dir.path)
        config.offloadBytes = 20 * 8192
        let journal = dir.path + "/kvcache.journal"
        let e = try Engine(config)
        let slab = e.offload!.tier.slab
        kvm_slab_fail_dir_syncs(slab, 0)
        try e.syncOffload()  // nothing compacted yet: no directory fsync owed
        var size = 0, compacted = false
        for round in 0..<60 where !compacted {
            let prompt = tokens(81, seed: Int32(500 + round))
            try e.createSequence(1, tokens: prompt)
            try fillKV(e, 1, count: 81) { prompt[$0] }
            try e.free(1)
            try e.trim()
            for _ in 0..<100 { e.poll(timeoutMicroseconds: 100) }
            let now = try FileManager.default.attributesOfItem(atPath: journal)[.size] as? Int ?? 0
            compacted = now < size
            size = now
        }
        #expect(compacted, "the churn compacted the journal")
        let failed = thrown { () throws(KVError) in try e.syncOffload() }
        #expect(failed?.code == .io && failed?.message.contains("injected fault") == true, "\(String(describing: failed))")
        #expect(thrown { () throws(KVError) in try e.syncOffload() }?.code == .io, "still owed")
        kvm_slab_fail_dir_syncs(slab, -1)
        try e.syncOffload()
        try e.syncOffload()
    }
}
