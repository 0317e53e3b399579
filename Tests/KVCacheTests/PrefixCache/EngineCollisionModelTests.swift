import TestSupport
import Testing
@testable import KVCache

/// Random engine operations (helper-208's model) (create, free, swap-out, swap-in, trim, restart; small
/// memory and tier so eviction spills and slot reuse happen) over prompts whose blocks collide
/// under the public hash (salt 0: victim/attacker; salts 1/2: crossSalt/tenantB). After every
/// step: the memory and disk events, replayed as sets of hashes, equal what each tier holds
/// (memory: the hashes of indexed blocks; disk: `findableHashes`), no event contradicts the set,
/// and every sequence, once ready, reads back its own tokens' K/V.
struct EngineCollisionModelTests {
    static let prompts: [([Int32], UInt64)] = [
        (Collision.victim + Array(2000..<2016) + [5], 0),
        (Collision.attacker + Array(2000..<2016) + [5], 0),
        (Collision.victim + [5], 0),
        (Collision.attacker + [5], 0),
        (Collision.crossSaltAttacker + [5], 1),
        (Array(Int32(1000)..<1048) + [5], 2),  // tenantB's first 3 blocks
        (Array(Int32(3000)..<3032) + [6], 0),
    ]

    @Test(arguments: [(Layout.paged, UInt64(1)), (.paged, 2), (.paged, 3), (.contiguous, 1), (.contiguous, 2), (.contiguous, 3)])
    func eventsMatchBothTiersUnderCollisions(layout: Layout, seed: UInt64) throws {
        let dir = ScratchDir("collisionModel")
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path, memoryBytes: 64 << 10)
        c.blockTokens = 16
        c.offloadBytes = 12 * tierSlotBytes(c)
        var rng = SplitMix64(seed: seed)
        func r(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        var e: Engine? = try Engine(c)
        var memory = Set<UInt64>(), disk = DiskTierView()
        var live: [UInt64: Int] = [:]  // seq -> prompt
        var swapped = Set<UInt64>()
        var problems: [String] = []
        var nextSeq: UInt64 = 1
        var hits = 0
        for step in 0..<400 {
            var op = ""
            var restart = false
            func act(_ engine: Engine) throws(KVError) {
                switch r(9) {
                case 0, 1, 2:
                    guard live.count < 6 else { break }
                    let p = r(Self.prompts.count), (tokens, salt) = Self.prompts[p]
                    op = "create \(nextSeq) prompt \(p)"
                    let cached = try engine.createSequence(nextSeq, tokens: tokens, salt: salt)
                    try waitReady(engine, nextSeq)
                    op += " cached \(cached)"
                    do {
                        let wrong = try kvDifferences(engine, nextSeq, count: cached) { tokens[$0] }
                        if wrong != 0 { problems.append("step \(step) \(op): \(wrong) bytes of the cached prefix are another's") }
                        hits += cached
                        if cached < tokens.count { try fillKV(engine, nextSeq, count: tokens.count - cached, from: cached) { tokens[$0] } }
                    } catch { problems.append("\(step) \(op): fill \(error)") }
                    live[nextSeq] = p
                    nextSeq += 1
                case 3, 4:
                    guard let (s, _) = live.randomElement(using: &rng) else { break }
                    op = "free \(s)"
                    try engine.free(s)
                    live[s] = nil
                    swapped.remove(s)
                case 5:
                    guard let (s, _) = live.filter({ !swapped.contains($0.key) }).randomElement(using: &rng) else { break }
                    op = "swapOut \(s)"
                    do throws(KVError) { try engine.swapOut(s); swapped.insert(s) } catch where error.code == .io { op += " (refused)" }
                case 6:
                    guard let s = swapped.randomElement(using: &rng) else { break }
                    op = "swapIn \(s)"
                    try engine.swapIn(s)
                    try waitReady(engine, s)
                    swapped.remove(s)
                    let (tokens, _) = Self.prompts[live[s]!]
                    do {
                        let wrong = try kvDifferences(engine, s, count: tokens.count) { tokens[$0] }
                        if wrong != 0 { problems.append("step \(step) \(op): \(wrong) bytes differ after the swap-in") }
                    } catch { problems.append("\(step) \(op): read \(error)") }
                case 7:
                    op = "trim"
                    try engine.trim()
                default:
                    op = "restart"
                    try engine.syncOffload()
                    restart = true
                }
            }
            do throws(KVError) {
                try act(e!)
                if restart {
                    e = nil
                    live.removeAll()
                    swapped.removeAll()
                    e = try Engine(c)
                }
            } catch where error.code == .outOfMemory && (op.hasPrefix("create") || op.hasPrefix("swapIn")) {
                op += " (no memory)"
            } catch {
                problems.append("step \(step) \(op): threw \(error)")
            }
            guard let engine = e else { break }
            let events = drainAll(engine)
            disk.apply(events)
            if !disk.contradictions.isEmpty { problems.append("step \(step) \(op): disk \(disk.contradictions)"); disk.contradictions = [] }
            if let tier = engine.offload?.tier {
                let truth = tier.findableHashes
                if truth.hashes != disk.hashes || truth.indexed != truth.hashes.count {
                    problems.append("step \(step) \(op): disk events \(disk.hashes.count) hashes, tier \(truth.hashes.count) (index \(truth.indexed))")
                }
            }
            for event in events where event.tier == KVEvent.memoryTier {
                switch event.kind {
                case .allCleared: memory.removeAll()
                case .blockStored: if !memory.insert(event.blockHash).inserted { problems.append("step \(step) \(op): memory stored twice \(event.blockHash)") }
                case .blockRemoved: if memory.remove(event.blockHash) == nil { problems.append("step \(step) \(op): memory removed, not held \(event.blockHash)") }
                }
            }
            var dump: [KVEvent] = []
            engine.blocks.appendIndexed(to: &dump)
            let memoryTruth = Set(dump.map(\.blockHash))
            if memoryTruth != memory { problems.append("step \(step) \(op): memory events \(memory.count) hashes, index \(memoryTruth.count)") }
            if problems.count > 5 { break }
        }
        #expect(problems.isEmpty, "\(problems.prefix(6))")
        #expect(hits > 0, "no cached token was served: the run checked no prefix's bytes")
    }
}
