#if canImport(Glibc)
import Glibc
#endif

/// Allocations whose sizes scale with a config or a sequence (an engine's block tables,
/// per-block arrays, hash tables, event queue and disk-slot arrays; a sequence's token-eviction
/// state and its re-clustering copy) and that a config the header allows can make larger than
/// the process may map (RLIMIT_AS, a cgroup, overcommit off). Swift's `allocate(capacity:)`
/// and `Array(repeating:count:)` trap when malloc fails; these throw `outOfMemory` instead,
/// naming what the memory was for and its bytes, so that the C ABI returns a status (kvcache.h).
///
/// The pointers taken from one `CheckedAllocations` are freed together when it is dropped,
/// unless `keep()` was called once the taker could no longer throw: a throwing initializer runs
/// no `deinit`, so buffers it allocated before the throw would leak, and a temporary buffer is
/// freed on every path out of its scope. After `keep()` they are the owner's, freed with
/// `free()` or `deallocate()` (on Linux, `free`, as for Swift's own allocations of alignment up
/// to 16, which these require). Small fixed-size buffers keep plain `allocate(capacity:)`.
final class CheckedAllocations {
    private var made: [UnsafeMutableRawPointer] = []
    private var kept = false

    init() {}

    /// Uninitialized memory for `count` values of `T` (at least one byte), or `outOfMemory`
    /// saying `what` (e.g. "the block tables (max_seqs x ceil(max_seq_tokens / block_tokens))":
    /// name what sizes it). Cost: one `malloc`.
    func allocate<T>(_: T.Type = T.self, count: Int, _ what: @autoclosure () -> String) throws(KVError) -> UnsafeMutablePointer<T> {
        try take(count: count, zeroed: false, what())
    }

    /// As `allocate`, every value set to `value`. Cost: one `malloc` and `count` writes.
    func allocate<T>(repeating value: T, count: Int, _ what: @autoclosure () -> String) throws(KVError) -> UnsafeMutablePointer<T> {
        let p: UnsafeMutablePointer<T> = try take(count: count, zeroed: false, what())
        p.initialize(repeating: value, count: count)
        return p
    }

    /// As `allocate`, every byte 0 (for `T` whose zero bytes are a value: integers, floats).
    /// Cost: one `calloc`, which maps a large buffer as zero pages, touched only when written.
    func zeroed<T>(_: T.Type = T.self, count: Int, _ what: @autoclosure () -> String) throws(KVError) -> UnsafeMutablePointer<T> {
        try take(count: count, zeroed: true, what())
    }

    /// The pointers are the caller's from now on.
    func keep() { kept = true }

    private func take<T>(count: Int, zeroed: Bool, _ what: @autoclosure () -> String) throws(KVError) -> UnsafeMutablePointer<T> {
        precondition(MemoryLayout<T>.alignment <= 16 && count >= 0)
        let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<T>.stride)
        guard !overflow, let raw = zeroed ? calloc(max(1, count), MemoryLayout<T>.stride) : malloc(max(1, bytes)) else {
            throw .outOfMemory("cannot allocate \(what()): \(count) entries of \(MemoryLayout<T>.stride) bytes\(overflow ? "" : " (\(bytes) bytes)") exceed the memory the process may map (RLIMIT_AS, a cgroup limit or overcommit)")
        }
        made.append(raw)
        return raw.bindMemory(to: T.self, capacity: count)
    }

    deinit {
        if !kept { for p in made { free(p) } }
    }
}
