import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The disk tier's completions processed, and waiting for them without the engine's lock.
extension DiskTier {
    /// Waits until a completion can be reaped, `wake` is called, or `timeoutMicroseconds`
    /// passes (negative: no limit); reaps nothing. The one call that may run without the
    /// engine's lock (one thread at a time), beside other threads' calls. False: timed out.
    func waitForCompletion(timeoutMicroseconds: Int64) -> Bool { kvm_io_wait(io, timeoutMicroseconds) != 0 }

    /// Ends the `waitForCompletion` in progress (or the next one) at once. Any thread.
    func wake() { kvm_io_wake(io) }

    /// Tests: holds (or releases) every request of the thread backend in flight. False on
    /// io_uring, which cannot hold requests. Any thread (the backend has its own lock).
    func pauseIO(_ paused: Bool) -> Bool { kvm_io_pause(io, paused ? 1 : 0) == 0 }

    /// Tests: the next `count` hand-overs of requests to the kernel fail as a short-of-memory
    /// io_uring_enter does, leaving them in the ring (`kvm_io_fail_submits`). False on the
    /// thread backend. Under the engine's lock.
    func failSubmits(_ count: UInt32) -> Bool { kvm_io_fail_submits(io, count) == 0 }

    /// Tests: slots pinned (by swapped-out sequences, offloaded-token records or pending reads),
    /// and stored slots without a block hash (a sequence's own, freed with its last pin).
    var pinnedAndUnhashedSlots: (pinned: Int, unhashed: Int) {
        var pinned = 0, unhashed = 0
        for s in 0..<capacity {
            if pins[s] > 0 { pinned += 1 }
            if state[s] == DiskTier.stored && hashes[s] == 0 { unhashed += 1 }
        }
        return (pinned, unhashed)
    }

    /// Tests: the block hashes `lookup` finds (every hash's first slot), and how many hashes
    /// the index holds (equal to the set's size: nothing else is in it).
    /// O(capacity); allocates.
    var findableHashes: (hashes: Set<UInt64>, indexed: Int) {
        var found = Set<UInt64>()
        for s in 0..<capacity where state[s] != DiskTier.free && hashes[s] != 0 && index.first(hashes[s]) == Int32(s) {
            found.insert(hashes[s])
        }
        return (found, index.hashCount)
    }

    /// True while `slot`'s write is in flight.
    func isWriting(_ slot: Int32) -> Bool { state[Int(slot)] == DiskTier.writing }

    func complete(stage: Int32, result: Int64) {
        let op = stageOp[Int(stage)]
        let slot = stageSlot[Int(stage)]
        let s = Int(slot)
        let ok = result == Int64(slotBytes)
        // Formatted only for a failure's message: a completion that succeeds allocates nothing.
        func reason() -> String { result < 0 ? String(cString: strerror(Int32(-result))) : "short transfer of \(result) of \(slotBytes) bytes" }
        stageOp[Int(stage)] = DiskTier.idle
        staging.release(stage)
        if op == DiskTier.spillWrite { spillWritesInFlight -= 1 }
        if op == DiskTier.peerRead { peerReadsInFlight[Int(stagePeer[Int(stage)].peer)] -= 1 }
        if (op == DiskTier.read || op == DiskTier.peerRead) && stageTarget[Int(stage)].record < 0 {
            readRate.completed(slotBytes, now: monotonicNanoseconds())
        }
        switch op {
        case DiskTier.spillWrite, DiskTier.pinnedWrite:
            guard state[s] == DiskTier.writing && writingStage[s] == stage else { return }
            if ok {
                if let failed = writeFailureGeneration, generations[s] > failed { writeFailureGeneration = nil }
                stats.bytesWritten += UInt64(slotBytes)
                state[s] = DiskTier.stored
                stats.storedSlots += 1
                if hashes[s] != 0 {
                    if pins[s] == 0 { lru.append(slot) }
                    journal.stored(slot)
                    if journal.isBatchFull { flushJournal() }
                } else if pins[s] == 0 {
                    release(slot)  // a sequence's own slot, already read back or discarded
                }
            } else {
                lastFailure = "offload write of slot \(s) failed: \(reason())"
                writeFailureGeneration = generation
                if op == DiskTier.spillWrite {
                    stats.spillsFailed += 1
                    stats.spillWritesFailed += 1
                } else {
                    stats.writesFailed += 1
                }
                // A record something still pins stays counted (`tokenRecords`, `tokensOnDisk`)
                // until the failure is processed (`releaseFailedRecord`); any other leaves the
                // counters when `markBroken` frees it.
                let isRecord = recordTokens[s] > 0
                if hashes[s] != 0 { unindex(slot) }
                // A failed write's slot is given up once nothing refers to it; generation 0
                // marks it so that the swap-out waiting on it sees the failure.
                state[s] = DiskTier.stored
                stats.storedSlots += 1
                generations[s] = 0
                markBroken(slot)
                if isRecord && pins[s] > 0 { memory.recordWriteFailed(slot) }
            }
        case DiskTier.read, DiskTier.peerRead:
            // One path for both: verified against what the index said (the own tier's arrays,
            // or the peer's journal record captured at lookup), copied into memory only then.
            let target = stageTarget[Int(stage)], fromPeer = op == DiskTier.peerRead
            let expected = fromPeer ? stagePeer[Int(stage)]
                : PeerRead(peer: -1, slot: slot, hash: hashes[s], parent: parents[s], generation: generations[s], checksum: checksums[s])
            let valid = ok && verified(stage, slot: slot, hash: expected.hash, generation: expected.generation, checksum: expected.checksum)
                && (fromPeer || state[s] == DiskTier.stored)
            if !ok {
                lastFailure = (fromPeer ? "read of slot \(s) of peer '\(peers[Int(expected.peer)].dir)'" : "offload read of slot \(s)")
                    + " failed: \(reason())"
            }
            if valid { memory.scatter(target, from: payload(stage)) }
            if fromPeer {
                // Not ours to free or pin: a refused read only leaves the peer's index.
                if valid {
                    stats.peerHits += 1
                    stats.peerHitTokens += UInt64(target.tokens)
                } else {
                    stats.peerStale += 1
                    peers[Int(expected.peer)].forget(expected)
                }
            } else if valid {
                stats.blocksLoaded += 1
                verifiedSlot(slot)
            } else {
                stats.loadsFailed += 1
                // Bytes found bad (the transfer completed, the check failed) leave the tier. A
                // failed transfer (an I/O error, a short read, a refused submission) says
                // nothing about the bytes: the slot leaves the tier only when this read alone
                // held it; one a swapped-out sequence, an offloaded-token record or another
                // read still pins stays as it is, for that holder's own read to verify (it
                // was given up, and a healthy swapped-out sequence spoiled with it, before).
                if ok || pins[s] == 1 {
                    if hashes[s] != 0 {
                        unindex(slot)
                        hashes[s] = 0
                    }
                    markBroken(slot)
                }
            }
            memory.loadFinished(target, ok: valid)
            if !fromPeer { unpin(slot) }  // the read's pin
        default:
            preconditionFailure("completion for an idle staging buffer")
        }
    }

