import CKVMemory
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Writes the coldest cached blocks to the disk tier ahead of their eviction, on a thread of
/// its own (`EngineConfig.offloadWriteback`), so that the allocation that later evicts a block
/// finds it on disk and copies nothing: without it every eviction copies and checksums its
/// block into a staging buffer inside the allocating call, under the engine's lock
/// (`OffloadCoordinator.spill`), which the call and every other thread wait for. Like the
/// kernel's writeback of dirty pages before reclaim needs them, or LMCache's stores off the
/// model's step.
///
/// Each round, under the engine's lock, it looks at the `horizon` oldest cached blocks and
/// takes those the tier lacks (and their missing cached ancestors first, oldest first, as an
/// eviction's spill would: a disk copy is reachable only through its chain), at most
/// `batchLimit`, as many as staging buffers are free beyond the reserve and as the tier has
/// slots for without dropping a block memory still holds (`DiskTier.reserveAhead`: a free
/// slot, a slab growth, or slots of blocks that left memory); it marks each with a ticket
/// (`BlockPool.markCopy`). Then it
/// copies them into their staging buffers with the lock released, and under the lock again
/// submits their writes (`DiskTier.submitSpill`) and clears the marks. A marked block stays
/// indexed and may be hit meanwhile (its bytes do not change while it is indexed); an
/// eviction passes it over (`BlockPool.evictOldest`), and leaving the index otherwise (every
/// cached block marked, a trim, a compaction, a failed read) waits for its ticket
/// (`awaitCopy`), at most one block's copy per entry ahead of it in the batch, holding the
/// engine's lock. While staging buffers are short it waits
/// for the device without the lock (`OffloadCoordinator.awaitProgress`, which processes
/// completions). It sleeps until `poke` (a free, an eviction) or 50 ms pass with nothing to
/// write, with no slot to write into (the tier holds only blocks memory holds too, or slots
/// held otherwise), and while writes fail (`DiskTier.writesFailing`: from a failed write's
/// processing until a later write, a call's, succeeded). So an idle engine writes each
/// cached block at most once, however few slots the tier has, and a failing device sees each
/// block at most once, not every block on every pass.
///
/// Cost: O(horizon) hash lookups per round under the lock (and `DiskTier.aheadDropScan` when
/// the tier is full); a copy and checksum per block written, outside it. An eviction of a
/// block it has not reached spills it in the evicting call as without the thread (or skips
/// it when buffers are short, `DiskTierStats.spillsSkipped`): when calls evict faster than it
/// writes, they write.
final class Writeback {
    /// One block of a round: where it goes, and its ticket.
    private struct Entry {
        var block: Int32
        var hash: UInt64
        var parent: UInt64
        var fingerprint: UInt64
        var slot: Int32
        var stage: Int32
        var ticket: UInt64
    }

    /// Most blocks copied per round (a marked block's eviction waits for at most this many copies).
    static let batchLimit = 8
    /// Sleep with nothing to write, and longest wait for the device, per round.
    static let idleNanoseconds: UInt64 = 50_000_000
    static let deviceWaitNanoseconds: UInt64 = 20_000_000

    private unowned let offload: OffloadCoordinator
    private let blocks: BlockPool
    private let tier: DiskTier
    private let mutex: UnsafeMutablePointer<kvm_lock>
    private let wake: UnsafeMutablePointer<pthread_cond_t>
    /// Oldest cached blocks looked at per round: twice the staging buffers, at most 1024.
    let horizon: Int
    private var entries: [Entry] = []
    /// This round's copies: each payload's checksum, or why it failed.
    private var copies: [Result<UInt64, KVError>] = []
    private let sources: UnsafeMutablePointer<UnsafeRawPointer?>
    private var thread = pthread_t()
    private var stopping = false
    private var idle = false
    /// Tickets handed out, under the engine's lock.
    private var issued: UInt64 = 0
    /// The last ticket whose copy is done; written by the thread without the engine's lock.
    private let copied = Atomic<UInt64>(0)
    /// Tests: a round's blocks are marked and not yet submitted. Under the engine's lock.
    var hasRoundInFlight: Bool { !entries.isEmpty }
    /// Tests: runs on the thread after a round's blocks are marked, before they are copied
    /// (without the lock).
    var afterMark: (() -> Void)?

    /// Starts the thread. Throws `outOfMemory` when it cannot be created (pthread_create
    /// fails: EAGAIN when the process's thread limit or the memory for its stack, sized by
    /// RLIMIT_STACK, is refused), having started nothing and freed what it allocated.
    init(_ offload: OffloadCoordinator, blocks: BlockPool, mutex: UnsafeMutablePointer<kvm_lock>, tensors: Int) throws(KVError) {
        self.offload = offload
        self.blocks = blocks
        tier = offload.tier
        self.mutex = mutex
        horizon = min(1024, 2 * offload.tier.stagingBuffers)
        sources = .allocate(capacity: tensors)
        entries.reserveCapacity(Writeback.batchLimit)
        copies.reserveCapacity(Writeback.batchLimit)
        wake = monotonicCondition()
        let created = pthread_create(&thread, nil, { context in
            Unmanaged<Writeback>.fromOpaque(context!).takeUnretainedValue().run()
            return nil
        }, Unmanaged.passUnretained(self).toOpaque())
        if created != 0 {
            // `self` is whole: the throw runs `deinit`, which frees `wake` and `sources`.
            throw .outOfMemory("offload_writeback: the write-back thread cannot be created: pthread_create failed: \(String(cString: strerror(created))) (errno \(created): the process's thread limit, or the memory for a thread stack of RLIMIT_STACK)")
        }
    }

