import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The disk tier's submission: requests batched to the I/O queue.
extension DiskTier {
    /// Adds a request to the batch; a full batch (a quarter of the depth) is submitted at once.
    func queue(_ request: kvm_io_req) {
        batch[batchCount] = request
        batchCount += 1
        if batchCount * 4 >= stages { flush() }
    }

    /// Submits every batched request with one system call. A request the queue refuses
    /// completes at once with the error (its write or read fails the usual way).
    /// Requests for adjacent slots from adjacent staging buffers merge into one request of up
    /// to `mergeBytes` (a tag then names the first buffer and the count: `first | count << 32`).
    func flush() {
        guard batchCount > 0 else { return }
        var n = 0
        for i in 0..<batchCount {
            let r = batch[i]
            if n > 0 {
                let last = batch[n - 1]
                if last.op == r.op && last.file == r.file && last.offset + UInt64(last.len) == r.offset && last.buf! + Int(last.len) == r.buf!
                    && Int(last.len) + Int(r.len) <= mergeBytes {
                    batch[n - 1].len += r.len
                    batch[n - 1].tag += 1 << 32
                    continue
                }
            }
            batch[n] = r
            batch[n].tag = r.tag | 1 << 32
            n += 1
        }
        batchCount = 0
        stats.requestsSubmitted += UInt64(n)
        let accepted = Int(max(0, kvm_io_submit(io, batch, UInt32(n))))
        if accepted < n {
            lastFailure = "offload: submitting I/O failed: \(kvmMessage())"
            for i in accepted..<n { completeRequest(tag: batch[i].tag, result: -Int64(EIO)) }
            flushJournal()
        }
    }

    /// Completes every slot of a (possibly merged) request: all succeed or all fail.
    func completeRequest(tag: UInt64, result: Int64) {
        let first = Int32(truncatingIfNeeded: tag & 0xFFFF_FFFF), count = Int(tag >> 32)
        let ok = result == Int64(count * slotBytes)
        for i in 0..<count {
            complete(stage: first + Int32(i), result: ok ? Int64(slotBytes) : (result < 0 ? result : -Int64(EIO)))
        }
    }
}
