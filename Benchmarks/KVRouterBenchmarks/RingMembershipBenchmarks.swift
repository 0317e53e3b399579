import Benchmark
import KVCache
import KVRouter

/// The cost of a membership change on one hash ring (the router changes two, under its
/// mutex), against the rebuild it replaced, measured in the same run. 63 instances are on the
/// ring, ids 0..<63 in slots 0..<63, at the default 128 virtual nodes; the measured operation
/// adds or removes the 64th (id 63, slot 63). Sizes: every instance of weight 1 (8,192
/// positions with all 64), weights 1...64 (instance i of weight i + 1: 266,240) and every one
/// of weight 64 (524,288, `RouterConfig.maxRingPositions`).
///
/// "merge" adds with `HashRing.insert`, "compact" removes with `HashRing.remove`; each
/// measured iteration is followed, unmeasured, by the opposite change, so every iteration
/// starts from the same ring (built once, its arrays keeping their capacity, as a router's do). "rebuild" is the algorithm before 2026-11-22 (`rebuiltRing`),
/// which rebuilt the whole ring for the new membership: all 64 (add) or 63 (remove) members.
///
/// "Router remove/add 64th" time the whole `Router.removeInstance` / `addInstance` of a
/// default-configured router of 64 instances of weight 1 (two rings, and on remove the cache
/// view's `forget` of the slot, whose table has 2^19 entries at the default `trackedBlocks`),
/// each followed, unmeasured, by the opposite change. Its view is empty, so `forget` has
/// nothing to clear; "holding 1771 blocks exact/approximate" first credits the 64th with an
/// instance's worth of blocks (Qwen2.5-7B on an A100-80GB, as in `kvcache replay`), unmeasured:
/// stored events (exact view) or routed hashes (approximate view).
func ringMembershipBenchmarks() {
    let configuration = Benchmark.Configuration(metrics: [.wallClock, .throughput], warmupIterations: 3, scalingFactor: .one,
                                                maxDuration: .seconds(3), maxIterations: 400)
    let sizes: [(name: String, weight: (Int) -> Int)] = [("weight 1", { _ in 1 }), ("weight 1-64", { $0 + 1 }), ("weight 64", { _ in 64 })]
    for size in sizes {
        let members = (0..<64).map { (slot: $0, id: UInt32($0), virtualNodes: 128 * size.weight($0)) }
        let seed: UInt64 = 0x6475_616C_6D61_7031
        Benchmark("Ring add 64th \(size.name) rebuild", configuration: configuration) { benchmark in
            benchmark.startMeasurement()
            blackHole(rebuiltRing(seed: seed, members))
            benchmark.stopMeasurement()
        }
        let without = RingBox(seed: seed, members.dropLast())
        Benchmark("Ring add 64th \(size.name) merge", configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations {
                benchmark.startMeasurement()
                without.ring.insert(slot: 63, id: 63, virtualNodes: members[63].virtualNodes)
                benchmark.stopMeasurement()
                without.ring.remove(slot: 63)
            }
        }
        Benchmark("Ring remove 64th \(size.name) rebuild", configuration: configuration) { benchmark in
            benchmark.startMeasurement()
            blackHole(rebuiltRing(seed: seed, Array(members.dropLast())))
            benchmark.stopMeasurement()
        }
        let with = RingBox(seed: seed, members[...])
        Benchmark("Ring remove 64th \(size.name) compact", configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations {
                benchmark.startMeasurement()
                with.ring.remove(slot: 63)
                benchmark.stopMeasurement()
                with.ring.insert(slot: 63, id: 63, virtualNodes: members[63].virtualNodes)
            }
        }
    }
    let router = try! Router(RouterConfig())
    for i in 0..<64 { try! router.addInstance(UInt32(i)) }
    Benchmark("Router remove 64th weight 1", configuration: configuration) { benchmark in
        for _ in benchmark.scaledIterations {
            benchmark.startMeasurement()
            try! router.removeInstance(63)
            benchmark.stopMeasurement()
            try! router.addInstance(63)
        }
    }
    let held = (1...1771).map { BlockHash.finalize(UInt64($0) &* 0x9E37_79B9_7F4A_7C15) }
    let stored = held.map { KVEvent(kind: .blockStored, blockHash: $0, parentHash: 0) }
    for mode in [CacheViewMode.exact, .approximate] {
        var c = RouterConfig()
        c.view = mode
        let holding = try! Router(c)
        for i in 0..<64 { try! holding.addInstance(UInt32(i)) }
        Benchmark("Router remove 64th weight 1 holding 1771 blocks \(mode == .exact ? "exact" : "approximate")",
                  configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations {
                if mode == .exact {
                    try! stored.withUnsafeBufferPointer { (e) throws(KVError) in try holding.observe(63, events: e) }
                } else {
                    held.withUnsafeBufferPointer { holding.view.recordRoute($0, slot: holding.slot(of: 63)) }
                }
                precondition(held.withUnsafeBufferPointer { holding.view.matchedBlocks($0, slot: holding.slot(of: 63)) } == held.count)
                benchmark.startMeasurement()
                try! holding.removeInstance(63)
                benchmark.stopMeasurement()
                try! holding.addInstance(63)
            }
        }
    }
    Benchmark("Router add 64th weight 1", configuration: configuration) { benchmark in
        for _ in benchmark.scaledIterations {
            try! router.removeInstance(63)
            benchmark.startMeasurement()
            try! router.addInstance(63)
            benchmark.stopMeasurement()
        }
    }
}

/// A ring built once, outside the measurements, and changed by them.
private final class RingBox {
    var ring: HashRing

    /// A ring holding `members`, added in order.
    init(seed: UInt64, _ members: ArraySlice<(slot: Int, id: UInt32, virtualNodes: Int)>) {
        ring = HashRing(seed: seed)
        for m in members { ring.insert(slot: m.slot, id: m.id, virtualNodes: m.virtualNodes) }
    }
}

/// The baseline: `HashRing.rebuild` as it was until 2026-11-22, every member's positions
/// generated and sorted by (position, id), equal positions keeping the lower id.
private func rebuiltRing(seed: UInt64, _ members: [(slot: Int, id: UInt32, virtualNodes: Int)]) -> (ContiguousArray<UInt64>, ContiguousArray<Int32>) {
    var entries: [(UInt64, UInt32, Int32)] = []
    entries.reserveCapacity(members.reduce(0) { $0 + $1.virtualNodes })
    for m in members {
        for v in 0..<m.virtualNodes {
            let p = BlockHash.finalize(seed &+ (UInt64(m.id) << 32 | UInt64(v)) &* 0x9E37_79B9_7F4A_7C15)
            entries.append((p, m.id, Int32(m.slot)))
        }
    }
    entries.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
    var positions: ContiguousArray<UInt64> = [], slots: ContiguousArray<Int32> = []
    positions.reserveCapacity(entries.count)  // the old ring kept its arrays' capacity
    slots.reserveCapacity(entries.count)
    for e in entries where positions.last != e.0 {
        positions.append(e.0)
        slots.append(e.2)
    }
    return (positions, slots)
}
