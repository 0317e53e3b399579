import Testing
@testable import KVCacheABI
import KVCache

/// A server's view of one live sequence: its tokens, from which its K/V bytes follow.
private struct ModelSequence {
    var tokens: [Int32]
}

/// The K/V "computed" for token `t` depends on tokens[0...t] (as real attention K/V does), so
/// sequences sharing a prefix write identical bytes there and prefix sharing is observable
/// only through wrong bytes.
private func salts(_ tokens: [Int32]) -> [Int] {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    return tokens.map { t in
        h = (h ^ UInt64(UInt32(bitPattern: t))) &* 0x0000_0100_0000_01B3
        return Int(truncatingIfNeeded: h >> 1)
    }
}

extension SplitMix64 {
    /// Uniform in `0..<n` (modulo bias is irrelevant at these sizes).
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

@Suite struct WorkloadABITests {
    /// Random creates (with shared system prompts), decodes, forks, frees and trims on a tight
    /// budget, in both layouts: after every step every live sequence reads exactly the bytes
    /// written for its tokens, failures are OUT_OF_MEMORY (or INVALID_ARGUMENT past
    /// max_seq_tokens) and change nothing, and the stats agree with the model.
    @Test(arguments: bothLayouts)
    func aRandomServerWorkloadKeepsEveryLiveSequencesBytes(layout: UInt32) throws {
        // Tight enough that live sequences compete with cached blocks: paged 128 blocks of 4
        // tokens; contiguous 8 pages of 256 tokens per tensor; up to 16 sequences of 256 tokens.
        var c = CConfig.small(layout, memoryBytes: layout == KVC_LAYOUT_PAGED ? 32 << 10 : 128 << 10)
        c.maxSeqTokens = 256
        c.maxSeqs = 16
        let f = try ABIFixture(c)
        var rng = SplitMix64(seed: 0x5EED + UInt64(layout))
        let systemPrompts: [[Int32]] = (0..<3).map { p in (0..<(9 + 8 * p)).map { Int32(p * 1000 + $0) } }
        var live: [UInt64: ModelSequence] = [:]
        var nextId: UInt64 = 1
        var outcomes: [String: Int] = [:]

        func expectUnchangedAfter(_ rc: kvc_status, _ what: String, before: CStats) throws {
            #expect(rc == KVC_ERR_OUT_OF_MEMORY || rc == KVC_ERR_INVALID_ARGUMENT,
                    "\(what): \(String(cString: kvc_status_name(rc))) \(String(cString: kvc_last_error()))")
            #expect(try f.stats() == before, "\(what) failed but changed the stats")
            outcomes[String(cString: kvc_status_name(rc)), default: 0] += 1
        }

