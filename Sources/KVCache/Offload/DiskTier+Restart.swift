import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The disk tier's restart: the journal's replay, and the index listed for the events of a new
/// engine.
extension DiskTier {
    /// Replays the journal: every slot whose latest valid record says STORED (and that lies
    /// inside the preallocated file) is indexed again; the journal is compacted to those
    /// records. A compaction that fails (no space for the new journal beside the old) is
    /// logged and the old journal kept: what the replay found stands, and FREED records for
    /// the slots it did not take are owed (`TierJournal.stale`). A torn or corrupt record is
    /// skipped, not the end of the replay: the slot's previous record wins instead, and a read
    /// verifies that slot's bytes against it as any other (`kvm_slot_verify`: a slot
    /// rewritten since is a miss). What it cannot use (`kvm_journal_skipped`, and STORED
    /// records past the slab file) is counted (`DiskTierStats.journalRecordsDropped`, a
    /// partial record at the end as one) and, when anything, logged on stderr with `dir` and
    /// each reason: the compaction forgets it for good.
    /// Events (after the memory tier's `allCleared`, `Engine.init`): one `allCleared` of the
    /// disk tier, then a `blockStored` per block indexed, each after its ancestors the tier
    /// holds (a router building a prefix tree needs parents first; slots are in no such
    /// order: a trim spills a freed chain tail first), so that a router still holding what
    /// this directory's previous engine announced (it may not see the restart: the events
    /// carry no instance epoch) ends with exactly what this one can find. The queue grows to
    /// hold them beside its usual capacity (`EventQueue.grow`): nothing drains it before the
    /// engine is created. The recovered slots enter the LRU in the order they were written
    /// (their records' generations), the oldest to be dropped first, each unverified
    /// (`DiskTier+Verification`: after a power loss its slot may hold another block). Cost: O(slots log slots)
    /// time (the journal read 256 records at a time), O(slots) scratch freed on return: 64
    /// bytes per slot of the latest records, 4 per recovered slot and the parents-first walk's
    /// 8 per slot; 24 bytes of event queue per recovered slot until the server drains the burst
    /// (`EventQueue.drain`; `RestartMemoryTests`).
    func recover() throws(KVError) {
        let allocated = Int(kvm_slab_allocated(slab))
        let latest = UnsafeMutablePointer<kvm_journal_record>.allocate(capacity: max(1, capacity))
        defer { latest.deallocate() }
        var skipped = kvm_journal_skipped()
        let top = kvm_slab_journal_replay(slab, latest, UInt32(capacity), &skipped)
        if top < 0 { throw KVError(.io, kvmMessage()) }
        generation = UInt64(top)
        var unusable: UInt64 = 0, underLostKey: UInt64 = 0
        var recovered: [Int32] = []
        for slot in 0..<capacity {
            let r = latest[slot]
            let stored = r.magic == KVM_JOURNAL_MAGIC && r.kind == UInt32(KVM_JOURNAL_STORED)
            let fits = slot < allocated && r.payload_bytes == UInt32(payloadBytes)
            if stored && !fits { unusable += 1 }
            // (A hash and fingerprint another slot already holds is the same block: found
            // there; another fingerprint of the hash gets its own entry, `HashChains`.) A block
            // fingerprinted under a lost key (the identity was gone: a new key) could never
            // match again, and its hash would keep the block out of the tier: dropped.
            let lostKey = keyIsNew && r.fingerprint != 0
            if stored && fits && lostKey { underLostKey += 1 }
            guard stored && fits && !lostKey && r.block_hash != 0 && index.find(r.block_hash, fingerprint: r.fingerprint) < 0 else {
                if stored { journal.stale(Int32(slot)) }  // until the compaction forgets it
                latest[slot].magic = 0
                continue
            }
            state[slot] = DiskTier.stored
            hashes[slot] = r.block_hash
            parents[slot] = r.parent_hash
            fingerprints[slot] = r.fingerprint
            generations[slot] = r.generation
            checksums[slot] = r.checksum
            index.insert(r.block_hash, Int32(slot), fingerprint: r.fingerprint)  // not refused: `find` missed it
            journal.recovered(Int32(slot))
            setUnverified(Int32(slot))
            recovered.append(Int32(slot))
            stats.storedSlots += 1
            stats.recoveredSlots += 1
        }
        // Oldest first, as the engine before the restart would drop them: in the order the
        // slots were written (their generations; hits are not journaled). Not slot order: once
        // slots are reused the lowest often hold the newest blocks.
        recovered.sort { generations[Int($0)] < generations[Int($1)] }
        for slot in recovered { lru.append(slot) }
        let reasons: [(count: UInt64, why: String)] = [
            (skipped.unreadable, "torn or corrupt"),
            (skipped.torn_tail_bytes > 0 ? 1 : 0, "torn tail of \(skipped.torn_tail_bytes) bytes"),
            (skipped.generation, "with a generation at or past 2^63, no engine's"),
            (skipped.outside, "past offload_bytes"),
            (unusable, "past the slab file"),
            (underLostKey, "fingerprinted under the key of a lost \(TierIdentity.fileName)"),
        ]
        stats.journalRecordsDropped = reasons.reduce(0) { $0 + $1.count }
        if stats.journalRecordsDropped > 0 {
            // Once per start, for the operator: the blocks were cached, not lost data, but a
            // restart that forgets them costs recomputation.
            let why = reasons.filter { $0.count > 0 }.map { "\($0.count) \($0.why)" }.joined(separator: ", ")
            kvm_log("offload journal in '\(dir)': \(stats.journalRecordsDropped) records dropped (\(why)); \(stats.recoveredSlots) blocks recovered")
        }
        try events.grow(by: Int(stats.recoveredSlots) + 1, "for the \(stats.recoveredSlots) blocks the disk tier found, offload_bytes")
        events.push(KVEvent(kind: .allCleared, tier: KVEvent.diskTier, blockHash: 0, parentHash: 0))
        forEachIndexedParentsFirst { events.push($0) }
        // Compacted to the records of the slots taken, as while the tier runs. On failure the
        // old journal stands (its replay is what the tier now holds); the slots whose STORED
        // records the tier did not take owe FREED records, appended before they are
        // rewritten (they wait in `waitingSlots`). Logged, not refused: a tier that filled its
        // disk must reopen.
        let compaction = journal.compact()
        if compaction < 0 {
            kvm_log("offload journal in '\(dir)' was not compacted (\(journal.lastError)); the tier opens on it as replayed")
        } else if compaction == 1 {
            kvm_log("offload journal in '\(dir)' was compacted, but \(journal.lastError): a power loss may bring back the old one")
        }
        for slot in stride(from: allocated - 1, through: 0, by: -1) where state[slot] == DiskTier.free { pushFree(Int32(slot)) }
    }

