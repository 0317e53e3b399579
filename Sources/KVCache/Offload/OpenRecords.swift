import CKVMemory

/// The memory buffers of open records (episodic offload): a sequence's *open record* is an
/// offloaded-token record still being filled, across compactions, in a buffer of one slot
/// payload; it is written to the disk tier (one slot write) when full, or partly filled when
/// its buffer is taken back (see `Engine+EpisodicOffload`).
///
/// At most `capacity` buffers exist engine-wide (`min(maxSeqs, offloadQueueDepth)`), each
/// `payloadBytes`, in one mapping made by `reserve` and bound to `numa_node` as the tier's
/// staging buffers are (`kvm_io_reserve_buffers`): a buffer's pages come from that node when
/// first used and are kept for reuse until the engine goes: at most `offloadQueueDepth` slot
/// payloads, no more than the tier's staging buffers. Like those, this memory is outside the
/// KV budget (`memory_bytes`), but only an engine whose sequences can offload evictions maps
/// it (`Engine.reserveOpenRecords`: at create for an episodic engine, else at the first
/// sequence made episodic): a private writable mapping, which RLIMIT_AS and overcommit mode 2
/// count whether or not it is touched. A sequence owns at most one buffer.
/// When all are owned, `victim` names the owner that appended least recently, whose record
/// the engine writes out before `release` hands its buffer on.
///
/// Cost: O(1) per call except `victim` (O(capacity), only when every buffer is owned); a
/// buffer's first use faults its pages in. Not thread-safe: the engine serialises calls.
/// `acquire` needs the buffers mapped (`reserve`); before, no sequence owns one.
final class OpenRecords {
    /// Most buffers at once.
    let capacity: Int
    /// Bytes of one buffer (the tier's slot payload).
    let payloadBytes: Int
    /// Buffer `b` is at `base + b * stride` (`payloadBytes` rounded up to 64 bytes); nil
    /// until `reserve`.
    private var base: UnsafeMutableRawPointer?
    private let stride: Int
    /// The node `reserve` binds the buffers to (-1: the default policy).
    private let numaNode: Int32
    /// Per buffer: owner sequence slot (-1: free), and when its owner last appended (`clock`
    /// then).
    private var owner: [Int]
    private var appended: [UInt64]
    /// Per sequence slot: the buffer it owns, or -1.
    private var bufferOf: [Int]
    private var freeBuffers: [Int]
    private var clock: UInt64 = 0

    /// Buffers for sequence slots `0..<maxSeqs`, at most `capacity` of `payloadBytes` at once,
    /// to be bound to NUMA node `numaNode` (-1: the default policy); none is mapped until
    /// `reserve`. O(capacity + maxSeqs).
    init(capacity: Int, payloadBytes: Int, maxSeqs: Int, numaNode: Int32) {
        precondition(capacity > 0 && payloadBytes > 0)
        self.capacity = capacity
        self.payloadBytes = payloadBytes
        self.numaNode = numaNode
        stride = (payloadBytes + 63) / 64 * 64
        owner = [Int](repeating: -1, count: capacity)
        appended = [UInt64](repeating: 0, count: capacity)
        bufferOf = [Int](repeating: -1, count: maxSeqs)
        freeBuffers = Array((0..<capacity).reversed())
    }

    deinit { kvm_io_free_buffers(base, UInt64(capacity * stride)) }

    /// Whether the buffers are mapped (`reserve`). Tests: read by the tests only.
    var isReserved: Bool { base != nil }

    /// Maps the buffers (`capacity x payloadBytes`, rounded up to 2 MiB; no page touched),
    /// bound to the node; once: later calls do nothing. Throws `outOfMemory` naming them when
    /// the mapping or the bind is refused (the message says why); nothing changed then.
    func reserve() throws(KVError) {
        guard base == nil else { return }
        guard let mapped = kvm_io_reserve_buffers(UInt64(capacity * stride), numaNode) else {
            throw .outOfMemory("offload: episodic offload's open-record buffers (min(max_seqs, offload_queue_depth) = \(capacity) "
                               + "slot payloads of \(payloadBytes) bytes): \(kvmMessage())")
        }
        base = mapped
    }

    /// The buffer sequence slot `s` owns, or nil.
    func buffer(of s: Int) -> UnsafeMutableRawPointer? {
        let b = bufferOf[s]
        return b >= 0 ? base! + b * stride : nil
    }

    /// True when no buffer is free (`acquire` needs a `release` first).
    var isFull: Bool { freeBuffers.isEmpty }

    /// The owner that appended least recently. Precondition: `isFull`.
    func victim() -> Int {
        precondition(isFull)
        var oldest = 0
        for b in 1..<capacity where appended[b] < appended[oldest] { oldest = b }
        return owner[oldest]
    }

    /// A buffer for sequence slot `s`, which owns none. Precondition: `!isFull`.
    func acquire(for s: Int) -> UnsafeMutableRawPointer {
        precondition(bufferOf[s] < 0, "sequence slot \(s) already owns an open record buffer")
        let b = freeBuffers.removeLast()
        owner[b] = s
        bufferOf[s] = b
        touch(s)
        return base! + b * stride
    }

    /// Notes that `s` appended to its buffer now (it becomes the last `victim`).
    func touch(_ s: Int) {
        clock += 1
        appended[bufferOf[s]] = clock
    }

    /// Gives back the buffer `s` owns, if any (its bytes are dropped).
    func release(_ s: Int) {
        let b = bufferOf[s]
        guard b >= 0 else { return }
        owner[b] = -1
        bufferOf[s] = -1
        freeBuffers.append(b)
    }
}