    deinit {
        pthread_cond_destroy(wake)
        wake.deallocate()
        sources.deallocate()
    }

    /// Ends the thread and waits for it: a round it is copying is given up (its slots and
    /// staging buffers given back, nothing submitted, so nothing is announced that the
    /// engine's last events would miss). Without the engine's lock.
    func stop() {
        kvm_lock_acquire(mutex)
        stopping = true
        pthread_cond_signal(wake)
        offload.notifyWaiters()
        kvm_lock_release(mutex)
        pthread_join(thread, nil)
    }

    /// Wakes the thread if it sleeps for want of work (blocks were cached, or evicted: the
    /// oldest blocks are others now). Under the engine's lock. O(1).
    func poke() {
        guard idle else { return }
        idle = false  // one signal per sleep
        pthread_cond_signal(wake)
    }

    /// Returns once the copy of `ticket` is done (`BlockPool.unindex`). The caller holds the
    /// engine's lock; the thread copies without it, in ticket order, so this ends.
    func awaitCopy(_ ticket: UInt64) {
        while copied.load(ordering: .acquiring) < ticket { sched_yield() }
    }

    private func run() {
        kvm_lock_acquire(mutex)
        while !stopping {
            let stall = mark()
            if entries.isEmpty {
                if stall == .noBuffer {
                    offload.awaitProgress(mutex: mutex, deadlineNanoseconds: monotonicNanoseconds() + Writeback.deviceWaitNanoseconds)
                } else {
                    sleep()
                }
                continue
            }
            kvm_lock_release(mutex)
            afterMark?()
            copies.removeAll(keepingCapacity: true)
            for e in entries {
                copies.append(Result { () throws(KVError) in try offload.copyCached(e.block, into: tier.spillPayload(e.stage), sources: sources) })
                copied.store(e.ticket, ordering: .releasing)
            }
            kvm_lock_acquire(mutex)
            for (e, copy) in zip(entries, copies) {
                blocks.clearCopy(e.block, ticket: e.ticket)
                // Stopping (the engine is being destroyed): a write submitted now would be
                // journaled and found by a later engine reading this directory as a peer,
                // while its BLOCK_STORED event went to a queue no caller drains any more.
                if stopping { tier.cancel(slot: e.slot, stage: e.stage) } else {
                    tier.submitSpill(slot: e.slot, stage: e.stage, hash: e.hash, parent: e.parent, fingerprint: e.fingerprint, copy: copy,
                                     ahead: true)
                }
            }
            tier.flush()
            entries.removeAll(keepingCapacity: true)
        }
        kvm_lock_release(mutex)
    }

    /// Why a round stopped short of the blocks it would write (`mark`).
    private enum Stall {
        /// It did not: nothing more within `horizon` to write, or a full batch.
        case none
        /// No staging buffer free beyond the reserve: the device's completions free them.
        case noBuffer
        /// No slot but those of blocks memory still holds (or slots held otherwise): a change
        /// of memory (a free, an eviction) or of the tier frees one.
        case noSlot
        /// Writes fail (`DiskTier.writesFailing`): a call's successful write ends it.
        case failing
    }

    /// Marks this round's blocks (`entries`): the oldest cached blocks within `horizon` the
    /// tier lacks, each after its missing ancestors; none while writes fail. Returns why it
    /// stopped short. Under the engine's lock.
    private func mark() -> Stall {
        guard !tier.writesFailing else { return .failing }
        var stall = Stall.none
        blocks.forEachOldestCached(limit: horizon) { b in
            guard !tier.contains(blocks.hash(of: b), fingerprint: blocks.fingerprint(of: b)) && blocks.copyTicket(b) == 0 && !offload.isLoading(b) else { return true }
            let chain = offload.missingAncestors(of: b)
            // Oldest ancestor first, the block last.
            for i in stride(from: chain.count - 1, through: -1, by: -1) {
                let c = i < 0 ? b : chain[i]
                guard tier.hasSpillRoom() else {
                    stall = tier.bulkStages > 0 ? .noSlot : .noBuffer  // else every slot is held
                    return false
                }
                guard let (slot, stage) = tier.reserveAhead(blocks.hash(of: c), fingerprint: blocks.fingerprint(of: c), keeping: { blocks.lookup($0, fingerprint: $1) >= 0 }) else {
                    stall = .noSlot
                    return false
                }
                issued += 1
                blocks.markCopy(c, ticket: issued)
                entries.append(Entry(block: c, hash: blocks.hash(of: c), parent: blocks.parent(of: c), fingerprint: blocks.fingerprint(of: c),
                                     slot: slot, stage: stage, ticket: issued))
                if entries.count == Writeback.batchLimit { return false }
            }
            return true
        }
        return stall
    }

    private func sleep() {
        idle = true
        timedWait(wake, kvm_lock_mutex(mutex), until: monotonicNanoseconds() + Writeback.idleNanoseconds)
        idle = false
    }
}
