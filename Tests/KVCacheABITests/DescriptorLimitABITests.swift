#if canImport(Glibc)
import Glibc
#endif
import Testing
import TestSupport
import KVCache
@testable import KVCacheABI

// A process out of file descriptors gets KVC_ERR_OUT_OF_MEMORY naming "Too many open files"
// from kvc_engine_create at whichever descriptor the create runs out, and the create leaves
// none of the descriptors it got open. Each test runs in a child process (an exit test), which
// lowers its RLIMIT_NOFILE.

/// The descriptor limit of the children.
private let descriptorLimit: Int32 = 64

/// In an exit test's child: creates engines of `config` with 0, 1, 2, ... descriptors left
/// (RLIMIT_NOFILE `descriptorLimit`, every other descriptor below it held open on /dev/null)
/// until one is created. Every create that fails must return KVC_ERR_OUT_OF_MEMORY with a
/// message naming "Too many open files", and every attempt must leave the thread's descriptor
/// table as it found it (the engine created last after kvc_engine_destroy). At least `failing`
/// creates must fail: one per descriptor `config` needs at once. `directory` gives each
/// attempt its offload_dir (nil: none), `peers` its peer_offload_dirs; those directories and
/// `removing` are removed at the end. Prints what went wrong to stderr, each line starting with
/// "descriptor check: " (`ExitReport.expectNothingReported` reads them), and exits 0.
///
/// The thread runs on a descriptor table of its own (`unshare(CLONE_FILES)`), which the other
/// threads of this process do not share. They open and close descriptors of their own at any
/// time: libdispatch's main queue closes the eventfd it opened on the main thread once that
/// thread has handed over to `dispatch_main`, which under load comes after this body has
/// started. Filled in the shared table, the table gained that free descriptor between the
/// fill and the create, whose memfd then got it: the create succeeded and the check failed
/// (7 runs in 600 with two CPU-bound processes beside it, 2026-11-24).
func exitAfterRunningOutOfDescriptors(_ config: CConfig, failing: Int, directory: (() -> String)? = nil, peers: String? = nil,
                                      removing: [String] = []) -> Never {
    var problems: [String] = []
    enterOwnLimitedDescriptorTable()
    var directories = removing
    var failed = 0, created = false
    for left in 0..<Int(descriptorLimit) {
        let dir = directory?()
        if let dir { directories.append(dir) }
        let before = descriptorTable()
        var held: [Int32] = []
        while true {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            if fd < 0 { break }
            held.append(fd)
        }
        let fillError = errno
        guard fillError == EMFILE, held.count >= left else {
            problems.append("filling the table with \(left) left: \(held.count) opened, then \(String(cString: strerror(fillError)))")
            break
        }
        for fd in held.suffix(left) { close(fd) }
        held.removeLast(left)
        var engine: OpaquePointer?
        let rc = dir.map { config.create(&engine, offloadDir: $0, peers: peers) } ?? config.create(&engine)
        let message = String(cString: kvc_last_error())
        kvc_engine_destroy(engine)
        for fd in held { close(fd) }
        let after = descriptorTable()
        if after != before {
            problems.append("with \(left) descriptors left (\(String(cString: kvc_status_name(rc)))): the table held \(before), then \(after)")
        }
        if rc == KVC_OK {
            created = true
            break
        }
        failed += 1
        if rc != KVC_ERR_OUT_OF_MEMORY || !message.contains("Too many open files") {
            problems.append("with \(left) descriptors left: \(String(cString: kvc_status_name(rc))) \(message)")
        }
    }
    for dir in directories {
        try? DiskTierFiles.remove(in: dir)
        rmdir(dir)
    }
    if !created { problems.append("no engine was created with up to \(descriptorLimit) descriptors left") }
    if failed < failing { problems.append("\(failed) creates failed, expected at least \(failing): the descriptors ran out fewer times than the configuration needs") }
    exitReporting(problems)
}

