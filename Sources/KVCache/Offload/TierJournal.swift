import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// What the disk tier's journal (`kvcache.journal`, `kvm_slab.h`) says of each slot, and the
/// records it still owes: at most one per slot, built when it is appended from the tier's
/// per-slot arrays, so a slot that changed twice before an append costs one record.
///
/// Per slot the journal says *nothing* (no live record: the slot may be rewritten),
/// *stored* (a STORED record of the slot's block, written or owed) or *freed* (a FREED record
/// owed over an older STORED one; *nothing* once written). An owed record stays owed until an
/// append of it succeeded: a failed append (a full disk, an I/O error) loses none, is counted
/// (`appendsFailed`) and tried again by the next `flush`; until then a restart would not find
/// what the owed STORED records describe, and `kvc_engine_sync` says so (`DiskTier.sync`),
/// and a slot owing its FREED record is not rewritten (`DiskTier.waitingSlots`): on a full
/// disk the tier stops taking new blocks into slots it freed until the journal can record that.
/// `compact` rewrites the whole journal from the same arrays (a record per stored slot), so
/// the tier can keep it bounded while it runs (`compactIfLong`, after each flush).
///
/// Invariant: a slot is owed a record exactly when it is in `owed[0..<owedCount]`, once.
/// A STORED record reads the tier's arrays (block hash, parent, fingerprint, generation,
/// checksum), which
/// stay as they were journaled while the journal says *stored*: the tier rewrites a slot only
/// after it was freed. Cost: 1 byte and 4 bytes of list per slot; O(1) per change; a flush
/// builds and appends the owed records in batches of `batchRecords`. Not thread-safe (the
/// engine's lock).
final class TierJournal {
    private static let nothing: UInt8 = 0, stored: UInt8 = 1, freed: UInt8 = 2
    /// Set in `says` while the slot is in `owed`.
    private static let owedBit: UInt8 = 0x80

    private let slab: OpaquePointer
    private let slots: Int
    private let says: UnsafeMutablePointer<UInt8>
    private let owed: UnsafeMutablePointer<Int32>
    /// Slots owed a record, in `owed`.
    private(set) var owedCount = 0
    private let batch: UnsafeMutablePointer<kvm_journal_record>
    /// Records appended with one write at most.
    let batchRecords: Int
    private let hashes, parents, fingerprints, generations, checksums: UnsafePointer<UInt64>
    private let payloadBytes: UInt32

    /// Appends that failed (each a write of up to `batchRecords` records), and the last one's
    /// message.
    private(set) var appendsFailed: UInt64 = 0
    private(set) var lastError = ""
    /// True from a failed append until an append (or a compaction) succeeds.
    private(set) var appendFailing = false

    /// The journal's length when its records last may have become durable (`mayBeDurable`):
    /// what a power loss may leave of it at least, the records after it possibly lost. Tests
    /// emulate a power loss by cutting the journal to it (`PowerLossTests`).
    private(set) var durableBytes: UInt64 = 0

    /// For the `slots` slots of `slab`, whose STORED records are built from the tier's arrays.
    init(slab: OpaquePointer, slots: Int, batchRecords: Int, payloadBytes: Int, hashes: UnsafePointer<UInt64>,
         parents: UnsafePointer<UInt64>, fingerprints: UnsafePointer<UInt64>, generations: UnsafePointer<UInt64>,
         checksums: UnsafePointer<UInt64>) {
        self.slab = slab
        self.slots = slots
        self.batchRecords = batchRecords
        self.payloadBytes = UInt32(payloadBytes)
        self.hashes = hashes
        self.parents = parents
        self.fingerprints = fingerprints
        self.generations = generations
        self.checksums = checksums
        says = .allocate(capacity: slots)
        says.initialize(repeating: TierJournal.nothing, count: slots)
        owed = .allocate(capacity: slots)
        batch = .allocate(capacity: batchRecords)
        durableBytes = kvm_slab_journal_bytes(slab)  // a journal a past run left may all be durable
    }

    deinit {
        says.deallocate()
        owed.deallocate()
        batch.deallocate()
    }

    /// True each time the owed records reach another whole batch: time to `flush` (while
    /// appends fail, once per batch more, not once per record).
    var isBatchFull: Bool { owedCount > 0 && owedCount % batchRecords == 0 }

