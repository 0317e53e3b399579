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
            for i in 0..<e.config.tokenBytes {
                k.storeBytes(of: kvByte(layer: layer, kv: 0, position: from + j, token: t, i: i, salt: salt), toByteOffset: i, as: UInt8.self)
                v.storeBytes(of: kvByte(layer: layer, kv: 1, position: from + j, token: t, i: i, salt: salt), toByteOffset: i, as: UInt8.self)
            }
        }
    }
}

/// The number of bytes of `seq` positions `from...` that differ from what `writeKV` wrote.
func kvMismatches(_ e: Engine, _ seq: UInt64, tokens: [Int32], from: Int, salt: Int = 0) throws -> Int {
    var bad = 0
    for layer in 0..<e.config.numLayers {
        for (j, t) in tokens.enumerated() {
            let (k, v) = try tokenAddress(e, seq, layer: layer, position: from + j)
            for i in 0..<e.config.tokenBytes {
                if k.load(fromByteOffset: i, as: UInt8.self) != kvByte(layer: layer, kv: 0, position: from + j, token: t, i: i, salt: salt) { bad += 1 }
                if v.load(fromByteOffset: i, as: UInt8.self) != kvByte(layer: layer, kv: 1, position: from + j, token: t, i: i, salt: salt) { bad += 1 }
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
