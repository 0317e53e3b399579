import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// A block found in a peer's index, and what its slot held when the peer journaled it: a read
/// of it is served only when the slot's header and payload still match these (the peer may
/// have freed and rewritten the slot since), so it is captured at lookup, not read again at
/// completion.
struct PeerRead {
    /// Which peer (`DiskTier.peers` index; its slab is I/O file `peer + 1`) and which slot.
    var peer: Int32
    var slot: Int32
    var hash: UInt64
    var parent: UInt64
    var generation: UInt64
    var checksum: UInt64
}

/// A read-only view of another engine's disk tier (`peer_offload_dirs`): its slab opened
/// O_RDONLY (`kvm_slab_open_peer`: no lock taken, nothing created or written in its
/// directory) and an index from block hash to slot built from its journal.
///
/// Freshness: `refresh` tails the peer's journal: one `fstat` of it and one `stat` of its path
/// (`kvm_slab_peer_refresh`: a path naming other files than the open ones, the directory moved
/// aside and made anew, is a replaced journal or slab), and only when it grew
/// the complete records past the last one read (fixed 64-byte records, each checksummed; a
/// partial or torn one at the end is read again later, never acted on). A journal renamed over
/// (the owner compacted it, at a restart or while it runs) or shrunk is replayed from its start. The latest
/// record of a slot wins: STORED indexes its block (a newer slot for the same hash and
/// fingerprint replaces the older; one of another fingerprint gets its own entry,
/// `HashChains`, so a crafted block neither hides nor reveals another), FREED drops it.
///
/// Fingerprints: a peer's journal records each block's `BlockFingerprint` under the peer
/// directory's key (`TierIdentity`), which this view reads with the identity (again whenever
/// the journal is replaced); `find` serves a block only when the prompt's fingerprint under
/// that key equals the recorded one, so a block of a colliding public hash is a miss here too.
///
/// A peer that vanishes (its journal removed) gives misses until its journal is back. One whose
/// slab is removed or replaced (its directory wiped or recreated, e.g. by a restart that
/// starts it empty) gives misses (`replaced`) until the directory holds a tier of this
/// engine's identity again: then `reopen` opens the new files and the engine's I/O queue reads
/// the new slab (`DiskTier.findInPeers`, once no read of the old one is in flight). Nothing
/// here is trusted: reads are verified (`DiskTier`), and a read refused as stale drops its
/// entry (`forget`).
///
/// Cost: memory of ~64 bytes per slot of `capacity`: the peer's slab at open, grown (doubled)
/// when its journal names a slot beyond, so that every slot of a peer that grew since (or of a
/// larger one reopened) is indexed, up to `DiskTier.maxSlots` (the most any tier has); a lookup
/// O(1); a refresh one `fstat` and one `stat` plus one `pread` per 256 new records, and O(capacity) when it
/// grows the index or empties it (a replay from the start, a peer that vanished: once, not
/// per lookup while it stays away). Not thread-safe: the engine serialises calls.
final class PeerTier {
    /// The directory, as configured.
    let dir: String
    /// Slots the index covers now (`grow(toCover:)` raises it).
    private(set) var capacity: Int
    private let payloadBytes: Int
    /// What the peer's blocks must be (checked at open and at every `reopen`).
    private let identity: TierIdentity
    /// The peer directory's fingerprint key, read with its identity.
    private(set) var fingerprint: BlockFingerprint
    private let slotBytes: Int
    private let forceBuffered: Bool
    private var slab: OpaquePointer
    private var index: HashChains
    private var hashes: UnsafeMutablePointer<UInt64>
    private var parents: UnsafeMutablePointer<UInt64>
    /// Per slot: the block's fingerprint under `fingerprint` (0: unknown).
    private var fingerprints: UnsafeMutablePointer<UInt64>
    private var generations: UnsafeMutablePointer<UInt64>
    private var checksums: UnsafeMutablePointer<UInt64>
    /// Byte offset of the next journal record to read.
    private var journalBytes: UInt64 = 0
    private let records: UnsafeMutablePointer<kvm_journal_record>
    private static let batchRecords = 256
    /// Slots indexed at least, before any growth (one extent of small slots).
    static let initialCapacity = 64
    /// Journal records of another payload size seen (an engine of another shape wrote them).
    private var foreignRecords = 0
    /// True once `grow` failed (logged once: later failures leave their blocks misses quietly).
    private var loggedGrowthFailure = false
    /// Why the peer gives only misses now, or nil.
    private(set) var unavailable: String?
    /// True once the peer's slab was removed or replaced: misses until `reopen` succeeds.
    private(set) var replaced = false
    /// The directory as it was when `reopen` first failed on it (`DirectoryStamp`): while it
    /// stays so, `reopen` tries once more `DirectoryStamp.racySeconds` later, and not again
    /// once that retry failed too (`failureConfirmed`).
    private var failedStamp: DirectoryStamp?
    /// True once a retry `DirectoryStamp.confirms` `failedStamp` failed as well.
    private var failureConfirmed = false
    /// Times `reopen` read the directory's identity and tried to open its files (tests: a peer
    /// that keeps failing is not read again until its directory changes).
    private(set) var reopenAttempts = 0