/// In an exit test's child: gives the calling thread a descriptor table of its own
/// (`ownDescriptorTable`) and the process an RLIMIT_NOFILE of `descriptorLimit`, or exits
/// reporting why it could not.
private func enterOwnLimitedDescriptorTable() {
    let unshared = ownDescriptorTable()
    guard unshared == 0 else { exitReporting(["unshare(CLONE_FILES) failed: \(String(cString: strerror(unshared)))"]) }
    var limit = rlimit(rlim_cur: rlim_t(descriptorLimit), rlim_max: rlim_t(descriptorLimit))
    guard withUnsafePointer(to: &limit, { setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), $0) }) == 0 else {
        exitReporting(["setrlimit(RLIMIT_NOFILE, \(descriptorLimit)) failed: \(String(cString: strerror(errno)))"])
    }
}

/// Prints `problems` to stderr, one "descriptor check: " line each, and exits 0: an exit
/// test's result carries what the child printed only when it exited as expected.
private func exitReporting(_ problems: [String]) -> Never { ExitReport.exit(reportPrefix, problems) }

private let reportPrefix = "descriptor check: "

/// Gives the calling thread a descriptor table of its own, a copy of the process's
/// (`unshare(CLONE_FILES)`, 0x400; Glibc's module does not export `unshare`). 0 or the errno.
private func ownDescriptorTable() -> Int32 {
    typealias Unshare = @convention(c) (Int32) -> Int32
    guard let symbol = dlsym(nil, "unshare") else { return ENOSYS }
    return unsafeBitCast(symbol, to: Unshare.self)(0x400) == 0 ? 0 : errno
}

/// The calling thread's open descriptors below `descriptorLimit`, as "fd target"; read with
/// readlink, which needs no descriptor.
private func descriptorTable() -> [String] {
    var entries: [String] = []
    var target = [CChar](repeating: 0, count: 4096)
    for fd in 0..<descriptorLimit {
        let n = readlink("/proc/thread-self/fd/\(fd)", &target, target.count - 1)
        if n >= 0 {
            entries.append("\(fd) \(String(decoding: target[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self))")
        }
    }
    return entries
}

@Suite struct DescriptorLimitABITests {
    /// The paged layout needs one descriptor, its memory file (memfd_create fails with
    /// EMFILE): KVC_ERR_OUT_OF_MEMORY naming it, which was KVC_ERR_INTERNAL ("a bug in the
    /// library") once.
    @Test func noFileDescriptorLeftIsOutOfMemory() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            exitAfterRunningOutOfDescriptors(CConfig.small(KVC_LAYOUT_PAGED), failing: 1)
        }
        ExitReport.expectNothingReported(reportPrefix, result)
    }

    @Test func theContiguousLayoutOutOfDescriptorsIsOutOfMemory() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            exitAfterRunningOutOfDescriptors(CConfig.small(KVC_LAYOUT_CONTIGUOUS), failing: 1)
        }
        ExitReport.expectNothingReported(reportPrefix, result)
    }

    /// A disk tier in a new directory takes the slab's lock, its I/O descriptor and the
    /// journal, reads and writes the identity and syncs the directory, then opens its I/O
    /// queue (an io_uring ring and an eventfd; the thread pool needs none): each ran out of
    /// descriptors as KVC_ERR_IO ("offload: cannot open ... Too many open files") while the
    /// memory file before them was KVC_ERR_OUT_OF_MEMORY.
    @Test func aNewDiskTierOutOfDescriptorsIsOutOfMemoryAtEachOfThem() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            var c = CConfig.small(KVC_LAYOUT_PAGED)
            c.offloadBytes = 1 << 20
            c.offloadWriteback = 1
            exitAfterRunningOutOfDescriptors(c, failing: 5, directory: { ScratchDir("abi-fd").path })
        }
        ExitReport.expectNothingReported(reportPrefix, result)
    }

    /// The same directory for every attempt: the first attempts leave a slab (and journal)
    /// behind, the later ones reopen them, and the last replays and compacts the journal.
    @Test func aReopenedDiskTierOutOfDescriptorsIsOutOfMemoryAtEachOfThem() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            var c = CConfig.small(KVC_LAYOUT_CONTIGUOUS)
            c.offloadBytes = 1 << 20
            let dir = ScratchDir("abi-fd").path
            exitAfterRunningOutOfDescriptors(c, failing: 5, directory: { dir })
        }
        ExitReport.expectNothingReported(reportPrefix, result)
    }

    /// A peer's identity, slab and journal are opened before the own tier's files.
    @Test func aPeerTierOutOfDescriptorsIsOutOfMemoryAtEachOfItsFiles() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            var c = CConfig.small(KVC_LAYOUT_PAGED)
            c.offloadBytes = 1 << 20
            c.modelTag = 7
            let peer = ScratchDir("abi-fd").path
            var engine: OpaquePointer?
            guard c.create(&engine, offloadDir: peer) == KVC_OK else {
                exitReporting(["the peer's engine: \(String(cString: kvc_last_error()))"])
            }
            kvc_engine_destroy(engine)
            exitAfterRunningOutOfDescriptors(c, failing: 7, directory: { ScratchDir("abi-fd").path }, peers: peer, removing: [peer])
        }
        ExitReport.expectNothingReported(reportPrefix, result)
    }

    /// kvc_engine_sync duplicates the slab's and journal's descriptors to fdatasync them
    /// without the lock; with none left (a server at its RLIMIT_NOFILE) it syncs the slab's
    /// own under the lock instead: KVC_OK (KVC_ERR_IO "cannot duplicate" in the first version),
    /// and an engine created again on the directory finds the prompt spilled before it.
    @Test func aSyncWithNoDescriptorLeftStillSyncs() async {
        let paged = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            exitAfterSyncingWithNoDescriptorLeft(KVC_LAYOUT_PAGED)
        }
        ExitReport.expectNothingReported(reportPrefix, paged)
        let contiguous = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            exitAfterSyncingWithNoDescriptorLeft(KVC_LAYOUT_CONTIGUOUS)
        }
        ExitReport.expectNothingReported(reportPrefix, contiguous)
    }
}

