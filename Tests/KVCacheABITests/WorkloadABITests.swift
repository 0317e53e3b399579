import Testing
@testable import KVCacheABI

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

/// A deterministic generator (SplitMix64) so a failure replays exactly.
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
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
        var rng = SplitMix64(state: 0x5EED + UInt64(layout))
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
