import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The paged layout's memory: a `kvm_pool` and the page-aware `kvm_arena` over it. Owns both.
///
/// Block `b` of tensor `t` (K of layer l is 2l, V is 2l + 1) is `blockBytes` of token-major
/// K/V at `address(b, t)`; the address is fixed for the engine's lifetime.
final class PagedMemory {
    let pool: OpaquePointer
    let arena: OpaquePointer
    let tensors: Int
    let blockBytes: Int
    let tokenBytes: Int

    init(_ config: EngineConfig) throws(KVError) {
        tensors = config.tensors
        blockBytes = config.blockBytes
        tokenBytes = config.tokenBytes
        let p = try makePagePool(config, groupBytes: kvm_arena_group_bytes(UInt64(config.blockBytes), config.pageBytes))
        var a: OpaquePointer?
        let rc = kvm_arena_create(p, UInt64(config.blockBytes), &a)
        if rc < 0 {
            kvm_pool_destroy(p)
            try check(rc)
        }
        pool = p
        arena = a!
    }

    deinit { unmap() }

    /// Unmaps the arena and frees the pool (`kvm_pool_destroy`; in a forked child it only
    /// unmaps and closes). Once: by `deinit`, or by an inherited engine's `deinit` that keeps
    /// this object from being released (`Engine.deinit`).
    func unmap() {
        kvm_arena_destroy(arena)
        kvm_pool_destroy(pool)
    }

    /// Blocks the budget holds.
    var blocks: Int { Int(kvm_arena_blocks(arena)) }

    /// Address of `block` in tensor `tensor`.
    @inline(__always) func address(_ block: Int32, tensor: Int) -> UnsafeMutableRawPointer {
        Self.address(in: arena, block, tensor: tensor)
    }

    /// `address` given the arena alone (`Engine.pagedArena`: no reference to this object).
    @inline(__always) static func address(in arena: OpaquePointer, _ block: Int32, tensor: Int) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(kvm_arena_block(arena, UInt32(tensor), UInt32(block)))
    }

    /// Copies the first `tokens` tokens of `from` into `to`, in every tensor (copy on write).
    func copy(from: Int32, to: Int32, tokens: Int) {
        for t in 0..<tensors { address(to, tensor: t).copyMemory(from: address(from, tensor: t), byteCount: tokens * tokenBytes) }
    }

    /// The address range of the engine's K/V mapping.
    var region: (start: UInt, bytes: UInt) { (UInt(bitPattern: kvm_arena_base(arena)), UInt(kvm_arena_mapped_bytes(arena))) }

    /// Physical bytes held.
    var committedBytes: UInt64 { kvm_pool_committed_bytes(pool) }

    /// Gives empty groups back and releases their pages while more than `keep` bytes stay
    /// committed and more than `spare` free groups are left committed (`kvm_arena_trim`; 0 and
    /// 0: every empty group). Returns the bytes released. Cost: O(1) when nothing beyond
    /// `spare` is free, else the pool's scan.
    @discardableResult
    func trim(keeping keep: UInt64 = 0, spare: UInt32 = 0) -> UInt64 { kvm_arena_trim(arena, keep, spare) }

    /// Called holding `mutex` (the engine lock) when calls under it took page groups not
    /// faulted in yet (`kvm_arena_fresh_count`, which `Engine.locked` reads): faults the new
    /// groups' pages in (`MADV_POPULATE_WRITE`, which zeroes them: about 1 s per GiB on this
    /// machine kind) with the lock released, so that other engine calls proceed meanwhile, and returns
    /// with the lock released. Groups being faulted stay out of `trim`. A call does not return
    /// before the groups it took are faulted in, so the server's first K/V writes there do not
    /// fault; a block it got from a group another call is still faulting may (speed only: the
    /// fault and the pre-fault each leave the bytes as they are).
    /// Cost: one lock round trip plus the faults; a stack buffer for up to 256 groups (more
    /// are faulted by a second round).
    func prefaultFresh(unlocking mutex: UnsafeMutablePointer<kvm_lock>) {
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 256) { buffer in
            var n = Int(kvm_arena_take_fresh(arena, buffer.baseAddress, 256))
            while n > 0 {
                kvm_lock_release(mutex)
                for g in buffer.prefix(n) { kvm_arena_prefault(arena, g) }
                kvm_lock_acquire(mutex)
                for g in buffer.prefix(n) { kvm_arena_prefault_done(arena, g) }
                n = Int(kvm_arena_take_fresh(arena, buffer.baseAddress, 256))
            }
            kvm_lock_release(mutex)
        }
    }
}