        for step in 0..<600 {
            let before = try f.stats()
            let ids = live.keys.sorted()
            switch rng.below(11) {
            case 0..<3:  // a new request: maybe a system prompt, then its own tokens
                var prompt = rng.below(3) == 0 ? [] : systemPrompts[rng.below(systemPrompts.count)]
                prompt += (0..<(1 + rng.below(30))).map { _ in Int32(truncatingIfNeeded: rng.next() % 50_000) }
                var cached = -1
                let id = nextId
                nextId += 1
                let rc = kvc_seq_create(f.handle, id, prompt, prompt.count, &cached)
                if rc == KVC_OK {
                    #expect(cached % f.blockTokens == 0 && cached < prompt.count, "cached \(cached) of \(prompt.count)")
                    let s = salts(prompt)
                    #expect(try f.firstMismatch(id, to: cached) { s[$0] } == nil, "step \(step): cached prefix bytes")
                    try f.write(id, from: cached, to: prompt.count) { s[$0] }
                    live[id] = ModelSequence(tokens: prompt)
                    outcomes["create", default: 0] += 1
                    if cached > 0 { outcomes["prefix hit", default: 0] += 1 }
                } else {
                    try expectUnchangedAfter(rc, "step \(step) create", before: before)
                }
            case 3..<7:  // decode steps
                guard let id = ids.randomElement(using: &rng) else { continue }
                let more = (0..<(1 + rng.below(6))).map { _ in Int32(truncatingIfNeeded: rng.next() % 50_000) }
                let rc = kvc_seq_append(f.handle, id, more, more.count)
                if rc == KVC_OK {
                    let from = live[id]!.tokens.count
                    live[id]!.tokens += more
                    let s = salts(live[id]!.tokens)
                    try f.write(id, from: from, to: s.count) { s[$0] }
                    outcomes["append", default: 0] += 1
                } else {
                    try expectUnchangedAfter(rc, "step \(step) append", before: before)
                    #expect(try f.length(id) == live[id]!.tokens.count)
                }
            case 7:
                guard let parent = ids.randomElement(using: &rng) else { continue }
                let child = nextId
                nextId += 1
                let rc = kvc_seq_fork(f.handle, parent, child)
                if rc == KVC_OK {
                    live[child] = live[parent]
                    outcomes["fork", default: 0] += 1
                } else {
                    try expectUnchangedAfter(rc, "step \(step) fork", before: before)
                }
            case 8, 9:
                guard let id = ids.randomElement(using: &rng) else { continue }
                #expect(kvc_seq_free(f.handle, id) == KVC_OK)
                live[id] = nil
                outcomes["free", default: 0] += 1
            default:
                if rng.below(4) == 0 {
                    #expect(kvc_engine_trim(f.handle) == KVC_OK)
                    outcomes["trim", default: 0] += 1
                }
            }
            // Every live sequence reads its own bytes, and the engine agrees on who is live.
            for (id, m) in live.sorted(by: { $0.key < $1.key }) {
                let s = salts(m.tokens)
                let bad = try f.firstMismatch(id, to: s.count) { s[$0] }
                try #require(bad == nil, "step \(step): \(bad ?? "")")
            }
            let st = try f.stats()
            try #require(st.sequences == UInt64(live.count + f.witnesses.count), "step \(step): \(st)")
            try #require(st.committedBytes <= st.budgetBytes && st.blocksUsed + st.blocksCached <= st.blocksTotal)
        }
        try f.expectWitnessesIntact()
        // The workload must have exercised what it claims to.
        #expect(outcomes["KVC_ERR_OUT_OF_MEMORY", default: 0] > 0, "\(outcomes)")
        #expect(outcomes["prefix hit", default: 0] > 0, "\(outcomes)")
        #expect(outcomes["fork", default: 0] > 0, "\(outcomes)")
        #expect(try f.stats().blocksEvicted > 0, "the budget never forced an eviction")
    }
}

/// Drains every pending event through the ABI.
private func drainAll(_ f: ABIFixture) throws -> [(kind: UInt32, hash: UInt64, parent: UInt64)] {
    var out: [(kind: UInt32, hash: UInt64, parent: UInt64)] = []
    var bytes = [UInt8](repeating: 0, count: 24 * 100)
    while true {
        var n = 0
        try #require(bytes.withUnsafeMutableBytes { kvc_drain_events(f.handle, $0.baseAddress, 100, &n) } == KVC_OK)
        bytes.withUnsafeBytes { raw in
            for i in 0..<n {
                out.append((raw.loadUnaligned(fromByteOffset: 24 * i, as: UInt32.self),
                            raw.loadUnaligned(fromByteOffset: 24 * i + 8, as: UInt64.self),
                            raw.loadUnaligned(fromByteOffset: 24 * i + 16, as: UInt64.self)))
            }
        }
        if n < 100 { return out }
    }
}