/// In an exit test's child (`aSyncWithNoDescriptorLeftStillSyncs`): spills a prompt, syncs
/// with every descriptor taken, creates the engine again and looks the prompt up; exits
/// reporting what went wrong.
private func exitAfterSyncingWithNoDescriptorLeft(_ layout: UInt32) -> Never {
    var problems: [String] = []
    enterOwnLimitedDescriptorTable()
    var c = CConfig.small(layout)
    c.offloadBytes = 1 << 20
    let dir = ScratchDir("abi-fd").path
    let tokens = (0..<40).map { Int32($0 * 7 + 3) }
    var engine: OpaquePointer?
    var cached = 0
    guard c.create(&engine, offloadDir: dir) == KVC_OK,
          kvc_seq_create(engine, 1, tokens, tokens.count, &cached) == KVC_OK,
          kvc_seq_free(engine, 1) == KVC_OK, kvc_engine_trim(engine) == KVC_OK else {
        exitReporting(["setting up: \(String(cString: kvc_last_error()))"])
    }
    var held: [Int32] = []
    while true {
        let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if fd < 0 { break }
        held.append(fd)
    }
    if errno != EMFILE { problems.append("filling the table stopped at \(String(cString: strerror(errno)))") }
    let rc = kvc_engine_sync(engine)
    if rc != KVC_OK { problems.append("sync with no descriptor left: \(String(cString: kvc_status_name(rc))) \(String(cString: kvc_last_error()))") }
    for fd in held { close(fd) }
    kvc_engine_destroy(engine)
    engine = nil
    if c.create(&engine, offloadDir: dir) != KVC_OK || kvc_seq_create(engine, 2, tokens, tokens.count, &cached) != KVC_OK {
        problems.append("created again: \(String(cString: kvc_last_error()))")
    } else if cached != 36 {
        problems.append("created again, the prompt's 9 full blocks were not found: \(cached) tokens cached")
    }
    kvc_engine_destroy(engine)
    try? DiskTierFiles.remove(in: dir)
    rmdir(dir)
    exitReporting(problems)
}
