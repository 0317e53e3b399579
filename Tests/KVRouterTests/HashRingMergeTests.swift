import KVCache
import Testing
@testable import KVRouter

/// The ring as the router built it before adds merged and removes compacted (until
/// 2026-11-22): every member's positions generated, sorted by (position, id), and of equal
/// positions only the lower id's kept. The incremental ring must equal it after any sequence
/// of adds and removes.
private func referenceRing(seed: UInt64, _ members: [(slot: Int, id: UInt32, virtualNodes: Int)]) -> (positions: [UInt64], slots: [Int32]) {
    var entries: [(UInt64, UInt32, Int32)] = []
    for m in members {
        for v in 0..<m.virtualNodes {
            let p = BlockHash.finalize(seed &+ (UInt64(m.id) << 32 | UInt64(v)) &* 0x9E37_79B9_7F4A_7C15)
            entries.append((p, m.id, Int32(m.slot)))
        }
    }
    entries.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
    var positions: [UInt64] = [], slots: [Int32] = []
    for e in entries where positions.last != e.0 {
        positions.append(e.0)
        slots.append(e.2)
    }
    return (positions, slots)
}

/// The reference lookup: the slot of the first position at or after `p` (wrapping) whose
/// slot is outside `excludedMask`, by a linear scan; -1 when none.
private func referenceLookup(_ ring: (positions: [UInt64], slots: [Int32]), _ p: UInt64, excludedMask: UInt64 = 0) -> Int {
    let n = ring.positions.count
    let start = ring.positions.firstIndex { $0 >= p } ?? 0
    for k in 0..<n {
        let s = Int(ring.slots[(start + k) % max(n, 1)])
        if excludedMask & (1 << UInt64(s)) == 0 { return s }
    }
    return -1
}

/// The multiplicative inverse of odd `c` modulo 2^64 (Newton's iteration).
private func inverse(_ c: UInt64) -> UInt64 {
    var x = c
    for _ in 0..<6 { x = x &* (2 &- c &* x) }
    return x
}

/// `BlockHash.finalize` undone step by step (a xor-shift by 33 >= 32 is its own inverse).
private func unfinalize(_ value: UInt64) -> UInt64 {
    var h = value
    h ^= h >> 33
    h = h &* inverse(0xC4CE_B9FE_1A85_EC53)
    h ^= h >> 33
    h = h &* inverse(0xFF51_AFD7_ED55_8CCD)
    h ^= h >> 33
    return h
}

@Suite struct HashRingMergeTests {
    /// Virtual-node positions are injective in (id, virtual node): every position turns back
    /// into the id and virtual node it came from, so no two virtual nodes collide and the old
    /// rebuild's tie rule (lower id kept) never had a tie to break.
    @Test func virtualNodePositionsTurnBackIntoTheirIdAndNode() {
        var rng = SplitMix64(seed: 11)
        for seed: UInt64 in [0, 0x6475_616C_6D61_7031, 0x6475_616C_6D61_7032, rng.next()] {
            let ring = HashRing(seed: seed)
            for _ in 0..<2000 {
                let id = UInt32(truncatingIfNeeded: rng.next())
                let v = Int(rng.next() % (1 << 32))
                let x = (unfinalize(ring.position(ofVirtualNode: v, of: id)) &- seed) &* inverse(0x9E37_79B9_7F4A_7C15)
                #expect(x >> 32 == UInt64(id) && x & 0xFFFF_FFFF == UInt64(v), "seed \(seed) id \(id) v \(v)")
            }
        }
    }

    /// Random adds and removes (ids 0..<200 and near UInt32.max, weights from 1/128 to 64,
    /// 1 to 300 virtual nodes, at most 40 instances): after each, both of the router's rings hold exactly the
    /// reference's positions and slots, their lookups (plain, excluding a slot, excluding a
    /// mask) answer as the reference's, and consistent-hash routes go where the reference ring
    /// says.
    @Test(arguments: [1, 2, 3, 4, 5, 6]) func randomMembershipChangesKeepTheRebuiltRing(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let virtualNodes = [1, 3, 128, 300, Int(rng.next() % 64) + 1, 128][Int(seed - 1)]
        var config = RouterConfig(policy: .consistentHash)
        config.virtualNodes = virtualNodes
        let router = try Router(config)
        var weights: [UInt32: Double] = [:]
        let choices: [Double] = [1, 1, 0.5, 2, 1.0 / 128, 64, 3.3, 17]
        for step in 0..<150 {
            if weights.isEmpty || (weights.count < 40 && rng.next() % 3 != 0) {
                let id = rng.next() % 4 == 0 ? UInt32.max - UInt32(rng.next() % 8) : UInt32(rng.next() % 200)
                if weights[id] != nil { continue }
                let w = rng.next() % 2 == 0 ? choices[Int(rng.next() % UInt64(choices.count))] : Double(rng.next() % 400 + 1) / 100
                do {
                    try router.addInstance(id, weight: w)
                    weights[id] = w
                } catch {
                    #expect(error.code == .invalidArgument, "step \(step): \(error.message)")
                }
            } else {
                let id = weights.keys.sorted()[Int(rng.next() % UInt64(weights.count))]
                try router.removeInstance(id)
                weights[id] = nil
            }
            let members = weights.map { (slot: router.slot(of: $0.key), id: $0.key,
                                         virtualNodes: max(1, Int((Double(virtualNodes) * $0.value).rounded()))) }
            for ring in [router.ring1, router.ring2] {
                let expected = referenceRing(seed: ring.seed, members)
                let got = ring.entries
                #expect(got.positions == expected.positions && got.slots == expected.slots, "seed \(seed) step \(step)")
                #expect(ring.count == members.reduce(0) { $0 + $1.virtualNodes }, "no position was dropped as a collision")
                for k in 0..<16 {
                    let key = rng.next()
                    let p = ring.position(of: key)
                    let someSlot = members.isEmpty ? 0 : members[Int(rng.next() % UInt64(members.count))].slot
                    let mask = rng.next() & router.liveMask
                    #expect(ring.lookup(key) == referenceLookup(expected, p), "seed \(seed) step \(step) key \(k)")
                    #expect(ring.lookup(key, excluding: someSlot) == referenceLookup(expected, p, excludedMask: 1 << UInt64(someSlot)))
                    #expect(ring.lookup(key, excludingMask: mask) == referenceLookup(expected, p, excludedMask: mask))
                }
            }
            guard !members.isEmpty else { continue }
            let reference = referenceRing(seed: router.ring1.seed, members)
            for r in 0..<16 {
                let hashes = chain(UInt64(step * 100 + r), count: 3)
                let key = hashes.withUnsafeBufferPointer { router.key(of: $0) }
                #expect(try router.routeSlot(hashes, tokens: 48) == referenceLookup(reference, router.ring1.position(of: key)),
                        "seed \(seed) step \(step) route \(r)")
            }
        }
    }
}
