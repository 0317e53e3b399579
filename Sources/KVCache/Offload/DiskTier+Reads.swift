import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The disk tier's reads: block and record reads queued for a staging buffer, and submitted.
extension DiskTier {
    /// Reads `slot` into memory at `target` (verified before it is copied), pinning it until the
    /// read ended. A slot still being written is served from its staging buffer at once. Never
    /// fails here: a read that cannot be submitted completes as failed (`flush`), and its target
    /// hears of it then.
    ///
    /// A block read (`target.record < 0`: a prompt's prefix hit, a swap-in) never waits for
    /// the device: when no staging buffer is free, or older reads are still queued, it joins
    /// `pendingReads` and a later `reap` submits it (FIFO, so the earliest request's blocks go
    /// first and a create's reads, queued in slot order, still merge), its slot pinned
    /// meanwhile; `cancelPendingReads` takes it back. An offloaded-token record read
    /// (episodic `focus`) still takes a buffer at once, waiting under the engine's lock
    /// (`takeStage`: behind the queued reads) when none is free. Cost: O(1), plus O(queued
    /// reads submitted) when buffers freed since.
    func load(_ slot: Int32, into target: LoadTarget) {
        let s = Int(slot)
        if state[s] == DiskTier.writing {
            memory.scatter(target, from: payload(writingStage[s]))
            memory.loadFinished(target, ok: true)
            stats.blocksLoaded += 1
            return
        }
        pin(slot)
        issue(PendingReads.Entry(read: PeerRead(peer: -1, slot: slot, hash: 0, parent: 0, generation: 0, checksum: 0), target: target))
    }

    /// Reads peer slot `read` (found by `findInPeers`) into memory at `target`, verified
    /// against what the peer's journal said when it was looked up: a slot the peer rewrote since
    /// (or a failed read) completes as failed (`TierMemory.loadFinished` with `ok` false) and
    /// counts in `peerStale`; a verified one counts in `peerHits`. Nothing of this tier is
    /// pinned: the peer's slot is not ours to hold. Queued like `load`'s block reads when no
    /// buffer is free (the expected record travels with it). Cost as `load`.
    func loadPeer(_ read: PeerRead, into target: LoadTarget) {
        issue(PendingReads.Entry(read: read, target: target))
    }

    /// Submits `entry` now when a staging buffer is free and no older read is queued (or when it
    /// is a record read, which waits for one), else queues it. See `load`.
    private func issue(_ entry: PendingReads.Entry) {
        submitPendingReads()
        if entry.target.record >= 0 || (pendingReads.isEmpty && staging.freeCount > 0) {
            submitRead(entry)
        } else {
            pendingReads.push(entry)
        }
    }

    /// Submits the oldest queued reads while staging buffers are free (into the batch; the
    /// caller flushes). O(reads submitted).
    func submitPendingReads() {
        while staging.freeCount > 0 && !pendingReads.isEmpty { submitRead(pendingReads.pop()) }
    }

    /// Takes a staging buffer for `entry` (waiting only when none is free: record reads) and
    /// batches its read: of the own slab when `entry.read.peer < 0` (its slot pinned by `load`),
    /// else of that peer's.
    private func submitRead(_ entry: PendingReads.Entry) {
        let read = entry.read, own = read.peer < 0
        let stage = takeStage(for: read.slot)
        stageOp[Int(stage)] = own ? DiskTier.read : DiskTier.peerRead
        stageSlot[Int(stage)] = read.slot
        stageTarget[Int(stage)] = entry.target
        stagePeer[Int(stage)] = read
        if !own { peerReadsInFlight[Int(read.peer)] += 1 }
        if entry.target.record < 0 { readRate.submitted(now: monotonicNanoseconds()) }
        let offset = own ? kvm_slab_offset(slab, UInt32(read.slot)) : UInt64(read.slot) * UInt64(slotBytes)
        queue(kvm_io_req(tag: UInt64(stage), buf: stageBuffer(stage), offset: offset,
                         len: UInt32(slotBytes), op: UInt16(KVM_IO_READ), file: UInt16(read.peer + 1), buf_index: 0))
    }

    /// Takes back the queued (not yet submitted) reads for which `cancel` returns true: called
    /// once per queued read, oldest first, with its target; when it returns true it has undone
    /// its own side of the read (the memory block's loading count), and the tier unpins the
    /// slot the read held (own reads). Nothing of a cancelled read lands. Returns how many.
    /// Cost: O(queued reads).
    @discardableResult
    func cancelPendingReads(where cancel: (LoadTarget) -> Bool) -> Int {
        pendingReads.remove { entry in
            guard cancel(entry.target) else { return false }
            if entry.read.peer < 0 { unpin(entry.read.slot) }
            return true
        }
    }

    /// Reads queued for a staging buffer (`load`), not submitted yet. Tests: read by the tests only.
    var pendingReadCount: Int { pendingReads.count }

    /// Block `hash` in the first peer whose index holds it, or nil (at once without peers: the
    /// one check a create's own-tier miss makes). The first call of a lookup (`refreshed`
    /// false) brings every peer's index up to date first (`PeerTier.refresh`: one `fstat` each,
    /// and the journal records appended since; a peer whose slab was replaced is opened anew
    /// once none of its reads is in flight, `PeerTier.reopen`, and its new slab replaces the old
    /// one in the I/O queue's file table) and sets `refreshed`. A peer holding `hash` under
    /// another fingerprint is passed over (`PeerTier.find`: `fingerprint(peer, key)` is the
    /// prompt's fingerprint under peer `peer`'s key). O(peers), plus the fingerprints asked.
    func findInPeers(_ hash: UInt64, refreshed: inout Bool, fingerprint: (Int, BlockFingerprint) -> UInt64) -> PeerRead? {
        guard !peers.isEmpty else { return nil }
        if !refreshed {
            for (i, peer) in peers.enumerated() {
                peer.refresh()
                if peer.replaced && peerReadsInFlight[i] == 0 {
                    peer.reopen { fd in kvm_io_replace_file(io, UInt32(i + 1), fd) == 0 }
                    peer.refresh()
                }
            }
            refreshed = true
        }
        for (i, peer) in peers.enumerated() {
            if let read = peer.find(hash, peer: Int32(i), fingerprint: { fingerprint(i, $0) }) { return read }
        }
        return nil
    }
}
