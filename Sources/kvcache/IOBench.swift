import CKVMemory
import Foundation
import KVCache
import KVReport
#if canImport(Glibc)
import Glibc
#endif

/// The measurements behind `kvcache io-bench`: one test file opened O_DIRECT (buffered when
/// the file system refuses), `maxDepth` aligned buffers of `maxBlockBytes` registered with the
/// disk tier's `kvm_io` queue, and a synchronous pread/pwrite loop on the same file.
///
/// Offsets are random and block-aligned (`SplitMix64`, fixed seed). A cell keeps `depth` requests
/// in flight for its duration, then drains; latency is submit-to-reap per request.
final class IOBench {
    enum Op: String, Sendable { case write, read }

    /// One measured (operation, engine, block size, depth).
    struct Cell {
        var op: Op
        var engine: String
        var blockBytes: Int
        var depth: Int
        var bytes: UInt64
        var seconds: Double
        var latenciesNanoseconds: [UInt64]
        /// Tier cells (`engine` "tier") only: whether the swap-out was `swapOutAsync`.
        var asyncSwapOut: Bool? = nil
        /// A tier's swap-out cell only: how long each swap-out call took before it returned,
        /// sorted (synchronous: the whole swap-out; asynchronous: the copy, checksum and
        /// submission, while `latenciesNanoseconds` run until the memory was released).
        var callLatenciesNanoseconds: [UInt64]? = nil

        var mibPerSecond: Double { Double(bytes) / seconds / 1_048_576 }
        var iops: Double { Double(latenciesNanoseconds.count) / seconds }
        /// The `p`-quantile (0...1) of the latencies in us (`Quantile.nearestRank`; the
        /// runs sort them); 0 without requests.
        func percentileMicroseconds(_ p: Double) -> Double { Self.microseconds(latenciesNanoseconds, p) }
        /// The `p`-quantile of the swap-out calls' latencies in us, as `percentileMicroseconds`;
        /// nil for a cell without them.
        func callPercentileMicroseconds(_ p: Double) -> Double? { callLatenciesNanoseconds.map { Self.microseconds($0, p) } }
        private static func microseconds(_ sorted: [UInt64], _ p: Double) -> Double {
            Double(Quantile.nearestRank(sorted, p) ?? 0) / 1000
        }
        var meanMicroseconds: Double {
            latenciesNanoseconds.isEmpty ? 0 : Double(latenciesNanoseconds.reduce(0, +)) / Double(latenciesNanoseconds.count) / 1000
        }
    }

    let path: String
    let fileBytes: Int
    let maxBlockBytes: Int
    let maxDepth: Int
    private let fd: Int32
    let direct: Bool
    private let buffers: UnsafeMutableRawPointer
    private let io: OpaquePointer
    private var rng = SplitMix64(seed: 1)

