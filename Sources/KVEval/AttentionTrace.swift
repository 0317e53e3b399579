#if canImport(Glibc)
import Glibc
#endif

/// An attention trace: what a server would report to the engine while it runs one
/// conversation, step by step, over the *full* cache, so that any policy's kept set can be
/// scored against it.
///
/// File format (version 1, little-endian, no padding; `kvcache evict-eval --write-trace`
/// writes it, `--trace` reads it):
///
///     header   char[8] "KVATTN01"; u32 layers, heads, embedding_dim, n_segments, n_steps,
///              mark_step (0xFFFFFFFF: none), max_tokens
///     segment  (n_segments times) u32 start, end (positions [start, end)), available_step
///              (the first step at which a server knows the segment); f32[embedding_dim]
///     step     (n_steps times) u32 n_tokens (cache length after this step's tokens are
///              appended: the rows cover positions 0..<n_tokens), n_queries (tokens appended
///              by this step, whose queries are summed in the rows: 1 for a decode step),
///              has_query (1: a new turn starts, f32[embedding_dim] query embedding follows);
///              then f32[layers][heads][n_tokens]: per layer and KV head, the attention
///              probabilities of this step's queries summed over them (each query's row sums
///              to 1; causal: a query sees only positions up to its own)
///
/// Steps from `mark_step` on are also reported separately (e.g. after a topic return).
/// Decode steps (n_queries 1) are the ones scored.
///
/// The reader checks what the evaluation relies on and throws `TraceError` naming the field:
/// layers and heads in 1...1024, embedding_dim <= 4096, max_tokens in 1...2^24, layers x
/// heads x max_tokens <= 2^24 (a 32-layer, 8-head, 64k-token trace; the evaluation keeps 16
/// synthetic values per cell, 1 GiB at the limit), n_steps >= 1, mark_step < n_steps, each
/// segment `start < end <= max_tokens` with available_step < n_steps, a regular file at least
/// as long as n_steps steps take, one of max_tokens and the others of 1, 2, 3 ... tokens (so
/// the evaluation's memory, sized for max_tokens, is bounded by the file's length); each step's n_tokens is
/// the previous step's plus its n_queries (the first step's: its n_queries) and at most
/// max_tokens, and every row holds finite probabilities >= 0 summing to more than 0 and at most
/// n_queries (1 % slack for rounding; less is allowed, as with a model's attention sink outside
/// the cache: the metrics are of the row's own total).
public struct TraceHeader: Equatable, Sendable {
    /// Layers per step.
    public var layers: Int
    /// KV heads per layer.
    public var heads: Int
    /// Coordinates of every segment and query embedding (0: none).
    public var embeddingDim: Int
    /// The conversation's segments, in order of availability.
    public var segments: [TraceSegment]
    /// Steps in the trace.
    public var steps: Int
    /// The first step reported separately ("after mark"), if any.
    public var markStep: Int?
    /// The longest cache of any step.
    public var maxTokens: Int
}

/// A conversation segment and its embedding.
public struct TraceSegment: Equatable, Sendable {
    /// First position of the segment.
    public var start: Int
    /// One past its last position.
    public var end: Int
    /// The first step at which a server knows the segment.
    public var availableStep: Int
    /// Its sentence embedding (`embeddingDim` coordinates).
    public var embedding: [Float]
}

/// One step of a trace; `rows` is `[layer][head][nTokens]`, reused between steps.
public struct TraceStep {
    /// Cache length after this step's tokens: rows cover positions `0..<nTokens`.
    public var nTokens = 0
    /// Tokens this step appended, whose queries the rows sum (1: a decode step).
    public var nQueries = 0
    /// The query embedding of a new turn, if this step starts one.
    public var query: [Float]? = nil
    /// `[layer][head][nTokens]` attention, summed over the step's queries.
    public var rows: [Float] = []

    /// An empty step to fill with `AttentionTraceSource.next(into:)`.
    public init() {}
}

/// Where steps come from: a file or the synthetic generator.
public protocol AttentionTraceSource {
    /// Shape, segments and length of the trace.
    var header: TraceHeader { get }
    /// Fills `step` with the next step; false at the end.
    mutating func next(into step: inout TraceStep) throws -> Bool
}

