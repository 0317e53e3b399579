import Foundation
import TestSupport
import Testing
@testable import KVCacheABI
@testable import KVCache

/// `kvc_stats.disk_io_mode`: which I/O path the disk tier runs, so that a server sees a
/// fallback without parsing stderr. Registration of the staging buffers fell back silently
/// under RLIMIT_MEMLOCK (an unprivileged user's 8 MiB: every engine, one stderr line for the
/// process; revmulti's memlock.c), with no stat saying so.
@Suite struct DiskIOModeABITests {
    @Test func noTierIsZeroAndTheThreadPoolIsThree() throws {
        #expect(try ABIFixture(layout: KVC_LAYOUT_PAGED).stats().diskIOMode == 0)
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.offloadBytes = 16 << 20
        let (f, _) = try adjustedFixture(c, dir: scratchDir()) { $0.offloadForceThreads = true }
        #expect(try f.stats().diskIOMode == 3)
    }

    /// Root (CAP_IPC_LOCK) registers whatever RLIMIT_MEMLOCK says. In a child process, so that
    /// no other test's engines share its memory or rings; a refusal's reason is recorded.
    @Test func anIOUringTierWithRegisteredBuffersIsOne() async throws {
        try #require(geteuid() == 0, "the registration may be refused to a user without CAP_IPC_LOCK")
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            var c = CConfig.small(KVC_LAYOUT_PAGED)
            c.offloadBytes = 16 << 20
            guard let f = try? ABIFixture(c, offloadDir: scratchDir()), let stats = try? f.stats() else { exit(2) }
            exit(stats.diskIOMode == 1 ? 0 : 10 + Int32(stats.diskIOMode))
        }
        if let result, result.exitStatus != .exitCode(0) {
            Issue.record(Comment(rawValue: String(decoding: result.standardErrorContent, as: UTF8.self)))
        }
    }

    /// Under an RLIMIT_MEMLOCK of 1 MiB and without CAP_IPC_LOCK (root becomes nobody), the
    /// registration is refused and the engine runs io_uring with buffers pinned per request:
    /// 2. Process-wide (the limit, the user), so in a child process.
    @Test func refusedRegistrationUnderMemlockIsTwo() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            func fail(_ why: String) -> Never {
                FileHandle.standardError.write(Data("IO-MODE: \(why)\n".utf8))
                exit(0)  // the parent reads the line: a failed exit status hides stderr
            }
            var template = Array("/tmp/kvc-iomode-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { fail("mkdtemp") }
            let dir = String(cString: made)
            var limit = rlimit(rlim_cur: 1 << 20, rlim_max: 1 << 20)  // the ring fits; 0 refuses io_uring itself (mode 3)
            guard setrlimit(__rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue), &limit) == 0 else { fail("setrlimit") }
            if geteuid() == 0 {
                guard chown(dir, 65534, 65534) == 0, setgid(65534) == 0, setuid(65534) == 0 else { fail("becoming nobody") }
            }
            var c = CConfig.small(KVC_LAYOUT_PAGED)
            c.offloadBytes = 16 << 20
            var e: OpaquePointer?
            guard c.create(&e, offloadDir: dir) == KVC_OK, let e else { fail("create: \(String(cString: kvc_last_error()))") }
            var bytes = [UInt8](repeating: 0, count: CStats.size)
            bytes.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(CStats.size), toByteOffset: 0, as: UInt32.self) }
            let rc = bytes.withUnsafeMutableBytes { kvc_engine_stats(e, $0.baseAddress) }
            kvc_engine_destroy(e)
            try? FileManager.default.removeItem(atPath: dir)
            let mode = CStats(bytes: bytes).diskIOMode
            if rc != KVC_OK || mode != 2 { fail("status \(rc), disk_io_mode \(mode)") }
            exit(0)
        }
        let why = result.map { String(decoding: $0.standardErrorContent, as: UTF8.self).split(separator: "\n").filter { $0.hasPrefix("IO-MODE: ") } }
        #expect(why?.isEmpty == true, Comment(rawValue: why?.joined(separator: "\n") ?? ""))
    }
}
