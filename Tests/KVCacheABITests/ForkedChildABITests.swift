import CKVMemory
import KVCache
import Testing
import TestSupport
@testable import KVCacheABI

#if canImport(Glibc)
import Glibc
#endif

private let reportPrefix = "forked child check: "

private func exitReporting(_ problems: [String]) -> Never { ExitReport.exit(reportPrefix, problems) }

/// A child forked without exec that calls kvc_engine_destroy on an engine it inherited (a
/// Python worker's `__del__` or atexit) must not harm the parent, which keeps the engine. Each
/// case runs in an exit test's process (a SIGBUS there would end the test runner).
@Suite struct ForkedChildABITests {
    /// Both layouts, without and with a disk tier (with writeback threads): the child's
    /// destroy returns and the child exits 0; the parent's K/V bytes are intact, it appends,
    /// creates and syncs; and an engine created again on the directory finds the prompt the
    /// parent spilled after the child's destroy. Before: the parent died of SIGBUS reading its
    /// own K/V (the child's destroy cut the shared memory file to 0 bytes), and with a disk
    /// tier the child crashed draining the parent's io_uring ring.
    @Test func aChildsDestroyLeavesTheParentsEngineWhole() async {
        // An exit test's body captures nothing: one per case.
        ExitReport.expectNothingReported(reportPrefix, await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            exitAfterAChildDestroys(KVC_LAYOUT_PAGED, tier: false)
        })
        ExitReport.expectNothingReported(reportPrefix, await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            exitAfterAChildDestroys(KVC_LAYOUT_CONTIGUOUS, tier: false)
        })
        ExitReport.expectNothingReported(reportPrefix, await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            exitAfterAChildDestroys(KVC_LAYOUT_PAGED, tier: true)
        })
        ExitReport.expectNothingReported(reportPrefix, await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            exitAfterAChildDestroys(KVC_LAYOUT_CONTIGUOUS, tier: true)
        })
    }

    /// Every other call on an inherited engine is refused in the child: KVC_ERR_INVALID_ARGUMENT
    /// naming the creating process, and the parent's sequence is unchanged.
    @Test func aChildsCallsOnAnInheritedEngineAreRefused() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let c = CConfig.small(KVC_LAYOUT_PAGED)
            var engine: OpaquePointer?
            let tokens = (0..<10).map { Int32($0) }
            var cached = 0
            guard c.create(&engine) == KVC_OK, kvc_seq_create(engine, 1, tokens, tokens.count, &cached) == KVC_OK else {
                exitReporting(["setting up: \(String(cString: kvc_last_error()))"])
            }
            let parent = getpid()
            var pipe: [Int32] = [-1, -1]
            guard Glibc.pipe(&pipe) == 0 else { exitReporting(["pipe: \(errno)"]) }
            let child = fork()
            if child == 0 {
                let rc = kvc_seq_append(engine, 1, tokens, 1)
                let message = String(cString: kvc_last_error())
                let ok = rc == KVC_ERR_INVALID_ARGUMENT && message.contains("process \(parent)")
                let line = ok ? "" : "kvc_seq_append in the child: \(String(cString: kvc_status_name(rc))) '\(message)'"
                _ = line.withCString { write(pipe[1], $0, strlen($0)) }
                _exit(0)
            }
            close(pipe[1])
            var problem = [UInt8](repeating: 0, count: 512)
            let n = read(pipe[0], &problem, problem.count)
            var status: Int32 = 0
            waitpid(child, &status, 0)
            var problems: [String] = []
            if n > 0 { problems.append(String(decoding: problem[0..<n], as: UTF8.self)) }
            var length = 0
            if kvc_seq_length(engine, 1, &length) != KVC_OK || length != 10 { problems.append("the parent's sequence has \(length) tokens, not 10") }
            kvc_engine_destroy(engine)
            exitReporting(problems)
        }
        ExitReport.expectNothingReported(reportPrefix, result)
    }
}

/// In an exit test's process: an engine with a written sequence (and with a tier, a prompt
/// spilled and synced), a child that destroys it and exits, then the parent's checks.
private func exitAfterAChildDestroys(_ layout: UInt32, tier: Bool) -> Never {
    var problems: [String] = []
    var c = CConfig.small(layout)
    let scratch = tier ? ScratchDir("abi-fork") : nil
    let dir = scratch?.path
    if tier {
        c.offloadBytes = 1 << 20
        c.offloadWriteback = 1
    }
    let spilled = (0..<13).map { Int32(900_000 + $0) }
    do {
        do {  // the parent's engine, destroyed at the end of the scope
            let f = try ABIFixture(c, offloadDir: dir)
            let prompt = f.uniqueTokens(1, count: 3 * f.blockTokens + 2)
            try f.create(1, tokens: prompt)
            try f.write(1, salt: 1, from: 0, to: prompt.count)
            let child = fork()
            if child == 0 {
                kvc_engine_destroy(f.handle)
                _exit(0)
            }
            var status: Int32 = 0
            // Bounded: on the old code a child joining its parent's writeback threads never returns.
            var waited = 0
            while waitpid(child, &status, WNOHANG) == 0 && waited < 600 {
                usleep(100_000)
                waited += 1
            }
            if waited == 600 {
                kill(child, SIGKILL)
                waitpid(child, &status, 0)
                problems.append("the child's destroy did not return in 60 s")
            } else if status != 0 {
                problems.append("the child's destroy ended it with status \(status) (signal \(status & 0x7f))")
            }
            if let m = try f.firstMismatch(1, salt: 1, to: prompt.count) { problems.append("the parent's K/V after the child's destroy: \(m)") }
            try f.append(1, tokens: [7, 8])
            try f.write(1, salt: 1, from: prompt.count, to: prompt.count + 2)
            let second = f.uniqueTokens(2, count: 2 * f.blockTokens + 1)
            try f.create(2, tokens: second)
            try f.write(2, salt: 2, from: 0, to: second.count)
            if let m = try f.firstMismatch(1, salt: 1, to: prompt.count + 2) { problems.append("sequence 1 after the parent's appends: \(m)") }
            if let m = try f.firstMismatch(2, salt: 2, to: second.count) { problems.append("sequence 2: \(m)") }
            if tier { try f.spill(3, prompt: spilled, salt: 3) }
        }
        if let dir {
            let again = try ABIFixture(c, offloadDir: dir)
            let cached = try again.create(4, tokens: spilled)
            if cached != 12 { problems.append("created again on the directory: \(cached) of the spilled prompt's 12 tokens cached") }
            if waitReady(again, 4) != KVC_OK { problems.append("the spilled prompt's reads: \(String(cString: kvc_last_error()))") }
            if let m = try again.firstMismatch(4, salt: 3, to: 12) { problems.append("the spilled prompt read back: \(m)") }
        }
    } catch {
        problems.append("\(error): \(String(cString: kvc_last_error()))")
    }
    scratch?.remove()
    exitReporting(problems)
}
