import KVCache
@testable import KVRouter

/// A router over instances 0..<n with `configure` applied to the defaults.
func makeRouter(_ policy: PolicyKind, instances n: Int, configure: (inout RouterConfig) -> Void = { _ in }) throws -> Router {
    var c = RouterConfig(policy: policy)
    configure(&c)
    let r = try Router(c)
    for i in 0..<n { try r.addInstance(UInt32(i)) }
    return r
}

/// A chain of `count` block hashes unique to `request` (every block differs from other requests').
func chain(_ request: UInt64, count: Int) -> [UInt64] {
    var out: [UInt64] = []
    var parent: UInt64 = 0
    for k in 0..<count {
        let tokens: [Int32] = [Int32(truncatingIfNeeded: request), Int32(truncatingIfNeeded: request >> 32), Int32(k)]
        parent = tokens.withUnsafeBufferPointer { BlockHash.block(parent: parent, tokens: $0) }
        out.append(parent)
    }
    return out
}

extension Router {
    /// `routeSlot` over an array.
    func routeSlot(_ hashes: [UInt64], tokens: Int) throws(KVError) -> Int {
        try hashes.withUnsafeBufferPointer { (b) throws(KVError) -> Int in try routeSlot(b, tokens: tokens) }
    }

    /// `finish` over an array.
    func finish(_ hashes: [UInt64], at id: UInt32) throws(KVError) {
        try hashes.withUnsafeBufferPointer { (b) throws(KVError) in try finish(id, hashes: b) }
    }

    /// Applies `blockStored` events for `hashes` (chained) at instance `id`.
    func store(_ hashes: [UInt64], at id: UInt32) throws {
        var parent: UInt64 = 0
        let events = hashes.map { h -> KVEvent in
            defer { parent = h }
            return KVEvent(kind: .blockStored, blockHash: h, parentHash: parent)
        }
        try events.withUnsafeBufferPointer { (b) throws(KVError) in try observe(id, events: b) }
    }

    /// Leading blocks of `hashes` the view credits to `slot`.
    func cached(_ hashes: [UInt64], slot: Int) -> Int {
        hashes.withUnsafeBufferPointer { view.matchedBlocks($0, slot: slot) }
    }
}
