import CKVMemory
@testable import KVCache

/// A failure of the OS armed on an engine before a call and disarmed after it: the call must
/// either throw what its documentation says for it, changing nothing (`EngineSnapshot`), or
/// succeed with every invariant holding.
enum InjectedFailure: CustomStringConvertible {
    /// The commit after `after` more successful ones fails, and every later one until disarmed
    /// (`kvm_pool_fail_commits`, as a fallocate short of memory): `outOfMemory`.
    case commits(after: Int)
    /// The mmap after `after` more of them fails (`kvm_ranges_fail_mmaps`, as at
    /// vm.max_map_count; contiguous only): `outOfMemory`.
    case mmap(after: Int)
    /// The disk tier's next `count` hand-overs to the kernel fail (`Engine.failOffloadSubmits`,
    /// as an io_uring_enter short of memory; io_uring only): the requests stay in the ring and
    /// go out with the next submit or reap, so no call may fail for it.
    case submits(count: Int)

    var description: String {
        switch self {
        case .commits(let after): "a commit failing after \(after)"
        case .mmap(let after): "an mmap failing after \(after)"
        case .submits(let count): "\(count) failed hand-overs"
        }
    }

    /// Arms it on `e`. False when `e` cannot fail that way (no memory, no contiguous mappings,
    /// no disk tier or its thread backend): then nothing is armed. O(1).
    func arm(_ e: Engine) -> Bool {
        switch self {
        case .commits(let after):
            guard let pool = e.paged?.pool ?? e.contiguous?.pool else { return false }
            kvm_pool_fail_commits(pool, Int64(after))
        case .mmap(let after):
            guard let contiguous = e.contiguous else { return false }
            kvm_ranges_fail_mmaps(contiguous.ranges, UInt32(after), 1)
        case .submits(let count):
            return e.failOffloadSubmits(UInt32(count))
        }
        return true
    }

    /// Turns it off again (after `arm` returned true). O(1).
    func disarm(_ e: Engine) {
        switch self {
        case .commits: kvm_pool_fail_commits(e.paged?.pool ?? e.contiguous!.pool, -1)
        case .mmap: kvm_ranges_fail_mmaps(e.contiguous!.ranges, 0, 0)
        case .submits: _ = e.failOffloadSubmits(0)
        }
    }
}
