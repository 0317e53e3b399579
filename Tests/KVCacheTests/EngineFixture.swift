#if canImport(Glibc)
import Glibc
#endif
@testable import KVCache

/// A small engine shape whose K/V bytes tests can write and check exhaustively.
func smallConfig(_ layout: Layout, memoryBytes: UInt64 = 64 << 20, pageBytes: UInt64 = 4096, blockTokens: Int = 4) -> EngineConfig {
    var c = EngineConfig()
    c.layout = layout
    c.numLayers = 2
    c.numKVHeads = 2
    c.headDim = 8
    c.dtypeBytes = 2
    c.blockTokens = blockTokens
    c.maxSeqs = 16
    c.maxSeqTokens = 4096
    c.memoryBytes = memoryBytes
    c.pageBytes = pageBytes
    return c
}

/// The byte a server would write for byte `i` of `token` at `position`, in `layer`'s K (kv 0)
/// or V (kv 1): a function of content and position, like real K/V.
@inline(__always) func kvByte(layer: Int, kv: Int, position: Int, token: Int32, i: Int, salt: Int = 0) -> UInt8 {
    UInt8(truncatingIfNeeded: Int(token) &* 131 &+ position &* 31 &+ layer &* 7 &+ kv &* 3 &+ i &+ salt &* 101)
}

/// `kvByte`'s values over bytes `i...` of one token are consecutive (mod 256): they are the
/// slice of this ramp from the first one's value on (`rampMatches`, `storeRamp`), which lets
/// the long random runs write and compare whole rows, not byte by byte.
let kvRamp: [UInt8] = (0..<(256 + 1 << 16)).map { UInt8(truncatingIfNeeded: $0) }

/// True when the `count` bytes at `row` are `kvRamp` from `first` on, as `kvByte` gives them
/// for `count` consecutive bytes of a token whose first is `first`; false (then compare byte by
/// byte) for more than 65536 bytes. O(count), a memcmp.
func rampMatches(_ row: UnsafeRawPointer, first: UInt8, count: Int) -> Bool {
    count <= 1 << 16 && kvRamp.withUnsafeBytes { memcmp(row, $0.baseAddress! + Int(first), count) == 0 }
}

/// Stores at `row` the `count` (at most 65536) bytes `kvByte` gives for consecutive bytes of a
/// token whose first is `first`. O(count), a memcpy.
func storeRamp(_ row: UnsafeMutableRawPointer, first: UInt8, count: Int) {
    precondition(count <= 1 << 16)
    kvRamp.withUnsafeBytes { row.copyMemory(from: $0.baseAddress! + Int(first), byteCount: count) }
}

/// Where token `position` of `seq` lives in `layer`, through the engine's public API.
func tokenAddress(_ e: Engine, _ seq: UInt64, layer: Int, position: Int) throws -> (k: UnsafeMutableRawPointer, v: UnsafeMutableRawPointer) {
    let tb = e.config.tokenBytes
    if e.config.layout == .contiguous {
        let (k, v) = try e.kv(seq, layer: layer)
        return (k + position * tb, v + position * tb)
    }
    var table = [Int32](repeating: -1, count: 4096)
    let n = try table.withUnsafeMutableBufferPointer { try e.blockTable(seq, into: $0) }
    precondition(position / e.config.blockTokens < n)
    let (k, v) = try e.blockKV(table[position / e.config.blockTokens], layer: layer)
    let offset = (position % e.config.blockTokens) * tb
    return (k + offset, v + offset)
}

/// Writes the K/V of `tokens` at positions `from...` of `seq` in every layer, into slots
/// `slot...` (default `from`: a sequence never compacted holds position p in slot p; after a
/// compaction appended tokens go to slots from the layer length on).
func writeKV(_ e: Engine, _ seq: UInt64, tokens: [Int32], from: Int, slot: Int? = nil, salt: Int = 0) throws {
    for layer in 0..<e.config.numLayers {
        for (j, t) in tokens.enumerated() {
            let (k, v) = try tokenAddress(e, seq, layer: layer, position: (slot ?? from) + j)
            storeRamp(k, first: kvByte(layer: layer, kv: 0, position: from + j, token: t, i: 0, salt: salt), count: e.config.tokenBytes)
            storeRamp(v, first: kvByte(layer: layer, kv: 1, position: from + j, token: t, i: 0, salt: salt), count: e.config.tokenBytes)
        }
    }
}

/// The number of bytes of `seq` positions `from...` that differ from what `writeKV` wrote.
func kvMismatches(_ e: Engine, _ seq: UInt64, tokens: [Int32], from: Int, salt: Int = 0) throws -> Int {
    var bad = 0
    for layer in 0..<e.config.numLayers {
        for (j, t) in tokens.enumerated() {
            let (k, v) = try tokenAddress(e, seq, layer: layer, position: from + j)
            for (kv, row) in [(0, k), (1, v)] {
                let first = kvByte(layer: layer, kv: kv, position: from + j, token: t, i: 0, salt: salt)
                if rampMatches(row, first: first, count: e.config.tokenBytes) { continue }
                for i in 0..<e.config.tokenBytes where row.load(fromByteOffset: i, as: UInt8.self)
                    != kvByte(layer: layer, kv: kv, position: from + j, token: t, i: i, salt: salt) { bad += 1 }
            }
        }
    }
    return bad
}

/// `count` deterministic tokens starting from `seed`.
func tokens(_ count: Int, seed: Int32) -> [Int32] { (0..<count).map { seed &* 1000 &+ Int32($0) } }

/// An engine's first event: its memory tier starts empty (`Engine.init`).
let memoryTierCleared = KVEvent(kind: .allCleared, tier: KVEvent.memoryTier, blockHash: 0, parentHash: 0)

func drain(_ e: Engine) -> [KVEvent] {
    var out = [KVEvent](repeating: KVEvent(kind: .allCleared, blockHash: 0, parentHash: 0), count: 1 << 14)
    let n = out.withUnsafeMutableBufferPointer { e.drainEvents(into: $0) }
    return Array(out.prefix(n))
}

/// The error `body` throws, or nil.
func thrown(_ body: () throws(KVError) -> Void) -> KVError? {
    do { try body() } catch { return error }
    return nil
}

/// `cachedPrefixTokens(prompt)` for blocks indexed from hashes alone (`createSequence(_:blockHashes:tokens:)`),
/// which carry no fingerprint and so match a lookup by hashes, not one by tokens
/// (include/kvcache.h, BLOCK HASH): the same lookup by the prompt's chain, one token kept to compute.
func cachedByHash(_ e: Engine, _ prompt: [Int32]) -> Int {
    let bt = e.config.blockTokens
    let blocks = BlockHash.chain(prompt, blockTokens: bt).withUnsafeBufferPointer { e.cachedPrefixBlocks($0) }
    return bt * min(blocks, (prompt.count - 1) / bt)
}

/// `createSequence(seq, tokens: prompt)` by the prompt's hashes (see `cachedByHash`).
@discardableResult
func createByHash(_ e: Engine, _ seq: UInt64, _ prompt: [Int32]) throws(KVError) -> Int {
    try BlockHash.chain(prompt, blockTokens: e.config.blockTokens).withUnsafeBufferPointer { (h) throws(KVError) -> Int in
        try e.createSequence(seq, blockHashes: h, tokens: prompt.count)
    }
}
