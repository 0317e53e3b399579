import CKVMemory
import Testing
@testable import KVCache

/// `Engine.truncate` of sequences with token-eviction state: the cut is a position count,
/// every row keeps its tokens below it, byte for byte, and what follows (appends, observes,
/// compactions) goes as for a sequence that never had the removed tokens. Block size 4,
/// 2 layers x 2 KV heads (`smallConfig`).
@Suite struct EvictionTruncateTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    func engine(_ layout: Layout, _ policy: EvictionPolicyKind, perHead: Bool, configure: (inout EngineConfig) -> Void = { _ in }) throws -> Engine {
        var c = smallConfig(layout)
        c.eviction = EvictionConfig(policy)
        c.eviction.perHead = perHead
        configure(&c)
        return try Engine(c)
    }

    /// Sequence 1: 64 tokens written, observed (heavy hitters 0, 5, 9, 33, 40, 41, each head's
    /// shifted by `headShift`), compacted to 16 tokens a layer. Returns the prompt.
    func compacted(_ e: Engine, headShift: Int = 0) throws -> [Int32] {
        let toks = tokens(64, seed: 3)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try observeAll(e, 1, scores(e, n: 64, heavy: [0, 5, 9, 33, 40, 41], headShift: headShift), n: 64)
        #expect(try e.compact(1, budgetTokens: 16) == 16)
        return toks
    }

    /// Appends `count` tokens to `seq` at positions `from...` and writes their K/V into slots
    /// `slot...` of every layer (all layers equally long); returns them.
    func appendWritten(_ e: Engine, _ seq: UInt64, _ count: Int, from: Int, slot: Int, seed: Int32) throws -> [Int32] {
        let t = tokens(count, seed: seed)
        try e.append(seq, tokens: t)
        try writeKV(e, seq, tokens: t, from: from, slot: slot)
        return t
    }

    func refusal(_ e: Engine, _ seq: UInt64, _ n: Int) -> KVError.Code? {
        do throws(KVError) { try e.truncate(seq, to: n); return nil } catch { return error.code }
    }

    /// Spec decoding on a compacted sequence: 8 drafts at positions 64..<72 (slots 16..<24),
    /// 3 accepted. Every row keeps its 16 compacted tokens and the 3 accepted, each slot its
    /// bytes; the block past the cut goes; appends continue at position 67, and an observe of
    /// the new length and a compaction keep every byte right.
    @Test(arguments: layouts, [false, true])
    func rejectedDraftsOfACompactedSequenceRollBack(layout: Layout, perHead: Bool) throws {
        let e = try engine(layout, .heavyHitter, perHead: perHead)
        let toks = try compacted(e, headShift: perHead ? 1 : 0)
        let before = try (0..<2).map { try positions(e, 1, layer: $0) }
        let drafts = try appendWritten(e, 1, 8, from: 64, slot: 16, seed: 9)
        let blocksWithDrafts = e.stats().blocksUsed
        try e.truncate(1, to: 67)
        #expect(try e.length(1) == 19)
        #expect(e.stats().blocksUsed == blocksWithDrafts - 1, "slots 20..<24 (one block) released")
        let rows = perHead ? 2 : 1
        for layer in 0..<2 {
            #expect(try e.layerLength(1, layer: layer) == 19)
            let pos = try positions(e, 1, layer: layer)
            for r in 0..<rows {
                #expect(Array(pos[(r * 19)..<(r * 19 + 16)]) == Array(before[layer][(r * 16)..<(r * 16 + 16)]), "no kept slot moved")
                #expect(Array(pos[(r * 19 + 16)..<(r * 19 + 19)]) == [64, 65, 66])
            }
        }
        var all = toks + Array(drafts[0..<3])
        #expect(try slotMismatches(e, 1, tokens: all) == 0)
        all += try appendWritten(e, 1, 2, from: 67, slot: 19, seed: 10)
        for layer in 0..<2 { #expect(try positions(e, 1, layer: layer).suffix(2) == [67, 68]) }
        try observeAll(e, 1, scores(e, n: 21, heavy: [17, 18]), n: 21)
        #expect(try e.compact(1, budgetTokens: 12) == 12)
        #expect(try slotMismatches(e, 1, tokens: all) == 0)
        try e.truncate(1, to: 69)  // all positions seen: nothing to do
        #expect(refusal(e, 1, 70) == .invalidArgument && refusal(e, 1, 0) == .invalidArgument)
    }

    /// Contiguous: the page of a compacted sequence's cut that nothing holds but its mapping
    /// and its own indexed blocks (here the sink block 0, which the compaction left untouched
    /// and indexed) is written in place, as a plain truncation's is
    /// (`ContiguousMemory.isHeldElsewhere`): it used to be copied whenever anything else
    /// referenced its group, its own indexed blocks included (a fresh group, an mmap per
    /// tensor and a page copy per rollback). The sink block stays cached with its bytes.
    @Test func aCompactedCutPageOnlyItsOwnIndexedBlocksHoldIsWrittenInPlace() throws {
        let e = try engine(.contiguous, .heavyHitter, perHead: false)
        let toks = tokens(64, seed: 3)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try observeAll(e, 1, scores(e, n: 64, heavy: [0, 1, 2, 3, 9, 33, 40, 41]), n: 64)
        #expect(try e.compact(1, budgetTokens: 16) == 16)
        let slot = e.sequences.slot(of: 1), ranges = e.contiguous!.ranges
        #expect(try positions(e, 1, layer: 0).prefix(4) == [0, 1, 2, 3])
        #expect(e.contiguous!.isShared(slot: slot, page: 0), "block 0 is still indexed and holds page 0")
        let drafts = try appendWritten(e, 1, 8, from: 64, slot: 16, seed: 9)
        let group = kvm_ranges_group(ranges, UInt32(slot), 0)
        try e.truncate(1, to: 67)
        #expect(kvm_ranges_group(ranges, UInt32(slot), 0) == group, "page 0 is not copied")
        var all = toks + Array(drafts[0..<3])
        #expect(try slotMismatches(e, 1, tokens: all) == 0)
        all += try appendWritten(e, 1, 5, from: 67, slot: 19, seed: 10)
        #expect(kvm_ranges_group(ranges, UInt32(slot), 0) == group)
        #expect(try slotMismatches(e, 1, tokens: all) == 0)
        #expect(try e.createSequence(2, tokens: Array(toks[0..<6])) == 4, "the sink block is still served")
        #expect(try kvMismatches(e, 2, tokens: Array(toks[0..<4]), from: 0) == 0)
    }

    /// Contiguous: pages that nothing holds but a compacted sequence's mapping and its own
    /// indexed blocks are written in place by its compactions and truncations alike, the rule
    /// of a plain truncation's cut page; they used to be copied whenever anything else
    /// referenced their group, the sequence's own indexed blocks included. 300 tokens (pages
    /// 0-2 of 128, 75 blocks indexed) compacted to their first 260 (nothing moves; appends
    /// continue in page 2), then cut back to 200: appends continue in page 1, whose blocks
    /// below the cut stay indexed, and a prompt hits them with their bytes.
    @Test func pagesOnlyACompactedSequenceAndItsIndexedBlocksHoldAreWrittenInPlace() throws {
        let e = try engine(.contiguous, .heavyHitter, perHead: false) { $0.eviction.recentRatio = 0 }
        let toks = tokens(300, seed: 3)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        let slot = UInt32(e.sequences.slot(of: 1)), ranges = e.contiguous!.ranges
        let groups = (0..<3).map { kvm_ranges_group(ranges, slot, UInt32($0)) }
        try observeAll(e, 1, scores(e, n: 300, heavy: Set(0..<260)), n: 300)
        #expect(try e.compact(1, budgetTokens: 260) == 260)
        #expect(kvm_ranges_group(ranges, slot, 2) == groups[2], "the compaction did not copy page 2")
        #expect(e.contiguous!.isShared(slot: Int(slot), page: 1), "page 1's blocks are still indexed")
        try e.truncate(1, to: 200)
        #expect(kvm_ranges_group(ranges, slot, 1) == groups[1], "the truncation did not copy page 1")
        #expect(try e.length(1) == 200)
        let more = try appendWritten(e, 1, 10, from: 200, slot: 200, seed: 9)
        #expect(try slotMismatches(e, 1, tokens: Array(toks[0..<200]) + more) == 0)
        #expect(try e.createSequence(2, tokens: Array(toks[0..<150])) == 148)
        #expect(try kvMismatches(e, 2, tokens: Array(toks[0..<148]), from: 0) == 0)
    }

    /// Contiguous: a page another sequence maps is still copied before a compacted sequence's
    /// truncation writes it. A fork of a sequence compacted to exactly one page maps that page
    /// shared; the fork's cut below its compacted positions (tokens move, appends follow)
    /// writes into the page: the fork gets its own copy, and the parent keeps every byte.
    @Test func aCompactedCutPageAnotherSequenceMapsIsCopied() throws {
        let e = try engine(.contiguous, .heavyHitter, perHead: false)
        let toks = tokens(300, seed: 3)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try observeAll(e, 1, scores(e, n: 300, heavy: [0, 1, 2, 3, 9, 33, 40, 41, 150, 151]), n: 300)
        #expect(try e.compact(1, budgetTokens: 128) == 128)  // one whole 4 KiB page of 32-byte tokens
        try e.fork(parent: 1, child: 2)
        let ranges = e.contiguous!.ranges, parent = UInt32(e.sequences.slot(of: 1)), child = UInt32(e.sequences.slot(of: 2))
        let group = kvm_ranges_group(ranges, parent, 0)
        #expect(kvm_ranges_group(ranges, child, 0) == group, "the fork maps page 0 shared")
        try e.truncate(2, to: 100)
        let kept = try e.length(2)
        #expect(kept < 128 && kept > 4)
        #expect(kvm_ranges_group(ranges, child, 0) != group, "the fork's page 0 is its own copy")
        #expect(kvm_ranges_group(ranges, parent, 0) == group)
        #expect(try slotMismatches(e, 2, tokens: toks) == 0)
        let more = tokens(10, seed: 11)
        try e.append(2, tokens: more)
        try writeKV(e, 2, tokens: more, from: 100, slot: kept, salt: 1)
        #expect(try slotMismatches(e, 1, tokens: toks) == 0, "the parent keeps every byte")
        #expect(try e.length(1) == 128)
    }

    /// Contiguous: blocks a compaction drops that a fork still holds stay indexed, their bytes
    /// in the compacted sequence's page, where its appends land next: the page is copied,
    /// though nothing the compaction writes is shared (it keeps slots 0..<16 as they were, no
    /// move) and the fork maps a copy of its own (page 0 was its boundary page). A prompt then
    /// hits those cached blocks with their bytes.
    @Test func aPageHoldingDroppedBlocksAForkHoldsIsCopied() throws {
        let e = try engine(.contiguous, .heavyHitter, perHead: false) { $0.eviction.recentRatio = 0 }
        let toks = tokens(100, seed: 3)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try e.fork(parent: 1, child: 2)
        try observeAll(e, 1, scores(e, n: 100, heavy: Set(0..<16)), n: 100)
        #expect(try e.compact(1, budgetTokens: 16) == 16)
        #expect(try positions(e, 1, layer: 0) == (0..<16).map { Int32($0) }, "nothing moved")
        _ = try appendWritten(e, 1, 40, from: 100, slot: 16, seed: 9)  // slots 16..<56, where blocks 4..<14 lie
        #expect(try e.createSequence(3, tokens: Array(toks[0..<50])) == 48)
        #expect(try kvMismatches(e, 3, tokens: Array(toks[0..<48]), from: 0) == 0, "the cached blocks keep their bytes")
        #expect(try kvMismatches(e, 2, tokens: toks, from: 0) == 0)
    }

    /// The state the twins below compare: per layer its length and positions (every head's),
    /// the bytes held, blocks in use and cached, per kept block its references and whether it
    /// is indexed, and the pages it pins (contiguous; the general path's twin below pins one
    /// more group in all: the page its fork made it copy stays the cached blocks').
    func rollbackState(_ e: Engine) throws -> [String] {
        let slot = e.sequences.slot(of: 1), table = e.sequences.table(slot), n = try e.length(1)
        var out = [
            "length \(n)", "blocks used \(e.stats().blocksUsed) cached \(e.stats().blocksCached)",
            "pages pinned \(e.contiguous?.pinnedPageCount(slot: slot) ?? 0)", "bytes \(try heldBytes(e, 1).hashValue)",
        ]
        for layer in 0..<e.config.numLayers {
            out.append("layer \(layer): \(try e.layerLength(1, layer: layer)) \(try positions(e, 1, layer: layer))")
        }
        for i in 0..<((n + e.config.blockTokens - 1) / e.config.blockTokens) {
            out.append("block \(i): refs \(e.blocks.references(table[i])) indexed \(e.blocks.isIndexed(table[i]))")
        }
        return out
    }

    /// A compacted sequence's cut that moves nothing, whose appends' memory counts prove its
    /// own (`Engine.appendsWriteOwnMemory`), skips `makeWritable`'s scans; it must leave what
    /// the general path leaves. Twins with the same history: 200 tokens compacted to 124, 8
    /// drafts (slots 124..<132, across the 128-token page), 3 accepted: page 1 is unpinned and,
    /// contiguous, stays mapped (`ContiguousMemory.release`). The second twin forks
    /// the sequence first, so its blocks and page 0 are shared and the general path copies
    /// them; the fork is freed after the cut. Both then hold the same lengths, positions
    /// (every head), bytes, blocks (references, indexed), pages pinned, and drained the same
    /// events; appends, an observe and a compaction then go alike.
    @Test(arguments: layouts, [false, true])
    func aCutThatMovesNothingLeavesWhatTheGeneralPathLeaves(layout: Layout, perHead: Bool) throws {
        let fast = try engine(layout, .heavyHitter, perHead: perHead), general = try engine(layout, .heavyHitter, perHead: perHead)
        let toks = tokens(200, seed: 3)
        var events: [[KVEvent]] = []
        for e in [fast, general] {
            try e.createSequence(1, tokens: toks)
            try writeKV(e, 1, tokens: toks, from: 0)
            try observeAll(e, 1, scores(e, n: 200, heavy: [0, 5, 9, 33, 40, 41, 150, 151], headShift: perHead ? 1 : 0), n: 200)
            #expect(try e.compact(1, budgetTokens: 124) == 124)
            _ = try appendWritten(e, 1, 8, from: 200, slot: 124, seed: 9)
            if e === general { try e.fork(parent: 1, child: 2) }
            _ = drain(e)
            let slot = e.sequences.slot(of: 1), mappings = e.stats().mappings
            #expect(e.appendsWriteOwnMemory(slot: slot, from: 127, length: 127) == (e === fast), "the fast path applies to one twin")
            #expect(e.contiguous?.pinnedPageCount(slot: slot) ?? 2 == 2)
            try e.truncate(1, to: 203)
            events.append(drain(e))
            #expect(e.contiguous?.pinnedPageCount(slot: slot) ?? 1 == 1, "page 1 is unpinned")
            if let c = e.contiguous, e === fast {
                #expect(kvm_ranges_mapped(c.ranges, UInt32(slot)) == 2 && e.stats().mappings == mappings, "and stays mapped for the next drafts")
            }
            if e === general { try e.free(2) }
        }
        #expect(events[0] == events[1])
        #expect(try fast.length(1) == 127)
        #expect(try rollbackState(fast) == rollbackState(general))
        for e in [fast, general] {
            _ = try appendWritten(e, 1, 2, from: 203, slot: 127, seed: 10)
            try observePositional(e, 1, step: 1)
            #expect(try e.compact(1, budgetTokens: 100) == 100)
        }
        #expect(try rollbackState(fast) == rollbackState(general))
        #expect(try slotMismatches(fast, 1, tokens: toks + tokens(8, seed: 9).prefix(3) + tokens(2, seed: 10)) == 0)
    }

    /// A cut that moves nothing into a block the prefix index still holds (200 of 300 tokens
    /// kept by a compaction that moved nothing, cut to 202: block 50 holds tokens 200..<204)
    /// takes the general path: the block leaves the index before appends rewrite it, as the
    /// blocks past it do, and a prompt hits only the 50 blocks below it, with their bytes.
    @Test(arguments: layouts)
    func aCutThatMovesNothingIntoAnIndexedBlockUnindexesIt(layout: Layout) throws {
        let e = try engine(layout, .heavyHitter, perHead: false) { $0.eviction.recentRatio = 0 }
        let toks = tokens(300, seed: 3)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try observeAll(e, 1, scores(e, n: 300, heavy: Set(0..<260)), n: 300)
        #expect(try e.compact(1, budgetTokens: 260) == 260)
        let slot = e.sequences.slot(of: 1), block50 = e.sequences.table(slot)[50]
        #expect(e.blocks.isIndexed(block50))
        _ = drain(e)
        try e.truncate(1, to: 202)
        #expect(try e.length(1) == 202)
        #expect(!e.blocks.isIndexed(block50) && e.sequences.table(slot)[50] == block50)
        #expect(drain(e).filter { $0.kind == .blockRemoved }.count == 15, "blocks 50..<65 leave the index")
        let more = try appendWritten(e, 1, 10, from: 202, slot: 202, seed: 9)
        #expect(try slotMismatches(e, 1, tokens: Array(toks[0..<202]) + more) == 0)
        #expect(try e.createSequence(2, tokens: Array(toks[0..<210])) == 200)
        #expect(try kvMismatches(e, 2, tokens: Array(toks[0..<200]), from: 0) == 0)
    }

    /// Many drafts rolled back give their blocks back at once and their memory on `trim` (or
    /// when memory is needed: the appends that follow a rollback usually reuse it), in both
    /// layouts; what stays is exact.
    @Test(arguments: layouts)
    func rollingBackManyTokensReleasesTheirMemory(layout: Layout) throws {
        let e = try engine(layout, .streamingLLM, perHead: false)
        let toks = try compacted(e)
        _ = try appendWritten(e, 1, 400, from: 64, slot: 16, seed: 9)
        let full = e.stats()
        try e.truncate(1, to: 70)
        let cut = e.stats()
        #expect(cut.blocksUsed == 6, "22 slots of 4-token blocks")
        #expect(cut.committedBytes <= full.committedBytes)
        try e.trim()
        #expect(e.stats().committedBytes < full.committedBytes)
        #expect(try slotMismatches(e, 1, tokens: toks + tokens(6, seed: 9)) == 0)
        let more = try appendWritten(e, 1, 300, from: 70, slot: 22, seed: 10)  // grows back into released pages
        #expect(try slotMismatches(e, 1, tokens: toks + tokens(6, seed: 9) + more) == 0)
    }

    /// A cut below positions a compaction decided on (per layer): each layer keeps its tokens
    /// below the cut, the kept ones past the new length moved into the holes with their bytes;
    /// tokens the compaction evicted have nothing to remove.
    @Test(arguments: layouts)
    func aCutBelowCompactedPositionsKeepsEachLayersTokensBelowIt(layout: Layout) throws {
        let e = try engine(layout, .heavyHitter, perHead: false)
        let toks = try compacted(e)
        let before = try positions(e, 1, layer: 0)
        let committed = e.stats().committedBytes
        try e.truncate(1, to: 35)
        let expected = before.filter { $0 < 35 }
        #expect(expected.count < 16 && expected.count >= 6)
        for layer in 0..<2 {
            #expect(try e.layerLength(1, layer: layer) == expected.count)
            #expect(try positions(e, 1, layer: layer).sorted() == expected.sorted())
        }
        #expect(try e.length(1) == expected.count)
        #expect(e.evictionStates[e.sequences.slot(of: 1)]!.tailFrom == 35, "appends from the cut on form the tail")
        #expect(e.stats().committedBytes <= committed)
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        // Appends take positions from 35 on.
        let n = expected.count
        let more = try appendWritten(e, 1, 3, from: 35, slot: n, seed: 12)
        for layer in 0..<2 { #expect(try positions(e, 1, layer: layer).suffix(3) == [35, 36, 37]) }
        #expect(try slotMismatches(e, 1, tokens: Array(toks[0..<35]) + more) == 0)
    }

    /// Per head, a cut that would leave a layer's heads with different counts is refused and
    /// changes nothing; one past the compacted positions works.
    @Test(arguments: layouts)
    func perHeadACutLeavingUnequalHeadsIsRefused(layout: Layout) throws {
        let e = try engine(layout, .heavyHitter, perHead: true)
        let toks = try compacted(e, headShift: 1)
        try e.createSequence(2, tokens: tokens(9, seed: 4))
        let pos = try positions(e, 1, layer: 0)
        let head0 = pos[0..<16].filter { $0 < 6 }.count, head1 = pos[16..<32].filter { $0 < 6 }.count
        #expect(head0 != head1, "the heads kept different tokens below 6")
        let before = e.stats(), held = try (0..<2).map { try positions(e, 1, layer: $0) }
        #expect(refusal(e, 1, 6) == .unsupported)
        #expect(e.stats() == before)
        #expect(try (0..<2).map { try positions(e, 1, layer: $0) } == held)
        #expect(try slotMismatches(e, 1, tokens: toks) == 0 && e.length(1) == 16 && e.length(2) == 9)
        try e.createSequence(3, tokens: tokens(20, seed: 8))
        try observeAll(e, 3, scores(e, n: 20, heavy: [10, 11]), n: 20)
        try e.compact(3, budgetTokens: 4)  // 10, 11 and the recent window 18, 19
        #expect(refusal(e, 3, 5) == .unsupported, "no token below position 5")
        #expect(try e.length(3) == 4 && positions(e, 3, layer: 0).sorted() == [10, 10, 11, 11, 18, 18, 19, 19])
        _ = try appendWritten(e, 1, 4, from: 64, slot: 16, seed: 5)
        try e.truncate(1, to: 65)
        #expect(try e.length(1) == 17)
    }

    /// A fork of a compacted sequence truncated while the parent keeps its drafts: the fork
    /// writes its own blocks and pages, the parent's bytes stay.
    @Test(arguments: layouts, [false, true])
    func aForkOfACompactedSequenceTruncatesAndTheParentKeepsItsTokens(layout: Layout, perHead: Bool) throws {
        let e = try engine(layout, .heavyHitter, perHead: perHead)
        let toks = try compacted(e, headShift: perHead ? 1 : 0)
        let drafts = try appendWritten(e, 1, 6, from: 64, slot: 16, seed: 9)  // slots 16..<22: block 5 partial
        try e.fork(parent: 1, child: 2)
        try e.truncate(2, to: 65)
        let other = tokens(5, seed: 13)
        try e.append(2, tokens: other)
        try writeKV(e, 2, tokens: other, from: 65, slot: 17, salt: 1)
        #expect(try slotMismatches(e, 1, tokens: toks + drafts) == 0, "the parent keeps every byte")
        #expect(try e.length(1) == 22 && e.length(2) == 22)
        for layer in 0..<2 { #expect(try positions(e, 2, layer: layer).suffix(6) == [64, 65, 66, 67, 68, 69]) }
        // The fork's slots: the compacted 16 and draft 64 with the prompt's bytes, then its own.
        var bad = 0
        for layer in 0..<2 {
            for (j, t) in other.enumerated() {
                let (k, _) = try tokenAddress(e, 2, layer: layer, position: 17 + j)
                if k.load(as: UInt8.self) != kvByte(layer: layer, kv: 0, position: 65 + j, token: t, i: 0, salt: 1) { bad += 1 }
            }
        }
        #expect(bad == 0)
        try e.truncate(1, to: 64)
        #expect(try slotMismatches(e, 1, tokens: toks) == 0 && e.length(1) == 16)
    }

    /// Appends `t` to sequence 1 at positions `next...` and writes each layer's K/V from that
    /// layer's own length (layers differ in length with adaptive budgets).
    func appendWrittenPerLayer(_ e: Engine, _ t: [Int32], _ next: Int) throws {
        let slots = try (0..<e.config.numLayers).map { try e.layerLength(1, layer: $0) }
        try e.append(1, tokens: t)
        for (layer, slot) in slots.enumerated() {
            for (j, token) in t.enumerated() {
                let (k, v) = try tokenAddress(e, 1, layer: layer, position: slot + j)
                for i in 0..<e.config.tokenBytes {
                    k.storeBytes(of: kvByte(layer: layer, kv: 0, position: next + j, token: token, i: i), toByteOffset: i, as: UInt8.self)
                    v.storeBytes(of: kvByte(layer: layer, kv: 1, position: next + j, token: token, i: i), toByteOffset: i, as: UInt8.self)
                }
            }
        }
    }

    /// The twin comparison's run: sequence 1 of two engines configured alike, a 48-token prompt
    /// (`prepare` runs on each after it), then 24 steps in which one appends 8 drafts and
    /// truncates to the 3 accepted while its twin appends only those 3, and `step` runs on both
    /// (observe, compact). After every step both hold the same positions in every layer and the
    /// same bytes. Returns, per step, whether the speculating sequence's layers differed in
    /// length.
    func speculateBesideTwin(_ layout: Layout, _ policy: EvictionPolicyKind, perHead: Bool, seed: Int32, what: String,
                             configure: (inout EngineConfig) -> Void, prepare: (Engine) throws -> Void = { _ in },
                             step: (Engine, Int) throws -> Void) throws -> [Bool] {
        let spec = try engine(layout, policy, perHead: perHead, configure: configure)
        let twin = try engine(layout, policy, perHead: perHead, configure: configure)
        let prompt = tokens(48, seed: seed)
        for e in [spec, twin] {
            try e.createSequence(1, tokens: prompt)
            try writeKV(e, 1, tokens: prompt, from: 0)
            try prepare(e)
        }
        var next = 48, unequal: [Bool] = []
        for n in 0..<24 {
            let drafts = tokens(8, seed: seed &* 100 &+ Int32(n))
            try appendWrittenPerLayer(spec, drafts, next)
            try spec.truncate(1, to: next + 3)
            try appendWrittenPerLayer(twin, Array(drafts[0..<3]), next)
            next += 3
            for e in [spec, twin] { try step(e, n) }
            for layer in 0..<spec.config.numLayers {
                #expect(try positions(spec, 1, layer: layer) == positions(twin, 1, layer: layer), "\(what) step \(n)")
            }
            #expect(try heldBytes(spec, 1) == heldBytes(twin, 1), "\(what) step \(n)")
            unequal.append(try spec.layerLength(1, layer: 0) != spec.layerLength(1, layer: 1))
        }
        return unequal
    }

    /// The twin comparison: a sequence that speculates (8 drafts, 3 accepted, every step) and
    /// one that only ever appended the accepted tokens, both observed and compacted alike
    /// after every step, hold the same positions and the same bytes throughout, for every
    /// policy, per layer and per head.
    @Test(arguments: layouts, [false, true])
    func aTruncatedSequenceCompactsLikeOneThatNeverHadTheDrafts(layout: Layout, perHead: Bool) throws {
        for (policy, normalized) in [(EvictionPolicyKind.heavyHitter, false), (.heavyHitter, true), (.tova, false), (.streamingLLM, false), (.episodic, false)] {
            _ = try speculateBesideTwin(layout, policy, perHead: perHead, seed: 21, what: "\(policy.name) normalized \(normalized)", configure: { c in
                c.eviction.normalizedScores = normalized
                c.eviction.recentTokens = 6
                c.eviction.sinkTokens = 2
            }, prepare: { e in
                guard policy == .episodic else { return }
                let q: [Float] = [1, 0]
                try q.withUnsafeBufferPointer { try e.addSegment(1, start: 0, end: 48, embedding: $0) }
                _ = try q.withUnsafeBufferPointer { try e.focus(1, query: $0) }
            }, step: { e, n in
                try observePositional(e, 1, step: n)
                if try e.length(1) > 20 { try e.compact(1, budgetTokens: 20) }
            })
        }
    }

    /// The twin comparison with adaptive per-layer budgets (H2O and TOVA), from a supplied
    /// sensitivity and from observed entropy (layer 1 sharpened): layers hold different
    /// lengths, so each layer's drafts land at its own slots and the cut (a position count)
    /// drops a different number of slots per layer. The speculating sequence and its twin
    /// hold the same positions and bytes throughout, and the layers' lengths do differ (else
    /// this would repeat the test above).
    @Test(arguments: layouts, [false, true])
    func adaptiveBudgetTwinsHoldTheSameTokens(layout: Layout, supplied: Bool) throws {
        for policy in [EvictionPolicyKind.heavyHitter, .tova] {
            let unequal = try speculateBesideTwin(layout, policy, perHead: false, seed: 23, what: "\(policy.name) supplied \(supplied)", configure: { c in
                c.eviction.adaptiveBudgets = true
                c.eviction.recentTokens = 4
                c.eviction.sinkTokens = 1
            }, prepare: { e in
                if supplied { try [Float(1), 3].withUnsafeBufferPointer { try e.setLayerSensitivity(1, $0) } }
            }, step: { e, n in
                try observePositional(e, 1, step: n, sharpened: 1)
                if try e.layerLength(1, layer: 0) + e.layerLength(1, layer: 1) > 40 { try e.compact(1, budgetTokens: 20) }
            })
            #expect(unequal.filter { $0 }.count > 12, "\(policy.name): the layers differed in length in \(unequal.filter { $0 }.count) of 24 steps")
        }
    }

    /// A compaction while the drafts are there (their positions in its low-score record's
    /// pending range), then a cut that moves kept tokens: the record must follow the moves and
    /// must not serve windows past the cut, whose re-appended positions it never saw. A fork taken right after the cut (a fresh state
    /// copy: no record, every step scans) must choose exactly as the sequence does.
    @Test(arguments: layouts)
    func lowScoreRecordsServeNoWindowPastTheCut(layout: Layout) throws {
        let e = try engine(layout, .heavyHitter, perHead: false) { $0.eviction.recentTokens = 4; $0.eviction.sinkTokens = 0 }
        let prompt = tokens(40, seed: 5)
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        try e.append(1, tokens: tokens(8, seed: 6))  // drafts 40..<48
        try observePositional(e, 1, step: 1)
        try e.compact(1, budgetTokens: 44)  // a decode step: scans, records pending up to 48, moves 44...
        let before = try positions(e, 1, layer: 0)
        try e.truncate(1, to: 41)  // ...and the cut moves kept tokens into its holes: records follow them
        #expect(try positions(e, 1, layer: 0) != before.filter { $0 < 41 }, "kept tokens moved")
        try e.fork(parent: 1, child: 2)
        for step in 0..<16 {
            for seq: UInt64 in [1, 2] {
                try e.append(seq, tokens: [Int32(step)])  // new tokens: score 0, never observed
                try e.compact(seq, budgetTokens: try e.length(seq) - 1)
            }
            for layer in 0..<2 { #expect(try positions(e, 1, layer: layer) == positions(e, 2, layer: layer), "step \(step)") }
        }
    }

    /// Observed but never compacted: positions are slots, the existing chain rules hold, and
    /// the state follows (positions, later appends).
    @Test(arguments: layouts)
    func anObservedSequenceTruncatesAsWithoutState(layout: Layout) throws {
        let e = try engine(layout, .heavyHitter, perHead: true)
        let toks = tokens(14, seed: 6)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try observeAll(e, 1, scores(e, n: 14, heavy: [3]), n: 14)
        try e.truncate(1, to: 9)
        #expect(try e.length(1) == 9)
        #expect(try positions(e, 1, layer: 1) == (0..<9).map(Int32.init) + (0..<9).map(Int32.init))
        let more = try appendWritten(e, 1, 7, from: 9, slot: 9, seed: 7)  // fills block 2 (indexed again) and block 3
        #expect(try positions(e, 1, layer: 0).prefix(16) == ArraySlice((0..<16).map(Int32.init)))
        #expect(try kvMismatches(e, 1, tokens: Array(toks[0..<9]) + more, from: 0) == 0)
        #expect(try e.createSequence(2, tokens: Array(toks[0..<9]) + more + [1]) == 16, "appends after the cut are indexed")
    }

    /// Episodic: a segment wholly past the cut that a focus already clustered is refused
    /// (nothing changes); one not clustered yet is dropped, and one reaching past the cut ends
    /// there (a later segment may then start at the cut).
    @Test func segmentsPastTheCut() throws {
        let e = try engine(.paged, .episodic, perHead: false)
        try e.createSequence(1, tokens: tokens(40, seed: 2))
        let a: [Float] = [1, 0], b: [Float] = [0, 1]
        try a.withUnsafeBufferPointer { try e.addSegment(1, start: 0, end: 20, embedding: $0) }
        try b.withUnsafeBufferPointer { try e.addSegment(1, start: 20, end: 40, embedding: $0) }
        let episodeOfA = try a.withUnsafeBufferPointer { try e.focus(1, query: $0) }
        let state = e.evictionStates[e.sequences.slot(of: 1)]!
        #expect(refusal(e, 1, 20) == .unsupported, "segment 1 starts at the cut and was clustered")
        #expect(state.segmentBounds == [0, 20, 20, 40] && state.nextPosition == 40)
        #expect(try e.length(1) == 40)
        try e.truncate(1, to: 30)
        #expect(state.segmentBounds == [0, 20, 20, 30])
        try e.append(1, tokens: tokens(10, seed: 3))
        try a.withUnsafeBufferPointer { try e.addSegment(1, start: 35, end: 40, embedding: $0) }
        try e.truncate(1, to: 34)  // the new segment was not clustered: dropped
        #expect(state.segmentBounds == [0, 20, 20, 30] && state.segmentCount == 2)
        // The episodes survive the cut: b's query still finds b's segment, a's finds a's.
        let episodeOfB = try b.withUnsafeBufferPointer { try e.focus(1, query: $0) }
        #expect(episodeOfB != episodeOfA)
        #expect(try a.withUnsafeBufferPointer { try e.focus(1, query: $0) } == episodeOfA)
    }
}

/// Observes every layer of `seq` with scores that are a function of each slot's position (and
/// the step and head): sequences holding the same positions get the same scores. Layer
/// `sharpened`'s scores are raised to the 8th power: a few tokens take most of its attention
/// (a lower entropy, so adaptive budgets estimated from entropy give it fewer tokens).
func observePositional(_ e: Engine, _ seq: UInt64, step: Int, sharpened: Int = -1) throws {
    let heads = e.config.numKVHeads
    for layer in 0..<e.config.numLayers {
        let n = try e.layerLength(seq, layer: layer)
        let pos = try positions(e, seq, layer: layer)
        let perHead = pos.count == heads * n && heads > 1 && e.config.eviction.perHead
        var s = [Float](repeating: 0, count: heads * n)
        for h in 0..<heads {
            for t in 0..<n {
                let p = Int(perHead ? pos[h * n + t] : pos[t])
                let x = UInt32(truncatingIfNeeded: (p &* 2654435761) ^ (step &* 40503) ^ (h &* 977) ^ (layer &* 131))
                let u = Float(x % 1000) / 1000
                s[h * n + t] = (layer == sharpened ? u * u * u * u * u * u * u * u : u) / Float(n)
            }
        }
        try s.withUnsafeBufferPointer { try e.observe(seq, layer: layer, scores: $0.baseAddress!, nHeads: heads, nTokens: n) }
    }
}

/// The K then V bytes of every slot `seq` holds, layer by layer.
func heldBytes(_ e: Engine, _ seq: UInt64) throws -> [UInt8] {
    var bytes: [UInt8] = []
    for layer in 0..<e.config.numLayers {
        for slot in 0..<(try e.layerLength(seq, layer: layer)) {
            let (k, v) = try tokenAddress(e, seq, layer: layer, position: slot)
            bytes += UnsafeRawBufferPointer(start: k, count: e.config.tokenBytes)
            bytes += UnsafeRawBufferPointer(start: v, count: e.config.tokenBytes)
        }
    }
    return bytes
}
