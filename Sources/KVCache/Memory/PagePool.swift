import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// Creates the `kvm_pool` of `config`'s budget, NUMA node and page size, in groups of
/// `groupBytes` per tensor (one page for the contiguous layout, a page-rounded run of blocks for
/// the paged one). The caller owns the pool (`kvm_pool_destroy`).
func makePagePool(_ config: EngineConfig, groupBytes: UInt64) throws(KVError) -> OpaquePointer {
    var poolConfig = kvm_pool_config()
    poolConfig.tensors = UInt32(config.tensors)
    poolConfig.page_bytes = config.pageBytes
    poolConfig.group_bytes = groupBytes
    poolConfig.budget_bytes = config.memoryBytes
    poolConfig.numa_node = config.numaNode
    var pool: OpaquePointer?
    try check(kvm_pool_create(&poolConfig, &pool))
    return pool!
}

/// Turns a CKVMemory return code (negative errno) into a thrown `KVError` carrying the C
/// module's message: EINVAL is a bad argument; ENOMEM and ENOSPC, and a process limit the OS
/// holds the engine to (EFBIG: the file-size limit, which the pool's memfd obeys; EMFILE,
/// ENFILE: open files), are out of memory, the resources refused; anything else an internal
/// failure of a system call.
func check(_ rc: Int32) throws(KVError) {
    if rc >= 0 { return }
    let message = String(cString: kvm_error())
    switch -rc {
    case EINVAL: throw .invalid(message)
    case ENOMEM, ENOSPC, EFBIG, EMFILE, ENFILE: throw .outOfMemory(message)
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
