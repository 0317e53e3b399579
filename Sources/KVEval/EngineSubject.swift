#if canImport(Glibc)
import Glibc
#endif
import Foundation
import KVCache

/// A whole engine behind an `EvictionRun`: one sequence in the contiguous layout, with a real
/// disk tier (io_uring, O_DIRECT where the filesystem allows) in a temporary directory, so the
/// run measures the engine's own compaction and episodic offload rather than a model of them.
///
/// Every appended token's K and V get bytes that are a function of (layer, position, K or V,
/// byte), and every read of a row's kept set checks the row's bytes of every held slot (per
/// head: the head's slice, which holds the head's own token; an `EvictionRun` reads every
/// row): a run is also an end-to-end check that compaction and disk round trips keep data
/// exact, per layer and per head (a mismatch throws).
/// K/V are small (`headDim` 4, fp16): the trace's scores, not the bytes, decide what is kept.
/// Cost per step: the engine's calls plus O(layers x held x token bytes) for the check.
final class EngineSubject: EvictionSubject {
    /// The engine (one sequence, `seq`).
    let engine: Engine
    let seq: UInt64 = 1
    /// The tier's private directory, `/tmp/kvcache-evict-eval-XXXXXX`: removed with its files
    /// when the subject goes (or its engine could not be created).
    private let directory: String
    private let layers: Int, tokenBytes: Int
    /// Rows of a layer's kept sets: its KV heads per head, else 1.
    private let rowsPerLayer: Int
    private var created = false
    /// `heldPositions`' buffer (`heads x maxTokens`: a layer's positions, every row).
    private let held: UnsafeMutablePointer<Int32>
    private let capacity: Int

    /// An engine for `header`'s layers and heads with `eviction` as its policy; `made` is
    /// called with `directory` once it exists, before the engine's files are in it.
    init(eviction: EvictionConfig, header: TraceHeader, made: (_ directory: String) -> Void = { _ in }) throws {
        var template = Array("/tmp/kvcache-evict-eval-XXXXXX".utf8CString)
        guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TraceError(description: "cannot create a temporary directory: \(String(cString: strerror(errno)))")
        }
        directory = String(cString: dir)
        made(directory)
        var c = EngineConfig()
        c.layout = .contiguous
        c.numLayers = header.layers
        c.numKVHeads = header.heads
        c.headDim = 4
        c.maxSeqs = 1
        c.maxSeqTokens = header.maxTokens
        c.pageBytes = 4096
        c.memoryBytes = UInt64(c.tensors) * UInt64((header.maxTokens * c.tokenBytes + 4095) / 4096 * 4096) + (1 << 20)
        c.offloadDir = directory
        // Room for every token of every layer plus one record per step: compactions fill records
        // across steps (open records), but a focus writes the tokens it displaces again, and a
        // record may go out partly filled (its buffer handed over), so a step bounds the extra.
        c.offloadBytes = UInt64(header.steps + header.layers * header.maxTokens / c.blockTokens) * UInt64(4 * c.blockBytes * c.numLayers) + (4 << 20)
        c.eviction = eviction
        layers = header.layers
        tokenBytes = c.tokenBytes
        rowsPerLayer = eviction.perHead ? header.heads : 1
        capacity = header.heads * header.maxTokens
        held = .allocate(capacity: capacity)
        do { engine = try Engine(c) } catch {
            EngineSubject.remove(directory)
            held.deallocate()
            throw error
        }
    }

    deinit {
        try? engine.free(seq)
        try? engine.syncOffload()
        EngineSubject.remove(directory)
        held.deallocate()
    }

    /// Removes `directory` and the files in it (the engine may still hold them open).
    private static func remove(_ directory: String) {
        if let names = try? FileManager.default.contentsOfDirectory(atPath: directory) {
            for name in names { unlink(directory + "/" + name) }
        }
        rmdir(directory)
    }

    private(set) var nextPosition = 0

    /// The byte a token's K (kv 0) or V (kv 1) holds at offset `i`.
    @inline(__always)
    private func byte(layer: Int, position: Int, kv: Int, _ i: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: position &* 131 &+ layer &* 29 &+ kv &* 7 &+ i &* 3 &+ (position >> 8))
    }

    func append(_ n: Int) throws {
        let tokens = (nextPosition..<nextPosition + n).map { Int32(truncatingIfNeeded: $0 &* 2_654_435_761 % 50_000) }
        if created { try engine.append(seq, tokens: tokens) } else { _ = try engine.createSequence(seq, tokens: tokens) }
        created = true
        for l in 0..<layers {
            let len = try engine.layerLength(seq, layer: l), (k, v) = try engine.kv(seq, layer: l)
            for j in 0..<n {
                let slot = len - n + j, position = nextPosition + j
                for i in 0..<tokenBytes {
                    k.storeBytes(of: byte(layer: l, position: position, kv: 0, i), toByteOffset: slot * tokenBytes + i, as: UInt8.self)
                    v.storeBytes(of: byte(layer: l, position: position, kv: 1, i), toByteOffset: slot * tokenBytes + i, as: UInt8.self)
                }
            }
        }
        nextPosition += n
    }

    func addSegment(start: Int, end: Int, embedding: UnsafeBufferPointer<Float>) throws {
        try engine.addSegment(seq, start: start, end: end, embedding: embedding)
    }

    /// Focuses, then waits (polling) until the restored tokens' reads have landed. Throws the
    /// engine's `io` error if a record could not be read back (the run stops: a disk fault).
    func focus(_ query: UnsafeBufferPointer<Float>) throws -> Int {
        let episode = try engine.focus(seq, query: query)
        while try !engine.ready(seq) { _ = engine.poll(timeoutMicroseconds: 1000) }  // a lost record throws `io`
        return episode
    }

    func length(layer: Int) throws -> Int { try engine.layerLength(seq, layer: layer) }

    /// The held positions of row `row` of `layer` (the layer per layer, its KV head `row` per
    /// head), after checking the row's bytes of every held slot (per head: the head's slice).
    /// Cost: O(layer length x rows) to read the positions, O(length x row bytes) to check.
    func heldPositions(layer: Int, row: Int) throws -> UnsafeBufferPointer<Int32> {
        precondition(row < rowsPerLayer, "row \(row) of \(rowsPerLayer)")
        let count = try engine.positions(seq, layer: layer, into: UnsafeMutableBufferPointer(start: held, count: capacity))
        let n = count / rowsPerLayer, rowBytes = tokenBytes / rowsPerLayer, first = row * n
        let (k, v) = try engine.kv(seq, layer: layer)
        for slot in 0..<n {
            let position = Int(held[first + slot])
            for i in (row * rowBytes)..<((row + 1) * rowBytes) {
                guard k.load(fromByteOffset: slot * tokenBytes + i, as: UInt8.self) == byte(layer: layer, position: position, kv: 0, i),
                      v.load(fromByteOffset: slot * tokenBytes + i, as: UInt8.self) == byte(layer: layer, position: position, kv: 1, i)
                else {
                    throw TraceError(description: "engine: layer \(layer) row \(row) slot \(slot) does not hold the bytes of position \(position)")
                }
            }
        }
        return UnsafeBufferPointer(start: held + first, count: n)
    }

    func observe(layer: Int, scores: UnsafePointer<Float>, nHeads: Int, nTokens: Int) throws {
        try engine.observe(seq, layer: layer, scores: scores, nHeads: nHeads, nTokens: nTokens)
    }

    func compact(budget: Int) throws { _ = try engine.compact(seq, budgetTokens: budget) }
}
