import Synchronization
import TestSupport
import Testing
@testable import KVCache

/// A reservation and a trim that overlap (kvcache.h, kvc_engine_trim: "a reservation made
/// while the trim runs ... stays committed"; kvc_engine_reserve: committed "until
/// kvc_engine_trim", and "the reservation holds from its return as if the trim came first"): the
/// trim hands the lock to other calls between its steps and `reserve` works in steps too, so
/// each may run inside the other. Found by helper-168's reserve_lost and reserve_compact: the
/// trim forgot the reservation only after its spills, so a reserve made while it spilled was
/// released by it; and `reserve` recorded its target in its first step only, so a trim
/// between its steps left the memory it then committed unrecorded (the next compaction gave
/// it back).
@Suite("A reservation overlapping a trim stays", .serialized)
struct TrimReservationTests {
    /// The trim waits in its spill phase (the thread backend holds the writes while paused)
    /// while another call reserves; the trim's release then keeps the reservation.
    @Test(arguments: [Layout.paged, .contiguous])
    func aReserveMadeWhileATrimSpillsStaysCommitted(layout: Layout) throws {
        let dir = ScratchDir("reserve-in-trim")
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadForceThreads = true
        c.offloadBytes = tierSlotBytes(c) * 8  // a tier of 8 slots and 8 staging buffers
        let e = try Engine(c)
        let bt = c.blockTokens
        // 6 blocks take 6 of the 7 buffers bulk transfers may take (an eighth is reserved)
        // and stay in flight; the next trim's 3 spills wait for them.
        for (seq, count) in [(UInt64(1), 6 * bt + 1), (2, 3 * bt + 1)] {
            let prompt = tokens(count, seed: Int32(seq) + 70)
            try e.createSequence(seq, tokens: prompt)
            try fillKV(e, seq, count: prompt.count) { prompt[$0] }
            try e.free(seq)
            if seq == 1 {
                #expect(e.pauseOffloadIO(true))
                try e.trim()
            }
        }
        let failure = Mutex<KVError?>(nil)
        let trimmer = TestThread {
            do throws(KVError) { try e.trim() } catch { failure.withLock { $0 = error } }
        }
        #expect(waitUntil(seconds: 10) { e.offloadWaitingCalls == 1 }, "the trim waits for the paused writes")
        let reserved = try e.reserve(bytes: 16 << 20)
        #expect(reserved >= 16 << 20)
        #expect(e.pauseOffloadIO(false))
        trimmer.join()
        #expect(failure.withLock { $0 } == nil)
        #expect(e.stats().disk.blocksSpilled == 9)
        #expect(e.stats().committedBytes >= 16 << 20, "the trim released the reservation made while it ran")
    }

    /// A trim that runs between a reserve's steps (the reserve hands it the lock) forgets the
    /// reservation; the reserve's later steps commit again, and the reservation it returns
    /// must be recorded (a compaction keeps what is recorded): after both, the record is what
    /// is committed, all of it when the trim came midway, nothing when it came last. Retried
    /// until a trim came midway (it does in the first round unless the machine starves it).
    @Test(arguments: [Layout.paged, .contiguous])
    func aReserveATrimInterruptedStaysRecorded(layout: Layout) throws {
        let e = try Engine(smallConfig(layout, memoryBytes: 256 << 20))
        let target: UInt64 = 256 << 20  // 256 steps of 64 groups of 16 KiB
        var midway = false
        for _ in 0..<5 where !midway {
            let reserved = Mutex<Result<UInt64, KVError>?>(nil)
            let reserver = TestThread {
                let r = Result { () throws(KVError) in try e.reserve(bytes: target) }
                reserved.withLock { $0 = r }
            }
            // Once it has committed its first steps, a trim waits for the lock: the reserve
            // hands it over at its next step.
            #expect(waitUntil(seconds: 10) { e.stats().committedBytes > 0 || reserved.withLock { $0 } != nil })
            try e.trim()
            reserver.join()
            #expect(try #require(reserved.withLock { $0 }).get() == target)
            let committed = e.stats().committedBytes
            #expect(committed == 0 || committed == target)
            #expect(e.reservedBytes == committed, "the reservation the reserve returned is not recorded")
            midway = committed == target
            try e.trim()
        }
        #expect(midway, "no trim ran between the reserve's steps")
    }
}