extension WorkloadABITests {
    /// A router that only follows the KV events holds exactly the engine's prefix index: every
    /// stored block is new to it, every removed block was stored, parents are stored before
    /// their children, and every prefix hit kvc_seq_create reports is made of blocks it holds.
    @Test(arguments: bothLayouts)
    func aRouterFollowingTheEventsKnowsEveryPrefixHit(layout: UInt32) throws {
        var c = CConfig.small(layout, memoryBytes: layout == KVC_LAYOUT_PAGED ? 32 << 10 : 128 << 10)
        c.maxSeqTokens = 256
        c.maxSeqs = 16
        let f = try ABIFixture(c)
        var rng = SplitMix64(seed: 0xE7E7 + UInt64(layout))
        let systemPrompts: [[Int32]] = (0..<3).map { p in (0..<(9 + 8 * p)).map { Int32(p * 1000 + $0) } }
        var router: Set<UInt64> = []
        var live: [UInt64] = []
        var hits = 0, removals = 0

        func follow(_ step: Int) throws {
            for e in try drainAll(f) {
                switch e.kind {
                case 1:
                    #expect(!router.contains(e.hash), "step \(step): block \(e.hash) stored twice")
                    #expect(e.parent == 0 || router.contains(e.parent), "step \(step): child stored before its parent")
                    router.insert(e.hash)
                case 2:
                    #expect(router.remove(e.hash) != nil, "step \(step): removed block \(e.hash) was never stored")
                    removals += 1
                case 3:
                    router.removeAll()
                    removals += 1
                default:
                    Issue.record("step \(step): unknown event kind \(e.kind)")
                }
            }
        }

        for step in 0..<400 {
            switch rng.below(8) {
            case 0..<3:
                var prompt = systemPrompts[rng.below(systemPrompts.count)]
                prompt += (0..<rng.below(20)).map { _ in Int32(truncatingIfNeeded: rng.next() % 50_000) }
                var cached = 0
                let id = UInt64(step + 1)
                if kvc_seq_create(f.handle, id, prompt, prompt.count, &cached) == KVC_OK {
                    live.append(id)
                    var hashes = [UInt64](repeating: 0, count: prompt.count)
                    var n = 0
                    #expect(kvc_hash_tokens(prompt, prompt.count, 4, &hashes, hashes.count, &n) == KVC_OK)
                    for h in hashes[0..<(cached / 4)] {
                        #expect(router.contains(h), "step \(step): a prefix hit on a block the router never heard of")
                    }
                    if cached > 0 { hits += 1 }
                }
            case 3..<6:
                guard let id = live.randomElement(using: &rng) else { continue }
                let more = (0..<(1 + rng.below(8))).map { _ in Int32(truncatingIfNeeded: rng.next() % 50_000) }
                _ = kvc_seq_append(f.handle, id, more, more.count)
            case 6:
                guard !live.isEmpty else { continue }
                #expect(kvc_seq_free(f.handle, live.remove(at: rng.below(live.count))) == KVC_OK)
            default:
                if rng.below(5) == 0 { #expect(kvc_engine_trim(f.handle) == KVC_OK) }
            }
            try follow(step)
        }
        let s = try f.stats()
        #expect(UInt64(router.count) == s.blocksUsed + s.blocksCached - unindexedUsedBlocks(f, live),
                "the router's view and the engine's index differ in size")
        #expect(s.eventsDropped == 0)
        #expect(hits > 0 && removals > 0, "hits \(hits), removals \(removals)")
    }
}

/// Used blocks that are not in the prefix index: each live sequence's partly filled last block
/// (a full block is always indexed, unless an identical block was indexed first — the
/// workload's random suffixes make that practically impossible outside the system prompts,
/// which are shared, not duplicated).
private func unindexedUsedBlocks(_ f: ABIFixture, _ live: [UInt64]) -> UInt64 {
    var partial: Set<Int32> = []
    for id in live {
        var n = 0
        guard kvc_seq_length(f.handle, id, &n) == KVC_OK, n % f.blockTokens != 0 else { continue }
        if f.isPaged, let last = try? f.blockTable(id).last { partial.insert(last) }
    }
    return f.isPaged ? UInt64(partial.count) : UInt64(live.filter { id in
        var n = 0
        return kvc_seq_length(f.handle, id, &n) == KVC_OK && n % f.blockTokens != 0
    }.count)
}
