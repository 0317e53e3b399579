import CKVMemory
import Foundation

/// What the journal of a tier whose engine was killed names, read by the tier's own replay
/// (`kvm_slab_journal_replay`) through a read-only open (`kvm_slab_open_peer`, which takes no
/// lock and writes nothing), before an engine reopens (and compacts) it: the slots whose latest
/// valid record is STORED (what a restart recovers) or FREED, what the replay skipped, the
/// slab's size and the last records, so that a failed expectation on the restart says which.
struct KilledJournal: CustomStringConvertible {
    var journalBytes = -1
    var slabBytes = -1
    /// Slots whose latest valid record is STORED, and FREED.
    var stored = 0, freed = 0
    var skipped = kvm_journal_skipped()
    /// The last records in file order, as "slot:S|F generation".
    var tail: [String] = []
    /// Why the replay could not run, or "".
    var failure = ""

    /// Replays `dir`'s journal for `slots` slots of `slotBytes`. O(journal).
    init(dir: String, slots: Int, slotBytes: Int) {
        journalBytes = (try? FileManager.default.attributesOfItem(atPath: dir + "/kvcache.journal")[.size] as? Int) ?? -1
        slabBytes = (try? FileManager.default.attributesOfItem(atPath: dir + "/kvcache.slab")[.size] as? Int) ?? -1
        var config = kvm_slab_config()
        config.slot_bytes = UInt64(slotBytes)
        var slab: OpaquePointer?
        let opened = dir.withCString { path -> Int32 in
            config.dir = path
            return kvm_slab_open_peer(&config, &slab)
        }
        guard opened == 0, let slab else {
            failure = "peer open: \(String(cString: kvm_error()))"
            return
        }
        defer { kvm_slab_close(slab) }
        var latest = [kvm_journal_record](repeating: kvm_journal_record(), count: slots)
        guard kvm_slab_journal_replay(slab, &latest, UInt32(slots), &skipped) >= 0 else {
            failure = "replay: \(String(cString: kvm_error()))"
            return
        }
        for r in latest where r.magic == KVM_JOURNAL_MAGIC {
            if r.kind == UInt32(KVM_JOURNAL_STORED) { stored += 1 } else { freed += 1 }
        }
        let count = max(0, journalBytes / MemoryLayout<kvm_journal_record>.size)
        var last = [kvm_journal_record](repeating: kvm_journal_record(), count: min(8, count))
        let read = kvm_slab_journal_read(slab, UInt64((count - last.count) * MemoryLayout<kvm_journal_record>.size), &last, UInt32(last.count))
        tail = last.prefix(Int(max(0, read))).map { "\($0.slot):\($0.kind == UInt32(KVM_JOURNAL_STORED) ? "S" : "F") \($0.generation)" }
    }

    var description: String {
        if !failure.isEmpty { return "journal \(journalBytes) bytes, slab \(slabBytes) bytes: \(failure)" }
        return "journal \(journalBytes) bytes (\(journalBytes / MemoryLayout<kvm_journal_record>.size) records), slab \(slabBytes) bytes; "
            + "latest record per slot: \(stored) STORED, \(freed) FREED; skipped \(skipped.unreadable) unreadable, "
            + "\(skipped.torn_tail_bytes) torn tail bytes, \(skipped.generation) past the generation limit, \(skipped.outside) outside; "
            + "last records \(tail.joined(separator: " "))"
    }
}