    /// Opens the peer in `dir` for slots of `slotBytes` (payload `payloadBytes`) and indexes its
    /// journal, its index sized for the slab's slots at open (at least `initialCapacity`) and
    /// grown as its journal names more. Throws `outOfMemory` when no descriptor is left for its
    /// files (`KVError.file`), `io` when the directory or its files cannot be opened otherwise (none yet: no engine has used it, or no `TierIdentity`),
    /// `invalidArgument` when its identity is not `identity` or its slab or journal was
    /// written by an engine of another shape (another slot or payload size). Nothing in `dir`
    /// is changed.
    init(dir: String, identity: TierIdentity, slotBytes: Int, payloadBytes: Int, forceBuffered: Bool) throws(KVError) {
        self.dir = dir
        self.identity = identity
        self.slotBytes = slotBytes
        self.payloadBytes = payloadBytes
        self.forceBuffered = forceBuffered
        fingerprint = try identity.check(peer: dir)
        slab = try PeerTier.openSlab(dir, slotBytes: slotBytes, forceBuffered: forceBuffered)
        self.capacity = min(max(PeerTier.initialCapacity, Int(kvm_slab_allocated(slab))), DiskTier.maxSlots)
        // Freed with `a` (and the slab closed) if one fails; by `deinit` once `self` is whole.
        let a = CheckedAllocations()
        let what = "peer tier '\(dir)': the per-slot state of \(self.capacity) slots (the slots its slab holds)"
        do throws(KVError) {
            hashes = try a.allocate(repeating: 0, count: self.capacity, what)
            parents = try a.allocate(repeating: 0, count: self.capacity, what)
            fingerprints = try a.allocate(repeating: 0, count: self.capacity, what)
            index = try HashChains(ids: self.capacity, fingerprints: fingerprints, what)
            generations = try a.allocate(repeating: 0, count: self.capacity, what)
            checksums = try a.allocate(repeating: 0, count: self.capacity, what)
        } catch {
            kvm_slab_close(slab)
            throw error
        }
        a.keep()
        records = .allocate(capacity: PeerTier.batchRecords)
        refresh()
        if let unavailable { throw KVError(.io, unavailable) }
        if foreignRecords > 0 {
            throw .invalid("peer offload dir '\(dir)': its journal describes blocks of another size than this engine's \(payloadBytes) bytes: it was written by an engine of another shape (layers, block_tokens, token bytes)")
        }
    }

    deinit {
        kvm_slab_close(slab)
        for p in [hashes, parents, fingerprints, generations, checksums] { p.deallocate() }
        records.deallocate()
    }

    /// Opens the slab and journal in `dir` read-only (`kvm_slab_open_peer`). Throws as `init`.
    private static func openSlab(_ dir: String, slotBytes: Int, forceBuffered: Bool) throws(KVError) -> OpaquePointer {
        var config = kvm_slab_config()
        config.slot_bytes = UInt64(slotBytes)
        config.force_buffered = forceBuffered ? 1 : 0
        var s: OpaquePointer?
        let rc = dir.withCString { path -> Int32 in
            config.dir = path
            return kvm_slab_open_peer(&config, &s)
        }
        if rc < 0 { throw .file(rc, otherwise: -rc == EINVAL ? .invalidArgument : .io) }
        return s!
    }