    /// `written`: the file must exist already, written whole (an earlier run's `fill`, kept):
    /// reads of a preallocated file that was never written come back as zeros without
    /// touching the device, numbers that would mean nothing.
    /// Throws when the file cannot be opened or preallocated, or the buffers or the queue cannot
    /// be made; then the file is removed (unless `written`: it is an earlier run's, kept).
    init(path: String, fileBytes: Int, maxBlockBytes: Int, maxDepth: Int, forceThreads: Bool, written: Bool = false) throws {
        self.path = path
        self.fileBytes = fileBytes / maxBlockBytes * maxBlockBytes
        self.maxBlockBytes = maxBlockBytes
        self.maxDepth = maxDepth
        var st = stat()
        guard !written || (stat(path, &st) == 0 && Int(st.st_size) >= self.fileBytes) else {
            throw IOBenchError("--skip-fill reads the file an earlier run left with --keep-file: \(path) is missing or "
                               + "smaller than the \(self.fileBytes) bytes asked for")
        }
        var isDirect: Int32 = 0
        let f = kvm_io_open_file(path, &isDirect)
        guard f >= 0 else { throw IOBenchError(kvmMessage()) }
        fd = f
        direct = isDirect == 1
        // A failure from here on closes the file and removes it unless an earlier run wrote it:
        // a start-up failure must not leave a test file (1 GiB by default) behind.
        func failure(_ message: String) -> IOBenchError {
            close(f)
            if !written { unlink(path) }
            return IOBenchError(message)
        }
        guard kvm_io_preallocate(fd, UInt64(self.fileBytes)) == 0 else {
            throw failure("\(path): \(kvmMessage())")
        }
        let total = maxDepth * maxBlockBytes
        guard let mapped = kvm_io_alloc_buffers(UInt64(total), -1) else {
            throw failure(kvmMessage())
        }
        buffers = mapped
        // Incompressible content, so that no layer below can cheat on zeros.
        var fill = SplitMix64(seed: 0x2545_F491_4F6C_DD1D)
        for i in 0..<(total / 8) { buffers.storeBytes(of: fill.next(), toByteOffset: i * 8, as: UInt64.self) }
        var iovecs = (0..<maxDepth).map { iovec(iov_base: mapped + $0 * maxBlockBytes, iov_len: maxBlockBytes) }
        var file = fd
        var config = kvm_io_config()
        config.depth = UInt32(maxDepth)
        config.threads = UInt32(min(maxDepth, 16))
        config.force_threads = forceThreads ? 1 : 0
        config.n_files = 1
        var q: OpaquePointer?
        let rc = iovecs.withUnsafeMutableBufferPointer { b in
            withUnsafePointer(to: &file) { p in
                config.buffers = UnsafePointer(b.baseAddress)
                config.n_buffers = UInt32(b.count)
                config.files = p
                return kvm_io_create(&config, &q)
            }
        }
        guard rc == 0, let q else {
            kvm_io_free_buffers(mapped, UInt64(total))
            throw failure("kvm_io_create: \(kvmMessage())")
        }
        io = q
    }

    deinit {
        kvm_io_destroy(io)
        kvm_io_free_buffers(buffers, UInt64(maxDepth * maxBlockBytes))
        close(fd)
    }

    /// "io_uring" or "threads".
    var backendName: String { kvm_io_backend(io) == KVM_IO_URING ? "io_uring" : "threads" }
    var registeredBuffers: Bool { kvm_io_registered_buffers(io) == 1 }

    func removeFile() { unlink(path) }

    /// Writes the whole file once (so that reads reach the device, not unwritten extents).
    func fill() throws {
        var offset = 0
        while offset < fileBytes {
            let n = min(maxBlockBytes, fileBytes - offset)
            let wrote = pwrite(fd, buffers, n, off_t(offset))
            guard wrote == n else {
                // errno only means something for a failure: a short write (disk full) sets none.
                let reason = wrote < 0 ? String(cString: strerror(errno)) : "wrote \(wrote) of \(n) bytes at offset \(offset)"
                throw IOBenchError("filling \(path) failed: \(reason)")
            }
            offset += n
        }
        guard fdatasync(fd) == 0 else { throw IOBenchError("filling \(path) failed: fdatasync: \(String(cString: strerror(errno)))") }
    }

    @inline(__always) private func randomOffset(_ blockBytes: Int) -> UInt64 {
        (rng.next() % UInt64(fileBytes / blockBytes)) * UInt64(blockBytes)
    }

