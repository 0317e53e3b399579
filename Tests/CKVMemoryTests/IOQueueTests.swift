import CKVMemory
import Dispatch
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` with a queue of `cfg` (its file set to a fresh 8 KiB temporary file), that
/// file's descriptor and an 8 KiB I/O buffer; then releases all three.
private func withQueue(_ cfg: kvm_io_config, _ body: (OpaquePointer, Int32, UnsafeMutableRawPointer) throws -> Void) throws {
    var path = Array("/tmp/kvcache-io-queue-XXXXXX".utf8CString)
    let fd = mkstemp(&path)
    try #require(fd >= 0)
    defer { close(fd); unlink(path) }
    #expect(kvm_io_preallocate(fd, 8192) == 0)
    let buffer = kvm_io_alloc_buffers(8192, -1)!
    defer { kvm_io_free_buffers(buffer, 8192) }
    let files = [fd]
    var io: OpaquePointer?
    try files.withUnsafeBufferPointer { f in
        var c = cfg
        c.n_files = 1
        c.files = f.baseAddress
        try #require(kvm_io_create(&c, &io) == 0)
    }
    defer { kvm_io_destroy(io) }
    try body(io!, fd, buffer)
}

@Suite("I/O queue")
struct IOQueueTests {
    /// A caller's tag comes back unchanged from both backends; one with bit 63 set, which the
    /// ring uses to mark injected faults, is refused at submit (it once came back from io_uring
    /// as -EIO with the bit cleared, though the read had succeeded).
    @Test(arguments: [Int32(0), 1])
    func tagsComeBackUnchangedAndBit63IsRefused(forceThreads: Int32) throws {
        var cfg = kvm_io_config()
        cfg.depth = 32
        cfg.force_threads = forceThreads
        try withQueue(cfg) { io, _, buffer in
            var request = kvm_io_req(tag: 1 << 63 | 5, buf: buffer, offset: 0, len: 4096, op: UInt16(KVM_IO_READ), file: 0, buf_index: -1)
            #expect(kvm_io_submit(io, &request, 1) == -EINVAL)
            #expect(String(cString: kvm_error()).contains("bit 63"))
            #expect(kvm_io_inflight(io) == 0)
            request.tag = 1 << 62 | 5
            #expect(kvm_io_submit(io, &request, 1) == 1)
            var done = kvm_io_done()
            #expect(kvm_io_reap(io, &done, 1, 1, -1) == 1)
            #expect(done.tag == 1 << 62 | 5 && done.result == 4096)
        }
    }

    /// A hand-over to the kernel that fails (io_uring_enter short of memory: -EAGAIN) leaves
    /// the entries in the ring, where the next enter sends them with whatever their buffers
    /// hold then. They are accepted and counted in flight, and the next reap sends them, one
    /// with wait_for 0 too: the write lands with its bytes and completes once. (The submit once
    /// returned the error, the caller completed the request as failed and reused its buffer,
    /// and the entry went out later anyway. Later a wait_for 0 reap, the engine's
    /// `processCompletions`, sent nothing, and kvm_io_wait, which cannot see unsent entries,
    /// slept on: an untimed wait never returned.)
    @Test(.enabled(if: ioUringWorks, "io_uring only: this machine's queue falls back to threads"))
    func aFailedHandOverIsSentByTheNextReapEvenWithWaitForZeroAndCompletesOnce() throws {
        var cfg = kvm_io_config()
        cfg.depth = 8
        cfg.failing_submits = 1  // the submit's hand-over
        try withQueue(cfg) { io, fd, buffer in
            try #require(kvm_io_backend(io) == Int32(KVM_IO_URING), "io_uring only: this machine's queue fell back to threads")
            for i in 0..<4096 { buffer.storeBytes(of: UInt8(truncatingIfNeeded: i &* 7 &+ 3), toByteOffset: i, as: UInt8.self) }
            var write = kvm_io_req(tag: 9, buf: buffer, offset: 4096, len: 4096, op: UInt16(KVM_IO_WRITE), file: 0, buf_index: -1)
            #expect(kvm_io_submit(io, &write, 1) == 1, "accepted: the entry is in the ring")
            #expect(kvm_io_inflight(io) == 1)
            var done = [kvm_io_done](repeating: kvm_io_done(), count: 4)
            // Handed over: it may even have completed within the call (a buffered write often does).
            var got = kvm_io_reap(io, &done, 4, 0, 0)
            #expect(got == 0 || got == 1)
            // Else its completion comes: a wait returns 1 and a reap without waiting takes it.
            // (The first wait may return for the wake of the submit's failed hand-over.)
            for _ in 0..<3 where got == 0 {
                #expect(kvm_io_wait(io, 100_000) == 1, "sent by the wait_for 0 reap: its completion comes")
                got = kvm_io_reap(io, &done, 4, 0, 0)
            }
            #expect(got == 1)
            #expect(done[0].tag == 9 && done[0].result == 4096)
            #expect(kvm_io_inflight(io) == 0)
            #expect(kvm_io_reap(io, &done, 4, 0, 0) == 0, "completed once")
            var back = [UInt8](repeating: 0, count: 4096)
            #expect(pread(fd, &back, 4096, 4096) == 4096)
            #expect(back.elementsEqual((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }), "the write's bytes landed")
        }
    }

    /// While a failed hand-over leaves entries unsent, kvm_io_wait returns 1 ("reap now")
    /// within about a millisecond instead of sleeping on a completion that cannot come, also
    /// when the failure happens while it already waits (on another thread, as the engine's
    /// `awaitProgress` waits without its lock); the caller's reap then sends them. Checked with
    /// 2 s waits that, before, ran out (0) instead: the bound is a guard, not a timing claim.
    @Test(.enabled(if: ioUringWorks, "io_uring only: this machine's queue falls back to threads"))
    func aWaitReturnsForAReapWhileAFailedHandOverLeavesEntriesUnsent() throws {
        var cfg = kvm_io_config()
        cfg.depth = 8
        try withQueue(cfg) { io, _, buffer in
            try #require(kvm_io_backend(io) == Int32(KVM_IO_URING), "io_uring only: this machine's queue fell back to threads")
            // A wait already sleeping (nothing in flight) when the submit's hand-over fails.
            var waited: Int32 = -2
            let waiter = TestThread { waited = kvm_io_wait(io, 2_000_000) }
            usleep(20_000)
            #expect(kvm_io_fail_submits(io, 3) == 0)  // the submit's, and the two reaps' below
            var write = kvm_io_req(tag: 4, buf: buffer, offset: 0, len: 4096, op: UInt16(KVM_IO_WRITE), file: 0, buf_index: -1)
            #expect(kvm_io_submit(io, &write, 1) == 1)
            waiter.join()
            #expect(waited == 1, "woken by the failed hand-over")
            var done = [kvm_io_done](repeating: kvm_io_done(), count: 4)
            for _ in 0..<2 {
                #expect(kvm_io_reap(io, &done, 4, 0, 0) == 0, "its hand-over fails again")
                #expect(kvm_io_wait(io, 2_000_000) == 1, "returns for the next reap's retry")
            }
            var got = kvm_io_reap(io, &done, 4, 0, 0)  // sends it
            for _ in 0..<3 where got == 0 {
                #expect(kvm_io_wait(io, 2_000_000) == 1)
                got = kvm_io_reap(io, &done, 4, 0, 0)
            }
            #expect(got == 1 && done[0].tag == 4 && done[0].result == 4096)
            #expect(kvm_io_wait(io, 1000) == 0, "nothing unsent, nothing in flight: the wait times out")
            #expect(kvm_io_fail_submits(io, 0) == 0)
        }
    }

    /// A signal does not end a reap's untimed wait (the header says it waits): a read of an
    /// empty pipe is in flight while the reaping thread gets signals (a handler without
    /// SA_RESTART, so the wait sees EINTR), and the reap returns only with its completion once
    /// the pipe has bytes. Before, the first EINTR ended it with 0 completions.
    @Test(.enabled(if: ioUringWorks, "io_uring only: this machine's queue falls back to threads"))
    func aSignalDoesNotEndAnUntimedReap() throws {
        var pipeFDs: [Int32] = [-1, -1]
        try #require(pipe(&pipeFDs) == 0)
        defer { close(pipeFDs[0]); close(pipeFDs[1]) }
        let handler = InterruptingSignal()
        defer { handler.restore() }
        try #require(handler.installed)
        let buffer = kvm_io_alloc_buffers(4096, -1)!
        defer { kvm_io_free_buffers(buffer, 4096) }
        var cfg = kvm_io_config()
        cfg.depth = 4
        cfg.n_files = 1
        var io: OpaquePointer?
        try [pipeFDs[0]].withUnsafeBufferPointer { f in
            cfg.files = f.baseAddress
            try #require(kvm_io_create(&cfg, &io) == 0)
        }
        defer { kvm_io_destroy(io) }
        try #require(kvm_io_backend(io) == Int32(KVM_IO_URING))
        var read = kvm_io_req(tag: 6, buf: buffer, offset: 0, len: 4096, op: UInt16(KVM_IO_READ), file: 0, buf_index: -1)
        try #require(kvm_io_submit(io, &read, 1) == 1)
        var reaped: Int32 = -100
        var done = kvm_io_done()
        var unblocked: Int32 = -1
        let reaper = TestThread {
            unblocked = unblockSIGUSR2()
            reaped = kvm_io_reap(io, &done, 1, 1, -1)
        }
        for _ in 0..<20 {
            reaper.signal(SIGUSR2)
            usleep(5000)
        }
        #expect(write(pipeFDs[1], "12345", 5) == 5)
        reaper.join()
        #expect(unblocked == 0)
        #expect(reaped == 1, "returned with the completion, not at the first signal")
        #expect(done.tag == 6 && done.result == 5)
        #expect(kvm_io_inflight(io) == 0)
    }

    /// Signals do not stretch a timed wait: a 200 ms kvm_io_wait with nothing in flight, on a
    /// thread getting a signal every 50 ms for 2 s (a handler without SA_RESTART, so the wait
    /// sees EINTR), still times out (0) well within 1.5 s. It once resumed each interrupted wait
    /// with the whole timeout again, and so did not return until the signals stopped. The
    /// bound is generous: a guard against never returning, not a timing claim.
    @Test(arguments: [Int32(0), 1])
    func signalsDoNotStretchATimedWait(forceThreads: Int32) throws {
        let handler = InterruptingSignal()
        defer { handler.restore() }
        try #require(handler.installed)
        var cfg = kvm_io_config()
        cfg.depth = 4
        cfg.force_threads = forceThreads
        try withQueue(cfg) { io, _, _ in
            var waited: Int32 = -100
            var elapsedMs: Int64 = -1
            var unblocked: Int32 = -1
            let waiter = TestThread {
                unblocked = unblockSIGUSR2()
                var start = timespec(), end = timespec()
                clock_gettime(CLOCK_MONOTONIC, &start)
                waited = kvm_io_wait(io, 200_000)
                clock_gettime(CLOCK_MONOTONIC, &end)
                elapsedMs = Int64(end.tv_sec - start.tv_sec) * 1000 + Int64(end.tv_nsec - start.tv_nsec) / 1_000_000
            }
            for _ in 0..<40 {
                usleep(50_000)
                waiter.signal(SIGUSR2)
            }
            waiter.join()
            #expect(unblocked == 0)
            #expect(waited == 0, "timed out: nothing in flight, no wake")
            #expect(elapsedMs >= 190 && elapsedMs < 1500, "returned after \(elapsedMs) ms")
        }
    }

    /// An op other than KVM_IO_READ and KVM_IO_WRITE is refused with -EINVAL on both backends,
    /// nothing queued. (io_uring once shifted 1 by it, undefined from 32 on, and ran op 2 as a
    /// read.)
    @Test(arguments: [Int32(0), 1])
    func anUnknownOpIsRefused(forceThreads: Int32) throws {
        var cfg = kvm_io_config()
        cfg.depth = 8
        cfg.force_threads = forceThreads
        cfg.fault_ops = 1 << UInt32(KVM_IO_WRITE)  // the fault check shifts by the op
        try withQueue(cfg) { io, _, buffer in
            for op: UInt16 in [2, 31, 32, 40, .max] {
                var good = kvm_io_req(tag: 1, buf: buffer, offset: 0, len: 4096, op: UInt16(KVM_IO_READ), file: 0, buf_index: -1)
                var requests = [good, kvm_io_req(tag: 2, buf: buffer, offset: 0, len: 4096, op: op, file: 0, buf_index: -1)]
                #expect(kvm_io_submit(io, &requests, 2) == -EINVAL, "op \(op)")
                #expect(String(cString: kvm_error()).contains("op \(op)"))
                #expect(kvm_io_inflight(io) == 0, "nothing queued")
                #expect(kvm_io_submit(io, &good, 1) == 1)
                var done = kvm_io_done()
                #expect(kvm_io_reap(io, &done, 1, 1, -1) == 1)
                #expect(done.tag == 1 && done.result == 4096)
            }
            #expect(kvm_io_fail_submits(io, 0) == (forceThreads == 1 ? -ENOTSUP : 0))
        }
    }

    /// Zero bytes of I/O buffers is refused (NULL, errno EINVAL, a message), as is a size whose
    /// rounding to 2 MiB would wrap; before, 0 mapped a huge page, unmapped all of it and
    /// returned a pointer into nothing.
    @Test func zeroBytesOfBuffersAreRefused() {
        for bytes: UInt64 in [0, .max, .max - (2 << 20)] {
            errno = 0
            #expect(kvm_io_alloc_buffers(bytes, -1) == nil, "\(bytes) bytes")
            #expect(errno == EINVAL)
            #expect(String(cString: kvm_error()).contains("kvm_io_alloc_buffers"))
        }
        let one = kvm_io_alloc_buffers(1, -1)
        #expect(one != nil)
        one?.storeBytes(of: 7, toByteOffset: (2 << 20) - 1, as: UInt8.self)  // the whole rounded-up size is mapped
        kvm_io_free_buffers(one, 1)
    }

    /// The I/O buffers are not inherited by a fork's child (VmFlags `dc`, MADV_DONTFORK): the
    /// child may not use the engine, and io_uring pins registered buffers, which the kernel
    /// copies into the child at the fork instead of sharing them (an 80-layer engine's staging:
    /// 160 MiB and 0.7 s per fork). Before, the flag was missing.
    @Test func theBuffersAreNotInheritedByAForksChild() throws {
        let buffers = try #require(kvm_io_alloc_buffers(4 << 20, -1))
        defer { kvm_io_free_buffers(buffers, 4 << 20) }
        let at = UInt(bitPattern: buffers)
        var inside = false, flags: [Substring] = []
        for line in procFileLines("/proc/self/smaps") ?? [] {
            if let dash = line.firstIndex(of: "-"), let space = line.firstIndex(of: " "), dash < space,
               let lo = UInt(line[..<dash], radix: 16), let hi = UInt(line[line.index(after: dash)..<space], radix: 16) {
                inside = lo <= at && at < hi
            } else if inside && line.hasPrefix("VmFlags:") {
                flags = line.dropFirst("VmFlags:".count).split(separator: " ")
            }
        }
        #expect(flags.contains("rd") && flags.contains("dc"), "VmFlags of the buffers: \(flags)")
    }

    /// `kvm_io_set_faults` changes the injected faults from the next request on, on both
    /// backends: writes failing from creation (`fault_after` 0) succeed once it is turned off,
    /// and with `fault_after` 1 the first write after the call succeeds and the next fails.
    @Test(arguments: [Int32(0), 1])
    func faultsSetAfterCreationApplyFromTheNextRequest(forceThreads: Int32) throws {
        var cfg = kvm_io_config()
        cfg.depth = 8
        cfg.force_threads = forceThreads
        cfg.fault_ops = 1 << UInt32(KVM_IO_WRITE)
        try withQueue(cfg) { io, _, buffer in
            func write() -> Int64 {
                var request = kvm_io_req(tag: 3, buf: buffer, offset: 0, len: 4096, op: UInt16(KVM_IO_WRITE), file: 0, buf_index: -1)
                #expect(kvm_io_submit(io, &request, 1) == 1)
                var done = kvm_io_done()
                #expect(kvm_io_reap(io, &done, 1, 1, -1) == 1)
                return done.result
            }
            #expect(write() == -Int64(EIO), "failing from creation")
            kvm_io_set_faults(io, 0, 0)
            #expect(write() == 4096, "turned off")
            kvm_io_set_faults(io, 1 << UInt32(KVM_IO_WRITE), 1)
            #expect(write() == 4096, "the first after the call still succeeds")
            #expect(write() == -Int64(EIO))
        }
    }

    /// The file-size limit the tier checks its growth against is the process's soft limit
    /// (RLIM_INFINITY, all ones, is none).
    @Test func theFileSizeLimitIsTheProcesssSoftLimit() {
        var limit = rlimit()
        #expect(getrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit) == 0)
        #expect(kvm_file_size_limit() == (limit.rlim_cur == rlim_t.max ? UInt64.max : UInt64(limit.rlim_cur)))
    }
}

/// Held by one `InterruptingSignal` at a time: the action is the process's, and a test that
/// restored the default (terminate) while another still sent SIGUSR2 killed the test process.
private let signalTestTurn = DispatchSemaphore(value: 1)

/// SIGUSR2 with a handler that does nothing and no SA_RESTART, so a system call it interrupts
/// fails with EINTR (what the signal tests send), from `init` until `restore()` puts the
/// previous action back; the signal tests run one at a time between the two
/// (`signalTestTurn`), so call `restore()` whatever happens.
private struct InterruptingSignal {
    private var previous = sigaction()
    /// Whether the handler was installed.
    private(set) var installed = false

    init() {
        signalTestTurn.wait()
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        installed = sigaction(SIGUSR2, &action, &previous) == 0
    }

    /// Puts back the action SIGUSR2 had before `init`.
    func restore() {
        var previous = previous
        if installed { sigaction(SIGUSR2, &previous, nil) }
        signalTestTurn.signal()
    }
}

/// Unblocks SIGUSR2 on the calling thread (the test runner's threads may block it); 0 on success.
private func unblockSIGUSR2() -> Int32 {
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, SIGUSR2)
    return pthread_sigmask(SIG_UNBLOCK, &set, nil)
}

