import KVCache

// Batched calls (KVC_1.3): one C call for a decode step's per-sequence work, so that a host
// paying ~1.3-2 us per foreign call (Python ctypes) pays it once per step, not per sequence.
// Each entry runs the single call's engine path (`Engine.append`, `Engine.blockTable`), so an
// entry gives exactly what the single call would give at its place in the order.

/// `kvc_seq_append_batch`: `Engine.append` of one token, `tokens[i]` to `seqs[i]`, for i in
/// order, each entry independent (`eachEntry`). The whole call is refused, nothing read or
/// written past the arguments, for a NULL array with `n` > 0 and `n` over `max_seqs`
/// (`batchCount`). Allocates nothing the single calls would not, unless an entry fails
/// (its message).
@c public func kvc_seq_append_batch(
    _ e: OpaquePointer?, _ seqs: UnsafePointer<UInt64>?, _ tokens: UnsafePointer<Int32>?, _ n: Int,
    _ statuses: UnsafeMutablePointer<kvc_status>?
) -> kvc_status {
    status("kvc_seq_append_batch", "n \(UInt(bitPattern: n))") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let count = try batchCount(n, engine)
            let seqs = try buffer(seqs, count, "seqs", "n")
            let tokens = try buffer(tokens, count, "tokens", "n")
            let statuses = try buffer(statuses, count, "statuses", "n")
            try eachEntry(statuses, seqs) { (i) throws(KVError) in
                try engine.append(seqs[i], tokens: UnsafeBufferPointer(rebasing: tokens[i ..< i + 1]))
            }
        }
    }
}

/// `kvc_seq_block_tables` (paged layout): `Engine.blockTable` of `seqs[i]` into row i,
/// `tables[i * row_capacity ..< (i + 1) * row_capacity]`, with `n_blocks[i]` as
/// `kvc_seq_block_table` writes it (the full count on success and on a row too short), each
/// entry independent (`eachEntry`); entries of a row past its blocks are not written. Refused
/// whole, nothing written: a contiguous engine (`unsupported`), NULL arrays with `n` > 0
/// (`tables` only when `row_capacity` > 0 too), `n` over `max_seqs`, `n x row_capacity`
/// int32s past PTRDIFF_MAX bytes. No allocation unless an entry fails (its message).
@c public func kvc_seq_block_tables(
    _ e: OpaquePointer?, _ seqs: UnsafePointer<UInt64>?, _ n: Int, _ tables: UnsafeMutablePointer<Int32>?,
    _ rowCapacity: Int, _ nBlocks: UnsafeMutablePointer<Int>?, _ statuses: UnsafeMutablePointer<kvc_status>?
) -> kvc_status {
    status("kvc_seq_block_tables", "n \(UInt(bitPattern: n)), row_capacity \(UInt(bitPattern: rowCapacity))") {
        () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            guard engine.config.layout == .paged else {
                throw KVError(.unsupported, "block tables exist only in the paged layout; use kvc_seq_kv")
            }
            let count = try batchCount(n, engine)
            let seqs = try buffer(seqs, count, "seqs", "n")
            let width = try KVCacheABI.count(rowCapacity, stride: MemoryLayout<Int32>.stride, "row_capacity")
            guard count == 0 || width <= Int.max / MemoryLayout<Int32>.stride / count else {
                throw KVError(.invalidArgument, "n \(count) x row_capacity \(width) int32s are larger than PTRDIFF_MAX bytes")
            }
            let tables = try buffer(tables, count * width, "tables", "n x row_capacity")
            let nBlocks = try buffer(nBlocks, count, "n_blocks", "n")
            let statuses = try buffer(statuses, count, "statuses", "n")
            try eachEntry(statuses, seqs) { (i) throws(KVError) in
                let row = UnsafeMutableBufferPointer(rebasing: tables[i * width ..< (i + 1) * width])
                try blockTable(engine, seqs[i], into: row, count: nBlocks.baseAddress! + i)
            }
        }
    }
}

/// `n`, a batch's entry count, checked as every `size_t` is (`size`) and against `max_seqs`:
/// a decode step has no more sequences than the engine holds, so a larger count is garbage,
/// refused before any array is read.
@inline(__always)
private func batchCount(_ n: Int, _ engine: Engine) throws(KVError) -> Int {
    let count = try size(n, "n")
    guard count <= engine.config.maxSeqs else {
        throw KVError(.invalidArgument, "n \(count) exceeds max_seqs \(engine.config.maxSeqs): no step holds more sequences")
    }
    return count
}

/// Runs `entry(i)` for every i of `statuses` in order, each independent of the others'
/// outcomes, and stores its status (`KVC_OK`, or the code of the `KVError` it threw) in
/// `statuses[i]`. Throws the first failure, its message naming the entry, its sequence and how
/// many entries failed, when any did. The success path is a plain loop: no allocation, no
/// thread-local access.
@inline(__always)
private func eachEntry(
    _ statuses: UnsafeMutableBufferPointer<kvc_status>, _ seqs: UnsafeBufferPointer<UInt64>,
    _ entry: (Int) throws(KVError) -> Void
) throws(KVError) {
    var first: (index: Int, error: KVError)?
    var failed = 0
    for i in statuses.indices {
        do {
            try entry(i)
            statuses[i] = KVC_OK
        } catch {
            statuses[i] = error.code.rawValue
            if first == nil { first = (i, error) }
            failed += 1
        }
    }
    if let first {
        throw KVError(first.error.code, "entry \(first.index) (seq \(seqs[first.index])): \(first.error.message) "
                      + "(\(failed) of \(statuses.count) entries failed; see statuses)")
    }
}
