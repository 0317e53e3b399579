import Foundation
import KVCache

/// A replayable request trace in flat arrays (one allocation per field, none per request):
/// arrival times, prompt and output lengths, and every request's chained block hashes back to
/// back.
///
/// Invariants: arrivals are non-decreasing; request `i` has `hashCount(i) = ceil(input / blockTokens)
/// >= 1` hashes (the last covers the partial block, if any), chained so that equal hashes at
/// position k mean equal prompts up to block k; `fullBlocks(i) = input / blockTokens` of them
/// are full blocks (what a KV-cache engine indexes).
public struct Trace: Sendable {
    /// Where the trace came from (for reports).
    public var source: String
    /// Tokens per block of `hashes`.
    public var blockTokens: Int
    /// Per request: arrival in milliseconds since the first request.
    public var arrivalMilliseconds: [Double] = []
    /// Per request: prompt tokens (>= 1).
    public var inputTokens: [Int32] = []
    /// Per request: generated tokens (>= 0, as the trace says: 0 is a request that ends with
    /// its prefill; `ClusterSimulator` generates at least the first token, `kvcache load` none).
    public var outputTokens: [Int32] = []
    /// Per request: index of its first hash in `hashes`.
    public var hashStart: [Int32] = []
    /// Every request's chained block hashes, back to back.
    public var hashes: [UInt64] = []
    /// The most hashes any trace holds in all: `hashStart` indexes `hashes` with Int32.
    public static let hashLimit = Int(Int32.max)
    /// The fewest block hashes `Trace.read` lets a file make in all (`hashBudget`): 2^24,
    /// 128 MiB of hashes (the bundled traces make 0.2 M and 0.1 M).
    public static let minHashBudget = 1 << 24
    /// The most block hashes `Trace.read` lets a file of `fileBytes` bytes make in all: one per
    /// byte of the file, at least `floor`, at most `hashLimit`. A Mooncake line spends at
    /// least 2 bytes on each hash (an id and a comma), so it binds only Azure rows, whose
    /// hashes are generated from ContextTokens (up to 32,768 from a 39-byte row): a 780 KB
    /// file of such rows asked for 5.4 GB and aborted the process. So a file costs at most
    /// 8 bytes of hashes per byte of it, or 128 MiB. O(1).
    public static func hashBudget(fileBytes: Int, floor: Int = minHashBudget) -> Int { min(hashLimit, max(floor, fileBytes)) }
    /// The most hashes this trace may hold in all (at most `hashLimit`, 16 GiB of hashes).
    /// Readers refuse a request that would pass it (`admits(hashes:)`) with an error rather
    /// than trap in `append`; a lower cap bounds the memory a small file of long prompts can
    /// make the reader take.
    public var maxHashes = Trace.hashLimit
    /// Malformed lines skipped (lenient reading).
    public var skippedLines = 0
    /// How `arrivalMilliseconds` place requests that share a recorded timestamp: `.recorded`
    /// as read (or generated), `.spread` after `withArrivals(.spread)`.
    public var arrivals = ArrivalMode.recorded

    /// An empty trace of `blockTokens`-token blocks.
    public init(source: String, blockTokens: Int) {
        self.source = source
        self.blockTokens = blockTokens
    }

    /// Requests.
    public var count: Int { inputTokens.count }

    /// Hashes of request `i`.
    @inline(__always)
    public func hashCount(_ i: Int) -> Int { (Int(inputTokens[i]) + blockTokens - 1) / blockTokens }

    /// Full blocks of request `i`.
    @inline(__always)
    public func fullBlocks(_ i: Int) -> Int { Int(inputTokens[i]) / blockTokens }

    /// Whether a request of `n` more hashes fits `maxHashes`. O(1).
    @inline(__always)
    func admits(hashes n: Int) -> Bool { n <= maxHashes - hashes.count }

