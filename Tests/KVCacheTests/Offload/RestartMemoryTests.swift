#if canImport(Glibc)
import Glibc
#endif
import CKVMemory
import TestSupport
import Testing
@testable import KVCache

/// A restart's memory is per slot of `offload_bytes`, not per journal record: the replay reads
/// the journal in batches of 256 records into a table of the latest record per slot
/// (`kvm_slab_journal_replay`), and the recovered tier holds its per-slot arrays, index and
/// events. Measured (docs/disk-tier.md, "Restart at millions of slots"): the create's peak
/// resident set grows by ~190-200 bytes per slot whatever the journal's length (at 1, 2 and 4
/// million slots, journals of 1 and 3 records per slot). The peak is process-wide, so the
/// test runs in a child (an exit test) that reports what went wrong on stderr ("restart
/// memory: " lines).
@Suite("Disk tier restart: memory per slot")
struct RestartMemoryTests {
    static let prefix = "restart memory: "
    static let slots = 65536
    /// Records per slot in the journal replayed: one STORED, then 4 rounds of FREED and STORED
    /// (576 bytes per slot, 36 MiB; three times the most a running tier leaves, 192 bytes).
    static let recordsPerSlot = 9
    /// The bound asserted: 256 bytes per slot plus the staging buffers (populated at create:
    /// 8 MiB here, 128 bytes per slot of this small tier) plus 4 MiB for the rest of the engine.
    static func boundBytes(stagingBytes: Int) -> Int { 256 * slots + stagingBytes + (4 << 20) }

    /// A tier of `slots` 8 KiB slots in `dir` for `config`: the directory claimed by an engine
    /// (its identity file), then a journal of `recordsPerSlot` records per slot appended with the
    /// slab's own calls (chains of 64 blocks; the latest record of each slot STORED), and the
    /// slab cut to its full size (sparse: nothing is read from it at a restart). What failed.
    static func writeTier(_ config: EngineConfig, dir: String) -> [String] {
        do { _ = try Engine(config) } catch { return ["the first engine: \(error)"] }
        var slabConfig = kvm_slab_config()
        slabConfig.slot_bytes = tierSlotBytes(config)
        slabConfig.max_bytes = UInt64(slots) * slabConfig.slot_bytes
        var opened: OpaquePointer?
        _ = dir.withCString { path -> Int32 in
            slabConfig.dir = path
            return kvm_slab_open(&slabConfig, &opened)
        }
        guard let slab = opened else { return ["kvm_slab_open: \(String(cString: kvm_error()))"] }
        defer { kvm_slab_close(slab) }
        var batch: [kvm_journal_record] = []
        var generation: UInt64 = 0
        var failed = 0
        func append(_ slot: Int, stored: Bool) {
            var r = kvm_journal_record()
            r.slot = UInt32(slot)
            r.kind = UInt32(stored ? KVM_JOURNAL_STORED : KVM_JOURNAL_FREED)
            r.payload_bytes = UInt32(config.blockBytesAllTensors)
            r.generation = generation
            if stored {
                generation += 1
                r.generation = generation
                r.block_hash = generation &* 0x9E37_79B9_7F4A_7C15 | 1
                r.parent_hash = slot % 64 == 0 ? 0 : (generation - 1) &* 0x9E37_79B9_7F4A_7C15 | 1
                r.checksum = generation
            }
            batch.append(r)
            if batch.count == 4096 { flush() }
        }
        func flush() {
            if kvm_slab_journal_append(slab, &batch, UInt32(batch.count)) != 0 { failed += 1 }
            batch.removeAll(keepingCapacity: true)
        }
        for slot in 0..<slots { append(slot, stored: true) }
        for _ in 0..<(recordsPerSlot - 1) / 2 {
            for slot in 0..<slots {
                append(slot, stored: false)
                append(slot, stored: true)
            }
        }
        flush()
        let bytes = kvm_slab_journal_bytes(slab)
        if failed > 0 || bytes != UInt64(recordsPerSlot * slots * MemoryLayout<kvm_journal_record>.size) {
            return ["\(failed) appends failed, the journal is \(bytes) bytes"]
        }
        return truncate(dir + "/kvcache.slab", off_t(slabConfig.max_bytes)) == 0 ? [] : ["truncate: \(errno)"]
    }

    @Test func aRestartsPeakMemoryIsPerSlotNotPerJournalRecord() async throws {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let dir = ScratchDir("restart-memory")
            var config = offloadConfig(.paged, dir: dir.path, memoryBytes: 1 << 20)
            config.offloadBytes = UInt64(RestartMemoryTests.slots) * tierSlotBytes(config)
            var problems = RestartMemoryTests.writeTier(config, dir: dir.path)
            if !resetPeakResident() { problems.append("/proc/self/clear_refs cannot be written") }
            let before = processStatusBytes("VmRSS")
            let e = try Engine(config)
            let peak = processStatusBytes("VmHWM") - before
            let recovered = e.stats().disk.recoveredSlots
            if recovered != UInt64(RestartMemoryTests.slots) { problems.append("\(recovered) slots recovered") }
            let tier = e.offload!.tier!
            let bound = RestartMemoryTests.boundBytes(stagingBytes: tier.staging.count * tier.slotBytes)
            if peak > bound {
                problems.append("the create's peak resident set grew by \(peak) bytes (\(peak / RestartMemoryTests.slots) per slot), "
                    + "more than \(bound); the journal is \(RestartMemoryTests.recordsPerSlot * 64) bytes per slot")
            }
            dir.remove()
            ExitReport.exit(RestartMemoryTests.prefix, problems)
        }
        ExitReport.expectNothingReported(Self.prefix, result)
    }
}
