import KVCache
import Testing
@testable import KVRouter

/// `ActiveBlocks` under random adds, finishes and clears against a `Dictionary` per slot that
/// states its documented rules: the guard of its storage's rewrite (a flat table in place of a
/// `Dictionary` per slot), written to pass on both.
@Suite struct ActiveBlocksModelTests {
    /// The rules: an add of more hashes than the limit changes nothing; one that could take
    /// the slot past the limit first clears it (a reset); each hash of a prompt, repeats
    /// included, adds a reference. A remove changes nothing unless every hash is held, and
    /// then takes one reference per distinct hash occurrence still held (a repeated hash whose
    /// last reference an earlier occurrence took is skipped).
    struct Model {
        var counts = [[UInt64: UInt32]](repeating: [:], count: RouterConfig.maxInstances)
        var resets: UInt64 = 0

        mutating func add(_ hashes: [UInt64], slot: Int) {
            if hashes.count > ActiveBlocks.limitPerInstance { return }
            if counts[slot].count + hashes.count > ActiveBlocks.limitPerInstance {
                counts[slot] = [:]
                resets += 1
            }
            for h in hashes { counts[slot][h, default: 0] += 1 }
        }

        mutating func remove(_ hashes: [UInt64], slot: Int) -> Bool {
            if hashes.contains(where: { counts[slot][$0] == nil }) { return false }
            for h in hashes {
                guard let c = counts[slot][h] else { continue }
                counts[slot][h] = c == 1 ? nil : c - 1
            }
            return true
        }
    }

    /// Hashes that collide in a small table: 0 (which the shared mask table never holds, yet a
    /// slot counts), multiples of 2^32 and of 2^48 (equal low bits), and random ones.
    static func pool(_ rng: inout SplitMix64) -> [UInt64] {
        [0] + (1...24).map { UInt64($0) << 32 } + (1...8).map { UInt64($0) << 48 } + (0..<31).map { _ in rng.next() | 1 }
    }

    /// 3,000 random operations per seed over 4 slots (0, 1, 37, 63): prompts of 1-24 hashes
    /// from a 64-hash pool with repeats, finishes of routed prompts (some twice), of random
    /// hashes (mostly refused), clears; and twice per seed a prompt of `limit - 8` fresh
    /// hashes, so the next adds at that slot reset it and the dropped prompts' finishes are
    /// refused. After each operation: the result, `unique` of every slot and `resets`; every
    /// 50, `countPresent` for the whole pool against the model.
    @Test(arguments: 1...12) func randomOperationsMatchADictionaryModel(seed: Int) {
        var rng = SplitMix64(seed: UInt64(seed))
        let pool = Self.pool(&rng)
        let slots = [0, 1, 37, 63]
        let active = ActiveBlocks()
        var model = Model()
        var routed: [(hashes: [UInt64], slot: Int)] = []
        var bigAt: Set<Int> = [Int(rng.next() % 3000), Int(rng.next() % 3000)]
        var wrongResults = 0, wrongUnique = 0, wrongResets = 0, wrongPresent = 0
        for step in 0..<3000 {
            let slot = slots[Int(rng.next() % 4)]
            let r = rng.next() % 100
            if bigAt.remove(step) != nil {
                let big = (0..<(ActiveBlocks.limitPerInstance - 8)).map { _ in rng.next() | 1 }
                call(active, add: big, slot: slot)
                model.add(big, slot: slot)
                routed.append((big, slot))
            } else if r < 50 {
                let hashes = (0..<(1 + Int(rng.next() % 24))).map { _ in pool[Int(rng.next() % UInt64(pool.count))] }
                call(active, add: hashes, slot: slot)
                model.add(hashes, slot: slot)
                routed.append((hashes, slot))
            } else if r < 85, !routed.isEmpty {
                let i = Int(rng.next() % UInt64(routed.count))
                let (hashes, s) = routed[i]
                if rng.next() % 4 != 0 { routed.remove(at: i) }  // else finished again later
                if call(active, remove: hashes, slot: s) != model.remove(hashes, slot: s) { wrongResults += 1 }
            } else if r < 97 {
                let hashes = (0..<(1 + Int(rng.next() % 4))).map { _ in pool[Int(rng.next() % UInt64(pool.count))] }
                if call(active, remove: hashes, slot: slot) != model.remove(hashes, slot: slot) { wrongResults += 1 }
            } else {
                active.clear(slot: slot)
                model.counts[slot] = [:]
            }
            for s in slots where active.unique(slot: s) != model.counts[s].count { wrongUnique += 1 }
            if active.resets != model.resets { wrongResets += 1 }
            if step % 50 == 0 {
                let mask = slots.reduce(UInt64(0)) { $0 | 1 << UInt64($1) }
                pool.withUnsafeBufferPointer { active.countPresent($0, slots: mask) }
                for s in slots {
                    let expected = pool.filter { $0 != 0 && model.counts[s][$0] != nil }.count
                    if active.present[s] != expected { wrongPresent += 1 }
                }
            }
        }
        #expect(model.resets >= 1, "a prompt near the limit made a later add reset its slot")
        #expect(wrongResults == 0 && wrongUnique == 0 && wrongResets == 0 && wrongPresent == 0,
                "results \(wrongResults), unique \(wrongUnique), resets \(wrongResets), present \(wrongPresent)")
    }

    private func call(_ active: ActiveBlocks, add hashes: [UInt64], slot: Int) {
        hashes.withUnsafeBufferPointer { active.add($0, slot: slot) }
    }

    private func call(_ active: ActiveBlocks, remove hashes: [UInt64], slot: Int) -> Bool {
        hashes.withUnsafeBufferPointer { active.remove($0, slot: slot) }
    }
}
