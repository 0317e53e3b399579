import Foundation
import KVCache
import KVSim

/// A block manager a `TraceReplay` drives: the engine (`EngineReplayTarget`) or vLLM's
/// algorithm (`VLLMBlockPool`). The same calls in the same order reach both.
protocol ReplayTarget {
    /// Admits request `id` of `tokens` prompt tokens whose full blocks have the chained hashes
    /// `blockHashes`; returns its cached prefix in tokens, or nil when its blocks do not fit.
    mutating func createRequest(_ id: UInt64, blockHashes: UnsafeBufferPointer<UInt64>, tokens: Int) -> Int?
    /// Appends one generated token to `id`; false when no block is left for it.
    mutating func appendToken(_ id: UInt64) -> Bool
    /// Frees `id`; its full prompt blocks stay cached until evicted.
    mutating func freeRequest(_ id: UInt64)
}

/// The bundled Mooncake conversation trace (`traces/mooncake_conversation_trace.jsonl`, read
/// by KVSim's `MooncakeTraceReader`: 12,031 requests whose 512-token blocks are named by
/// chained `BlockHash` values), replayed at block level on a fixed budget of blocks.
///
/// One step replays the next request (cycling through the trace): frees the oldest live request
/// when `liveLimit` are live (FIFO, a bounded batch), creates the request (prefix lookup and
/// allocation of its prompt), and appends its output tokens one at a time (decode), at most
/// `outputCap`. The budget, `budgetBlocks` of 512 tokens (4.2 M tokens), is under 5% of the
/// trace's 182,790 distinct blocks, so the cache evicts all the time; and it is at least
/// `liveLimit` times the largest request, so no step can run out of blocks.
///
/// Invariant: a replay's calls depend only on the trace and the constants here, never on the
/// target's answers, so two targets with the same prefix-cache semantics report the same hits.
struct TraceReplay: Sendable {
    let trace: Trace
    /// Blocks every target gets (the engine's budget; `VLLMBlockPool` adds its null block).
    static let budgetBlocks = 8192
    /// Requests live at once.
    static let liveLimit = 16
    /// Generated tokens appended per request, at most.
    static let outputCap = 64

    /// The trace next to this file's package, read once per process; a description of the
    /// problem when it cannot be read or does not fit the budget.
    static let shared: Result<TraceReplay, ReplayError> = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let path = root.appendingPathComponent("traces/mooncake_conversation_trace.jsonl").path
        let trace: Trace
        do {
            trace = try MooncakeTraceReader.read(path: path)
        } catch {
            return .failure(ReplayError(message: "cannot read the trace: \(error)"))
        }
        let largest = (0..<trace.count).map { (Int(trace.inputTokens[$0]) + outputCap + trace.blockTokens - 1) / trace.blockTokens }.max() ?? 0
        guard trace.count > 0, largest * liveLimit <= budgetBlocks else {
            return .failure(ReplayError(message: "\(liveLimit) requests of up to \(largest) blocks do not fit \(budgetBlocks) blocks"))
        }
        return .success(TraceReplay(trace: trace))
    }()

    /// A metadata-only engine of `budgetBlocks` blocks of the trace's block size (the block's
    /// bytes only size the budget).
    var engineConfig: EngineConfig {
        var config = smallEngineConfig(blockTokens: trace.blockTokens)
        config.metadataOnly = true
        config.maxSeqs = 2 * Self.liveLimit
        config.maxSeqTokens = 131_072
        config.memoryBytes = UInt64(Self.budgetBlocks) * UInt64(config.blockBytesAllTensors)
        return config
    }

    /// Where a replay is: the next request, the next id, the live requests (a ring of
    /// `liveLimit`, `count` of them from `oldest`), and what the replay saw (prompt tokens and
    /// cached prefix tokens of admitted requests, failed admissions and appends).
    struct Cursor {
        var next = 0
        var nextID: UInt64 = 1
        var live = [UInt64](repeating: 0, count: TraceReplay.liveLimit)
        var oldest = 0
        var count = 0
        var promptTokens = 0
        var hitTokens = 0
        var failures = 0
    }

    /// Replays one request on `target` (see the type). O(the request's blocks + its output).
    @inline(__always)
    func step<T: ReplayTarget>(_ target: inout T, _ c: inout Cursor) {
        let r = c.next
        c.next = r + 1 == trace.count ? 0 : r + 1
        if c.count == Self.liveLimit {
            target.freeRequest(c.live[c.oldest])
            c.oldest = c.oldest + 1 == Self.liveLimit ? 0 : c.oldest + 1
            c.count -= 1
        }
        let id = c.nextID
        c.nextID += 1
        let tokens = Int(trace.inputTokens[r])
        let start = Int(trace.hashStart[r])
        let hit = trace.hashes.withUnsafeBufferPointer { all in
            target.createRequest(id, blockHashes: UnsafeBufferPointer(rebasing: all[start..<start + trace.fullBlocks(r)]), tokens: tokens)
        }
        guard let hit else {
            c.failures += 1
            return
        }
        c.live[(c.oldest + c.count) % Self.liveLimit] = id
        c.count += 1
        c.promptTokens += tokens
        c.hitTokens += hit
        for _ in 0..<min(Int(trace.outputTokens[r]), Self.outputCap) where !target.appendToken(id) {
            c.failures += 1
        }
    }

    /// Replays the whole trace once on `target` from a fresh cursor and returns the cursor.
    func replayAll<T: ReplayTarget>(_ target: inout T) -> Cursor {
        var c = Cursor()
        for _ in 0..<trace.count { step(&target, &c) }
        return c
    }
}

/// Why a replay cannot run.
struct ReplayError: Error, CustomStringConvertible, Sendable {
    var message: String
    var description: String { message }
}

/// The engine as a `ReplayTarget`: hash-only `createSequence`, one-token `append`, `free`.
/// An engine error other than running out of blocks stops the run.
struct EngineReplayTarget: ReplayTarget {
    let engine: Engine
    private var token: Int32 = 1

    init(_ engine: Engine) { self.engine = engine }

    mutating func createRequest(_ id: UInt64, blockHashes: UnsafeBufferPointer<UInt64>, tokens: Int) -> Int? {
        do {
            return try engine.createSequence(id, blockHashes: blockHashes, tokens: tokens)
        } catch where error.code == .outOfMemory {
            return nil
        } catch {
            fatalError("trace replay: engine create failed: \(error)")
        }
    }

    mutating func appendToken(_ id: UInt64) -> Bool {
        do {
            try withUnsafePointer(to: &token) { (p) throws(KVError) in try engine.append(id, tokens: UnsafeBufferPointer(start: p, count: 1)) }
            return true
        } catch where error.code == .outOfMemory {
            return false
        } catch {
            fatalError("trace replay: engine append failed: \(error)")
        }
    }

    mutating func freeRequest(_ id: UInt64) {
        do {
            try engine.free(id)
        } catch {
            fatalError("trace replay: engine free failed: \(error)")
        }
    }
}

/// vLLM's algorithm as a `ReplayTarget` (its methods already have the replay's meaning).
extension VLLMBlockPool: ReplayTarget {
    func appendToken(_ id: UInt64) -> Bool { appendTokens(id, count: 1) }

    func freeRequest(_ id: UInt64) {
        guard free(id) else { fatalError("trace replay: vLLM pool free of unknown request \(id)") }
    }
}