    /// Appends a request whose block hashes are already chained. Precondition:
    /// `blockHashes.count == ceil(input / blockTokens)`, `input >= 1`, `output >= 0`, arrival
    /// not before the last one, `admits(hashes: blockHashes.count)`.
    public mutating func append(arrivalMilliseconds t: Double, input: Int, output: Int, blockHashes: some Collection<UInt64>) {
        precondition(blockHashes.count == (input + blockTokens - 1) / blockTokens && input >= 1 && output >= 0)
        precondition(arrivalMilliseconds.last.map { $0 <= t } ?? true, "arrivals must not decrease")
        arrivalMilliseconds.append(t)
        inputTokens.append(Int32(input))
        outputTokens.append(Int32(output))
        hashStart.append(Int32(hashes.count))
        hashes.append(contentsOf: blockHashes)
    }

    /// The first `n` requests (all when `n >= count`).
    public func prefix(_ n: Int) -> Trace {
        guard n < count else { return self }
        var t = Trace(source: source, blockTokens: blockTokens)
        t.arrivalMilliseconds = Array(arrivalMilliseconds[..<n])
        t.inputTokens = Array(inputTokens[..<n])
        t.outputTokens = Array(outputTokens[..<n])
        t.hashStart = Array(hashStart[..<n])
        t.hashes = Array(hashes[..<Int(hashStart[n])])
        t.skippedLines = skippedLines
        t.arrivals = arrivals
        return t
    }

    /// This trace with its arrivals placed by `mode` (`ArrivalMode`); the rest unchanged.
    /// `.recorded` on a trace as read is the trace itself. Apply it once, to a trace as read
    /// (spreading spread arrivals again spreads nothing: every timestamp is then distinct
    /// unless a gap was 0). O(requests).
    public func withArrivals(_ mode: ArrivalMode) -> Trace {
        var t = self
        if mode == .spread { t.arrivalMilliseconds = Self.spread(arrivalMilliseconds) }
        t.arrivals = mode
        return t
    }

    /// Non-decreasing `times` with every run of k equal times t spread evenly over
    /// [t, next distinct time): the i-th of the run (0-based, in order) at t + i * gap / k.
    /// The last run's gap is the median of the gaps between consecutive distinct times (the
    /// mean of the two middle ones for an even count); with one distinct time there is no gap
    /// and nothing moves. A run of one stays where it is. Deterministic (no randomness); the
    /// result is non-decreasing and every time stays below the next distinct recorded time.
    public static func spread(_ times: [Double]) -> [Double] {
        var starts: [Int] = []  // index of each distinct time's first request
        for i in times.indices where i == 0 || times[i] != times[i - 1] { starts.append(i) }
        var gaps = zip(starts.dropFirst(), starts).map { times[$0] - times[$1] }
        gaps.sort()
        let median = gaps.isEmpty ? 0 : gaps.count % 2 == 1 ? gaps[gaps.count / 2] : (gaps[gaps.count / 2 - 1] + gaps[gaps.count / 2]) / 2
        var out = times
        for (j, start) in starts.enumerated() {
            let end = j + 1 < starts.count ? starts[j + 1] : times.count
            let k = end - start
            guard k > 1 else { continue }
            let gap = j + 1 < starts.count ? times[end] - times[start] : median
            for i in 1..<k { out[start + i] = times[start] + Double(i) * (gap / Double(k)) }
        }
        return out
    }

    /// The chained hash of a block named by a trace id: `BlockHash.block` over the id's two
    /// 32-bit halves as a two-token block, with `parent` the previous block's hash (0 first).
    /// Documented and stable, so equal id chains give equal hash chains in every process.
    @inline(__always)
    public static func chainedHash(parent: UInt64, id: UInt64) -> UInt64 {
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: 2) { t in
            t[0] = Int32(truncatingIfNeeded: id)
            t[1] = Int32(truncatingIfNeeded: id >> 32)
            return BlockHash.block(parent: parent, tokens: UnsafeBufferPointer(t))
        }
    }
}

