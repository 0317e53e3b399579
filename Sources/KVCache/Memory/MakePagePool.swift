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
