#if canImport(Glibc)
import Glibc
#endif
import TestSupport
import Testing
@testable import KVCache

/// The engine's memory where the environment refuses or interrupts its system calls, each in
/// an exit test's child (a seccomp filter cannot be removed): the status says what happened,
/// not "a bug in the library".
@Suite struct RefusedSystemCallTests {
    /// A container's seccomp profile refusing memfd_create (EPERM) makes the create
    /// `unsupported`, naming the call; before, `internal` ("a bug in the library"). Exit 0 when
    /// so, 1 for another outcome (its status on stderr).
    @Test func aMemoryFileTheSandboxRefusesIsUnsupported() async {
        await #expect(processExitsWith: .exitCode(0)) {
            Seccomp.fail(.memfdCreate, errno: EPERM)
            do {
                _ = try Engine(smallConfig(.paged, memoryBytes: 1 << 20))
                report("created")
            } catch let error as KVError {
                if error.code == .unsupported && error.message.contains("memfd_create") { exit(0) }
                report("\(error.code): \(error.message)")
            } catch { report("\(error)") }
            exit(1)
        }
    }

    #if arch(x86_64)
    /// A signal interrupting the commit of memory (fallocate on the pool's memfd: EINTR, which
    /// older kernels give for any pending signal, SA_RESTART or not) is tried again; before,
    /// the append was `outOfMemory`. The filter traps every fallocate of mode 0 (the commit's);
    /// the handler answers the first with EINTR and the others by doing the allocation with
    /// FALLOC_FL_KEEP_SIZE (inside the file's size: the same pages), which the filter lets
    /// through. Exit 0 when every call succeeded after at least one interruption, 1 otherwise.
    @Test func aCommitASignalInterruptsIsTriedAgain() async {
        await #expect(processExitsWith: .exitCode(0)) {
            var action = sigaction()
            action.__sigaction_handler.sa_sigaction = answerFallocate
            action.sa_flags = SA_SIGINFO
            guard sigaction(SIGSYS, &action, nil) == 0 else { exit(2) }
            Seccomp.trap(.fallocate, whenArgument: 1, is: 0)
            do {
                let e = try Engine(smallConfig(.paged, memoryBytes: 1 << 20))
                try e.createSequence(1, tokens: tokens(64, seed: 1))
                try e.append(1, tokens: tokens(64, seed: 2))
                guard fallocateTraps >= 2 else { report("\(fallocateTraps) traps"); exit(1) }
                exit(0)
            } catch {
                report("\(error)")
                exit(1)
            }
        }
    }
    #endif
}

#if arch(x86_64)
/// fallocate calls the test's filter trapped (only its exit test's child counts).
nonisolated(unsafe) private var fallocateTraps = 0

/// The SIGSYS handler of `aCommitASignalInterruptsIsTriedAgain`: the trapped call's arguments
/// are in the saved registers (x86-64: rdi, rsi, rdx, r10), its result goes in rax.
private let answerFallocate: @convention(c) (Int32, UnsafeMutablePointer<siginfo_t>?, UnsafeMutableRawPointer?) -> Void = { _, _, context in
    guard let context else { return }
    let registers = context.assumingMemoryBound(to: ucontext_t.self)
    withUnsafeMutablePointer(to: &registers.pointee.uc_mcontext.gregs) { gregs in
        gregs.withMemoryRebound(to: Int64.self, capacity: 23) { r in
            let (rdi, rdx, r10, rax) = (8, 12, 2, 13)  // REG_* of <sys/ucontext.h>
            fallocateTraps += 1
            if fallocateTraps == 1 { r[rax] = -Int64(EINTR); return }
            typealias Fallocate = @convention(c) (Int32, Int32, Int64, Int64) -> Int32
            let call = unsafeBitCast(dlsym(dlopen(nil, RTLD_NOW), "fallocate")!, to: Fallocate.self)
            let keepSize: Int32 = 1  // FALLOC_FL_KEEP_SIZE
            r[rax] = call(Int32(truncatingIfNeeded: r[rdi]), keepSize, r[rdx], r[r10]) == 0 ? 0 : -Int64(errno)
        }
    }
}
#endif

/// Writes `text` and a newline to stderr (the exit test's captured output).
private func report(_ text: String) {
    _ = (text + "\n").withCString { write(2, $0, strlen($0)) }
}