    /// One request at a time with pread/pwrite: what a tier without a queue does.
    func runSync(op: Op, blockBytes: Int, seconds: Double) throws -> Cell {
        var latencies: [UInt64] = []
        latencies.reserveCapacity(1 << 16)
        let start = monotonicNanoseconds()
        let end = start + UInt64(seconds * 1e9)
        var now = start
        var bytes: UInt64 = 0
        while now < end {
            let offset = off_t(randomOffset(blockBytes))
            let t0 = monotonicNanoseconds()
            let n = op == .write ? pwrite(fd, buffers, blockBytes, offset) : pread(fd, buffers, blockBytes, offset)
            now = monotonicNanoseconds()
            guard n == blockBytes else { throw IOBenchError("sync \(op.rawValue) failed: \(n < 0 ? String(cString: strerror(errno)) : "short")") }
            latencies.append(now - t0)
            bytes += UInt64(blockBytes)
        }
        latencies.sort()
        return Cell(op: op, engine: "sync", blockBytes: blockBytes, depth: 1, bytes: bytes,
                    seconds: Double(now - start) / 1e9, latenciesNanoseconds: latencies)
    }

    /// `depth` requests in flight through the queue until `seconds` pass, then drained.
    func runQueue(op: Op, blockBytes: Int, depth: Int, seconds: Double) throws -> Cell {
        var latencies: [UInt64] = []
        latencies.reserveCapacity(1 << 16)
        var submitted = [UInt64](repeating: 0, count: depth)
        var done = [kvm_io_done](repeating: kvm_io_done(), count: depth)
        var requests = [kvm_io_req](repeating: kvm_io_req(), count: depth)
        var free = Array((0..<depth).reversed())
        let start = monotonicNanoseconds()
        let end = start + UInt64(seconds * 1e9)
        var now = start
        var bytes: UInt64 = 0
        var inflight = 0
        while true {
            var n = 0
            if now < end {
                while let b = free.popLast() {
                    requests[n] = kvm_io_req(tag: UInt64(b), buf: buffers + b * maxBlockBytes, offset: randomOffset(blockBytes),
                                             len: UInt32(blockBytes), op: UInt16(op == .write ? KVM_IO_WRITE : KVM_IO_READ), file: 0,
                                             buf_index: Int32(b))
                    submitted[b] = now
                    n += 1
                }
            }
            if n > 0 {
                let accepted = kvm_io_submit(io, &requests, UInt32(n))
                guard accepted == Int32(n) else { throw IOBenchError("kvm_io_submit: \(kvmMessage())") }
                inflight += n
            }
            if inflight == 0 { break }
            let got = kvm_io_reap(io, &done, UInt32(depth), 1, -1)
            guard got >= 0 else { throw IOBenchError("kvm_io_reap: \(kvmMessage())") }
            now = monotonicNanoseconds()
            for i in 0..<Int(got) {
                let b = Int(done[i].tag)
                guard done[i].result == Int64(blockBytes) else {
                    throw IOBenchError("queue \(op.rawValue) failed: \(done[i].result < 0 ? String(cString: strerror(Int32(-done[i].result))) : "short")")
                }
                latencies.append(now - submitted[b])
                bytes += UInt64(blockBytes)
                free.append(b)
            }
            inflight -= Int(got)
        }
        latencies.sort()
        return Cell(op: op, engine: "queue", blockBytes: blockBytes, depth: depth, bytes: bytes,
                    seconds: Double(now - start) / 1e9, latenciesNanoseconds: latencies)
    }

    // MARK: reports

    /// A table's number: whole from 100 up, else one decimal (truncated), as both tables print;
    /// `-` when it is not finite (a rate over no time), never a trap, however large.
    private func f(_ x: Double) -> String {
        guard x.isFinite else { return "-" }
        return x >= 100 ? fixed(x, 0) : String(Double(Int(x * 10)) / 10)
    }

