import KVCache
#if canImport(Glibc)
import Glibc
import KVReport
#endif

/// `kvcache io-bench --tier`: the disk tier's throughput through the engine itself — swap a
/// sequence out (copy into staging buffers, checksum, write) and back in (read, verify,
/// copy into memory) — with slots of a given size, at the tier's queue depth (32).
///
/// The model shape is chosen so that one block of every layer's K and V is the slot payload:
/// 16-token blocks of 2048-byte tokens (8 heads x 128 x fp16) make 32 KiB per tensor, so a
/// 2 MiB payload is 32 layers and a 64 KiB one is 1 layer. Each cycle creates a sequence of
/// fresh tokens (so nothing is on disk yet), swaps it out, swaps it in, waits until it is
/// ready and frees it. With `asyncSwapOut` the swap-out is `swapOutAsync` followed by polls
/// until it completed (memory released), so the swap-out throughput stays comparable, and
/// the call's own duration is recorded apart. A swap-out that fails, either way, ends the run
/// with its error.
///
/// The tier lives in a private directory made under `dir` for the run and removed after it.
struct TierBench {
    /// Where the tier's private directory is made (io-bench's --dir); nothing in it is touched.
    var dir: String
    var payloadBytes: Int
    var sequenceBytes: Int
    var seconds: Double
    var asyncSwapOut: Bool

    /// One layer's K and V block of `run`'s shape (2 x 16 tokens x 2048 bytes): a slot's payload
    /// is a whole number of them (`run` refuses others).
    static let layerPayloadBytes = 64 << 10

    struct Result {
        /// Swap-out: from the call until its writes completed and its memory was released;
        /// with the calls' own latencies (`callLatenciesNanoseconds`).
        var writeCell: IOBench.Cell
        var readCell: IOBench.Cell

        /// One line: the swap-out call's median and 99th percentile against the whole swap-out's.
        var callSummary: String {
            func ms(_ us: Double?) -> String { fixed((us ?? 0) / 1000, 3) }
            let size = String(ByteCount.format(UInt64(writeCell.blockBytes)).filter { $0 != " " })
            return "swap-out call with \(size) slots: p50 \(ms(writeCell.callPercentileMicroseconds(0.5))) ms, "
                + "p99 \(ms(writeCell.callPercentileMicroseconds(0.99))) ms; until its memory was released: p50 "
                + "\(ms(writeCell.percentileMicroseconds(0.5))) ms"
        }
    }

    /// The slots a sequence of the tier's engine stays below: 2^20. Its engine holds at most
    /// 2^24 tokens (max_seq_tokens), 2^20 slots of 16 tokens, one of them the headroom past the
    /// sequence (`run`); `IOBenchCommand` refuses a longer `--tier-sequence-bytes` by name.
    static let sequenceSlotBound = (1 << 24) / slotTokens
    /// Tokens per slot (block) of the tier's engine.
    static let slotTokens = 16

    func run() throws -> Result {
        var c = EngineConfig()
        c.layout = .paged
        c.numKVHeads = 8
        c.headDim = 128
        c.dtypeBytes = 2
        c.blockTokens = Self.slotTokens
        c.numLayers = payloadBytes / (2 * c.blockBytes)
        guard c.numLayers >= 1 && c.numLayers * 2 * c.blockBytes == payloadBytes else {
            throw IOBenchError("--tier needs slot payloads that are a multiple of 64 KiB (got \(payloadBytes))")
        }
        let blocksPerSequence = max(64, sequenceBytes / payloadBytes)
        let tokens = blocksPerSequence * c.blockTokens
        c.maxSeqs = 4
        c.maxSeqTokens = tokens + c.blockTokens
        c.memoryBytes = UInt64((blocksPerSequence + 64) * payloadBytes)
        c.pageBytes = 2 << 20
        c.offloadBytes = UInt64(4 * blocksPerSequence) * UInt64(payloadBytes + 4096)
        let tierDir = try Self.makePrivateDirectory(under: dir)
        defer { Self.removePrivateDirectory(tierDir) }
        c.offloadDir = tierDir
        return try measure(c, blocksPerSequence: blocksPerSequence)
    }