/// A trace file or stream error, with the offset or field that was wrong.
public struct TraceError: Error, CustomStringConvertible {
    /// What was wrong, and where.
    public var description: String
    /// True when a `TraceFileWriter` failed after creating its file, which then holds part of
    /// the trace (the caller may remove it); false for a file it could not create, and for a
    /// reader's errors.
    public var leftPartialFile = false
}

/// Reads a trace file written in the format above, one step at a time; the file closes with
/// the reader.
public final class TraceFileReader: AttentionTraceSource {
    /// The file's header.
    public let header: TraceHeader
    /// The most `layers x heads x max_tokens` a file may declare (see the format above).
    public static let maxCells = 1 << 24
    private let file: UnsafeMutablePointer<FILE>
    /// The file's path, which every error names.
    private let path: String
    private var stepIndex = 0
    /// The previous step's n_tokens.
    private var tokens = 0

    /// Opens `path` and reads its header and segments. Throws `TraceError` on a missing file or
    /// a directory, a wrong magic or an out-of-range header.
    public init(path: String) throws {
        guard let f = fopen(path, "rbe") else { throw TraceError(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
        var st = stat()
        if fstat(fileno(f), &st) == 0 && st.st_mode & S_IFMT == S_IFDIR {
            fclose(f)
            throw TraceError(description: "cannot open \(path): \(String(cString: strerror(EISDIR)))")
        }
        do {
            header = try Self.readHeader(f, path)
            if st.st_mode & S_IFMT == S_IFREG { try Self.checkSize(header, path, size: Int(st.st_size), read: Int(ftello(f))) }
        } catch {
            fclose(f)
            throw error
        }
        file = f
        self.path = path
    }

    /// The header and segments at the start of `f`.
    private static func readHeader(_ f: UnsafeMutablePointer<FILE>, _ path: String) throws -> TraceHeader {
        var magic = [UInt8](repeating: 0, count: 8)
        guard fread(&magic, 1, 8, f) == 8, magic == Array("KVATTN01".utf8) else {
            throw TraceError(description: "\(path) is not a KVATTN01 attention trace")
        }
        func u32() throws -> Int {
            var v: UInt32 = 0
            guard fread(&v, 4, 1, f) == 1 else { throw TraceError(description: "\(path): truncated header") }
            return Int(UInt32(littleEndian: v))
        }
        let layers = try u32(), heads = try u32(), dim = try u32(), nSegments = try u32(), steps = try u32()
        let mark = try u32(), maxTokens = try u32()
        guard (1...1024).contains(layers), (1...1024).contains(heads), dim <= 4096, nSegments <= 1 << 20,
              (1...1 << 24).contains(maxTokens), steps >= 1, mark == 0xFFFF_FFFF || mark < steps else {
            throw TraceError(description: "\(path): header out of range (layers \(layers), heads \(heads), dim \(dim), segments \(nSegments), steps \(steps), mark_step \(mark), max_tokens \(maxTokens))")
        }
        guard layers * heads * maxTokens <= Self.maxCells else {
            throw TraceError(description: "\(path): layers x heads x max_tokens = \(layers * heads * maxTokens) is more than \(Self.maxCells) "
                                        + "(the evaluation keeps \(ValueTable.dim) values per cell)")
        }
        var segments: [TraceSegment] = []
        for i in 0..<nSegments {
            let s = try u32(), e = try u32(), a = try u32()
            guard s < e, e <= maxTokens, a < steps else {
                throw TraceError(description: "\(path): segment \(i) [\(s), \(e)) available at step \(a) is empty, past max_tokens \(maxTokens) or after the last step")
            }
            var emb = [Float](repeating: 0, count: dim)
            guard fread(&emb, 4, dim, f) == dim else { throw TraceError(description: "\(path): truncated segment") }
            guard emb.allSatisfy(\.isFinite) else { throw TraceError(description: "\(path): segment \(i)'s embedding is not finite") }
            segments.append(TraceSegment(start: s, end: e, availableStep: a, embedding: emb))
        }
        return TraceHeader(layers: layers, heads: heads, embeddingDim: dim, segments: segments, steps: steps,
                           markStep: mark == 0xFFFF_FFFF ? nil : mark, maxTokens: maxTokens)
    }

    /// Throws unless a regular file of `size` bytes, `read` of them the header and segments,
    /// holds the least the header's steps need with one of them max_tokens long: step i has
    /// at least i + 1 tokens (n_tokens grows by n_queries >= 1, up to max_tokens), so with
    /// s = min(n_steps, max_tokens) the steps take at least 12 bytes each and rows of
    /// 4 x layers x heads x (max_tokens + 1 + 2 + ... + (s - 1)) bytes. A truncated file (a
    /// header alone among them), or a max_tokens no step of the file could reach, is so refused
    /// before the evaluation allocates for max_tokens (`ValueTable`, 64 bytes per cell, and
    /// every policy's buffers: a 52-byte file declaring 2^24 tokens took 1.8 GB). A pipe has
    /// no size to check. Cost: O(1).
    private static func checkSize(_ header: TraceHeader, _ path: String, size: Int, read: Int) throws {
        let steps = min(header.steps, header.maxTokens)  // past max_tokens a step is refused anyway
        let cells = header.layers * header.heads
        let need = read + 12 * steps + 4 * cells * header.maxTokens + 2 * cells * steps * (steps - 1)  // <= 2^50
        guard size >= need else {
            throw TraceError(description: "\(path): \(size) bytes cannot hold the header's \(header.steps) steps of \(header.layers) x \(header.heads) rows "
                                        + "with one of max_tokens \(header.maxTokens) "
                                        + "(at least \(need) bytes: step i has i + 1 tokens or more): truncated, or n_steps or max_tokens wrong")
        }
    }

    deinit { fclose(file) }

    /// Reads the next step into `step` (reusing its row buffer); false after the last.
    public func next(into step: inout TraceStep) throws -> Bool {
        guard stepIndex < header.steps else {
            // Bytes past the header's steps: a wrong n_steps, or rows of another shape.
            guard fgetc(file) == EOF else {
                throw TraceError(description: "\(path): bytes after the last of the header's \(header.steps) steps (n_steps, or layers and heads, wrong?)")
            }
            return false
        }
        var w = [UInt32](repeating: 0, count: 3)
        guard fread(&w, 4, 3, file) == 3 else { throw TraceError(description: "\(path): step \(stepIndex): truncated") }
        let nTokens = Int(w[0]), nQueries = Int(w[1])
        guard nTokens <= header.maxTokens, nQueries >= 1, nTokens == tokens + nQueries, w[2] <= 1 else {
            throw TraceError(description: "\(path): step \(stepIndex): n_tokens \(w[0]), n_queries \(w[1]), has_query \(w[2]) out of range "
                                        + "(n_tokens must be the previous step's \(tokens) plus n_queries, at most max_tokens \(header.maxTokens); "
                                        + "rows of other layers or heads than the header's \(header.layers) x \(header.heads) read so)")
        }
        step.nTokens = nTokens
        step.nQueries = nQueries
        if w[2] == 1 {
            var q = [Float](repeating: 0, count: header.embeddingDim)
            guard fread(&q, 4, q.count, file) == q.count else { throw TraceError(description: "\(path): step \(stepIndex): truncated query") }
            guard q.allSatisfy(\.isFinite) else { throw TraceError(description: "\(path): step \(stepIndex): the query embedding is not finite") }
            step.query = q
        } else {
            step.query = nil
        }
        let count = header.layers * header.heads * nTokens
        if step.rows.count < count { step.rows = [Float](repeating: 0, count: count) }
        guard step.rows.withUnsafeMutableBufferPointer({ fread($0.baseAddress, 4, count, file) }) == count else {
            throw TraceError(description: "\(path): step \(stepIndex): truncated rows")
        }
        try step.rows.withUnsafeBufferPointer { try checkRows($0.baseAddress!, nTokens: nTokens, nQueries: nQueries) }
        tokens = nTokens
        stepIndex += 1
        return true
    }

    /// Throws unless every row of the step holds finite probabilities >= 0 summing to more than
    /// 0 and at most `nQueries` (1 % slack). Cost: one pass over the rows.
    private func checkRows(_ rows: UnsafePointer<Float>, nTokens: Int, nQueries: Int) throws {
        let limit = Double(nQueries) * 1.01
        for r in 0..<header.layers * header.heads {
            let row = rows + r * nTokens
            var sum = 0.0
            for i in 0..<nTokens {
                let p = row[i]
                guard p.isFinite, p >= 0 else {
                    throw TraceError(description: "\(path): step \(stepIndex): layer \(r / header.heads), head \(r % header.heads), position \(i): \(p) is not a probability")
                }
                sum += Double(p)
            }
            guard sum > 0 else {  // no attention on the cache: recall and error would divide by 0
                throw TraceError(description: "\(path): step \(stepIndex): layer \(r / header.heads), head \(r % header.heads) sums to 0: no attention on the cached tokens")
            }
            guard sum <= limit else {
                throw TraceError(description: "\(path): step \(stepIndex): layer \(r / header.heads), head \(r % header.heads) sums to \(sum), more than its \(nQueries) queries' 1 each")
            }
        }
    }
}

/// Writes a trace in the format above. A write the system refuses (a full disk: `fwrite`
/// buffers, so it may show only at `close()`) throws `TraceError` naming the file and the
/// system's reason ("cannot write PATH: No space left on device"); what was written stays, for
/// the caller to remove. A writer released unclosed closes its file (errors unreported: call
/// `close()` to learn them).
public final class TraceFileWriter {
    /// nil once closed.
    private var file: UnsafeMutablePointer<FILE>?
    /// The file's path, which every error names.
    private let path: String

    /// Creates `path` and writes `header` and its segments. Throws `TraceError` when the file
    /// cannot be created or written (then it is closed).
    public init(path: String, header: TraceHeader) throws {
        guard let f = fopen(path, "wbe") else { throw TraceError(description: "cannot create \(path): \(String(cString: strerror(errno)))") }
        file = f
        self.path = path
        do {
            try put(Array("KVATTN01".utf8), 1, 8)
            let words = [header.layers, header.heads, header.embeddingDim, header.segments.count, header.steps,
                         header.markStep ?? 0xFFFF_FFFF, header.maxTokens].map { UInt32($0).littleEndian }
            try put(words, 4, words.count)
            for s in header.segments {
                try put([UInt32(s.start), UInt32(s.end), UInt32(s.availableStep)], 4, 3)
                try put(s.embedding, 4, s.embedding.count)
            }
        } catch {
            fclose(f)
            file = nil
            throw error
        }
    }

    deinit { if let file { fclose(file) } }

    /// Appends one step (`layers * heads * step.nTokens` floats of rows). Throws `TraceError`
    /// when the system refuses the bytes. The writer must be open.
    public func write(_ step: TraceStep, layers: Int, heads: Int) throws {
        try put([UInt32(step.nTokens), UInt32(step.nQueries), step.query == nil ? 0 : 1] as [UInt32], 4, 3)
        if let q = step.query { try put(q, 4, q.count) }
        try step.rows.withUnsafeBufferPointer { try put($0.baseAddress, 4, layers * heads * step.nTokens) }
    }

    /// Flushes and closes the file. Throws `TraceError` when the flush or close fails: the
    /// last steps were not all written. Closing a closed writer does nothing.
    public func close() throws {
        guard let f = file else { return }
        file = nil
        guard fclose(f) == 0 else { throw failure() }
    }

    /// `fwrite`s `count` items of `size` bytes; throws unless all were taken.
    private func put(_ items: UnsafeRawPointer?, _ size: Int, _ count: Int) throws {
        guard fwrite(items, size, count, file!) == count else { throw failure() }
    }

    /// The error of the write or close that just failed, from `errno`.
    private func failure() -> TraceError {
        TraceError(description: "cannot write \(path): \(String(cString: strerror(errno)))", leftPartialFile: true)
    }
}
