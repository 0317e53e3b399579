#if canImport(Glibc)
import Glibc
#endif
import TestSupport
import Testing
@testable import KVCache
@testable import KVCacheABI

// A process limit that the config's metadata or the engine's threads run into at create is
// KVC_ERR_OUT_OF_MEMORY naming the cause, with *out NULL, and the process goes on: a small
// engine is created and used afterwards (kvcache.h: the library never aborts on bad input).
// Process limits are process-wide, so each test runs in a child (an exit test), which prints
// what went wrong to stderr ("limit check: " lines) and exits 0, or exits 1 when it aborted.

private let reportPrefix = "limit check: "

private func exitReporting(_ problems: [String]) -> Never { ExitReport.exit(reportPrefix, problems) }

/// Expects `create` to return KVC_ERR_OUT_OF_MEMORY, leave its engine NULL and set a message
/// holding every one of `naming`; appends what differs to `problems`.
private func expectOutOfMemory(_ what: String, naming: [String], problems: inout [String],
                               _ create: (inout OpaquePointer?) -> kvc_status) {
    var e: OpaquePointer? = OpaquePointer(bitPattern: 0x1)
    let rc = create(&e)
    let message = String(cString: kvc_last_error())
    if rc != KVC_ERR_OUT_OF_MEMORY { problems.append("\(what): \(String(cString: kvc_status_name(rc))), expected KVC_ERR_OUT_OF_MEMORY: \(message)") }
    if e != nil { problems.append("\(what): *out is not NULL") }
    for word in naming where !message.contains(word) { problems.append("\(what): the message does not name '\(word)': \(message)") }
    if rc == KVC_OK { kvc_engine_destroy(e) }
}

/// Creates a small engine (with a disk tier in `dir` and its write-back thread when given)
/// and uses it: a sequence created, appended to and freed. Appends what fails to `problems`.
private func expectASmallEngineWorks(_ what: String, offloadDir dir: String? = nil, problems: inout [String]) {
    var c = CConfig.small(KVC_LAYOUT_PAGED)
    var e: OpaquePointer?
    if dir != nil {
        c.offloadBytes = 16 << 20
        c.offloadWriteback = 1
    }
    let rc = dir.map { c.create(&e, offloadDir: $0) } ?? c.create(&e)
    guard rc == KVC_OK, let e else {
        problems.append("\(what): the small engine afterwards: \(String(cString: kvc_status_name(rc))) \(String(cString: kvc_last_error()))")
        return
    }
    let tokens: [Int32] = Array(0..<40)
    var cached = 0
    let steps = [kvc_seq_create(e, 1, tokens, tokens.count, &cached), kvc_seq_append(e, 1, tokens, 1), kvc_seq_free(e, 1)]
    if steps != [KVC_OK, KVC_OK, KVC_OK] { problems.append("\(what): the small engine afterwards: \(steps.map { String(cString: kvc_status_name($0)) }) \(String(cString: kvc_last_error()))") }
    kvc_engine_destroy(e)
}

/// The default stack size of threads created without attributes (glibc reads RLIMIT_STACK
/// for it once, at process start, so a child's setrlimit does not change it; this does, as
/// `ulimit -s` before the process did). 0 or the errno.
private func setDefaultThreadStack(_ bytes: Int) -> Int32 {
    typealias SetDefault = @convention(c) (UnsafePointer<pthread_attr_t>) -> Int32
    guard let symbol = dlsym(nil, "pthread_setattr_default_np") else { return ENOSYS }
    var attr = pthread_attr_t()
    pthread_attr_init(&attr)
    defer { pthread_attr_destroy(&attr) }
    let set = pthread_attr_setstacksize(&attr, bytes)
    if set != 0 { return set }
    return unsafeBitCast(symbol, to: SetDefault.self)(&attr)
}

