#if canImport(Glibc)
import Glibc
#endif

/// Seccomp filters for exit tests: a system call of the calling thread made to fail the way a
/// sandbox or an older kernel makes it fail, the rest of the process untouched. Each installs
/// a filter that cannot be removed (PR_SET_NO_NEW_PRIVS first), so only in an exit test's
/// child; each exits the process (status 4) when it cannot install it.
public enum Seccomp {
    /// A system call a filter names, by its number on this architecture.
    public enum Syscall {
        case pwrite64, memfdCreate, fallocate

        var number: UInt32 {
            #if arch(x86_64)
            switch self { case .pwrite64: 18; case .memfdCreate: 319; case .fallocate: 285 }
            #elseif arch(arm64)
            switch self { case .pwrite64: 68; case .memfdCreate: 279; case .fallocate: 47 }
            #endif
        }
    }

    /// Every `call` of this thread fails with `errno` (SECCOMP_RET_ERRNO).
    public static func fail(_ call: Syscall, errno: Int32) {
        install(call, argument: nil, action: 0x0005_0000 | UInt32(errno))
    }

    /// Every `call` of this thread whose argument `index` (0-based) has `value` in its low 32
    /// bits raises SIGSYS instead (SECCOMP_RET_TRAP), for a handler to answer.
    public static func trap(_ call: Syscall, whenArgument index: Int, is value: UInt32) {
        install(call, argument: (index, value), action: 0x0003_0000)
    }

    /// One classic-BPF instruction (`struct sock_filter`).
    private struct Instruction {
        var code: UInt16, jt: UInt8, jf: UInt8, k: UInt32
    }

    /// `struct sock_fprog`.
    private struct Program {
        var len: UInt16
        var filter: UnsafePointer<Instruction>
    }

    private static func install(_ call: Syscall, argument: (index: Int, value: UInt32)?, action: UInt32) {
        #if arch(x86_64)
        let arch: UInt32 = 0xC000_003E  // AUDIT_ARCH_X86_64
        #elseif arch(arm64)
        let arch: UInt32 = 0xC000_00B7  // AUDIT_ARCH_AARCH64
        #endif
        let load: UInt16 = 0x20, jumpIfEqual: UInt16 = 0x15, ret: UInt16 = 0x06  // BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
        let allow = Instruction(code: ret, jt: 0, jf: 0, k: 0x7FFF_0000)  // SECCOMP_RET_ALLOW
        // seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 i (the low half first: little-endian).
        var program = [Instruction(code: load, jt: 0, jf: 0, k: 4),
                       Instruction(code: jumpIfEqual, jt: 0, jf: argument == nil ? 3 : 5, k: arch),
                       Instruction(code: load, jt: 0, jf: 0, k: 0),
                       Instruction(code: jumpIfEqual, jt: 0, jf: argument == nil ? 1 : 3, k: call.number)]
        if let argument {
            program += [Instruction(code: load, jt: 0, jf: 0, k: UInt32(16 + 8 * argument.index)),
                        Instruction(code: jumpIfEqual, jt: 0, jf: 1, k: argument.value)]
        }
        program += [Instruction(code: ret, jt: 0, jf: 0, k: action), allow]
        let PR_SET_NO_NEW_PRIVS: Int32 = 38, PR_SET_SECCOMP: Int32 = 22, SECCOMP_MODE_FILTER: UInt = 2
        guard prctl(PR_SET_NO_NEW_PRIVS, 1) == 0 else { exit(4) }
        let rc = program.withUnsafeBufferPointer { instructions in
            var fprog = Program(len: UInt16(instructions.count), filter: instructions.baseAddress!)
            return withUnsafePointer(to: &fprog) { prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, UInt(bitPattern: $0)) }
        }
        guard rc == 0 else { exit(4) }
    }
}
