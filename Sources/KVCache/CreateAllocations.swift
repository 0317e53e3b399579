#if canImport(Glibc)
import Glibc
#endif

/// The checked allocations of an engine's creation whose sizes scale with its config (block
/// tables, per-block arrays, hash tables, the event queue, disk-slot arrays): Swift's
/// `allocate(capacity:)` and `Array(repeating:count:)` trap when malloc fails, which a
/// config the header allows can make happen under a process limit (RLIMIT_AS, a cgroup,
/// overcommit off); `allocate` throws `outOfMemory` instead, naming what it was for and the
/// config fields that sized it, so that `kvc_engine_create` returns a status (kvcache.h).
///
/// The pointers an initializer takes from one `CreateAllocations` are freed together when it
/// is dropped, unless `keep()` was called once the initializer could no longer throw: a
/// throwing initializer runs no `deinit`, so buffers it allocated before the throw would leak.
/// After `keep()` they are the owner's, freed by its `deinit` with `deallocate()` (on Linux,
/// `free`, as for Swift's own allocations of alignment up to 16, which `allocate` requires).
/// Creation only; small fixed-size buffers keep plain `allocate(capacity:)`.
final class CreateAllocations {
    private var made: [UnsafeMutableRawPointer] = []
    private var kept = false

    init() {}

    /// Uninitialized memory for `count` values of `T` (at least one byte), or `outOfMemory`
    /// saying `what` (e.g. "the block tables (max_seqs x ceil(max_seq_tokens / block_tokens))").
    func allocate<T>(_: T.Type = T.self, count: Int, _ what: @autoclosure () -> String) throws(KVError) -> UnsafeMutablePointer<T> {
        precondition(MemoryLayout<T>.alignment <= 16 && count >= 0)
        let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<T>.stride)
        guard !overflow, let raw = malloc(max(1, bytes)) else {
            throw .outOfMemory("cannot allocate \(what()): \(count) entries of \(MemoryLayout<T>.stride) bytes\(overflow ? "" : " (\(bytes) bytes)") exceed the memory the process may map (RLIMIT_AS, a cgroup limit or overcommit): lower the config fields named")
        }
        made.append(raw)
        return raw.bindMemory(to: T.self, capacity: count)
    }

    /// As `allocate`, every value set to `value`.
    func allocate<T>(repeating value: T, count: Int, _ what: @autoclosure () -> String) throws(KVError) -> UnsafeMutablePointer<T> {
        let p: UnsafeMutablePointer<T> = try allocate(count: count, what())
        p.initialize(repeating: value, count: count)
        return p
    }

    /// The pointers are the caller's from now on.
    func keep() { kept = true }

    deinit {
        if !kept { for p in made { free(p) } }
    }
}