    /// The slab's descriptor, for the I/O queue's file table.
    var fd: Int32 { kvm_slab_fd(slab) }

    /// After the slab was removed or replaced (`replaced`): opens the directory's tier anew when
    /// it holds one of this engine's identity, hands the new slab's descriptor to `install`
    /// (which makes the I/O queue read it; the caller has no read of the old slab in flight),
    /// closes the old files and replays the new journal from its start at the next `refresh`.
    /// Until then (no tier there yet, another identity, `install` refused) the peer stays
    /// `unavailable`, saying why. A call after a failure (other than a want of descriptors or
    /// memory, `outOfMemory`, which the next call tries again) tries again only when the directory
    /// or its identity file changed since (`DirectoryStamp`), and once more when a second has
    /// passed since the failure (a change in the same timestamp tick as its `stat` shows in
    /// no stamp), so that a peer that keeps failing costs two `stat`s per lookup, not a read
    /// of its identity, whatever the file system's clock says; a tier that appears there is
    /// opened at the first lookup after it appeared, or, when it appeared in the tick of the
    /// failed try, at the first lookup a second after that try. Cost: two `stat`s, and
    /// when the directory changed, reading the identity file and opening two files.
    func reopen(install: (Int32) -> Bool) {
        guard replaced else { return }
        let stamp = DirectoryStamp(dir: dir)  // before the reads: a change after it differs from it
        if let failedStamp, failedStamp == stamp, failureConfirmed || !stamp.confirms(failedStamp) { return }
        reopenAttempts += 1
        let fresh: OpaquePointer, key: BlockFingerprint
        do throws(KVError) {
            key = try identity.check(peer: dir)
            fresh = try PeerTier.openSlab(dir, slotBytes: slotBytes, forceBuffered: forceBuffered)
        } catch {
            // Out of descriptors or memory says nothing of the directory: no stamp, so the
            // next lookup tries again.
            guard error.code != .outOfMemory else {
                unavailable = "peer slab of '\(dir)' was removed or replaced, and reopening it failed: \(error.message)"
                return
            }
            unavailable = "peer slab of '\(dir)' was removed or replaced, and the directory holds no tier to read yet: \(error.message)"
            if let failedStamp, stamp.confirms(failedStamp) {
                failureConfirmed = true
            } else {
                failedStamp = stamp
                failureConfirmed = false
            }
            return
        }
        guard install(kvm_slab_fd(fresh)) else {
            unavailable = "peer offload dir '\(dir)': its new slab could not be registered for I/O: \(kvmMessage())"
            kvm_slab_close(fresh)
            return
        }
        kvm_slab_close(slab)
        slab = fresh
        fingerprint = key
        replaced = false
        failedStamp = nil
        failureConfirmed = false
        unavailable = nil
        journalBytes = 0
    }

    /// Distinct hashes indexed now. Tests: read by the tests only.
    var indexedHashes: Int { index.hashCount }

    /// Where block `hash` is in this peer (`peer`: this peer's index in `DiskTier.peers`) and
    /// what its slot held when journaled, or nil; also nil when the block's fingerprint is
    /// not `fingerprint(key)`, the prompt's fingerprint under this peer's key (0: any, a
    /// prompt known by its hashes alone), which is asked only when the hash is found. O(1)
    /// plus that call.
    func find(_ hash: UInt64, peer: Int32, fingerprint query: (BlockFingerprint) -> UInt64) -> PeerRead? {
        guard index.first(hash) >= 0 else { return nil }
        let slot = index.find(hash, fingerprint: query(fingerprint))
        guard slot >= 0 else { return nil }
        let s = Int(slot)
        return PeerRead(peer: peer, slot: slot, hash: hash, parent: parents[s], generation: generations[s], checksum: checksums[s])
    }

    /// A read of `read` was refused (the slot changed, or the read failed): its entry leaves
    /// the index unless a newer record replaced it meanwhile. O(1).
    func forget(_ read: PeerRead) {
        let s = Int(read.slot)
        guard hashes[s] == read.hash && generations[s] == read.generation else { return }
        drop(slot: s)
    }