    /// Calls `body` with a `blockStored` (tier `KVEvent.diskTier`, hash, parent) per hash the
    /// index holds (its first slot's, stored or being written: slots of a colliding hash are
    /// listed once, as the events announce a hash once), each after its ancestors the tier
    /// holds (`HashChains.forEachParentsFirst`). Changes nothing.
    /// Cost: O(slots) time, two hash lookups per slot with a hash, 8 bytes per slot of scratch.
    private func forEachIndexedParentsFirst(_ body: (KVEvent) -> Void) {
        index.forEachParentsFirst(ids: capacity, hashes: hashes, parents: parents, tier: KVEvent.diskTier, body)
    }

    /// The tier's index as events, appended to `out`: one `allCleared` of the disk tier, then
    /// `forEachIndexedParentsFirst`'s `blockStored`s; applied after every tier-1 event pushed
    /// so far, they leave a view of exactly what `lookup` finds. Changes nothing.
    /// Cost: O(slots) time, 8 bytes per slot of scratch, 24 bytes of `out` per indexed block.
    func appendIndexed(to out: inout [KVEvent]) {
        out.reserveCapacity(out.count + 1 + index.hashCount)
        out.append(KVEvent(kind: .allCleared, tier: KVEvent.diskTier, blockHash: 0, parentHash: 0))
        forEachIndexedParentsFirst { out.append($0) }
    }
}