@Suite struct ProcessLimitABITests {
    /// Under an address-space limit 256 MiB above what the process maps: a metadata-only
    /// engine of 65536 sequences of 65536 tokens in 16-token blocks needs a 1 GiB block table
    /// (2^28 entries, which the header allows), one of 65536 sequences of 65536-token blocks
    /// 16 GiB for its partial blocks' tokens. Each trapped in Swift's allocation (SIGABRT).
    /// A create that fails frees what it allocated before: five in a row fit.
    @Test func metadataTheAddressSpaceLimitRefusesIsOutOfMemory() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            var problems: [String] = []
            var old = rlimit()
            getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &old)
            var limit = old
            limit.rlim_cur = rlim_t(addressSpaceBytes() + (256 << 20))
            guard setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit) == 0 else {
                exitReporting(["setrlimit(RLIMIT_AS) failed: \(String(cString: strerror(errno)))"])
            }
            var c = CConfig.small(KVC_LAYOUT_PAGED)
            c.metadataOnly = 1
            c.maxSeqs = 65536
            c.maxSeqTokens = 65536
            c.blockTokens = 16
            expectOutOfMemory("block tables", naming: ["max_seqs x max_seq_tokens / block_tokens", "65536 x 4096"], problems: &problems) { c.create(&$0) }
            c.maxSeqTokens = 65536
            c.blockTokens = 65536
            c.memoryBytes = 4 * 65536 * 64 * 4  // 4 blocks of 65536 tokens of 64 bytes, 4 tensors
            expectOutOfMemory("partial blocks", naming: ["max_seqs x block_tokens", "65536 x 65536"], problems: &problems) { c.create(&$0) }
            // What a failing create allocated before is freed: a 128 MiB block table (65536 x
            // 512 entries) then 8 GiB of partial-block tokens, five times, under 256 MiB left.
            c.maxSeqTokens = 1 << 24
            c.blockTokens = 32768
            c.memoryBytes = 4 * 32768 * 64 * 4
            for i in 0..<5 {
                expectOutOfMemory("partial blocks after a 128 MiB block table, \(i + 1). time", naming: ["max_seqs x block_tokens", "65536 x 32768"],
                                  problems: &problems) { c.create(&$0) }
            }
            expectASmallEngineWorks("under the limit", problems: &problems)
            setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &old)
            exitReporting(problems)
        }
        ExitReport.expectNothingReported(reportPrefix, result)
    }

    /// Threads whose stacks cannot be mapped (a default stack of 2^50 bytes, as
    /// `ulimit -s 4294967296` gave the C client): the write-back thread of offload_writeback
    /// (a precondition, SIGILL) and the I/O thread pool of the threads backend (KVC_ERR_IO)
    /// are KVC_ERR_OUT_OF_MEMORY naming pthread_create; the create closes its disk tier (the
    /// same directory is taken again at once) and frees what it made.
    @Test func threadsTheProcessCannotStartAreOutOfMemory() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            var problems: [String] = []
            let dir = ScratchDir("abi-limit").path
            var c = CConfig.small(KVC_LAYOUT_PAGED)
            c.offloadBytes = 16 << 20
            c.offloadWriteback = 1
            // The default backend (io_uring here; the thread pool where io_uring is refused).
            var probe: OpaquePointer?
            guard c.create(&probe, offloadDir: dir) == KVC_OK, let probe else { exitReporting(["the probe engine: \(String(cString: kvc_last_error()))"]) }
            let uring = (try? withEngine(probe) { $0.offload?.tier.stats.backend }) == 0  // KVM_IO_URING
            kvc_engine_destroy(probe)
            let rc = setDefaultThreadStack(1 << 50)
            guard rc == 0 else { exitReporting(["pthread_setattr_default_np: \(String(cString: strerror(rc)))"]) }
            expectOutOfMemory("offload_writeback", naming: ["pthread_create failed", uring ? "write-back thread" : "thread backend"],
                              problems: &problems) { c.create(&$0, offloadDir: dir) }
            setenv("KVCACHE_OFFLOAD_BACKEND", "threads", 1)
            c.offloadWriteback = 0
            expectOutOfMemory("the threads backend", naming: ["pthread_create failed", "thread backend"], problems: &problems) { c.create(&$0, offloadDir: dir) }
            unsetenv("KVCACHE_OFFLOAD_BACKEND")
            _ = setDefaultThreadStack(8 << 20)
            expectASmallEngineWorks("the same directory afterwards", offloadDir: dir, problems: &problems)
            try? DiskTierFiles.remove(in: dir)
            rmdir(dir)
            if !uring { problems.append("io_uring is unavailable: the write-back thread's own failure was not reached (the thread pool's was)") }
            exitReporting(problems)
        }
        ExitReport.expectNothingReported(reportPrefix, result)
    }
}