    /// Reads the journal records the peer appended since the last call, when its journal
    /// changed (one `fstat`, one `stat`); replays it from the start when it was replaced or shrank. A
    /// record that is not valid is read again next time (the peer may be appending it),
    /// unless a valid record follows it, after any number of invalid ones: then they are
    /// corrupt and skipped, as a restart's replay skips them (`kvm_slab_journal_replay`), so
    /// bad records do not end the tailing (a run of them costs a read per record at each
    /// refresh until a valid one follows). A
    /// failure (the peer vanished) empties the index: its blocks are misses, not errors. A
    /// replaced journal has the directory's identity read again (`TierIdentity.check`): another
    /// model's or shape's tier over the same slab is `replaced`, misses until `reopen`.
    func refresh() {
        guard !replaced else { return }
        var size: UInt64 = 0
        let rc = kvm_slab_peer_refresh(slab, &size)
        if rc < 0 {
            replaced = -rc == ESTALE
            unavailable = kvmMessage()
            clear()
            return
        }
        if rc == 1 {
            // A new journal over the same slab (the peer restarted, or its directory was
            // claimed again): the tier may be another model's now. Treated as a replaced slab
            // until `reopen` finds this engine's identity there.
            do throws(KVError) { fingerprint = try identity.check(peer: dir) } catch {
                replaced = true
                unavailable = "peer journal of '\(dir)' was replaced: \(error.message)"
                clear()
                return
            }
        }
        unavailable = nil
        if rc == 1 || size < journalBytes { clear() }
        while size >= journalBytes + UInt64(MemoryLayout<kvm_journal_record>.size) {
            let record = UInt64(MemoryLayout<kvm_journal_record>.size)
            let n = Int(kvm_slab_journal_read(slab, journalBytes, records, UInt32(PeerTier.batchRecords)))
            if n == 0 {
                // Corrupt when a valid record follows, however many bad ones lie between (one
                // bad sector holds 8): the tailing goes on at the first valid one.
                var next = journalBytes + record, found: Int64 = 0
                while next + record <= size {
                    found = kvm_slab_journal_read(slab, next, records, 1)
                    if found != 0 { break }
                    next += record
                }
                guard found == 1 else { return }  // none follows (or a read failed): read again next time
                journalBytes = next
                continue
            }
            guard n > 0 else { return }  // a failed read: tried again next time
            for i in 0..<n { apply(records[i]) }
            journalBytes += UInt64(n) * record
            if n < PeerTier.batchRecords { return }
        }
    }

    /// Applies one journal record: the latest record of a slot wins.
    private func apply(_ r: kvm_journal_record) {
        let s = Int(r.slot)
        guard s < DiskTier.maxSlots else { return }  // no tier has more: not a record of one
        if s < capacity && hashes[s] != 0 { drop(slot: s) }
        guard r.kind == UInt32(KVM_JOURNAL_STORED) && r.block_hash != 0 else { return }
        guard r.payload_bytes == UInt32(payloadBytes) else {
            foreignRecords += 1
            return
        }
        if s >= capacity {  // only for a block we could read: nothing else sizes the index
            do { try grow(toCover: s) } catch {
                // Out of memory: this block stays a miss (a later record for a slot within
                // the index is still applied); said once per peer, for the operator.
                if !loggedGrowthFailure { kvm_log("\(error.message); its blocks in slots past \(capacity) are misses") }
                loggedGrowthFailure = true
                return
            }
        }
        // The block it replaces (of fingerprint 0: every block of the hash, which a lookup by
        // hash alone would take), so that the insert below is never refused.
        while case let older = index.find(r.block_hash, fingerprint: r.fingerprint), older >= 0 { drop(slot: Int(older)) }
        fingerprints[s] = r.fingerprint
        index.insert(r.block_hash, Int32(s), fingerprint: r.fingerprint)
        hashes[s] = r.block_hash
        parents[s] = r.parent_hash
        generations[s] = r.generation
        checksums[s] = r.checksum
    }