    /// True when the slot read into `stage` holds what was expected: header, generation and
    /// payload checksum (`kvm_slot_verify`); else `lastFailure` says why. Counts the bytes read.
    private func verified(_ stage: Int32, slot: Int32, hash: UInt64, generation: UInt64, checksum: UInt64) -> Bool {
        stats.bytesRead += UInt64(slotBytes)
        guard kvm_slot_verify(stageBuffer(stage), UInt32(slot), hash, generation, checksum, UInt32(payloadBytes)) == 0 else {
            lastFailure = kvmMessage()
            return false
        }
        return true
    }

    /// A slot whose bytes are known bad: freed when its last pin goes (hash 0 slots are freed
    /// on unpin). A pinned one (a swapped-out sequence's) is journaled FREED at once, so that a
    /// restart before that unpin does not find, and announce, a block known corrupt.
    private func markBroken(_ slot: Int32) {
        hashes[Int(slot)] = 0
        lru.remove(slot)
        guard state[Int(slot)] == DiskTier.stored else { return }
        if pins[Int(slot)] == 0 {
            release(slot)
        } else {
            journal.freed(slot)
            if journal.isBatchFull { flushJournal() }
        }
    }

    /// True when `slot`'s write completed and nothing has found its bytes bad.
    func isDurable(_ slot: Int32) -> Bool { state[Int(slot)] == DiskTier.stored && generations[Int(slot)] != 0 }

    /// Waits for every request in flight and processes it.
    func drain() {
        reap()  // the deferred reads, if any
        while kvm_io_inflight(io) > 0 { reap(waitFor: 1) }
    }

    /// Drops hashed stored slot `slot` from the tier (LRU eviction).
    func drop(_ slot: Int32) {
        let s = Int(slot)
        lru.remove(slot)
        unindex(slot)
        hashes[s] = 0
        release(slot)
    }

    /// Takes hashed `slot` out of the index, announcing `blockRemoved` when it was the last
    /// slot of its hash (the events describe a set of hashes). O(1) expected.
    private func unindex(_ slot: Int32) {
        let s = Int(slot)
        if index.remove(hashes[s], slot) {
            events.push(KVEvent(kind: .blockRemoved, tier: KVEvent.diskTier, blockHash: hashes[s], parentHash: parents[s]))
        }
    }

    /// Returns a stored, unpinned, unindexed slot to the free list.
    func release(_ slot: Int32) {
        let s = Int(slot)
        precondition(pins[s] == 0 && state[s] == DiskTier.stored)
        state[s] = DiskTier.free
        hashes[s] = 0
        verifiedSlot(slot)  // whatever is written into it next is this engine's own
        forgetRecord(slot)
        journal.freed(slot)
        stats.storedSlots -= 1
        pushFree(slot)
        if journal.isBatchFull { flushJournal() }
    }
}
