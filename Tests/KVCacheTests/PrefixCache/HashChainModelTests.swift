@testable import KVCache
import Testing

/// Random operations on a BlockPool with colliding public hashes and fingerprints (0
/// included; helper-208's model of `HashChains`), checked after every step: the events replayed as a set
/// of hashes equal the hashes of the indexed blocks after every step; every indexed block is
/// found by (hash, fingerprint); the dump lists that set once each, parents first.
struct HashChainModelTests {
    @Test(arguments: Array(UInt64(1)...UInt64(40)))
    func eventsStayTheSetOfIndexedHashes(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed &* 0x9E37_79B9)
        let capacity = 12
        let pool = BlockPool(capacity: capacity)
        var used: [Int32: Int] = [:]  // block -> refs we hold
        var announced = Set<UInt64>()
        var problems: [String] = []
        func r(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        func drain(_ step: Int, _ op: String) {
            var out = [KVEvent](repeating: KVEvent(kind: .allCleared, blockHash: 0, parentHash: 0), count: 256)
            let n = out.withUnsafeMutableBufferPointer { pool.events.drain(into: $0) }
            for e in out[..<n] {
                switch e.kind {
                case .blockStored:
                    if !announced.insert(e.blockHash).inserted { problems.append("step \(step) \(op): stored \(e.blockHash) twice") }
                case .blockRemoved:
                    if announced.remove(e.blockHash) == nil { problems.append("step \(step) \(op): removed \(e.blockHash) not announced") }
                case .allCleared: announced.removeAll()
                }
            }
        }
        for step in 0..<3000 {
            var op = ""
            switch r(8) {
            case 0, 1, 2:  // allocate and maybe index
                guard let b = try? pool.allocate() else { break }
                used[b] = 1
                let h = UInt64(1 + r(4)), fp = UInt64(r(4)), parent = UInt64(r(Int(h)))
                op = "insert b\(b) h\(h) fp\(fp) p\(parent)"
                if r(4) > 0 { pool.insert(b, hash: h, parent: parent, fingerprint: fp) }
            case 3, 4:  // release one reference
                guard let (b, n) = used.randomElement(using: &rng) else { break }
                op = "release b\(b)"
                pool.release(b)
                if n == 1 { used[b] = nil } else { used[b] = n - 1 }
            case 5:  // a hit: lookup then retain
                let h = UInt64(1 + r(4)), fp = UInt64(r(4))
                let b = pool.lookup(h, fingerprint: fp)
                op = "hit h\(h) fp\(fp) -> b\(b)"
                if b >= 0 { pool.retain(b); used[b, default: 0] += 1 }
            case 6:
                let k = r(3)
                op = "dropCached \(k)"
                pool.dropCached(limit: k == 2 ? .max : k + 1)
            default:  // forget / unindexUsed a used indexed block
                guard let (b, _) = used.randomElement(using: &rng), pool.isIndexed(b) else { break }
                op = "forget b\(b)"
                pool.forget(b)
            }
            drain(step, op)
            // Ground truth.
            var truth = Set<UInt64>()
            var pairs = Set<[UInt64]>()
            for b in 0..<Int32(capacity) where pool.isIndexed(b) {
                let (h, _, fp) = pool.prepared(b)
                truth.insert(h)
                if !pairs.insert([h, fp]).inserted { problems.append("step \(step) \(op): two blocks of h\(h) fp\(fp)") }
                if fp != 0 && pool.lookup(h, fingerprint: fp) != b { problems.append("step \(step) \(op): b\(b) h\(h) fp\(fp) not found") }
                if pool.lookup(h, fingerprint: 0) < 0 { problems.append("step \(step) \(op): h\(h) not found by hash alone") }
            }
            if truth != announced { problems.append("step \(step) \(op): events say \(announced.sorted()), index holds \(truth.sorted())") }
            var dump: [KVEvent] = []
            pool.appendIndexed(to: &dump)
            let dumped = dump.map(\.blockHash)
            if Set(dumped) != truth || dumped.count != truth.count { problems.append("step \(step) \(op): dump \(dumped) vs \(truth.sorted())") }
            for (i, e) in dump.enumerated() where truth.contains(e.parentHash) && e.parentHash != e.blockHash {
                if !dumped[..<i].contains(e.parentHash) { problems.append("step \(step) \(op): dump lists h\(e.blockHash) before its parent h\(e.parentHash)") }
            }
            if problems.count > 5 { break }
        }
        #expect(problems.isEmpty, "\(problems.prefix(5))")
    }
}