/// How a replay places requests that share one recorded timestamp (`Trace.withArrivals`).
///
/// The bundled Mooncake trace records arrivals in buckets of about 3 s (12,031 requests at
/// 1,180 distinct timestamps, up to 28 at one): an aggregation by the trace, not requests
/// arriving together. Replayed as recorded, each bucket arrives in one instant and is routed
/// before any step runs, so no router sees the load or KV events of the bucket's earlier
/// requests. The Azure 2023 trace's timestamps are all distinct (100 ns resolution), so the
/// two modes replay it identically.
public enum ArrivalMode: String, Sendable, CaseIterable {
    /// The k requests at timestamp t spread evenly over [t, next distinct timestamp) in file
    /// order, the last timestamp's over the median gap (`Trace.spread`). `kvcache replay`'s
    /// default.
    case spread
    /// As recorded: requests sharing a timestamp arrive at the same instant.
    case recorded
}

extension Trace {
    /// Reads the trace file at `path`, the format chosen by its name: `.csv` (any case) an Azure LLM
    /// inference trace (`AzureTraceReader`), anything else Mooncake JSONL
    /// (`MooncakeTraceReader`); both in 512-token blocks. The first `maxRequests` requests
    /// (all when nil); `lenient` skips and counts malformed lines instead of throwing; at most
    /// `hashBudget(fileBytes:floor: minHashBudget)` block hashes in all. Throws
    /// `TraceFormatError`: the readers' (the file unreadable, a malformed line with its number,
    /// the line whose hashes pass the budget), and "holds no requests" when it yields none
    /// though some were asked for. This is how every command reads `--trace` (`kvcache load`
    /// and `kvcache replay`). Holds the file's bytes; O(bytes up to the last request read).
    public static func read(path: String, maxRequests: Int? = nil, lenient: Bool = false, minHashBudget: Int = Trace.minHashBudget) throws -> Trace {
        let data = try TraceFormatError.contents(of: path)
        let maxHashes = hashBudget(fileBytes: data.count, floor: minHashBudget)
        let t = path.lowercased().hasSuffix(".csv")
            ? try AzureTraceReader.parse(data, path: path, maxRequests: maxRequests, lenient: lenient, maxHashes: maxHashes)
            : try MooncakeTraceReader.parse(data, path: path, maxRequests: maxRequests, lenient: lenient, maxHashes: maxHashes)
        guard t.count > 0 || maxRequests == 0 else {
            let skipped = t.skippedLines > 0 ? " (\(t.skippedLines) malformed lines skipped)" : ""
            throw TraceFormatError(path: path, line: 0, reason: "holds no requests\(skipped)")
        }
        return t
    }
}

/// A malformed trace line, named by file and 1-based line number.
public struct TraceFormatError: Error, CustomStringConvertible, Sendable {
    /// The file.
    public var path: String
    /// The 1-based line (0: the file as a whole).
    public var line: Int
    /// What is wrong.
    public var reason: String
    /// "path:line: reason" ("path: reason" for the file as a whole), as compilers print.
    public var description: String { line > 0 ? "\(path):\(line): \(reason)" : "\(path): \(reason)" }

    /// An error in `path` at 1-based `line` (0: the file as a whole), saying `reason`.
    public init(path: String, line: Int, reason: String) {
        self.path = path
        self.line = line
        self.reason = reason
    }

    /// The error for a request at `line` whose hashes would pass `trace.maxHashes`.
    static func tooManyHashes(path: String, line: Int, trace: Trace) -> TraceFormatError {
        TraceFormatError(path: path, line: line, reason: "the requests so far and this one need more than \(trace.maxHashes) block hashes in all; read fewer requests or use larger blocks")
    }

    /// The whole of trace file `path`, or an error of the file as a whole with the system's
    /// reason ("cannot read the file: No such file or directory", "... Is a directory").
    static func contents(of path: String) throws(TraceFormatError) -> Data {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        var reason = fd < 0 ? String(cString: strerror(errno)) : nil
        if fd >= 0 {
            var st = stat()
            if fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR { reason = String(cString: strerror(EISDIR)) }
            close(fd)
        }
        guard reason == nil, let data = FileManager.default.contents(atPath: path) else {
            throw TraceFormatError(path: path, line: 0, reason: "cannot read the file: \(reason ?? "read failed")")
        }
        return data
    }
}