    /// Creates `dir/kvcache-io-bench-tier-XXXXXX` (mkdtemp: a new name, mode 0700) for the
    /// tier's engine: a real tier's files in `dir` (an engine may be using them) are never
    /// touched. A signal removes it (`InterruptCleanup`). Throws when `dir` takes no new
    /// directory.
    private static func makePrivateDirectory(under dir: String) throws -> String {
        var template = Array((dir + "/kvcache-io-bench-tier-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw IOBenchError("cannot create the tier's directory in \(dir): \(String(cString: strerror(errno)))")
        }
        let tierDir = String(cString: made)
        InterruptCleanup.setTierDirectories([tierDir])
        return tierDir
    }

    /// Removes what `makePrivateDirectory` made: the tier's files in it, then it. Call once the
    /// engine is gone (its files would otherwise be written again).
    private static func removePrivateDirectory(_ tierDir: String) {
        try? DiskTierFiles.remove(in: tierDir)  // the engine is gone: nothing holds its lock
        rmdir(tierDir)
        InterruptCleanup.set([], for: .tierDirectory)
    }

    /// The swap cycles for `seconds` (at least 2) on a new engine of `c`, released on return.
    private func measure(_ c: EngineConfig, blocksPerSequence: Int) throws -> Result {
        let tokens = blocksPerSequence * c.blockTokens
        let engine: Engine
        do {
            engine = try Engine(c)
        } catch {
            throw IOBenchError("cannot create the tier's engine (sequences of \(blocksPerSequence) slots of \(ByteCount.format(UInt64(payloadBytes)))): \(error)")
        }
        var prompt = [Int32](repeating: 0, count: tokens)
        var writeNs: UInt64 = 0, readNs: UInt64 = 0, writeBytes: UInt64 = 0, readBytes: UInt64 = 0
        var writeLatencies: [UInt64] = [], readLatencies: [UInt64] = [], callLatencies: [UInt64] = []
        let start = monotonicNanoseconds()
        var cycle: Int32 = 0
        while monotonicNanoseconds() - start < UInt64(seconds * 1e9) || cycle < 2 {
            for i in 0..<tokens { prompt[i] = cycle &* 1_000_003 &+ Int32(i) }
            let seq = UInt64(cycle)
            try engine.createSequence(seq, tokens: prompt)
            let before = engine.stats().disk
            let t0 = monotonicNanoseconds()
            if asyncSwapOut {
                try engine.swapOutAsync(seq)
                callLatencies.append(monotonicNanoseconds() - t0)
                // Until it ended either way (the only one started): a failed write ends it
                // without counting in swapOuts. Then its failure is thrown, as the synchronous
                // swapOut throws it (the sequence's next `ready` reports it, once).
                while engine.stats().disk.swapOutsPending > 0 { engine.poll(timeoutMicroseconds: 1000) }
                if engine.stats().disk.swapOuts == before.swapOuts {
                    _ = try engine.ready(seq)
                    throw IOBenchError("the asynchronous swap-out of sequence \(seq) ended without completing")
                }
            } else {
                try engine.swapOut(seq)
                callLatencies.append(monotonicNanoseconds() - t0)
            }
            let t1 = monotonicNanoseconds()
            try engine.swapIn(seq)
            while try !engine.ready(seq) { engine.poll(timeoutMicroseconds: 1000) }
            let t2 = monotonicNanoseconds()
            let after = engine.stats().disk
            try engine.free(seq)
            writeNs += t1 - t0
            readNs += t2 - t1
            writeBytes += after.bytesWritten - before.bytesWritten
            readBytes += after.bytesRead - before.bytesRead
            writeLatencies.append(t1 - t0)
            readLatencies.append(t2 - t1)
            cycle += 1
        }
        return Result(
            writeCell: IOBench.Cell(op: .write, engine: "tier", blockBytes: payloadBytes, depth: c.offloadQueueDepth, bytes: writeBytes,
                                    seconds: Double(writeNs) / 1e9, latenciesNanoseconds: writeLatencies.sorted(),
                                    asyncSwapOut: asyncSwapOut, callLatenciesNanoseconds: callLatencies.sorted()),
            readCell: IOBench.Cell(op: .read, engine: "tier", blockBytes: payloadBytes, depth: c.offloadQueueDepth, bytes: readBytes,
                                   seconds: Double(readNs) / 1e9, latenciesNanoseconds: readLatencies.sorted(), asyncSwapOut: asyncSwapOut))
    }
}