    /// Enlarges the per-slot arrays and the index to cover slot `s` (at least doubling, at most
    /// `DiskTier.maxSlots`), keeping every indexed block. Throws `outOfMemory`, nothing
    /// changed, when the larger arrays cannot be allocated (a process limit: up to ~64 bytes
    /// x 4 Mi slots). O(capacity).
    private func grow(toCover s: Int) throws(KVError) {
        let grown = min(max(2 * capacity, s + 1), DiskTier.maxSlots)
        let what = "peer tier '\(dir)': the per-slot state of \(grown) slots (its journal names slot \(s))"
        let a = CheckedAllocations()
        var arrays: [UnsafeMutablePointer<UInt64>] = []
        for old in [hashes, parents, fingerprints, generations, checksums] {
            let new = try a.allocate(repeating: UInt64(0), count: grown, what)
            new.update(from: old, count: capacity)
            arrays.append(new)
        }
        let larger = try HashChains(ids: grown, fingerprints: arrays[2], what)
        a.keep()
        for old in [hashes, parents, fingerprints, generations, checksums] { old.deallocate() }
        (hashes, parents, fingerprints, generations, checksums) = (arrays[0], arrays[1], arrays[2], arrays[3], arrays[4])
        index = larger
        for slot in 0..<capacity where hashes[slot] != 0 { index.insert(hashes[slot], Int32(slot), fingerprint: fingerprints[slot]) }
        capacity = grown
    }

    private func drop(slot s: Int) {
        if index.contains(hashes[s], Int32(s)) { index.remove(hashes[s], Int32(s)) }
        hashes[s] = 0
    }

    /// Forgets every block (the journal is replayed from its start next). O(capacity) when
    /// anything is indexed, else O(1): a vanished peer is cleared on every lookup's refresh.
    private func clear() {
        // A slot's hash is non-zero exactly while the index maps that hash to it (`apply`, `drop`).
        if index.hashCount > 0 {
            for s in 0..<capacity where hashes[s] != 0 { drop(slot: s) }
        }
        journalBytes = 0
    }

    /// Opens every directory of `config.peerOffloadDirs` (`init`), after checking that each
    /// exists and is neither the engine's own `offload_dir` nor listed twice (compared by
    /// device and inode, so another spelling of the same directory counts), and that its
    /// `TierIdentity` is this engine's. Throws `invalidArgument` (own directory, duplicate,
    /// another model tag or shape) or `io` (missing, not a directory, no identity or tier files
    /// yet); nothing is opened then. Call before the own tier is
    /// opened, so that a refused peer leaves the own directory untouched.
    static func openAll(_ config: EngineConfig, slotBytes: Int, payloadBytes: Int) throws(KVError) -> [PeerTier] {
        guard !config.peerOffloadDirs.isEmpty else { return [] }
        func identity(_ path: String, _ what: String) throws(KVError) -> (UInt64, UInt64) {
            var st = stat()
            guard stat(path, &st) == 0 else { throw KVError(.io, "\(what) '\(path)': \(String(cString: strerror(errno)))") }
            guard st.st_mode & S_IFMT == S_IFDIR else { throw KVError(.io, "\(what) '\(path)' is not a directory") }
            return (UInt64(st.st_dev), UInt64(st.st_ino))
        }
        let own = try identity(config.offloadDir!, "offload_dir")
        var seen: [(UInt64, UInt64)] = []
        for dir in config.peerOffloadDirs {
            let id = try identity(dir, "peer offload dir")
            if id == own {
                throw .invalid("peer offload dir '\(dir)' is this engine's own offload_dir '\(config.offloadDir!)'; a peer is another engine's directory")
            }
            if seen.contains(where: { $0 == id }) { throw .invalid("peer offload dir '\(dir)' is listed twice in peer_offload_dirs") }
            seen.append(id)
        }
        var peers: [PeerTier] = []
        let expected = TierIdentity(config)
        for dir in config.peerOffloadDirs {
            peers.append(try PeerTier(dir: dir, identity: expected, slotBytes: slotBytes, payloadBytes: payloadBytes,
                                      forceBuffered: config.offloadForceBuffered))
        }
        return peers
    }
}
