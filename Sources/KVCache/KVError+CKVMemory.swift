import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

// How the C memory module's return codes (negative errno, the message in `kvm_error()`)
// become the engine's `KVError`s: one classifier (`KVError.errno`) for every call, told whether
// the call was a memory or a file one; one rule for calls that commit memory (`checkCommit`).

/// The C module's message for its last failed call on this thread (`kvm_error()`), as a Swift
/// string; the one way the engine and the CLI (io-bench's direct C calls) read it. Cost: one
/// copy of the message.
public func kvmMessage() -> String { String(cString: kvm_error()) }

extension KVError {
    /// What a failed C call was doing, which decides how `KVError.errno` classifies the errnos
    /// the two kinds do not share.
    enum FailedCall: Equatable {
        /// A call on the engine's memory or an argument it checks (`check`): EINVAL is a bad
        /// argument; ENOSPC and EFBIG (the file-size limit the pool's memfd obeys) are out of
        /// memory; EPERM and EACCES (a container's seccomp profile: memfd_create, mbind without
        /// CAP_SYS_NICE) are unsupported here; anything else is an internal failure.
        case memory
        /// A file the engine could not open, create or sync, or another descriptor it could not
        /// get (an eventfd, a ring): any errno but the shared ones is `otherwise`.
        case file(otherwise: Code)
    }

    /// The error of a C call that failed with `err` (a positive errno), explained by `message`.
    /// Shared by both kinds of call: a limit on open files (EMFILE, the process's
    /// RLIMIT_NOFILE; ENFILE, the system's) and ENOMEM (memory the kernel or a process limit
    /// refused, as for the I/O thread backend's threads, io_threads.c) are `outOfMemory`, so an
    /// engine created without a descriptor left gets one status whichever of its descriptors
    /// (the page pool's memory file or a tier's file) that is; the rest is `call`'s rule.
    static func errno(_ err: Int32, _ message: String, _ call: FailedCall) -> KVError {
        switch err {
        case EMFILE, ENFILE, ENOMEM: return .outOfMemory(message)
        default: break
        }
        switch call {
        case .file(let code): return KVError(code, message)
        case .memory:
            switch err {
            case EINVAL: return .invalid(message)
            case ENOSPC, EFBIG: return .outOfMemory(message)
            case EPERM, EACCES:
                return KVError(.unsupported, message + " (the environment refuses it: a seccomp profile or a missing capability)")
            default: return KVError(.internal, message)
            }
        }
    }

    /// `errno(-rc, kvmMessage(), .file(otherwise: code))`: the error of a failed C file call
    /// whose return code `rc` is a negative errno, with the C module's message.
    static func file(_ rc: Int32, otherwise code: Code = .io) -> KVError {
        errno(-rc, kvmMessage(), .file(otherwise: code))
    }
}

/// Turns a CKVMemory return code (negative errno) into a thrown `KVError` carrying the C
/// module's message, by `KVError.errno`'s memory rule.
func check(_ rc: Int32) throws(KVError) {
    if rc >= 0 { return }
    throw .errno(-rc, kvmMessage(), .memory)
}

/// Turns the return code of a call that commits physical memory for the caller
/// (`kvm_pool_alloc_run_fit`, `kvm_pool_precommit`, `kvm_arena_alloc`, `kvm_arena_reserve`) into
/// a thrown `KVError`: a commit the OS refused (fallocate or populate: ENOSPC, ENOMEM, or EIO
/// as a memory-limited cgroup's shmem can give) or a full budget is `outOfMemory`, the status
/// a server answers by preempting a sequence or admitting fewer, never a bug; the call changed
/// nothing. Only EINVAL, a bad argument from the engine, is `internal`.
func checkCommit(_ rc: Int64) throws(KVError) {
    if rc >= 0 { return }
    let message = kvmMessage()
    if -rc == Int64(EINVAL) { throw KVError(.internal, message) }
    throw .outOfMemory(message)
}