    /// `slot`'s write completed: a STORED record of its block is owed.
    func stored(_ slot: Int32) { owe(slot, TierJournal.stored) }

    /// `slot` was freed: a FREED record is owed when the journal says stored (else nothing).
    func freed(_ slot: Int32) {
        if says[Int(slot)] & ~TierJournal.owedBit == TierJournal.stored { owe(slot, TierJournal.freed) }
    }

    /// A restart's replay found `slot`'s STORED record and the tier holds its block again.
    func recovered(_ slot: Int32) { says[Int(slot)] = TierJournal.stored }

    /// The journal still holds a STORED record of `slot` that the tier did not take (a
    /// restart whose compaction failed kept the old records): a FREED record is owed, so
    /// that the slot is rewritten only once it is written, as any freed slot.
    func stale(_ slot: Int32) { owe(slot, TierJournal.freed) }

    /// Rewrites the journal to one STORED record per slot it says stored, built from the
    /// tier's arrays (`kvm_slab_journal_rewrite_begin`/`_add`/`_commit`, `batchRecords` per
    /// write), owed ones included: nothing is owed after it. Returns 0; 1 when only the
    /// directory's fsync after the rename failed (`lastError` says so: the compaction stands,
    /// and until a sync's fsync of the directory a power loss may bring back the old journal, valid too:
    /// `directorySyncOwed`); or -errno, the old journal
    /// as it was and the owed records owed, `lastError` saying why. Used after a restart's
    /// replay (the slots it took say stored) and while the tier runs.
    /// Cost: O(slots), a write per batch, two fsyncs.
    func compact() -> Int32 {
        let begun = kvm_slab_journal_rewrite_begin(slab)
        guard begun == 0 else {
            lastError = kvmMessage()
            return begun
        }
        var n = 0
        for s in 0..<slots where says[s] & ~TierJournal.owedBit == TierJournal.stored {
            batch[n] = record(Int32(s))
            n += 1
            guard n == batchRecords else { continue }
            let added = kvm_slab_journal_rewrite_add(slab, batch, UInt32(n))
            guard added == 0 else { return abortCompaction(added) }
            n = 0
        }
        if n > 0 {
            let added = kvm_slab_journal_rewrite_add(slab, batch, UInt32(n))
            if added != 0 { return abortCompaction(added) }
        }
        let committed = kvm_slab_journal_rewrite_commit(slab)
        if committed != 0 { lastError = kvmMessage() }
        if committed >= 0 {
            compacted()
            renames += 1
            mayBeDurable()
        }
        if committed == 1 { directorySyncOwed = true }
        return committed
    }

    /// Every record appended so far may be durable from now on: a sync pinned the journal for
    /// its fdatasync (`DiskTier.beginSync`; also when that then fails, which may have written
    /// some), or a compaction committed its fsynced copy. O(1).
    func mayBeDurable() {
        durableBytes = kvm_slab_journal_bytes(slab)
    }

    /// True after a compaction whose rename the directory's fsync did not make durable
    /// (`compact` returned 1): until a later fsync of the directory succeeds (`directorySynced`),
    /// a power loss may bring back the old journal, without the records appended since.
    private(set) var directorySyncOwed = false

    /// Compactions committed (renamed over the journal), ever.
    private(set) var renames: UInt64 = 0

    /// The journal's directory was fsynced (`PinnedSync`, without the engine's lock) after
    /// `renames` compactions: that ends `directorySyncOwed` unless one committed since, whose
    /// rename that fsync may not cover.
    func directorySynced(renames before: UInt64) {
        if renames == before { directorySyncOwed = false }
    }

    /// The journal's length past which a flush compacts it (`compactIfLong`, from the tier's
    /// arrays: one record per stored slot), so that it stays bounded while the tier runs, not
    /// only cut at the next start: `KVM_JOURNAL_RESERVE_BYTES` (64 KiB) plus 3 records per
    /// slot of the slab. The slab's growth leaves free `kvm_slab_growable`'s reserve, 64 KiB
    /// plus 4 records per slot: room for such a journal and its compacted copy beside it. So
    /// the journal takes at most about that (plus a batch of records), and a compaction
    /// (O(slots) and two fsyncs, under the engine's lock) comes at most once per 64 KiB and 2
    /// records per slot appended.
    private var compactionBytes: UInt64 {
        let record = UInt64(MemoryLayout<kvm_journal_record>.size)
        return UInt64(KVM_JOURNAL_RESERVE_BYTES) + (UInt64(KVM_JOURNAL_RESERVE_PER_SLOT) - record) * UInt64(kvm_slab_allocated(slab))
    }