    func table(_ cells: [Cell], sizes: [Int], depths: [Int], ops: [Op]) -> String {
        func pad(_ s: String, _ w: Int) -> String { String(repeating: " ", count: max(0, w - s.count)) + s }
        var out = "kvcache-cli io-bench: \(path), \(ByteCount.format(UInt64(fileBytes))), \(direct ? "O_DIRECT" : "buffered"), "
            + "queue backend \(backendName)\(registeredBuffers ? " with registered buffers" : ""), random block-aligned offsets\n\n"
        for op in ops {
            out += "\(op.rawValue) throughput, MiB/s (p99 latency, us)\n"
            out += pad("block", 8) + pad("sync", 16) + depths.map { pad("qd\($0)", 16) }.joined() + pad("best/sync", 11) + "\n"
            for size in sizes {
                let sync = cells.first { $0.op == op && $0.engine == "sync" && $0.blockBytes == size }
                let row = depths.map { d in cells.first { $0.op == op && $0.engine == "queue" && $0.blockBytes == size && $0.depth == d } }
                var line = pad(String(ByteCount.format(UInt64(size)).filter { $0 != " " }), 8)
                line += pad(sync.map { "\(f($0.mibPerSecond)) (\(f($0.percentileMicroseconds(0.99))))" } ?? "-", 16)
                for c in row { line += pad(c.map { "\(f($0.mibPerSecond)) (\(f($0.percentileMicroseconds(0.99))))" } ?? "-", 16) }
                let best = row.compactMap { $0?.mibPerSecond }.max() ?? 0
                line += pad(sync.map { "\(f(best / max($0.mibPerSecond, 1e-9)))x" } ?? "-", 11)
                out += line + "\n"
            }
            out += "\n"
        }
        return out
    }

    /// The engine-level rows of `--tier`: swap-out (write) and swap-in (read) throughput.
    func tierTable(_ cells: [Cell]) -> String {
        var out = "disk tier through the engine (swap out / swap in of a sequence, slot = payload + 4 KiB header, depth 32)\n"
        out += "   payload   swap-out MiB/s   swap-in MiB/s   swaps\n"
        for w in cells where w.op == .write {
            guard let r = cells.first(where: { $0.op == .read && $0.blockBytes == w.blockBytes }) else { continue }
            let size = String(ByteCount.format(UInt64(w.blockBytes)).filter { $0 != " " })
            out += String(repeating: " ", count: max(0, 10 - size.count)) + size
            out += String(repeating: " ", count: max(0, 17 - f(w.mibPerSecond).count)) + f(w.mibPerSecond)
            out += String(repeating: " ", count: max(0, 16 - f(r.mibPerSecond).count)) + f(r.mibPerSecond)
            out += String(repeating: " ", count: max(0, 8 - String(w.latenciesNanoseconds.count).count)) + String(w.latenciesNanoseconds.count) + "\n"
        }
        return out
    }

    func json(_ cells: [Cell], seconds: Double) -> String {
        func num(_ x: Double) -> String { x.isFinite ? fixed(x, 3) : "0" }
        let rows = cells.map { c in
            "{\"op\":\"\(c.op.rawValue)\",\"engine\":\"\(c.engine)\",\"block_bytes\":\(c.blockBytes),\"depth\":\(c.depth),"
                + "\"bytes\":\(c.bytes),\"mib_per_s\":\(num(c.mibPerSecond)),\"iops\":\(num(c.iops)),\"mean_us\":\(num(c.meanMicroseconds)),"
                + "\"p50_us\":\(num(c.percentileMicroseconds(0.5))),\"p99_us\":\(num(c.percentileMicroseconds(0.99))),"
                + "\"max_us\":\(num(Double(c.latenciesNanoseconds.last ?? 0) / 1000))"
                + (c.asyncSwapOut.map { ",\"async\":\($0)" } ?? "")
                + (c.callLatenciesNanoseconds == nil ? "" : ",\"call_p50_us\":\(num(c.callPercentileMicroseconds(0.5)!)),"
                    + "\"call_p99_us\":\(num(c.callPercentileMicroseconds(0.99)!))")
                + "}"
        }
        return "{\"file\":\(jsonString(path)),\"file_bytes\":\(fileBytes),\"direct\":\(direct),\"backend\":\"\(backendName)\","
            + "\"registered_buffers\":\(registeredBuffers),\"seconds_per_cell\":\(num(seconds)),\"cells\":[\(rows.joined(separator: ","))]}"
    }
}

/// An io-bench failure, with the reason.
struct IOBenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
