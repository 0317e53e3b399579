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
    /// Malformed lines skipped (lenient reading).
    public var skippedLines = 0

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

    /// Appends a request whose block hashes are already chained. Precondition:
    /// `blockHashes.count == ceil(input / blockTokens)`, `input >= 1`, `output >= 0`, arrival
    /// not before the last one.
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
        return t
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

extension Trace {
    /// Reads the trace file at `path`, the format chosen by its name: `.csv` (any case) an Azure LLM
    /// inference trace (`AzureTraceReader`), anything else Mooncake JSONL
    /// (`MooncakeTraceReader`); both in 512-token blocks. The first `maxRequests` requests
    /// (all when nil); `lenient` skips and counts malformed lines instead of throwing. Throws
    /// `TraceFormatError`: the readers' (the file unreadable, a malformed line with its number),
    /// and "holds no requests" when it yields none though some were asked for. This is how
    /// every command reads `--trace` (`kvcache load` and `kvcache replay`). O(file size).
    public static func read(path: String, maxRequests: Int? = nil, lenient: Bool = false) throws -> Trace {
        let t = path.lowercased().hasSuffix(".csv")
            ? try AzureTraceReader.read(path: path, maxRequests: maxRequests, lenient: lenient)
            : try MooncakeTraceReader.read(path: path, maxRequests: maxRequests, lenient: lenient)
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
