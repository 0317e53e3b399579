import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

// How the C memory module's return codes (negative errno, the message in `kvm_error()`)
// become the engine's `KVError`s: one rule for every call, one for calls that commit memory.

/// Turns a CKVMemory return code (negative errno) into a thrown `KVError` carrying the C
/// module's message: EINVAL is a bad argument; ENOMEM and ENOSPC, and a process limit the OS
/// holds the engine to (EFBIG: the file-size limit, which the pool's memfd obeys; EMFILE,
/// ENFILE: open files), are out of memory, the resources refused; EPERM and EACCES, a call
/// the environment refuses (a container's seccomp profile: memfd_create, mbind without
/// CAP_SYS_NICE), are unsupported here; anything else an internal failure of a system call.
func check(_ rc: Int32) throws(KVError) {
    if rc >= 0 { return }
    let message = String(cString: kvm_error())
    switch -rc {
    case EINVAL: throw .invalid(message)
    case ENOMEM, ENOSPC, EFBIG, EMFILE, ENFILE: throw .outOfMemory(message)
    case EPERM, EACCES: throw KVError(.unsupported, message + " (the environment refuses it: a seccomp profile or a missing capability)")
    default: throw KVError(.internal, message)
    }
}

/// Turns the return code of a call that commits physical memory for the caller
/// (`kvm_pool_alloc_run_fit`, `kvm_pool_precommit`, `kvm_arena_alloc`, `kvm_arena_reserve`) into
/// a thrown `KVError`: a commit the OS refused (fallocate or populate: ENOSPC, ENOMEM, or EIO
/// as a memory-limited cgroup's shmem can give) or a full budget is `outOfMemory`, the status
/// a server answers by preempting a sequence or admitting fewer, never a bug; the call changed
/// nothing. Only EINVAL, a bad argument from the engine, is `internal`.
func checkCommit(_ rc: Int64) throws(KVError) {
    if rc >= 0 { return }
    let message = String(cString: kvm_error())
    if -rc == Int64(EINVAL) { throw KVError(.internal, message) }
    throw .outOfMemory(message)
}