    /// The journal's length when a compaction failed (a full disk), else 0: the next one waits
    /// until it grew by `compactionBytes` more.
    private var compactionFailedAt: UInt64 = 0

    /// Compacts the journal when it is longer than `compactionBytes` (plus the length a failed
    /// compaction left it at): nil when it is not, else `compact`'s result and the journal's
    /// length before it. A failed compaction leaves the old journal standing, tried again once
    /// it grew by as much again. Cost: an fstat; when due, `compact`'s.
    func compactIfLong() -> (result: Int32, bytes: UInt64)? {
        let bytes = kvm_slab_journal_bytes(slab)
        guard bytes > compactionBytes + compactionFailedAt else { return nil }
        let result = compact()
        compactionFailedAt = result >= 0 ? 0 : bytes
        return (result, bytes)
    }

    private func abortCompaction(_ rc: Int32) -> Int32 {
        lastError = kvmMessage()
        kvm_slab_journal_rewrite_abort(slab)
        return rc
    }

    /// The journal was rewritten to the STORED records of the slots it says stored (a
    /// compaction): nothing is owed any more, and freed slots say nothing. O(owed records).
    private func compacted() {
        for i in 0..<owedCount { written(owed[i]) }
        owedCount = 0
        appendFailing = false
    }

    /// True while `slot`'s FREED record is owed: the tier must not rewrite it until a flush
    /// appended it (however long appends fail).
    func owesFreed(_ slot: Int32) -> Bool { says[Int(slot)] == TierJournal.freed | TierJournal.owedBit }

    private func owe(_ slot: Int32, _ kind: UInt8) {
        let s = Int(slot)
        if says[s] & TierJournal.owedBit == 0 {
            owed[owedCount] = slot
            owedCount += 1
        }
        says[s] = kind | TierJournal.owedBit
    }

    /// Appends every owed record, `batchRecords` per write, oldest owed first. A failed
    /// append stops there (counted, `lastError`): it and the records after it stay owed. True
    /// when none is owed. Cost: an fstat and a write per batch.
    @discardableResult
    func flush() -> Bool {
        var done = 0
        while done < owedCount {
            let n = min(batchRecords, owedCount - done)
            for i in 0..<n { batch[i] = record(owed[done + i]) }
            guard kvm_slab_journal_append(slab, batch, UInt32(n)) == 0 else {
                appendsFailed += 1
                appendFailing = true
                lastError = kvmMessage()
                break
            }
            appendFailing = false
            for i in 0..<n { written(owed[done + i]) }
            done += n
        }
        if done > 0 {
            owedCount -= done
            memmove(owed, owed + done, owedCount * MemoryLayout<Int32>.size)
        }
        return owedCount == 0
    }

    /// `slot`'s owed record is in the journal: a STORED one stays what it says, a FREED one
    /// leaves nothing. The caller takes the slot off `owed`.
    private func written(_ slot: Int32) {
        let s = Int(slot)
        says[s] = says[s] & ~TierJournal.owedBit == TierJournal.stored ? TierJournal.stored : TierJournal.nothing
    }

    /// The record `slot` is owed. A FREED record carries the slot's generation (the latest
    /// written to it) and nothing else. A restart resumes the count above the largest
    /// generation its journal holds; once a compaction dropped FREED records that may be below
    /// ones written before, but never below a STORED record's, so the recovered slots and later
    /// writes keep their write order (the LRU a restart rebuilds, `DiskTier.recover`).
    private func record(_ slot: Int32) -> kvm_journal_record {
        let s = Int(slot)
        var r = kvm_journal_record()
        r.slot = UInt32(slot)
        r.generation = generations[s]
        r.payload_bytes = payloadBytes
        if says[s] & ~TierJournal.owedBit == TierJournal.stored {
            r.kind = UInt32(KVM_JOURNAL_STORED)
            r.block_hash = hashes[s]
            r.parent_hash = parents[s]
            r.fingerprint = fingerprints[s]
            r.checksum = checksums[s]
        } else {
            r.kind = UInt32(KVM_JOURNAL_FREED)
        }
        return r
    }
}
