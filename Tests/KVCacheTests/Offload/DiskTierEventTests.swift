import Foundation
import TestSupport
import Testing
@testable import KVCache

/// What a router learns of one engine's disk tier from its KV events (tier
/// `KVEvent.diskTier`, applied in order): the hashes stored minus removed, and every event that
/// contradicts the view so far (a store of a block it holds, a removal of one it does not).
struct DiskTierView {
    var hashes = Set<UInt64>()
    var contradictions: [String] = []
    /// (hash, parent) of every `blockStored` applied.
    var storedPairs: [[UInt64]] = []

    mutating func apply(_ events: [KVEvent]) {
        for event in events where event.tier == KVEvent.diskTier {
            switch event.kind {
            case .allCleared:
                hashes.removeAll()
            case .blockStored:
                storedPairs.append([event.blockHash, event.parentHash])
                if !hashes.insert(event.blockHash).inserted { contradictions.append("stored twice: \(event.blockHash)") }
            case .blockRemoved:
                if hashes.remove(event.blockHash) == nil { contradictions.append("removed, not held: \(event.blockHash)") }
            }
        }
    }
}

/// Every pending event of `e`, oldest first (`drain` takes at most 16384 at once).
func drainAll(_ e: Engine) -> [KVEvent] {
    var all: [KVEvent] = []
    while true {
        let some = drain(e)
        all += some
        if some.count < 1 << 14 { return all }
    }
}

/// The (hash, parent) pairs of `prompt`'s full blocks (4-token blocks).
private func chainPairs(_ prompt: [Int32]) -> Set<[UInt64]> {
    let h = BlockHash.chain(prompt, blockTokens: 4)
    return Set(h.indices.map { [h[$0], $0 > 0 ? h[$0 - 1] : 0] })
}

@Suite("KV events of the engine's own disk tier (tier 1), both layouts", .serialized)
struct DiskTierEventTests {
    static let layouts: [Layout] = [.paged, .contiguous]
    /// smallConfig's slots: a 4 KiB header plus 4 tensors x 4 tokens x 32 bytes, in 8 KiB.
    static let slotBytes: UInt64 = 8192

    /// Applies `e`'s pending events to `view` and checks it against what the tier finds: the
    /// same hashes, no contradiction, each one found by a lookup, nothing else in the index.
    private func expectExact(_ e: Engine, _ view: inout DiskTierView, _ phase: String,
                             sourceLocation: SourceLocation = #_sourceLocation) {
        view.apply(drainAll(e))
        let tier = e.offload!.tier!
        let (findable, indexed) = tier.findableHashes
        #expect(view.contradictions.isEmpty, "\(phase): \(view.contradictions.prefix(3))", sourceLocation: sourceLocation)
        #expect(view.hashes == findable, "\(phase): the events say \(view.hashes.count) blocks, the tier finds \(findable.count)",
                sourceLocation: sourceLocation)
        #expect(indexed == findable.count, "\(phase): nothing else is in the tier's index", sourceLocation: sourceLocation)
        #expect(view.hashes.allSatisfy { tier.contains($0, fingerprint: 0) }, "\(phase)", sourceLocation: sourceLocation)
    }

    /// Spills (in flight, then written), drops for room, prefix reads and a swap-out with its
    /// unhashed last block: after each, the tier-1 events give exactly what the tier finds.
    @Test(arguments: layouts)
    func spillsDropsRestoresAndSwapsKeepARoutersViewExact(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Engine(offloadConfig(layout, dir: dir.path, memoryBytes: 64 << 10, offloadBytes: 40 * Self.slotBytes))
        var view = DiskTierView()
        expectExact(e, &view, "open")
        #expect(view.hashes.isEmpty)

        let prompts = (0..<3).map { tokens(81, seed: 40 + Int32($0)) }  // 20 full blocks each
        try e.createSequence(1, tokens: prompts[0])
        try fillKV(e, 1, count: 81) { prompts[0][$0] }
        try e.free(1)
        try e.trim()
        #expect(e.offload!.tier!.isWriting(0), "checked while the spills are in flight")
        expectExact(e, &view, "spills submitted")
        #expect(view.hashes.count == 20)
        #expect(Set(view.storedPairs) == chainPairs(prompts[0]), "each block with its parent, as in memory")
        try e.syncOffload()
        expectExact(e, &view, "spills written")

        for (i, prompt) in prompts.enumerated().dropFirst() {  // 60 blocks through 40 slots
            try spillPrompt(e, UInt64(10 + i), prompt)
            expectExact(e, &view, "spills of prompt \(i)")
        }
        #expect(e.stats().disk.slotsEvicted > 0, "the tier dropped slots for room")
        expectExact(e, &view, "after drops")
        #expect(view.hashes.count <= 40 && view.hashes.isSuperset(of: BlockHash.chain(prompts[2], blockTokens: 4)))

        // A prefix hit reads the last prompt back: its slots are pinned, still found.
        #expect(try e.createSequence(2, tokens: prompts[2]) == 80)
        expectExact(e, &view, "reads in flight")
        try waitReady(e, 2)
        expectExact(e, &view, "reads landed")
        try e.free(2)

        // A swap-out writes the full blocks under their hashes, the partial one without.
        let live = tokens(83, seed: 50)
        try e.createSequence(3, tokens: live)
        try fillKV(e, 3, count: 83) { live[$0] }
        try e.swapOut(3)
        #expect(e.offload!.tier!.pinnedAndUnhashedSlots.unhashed == 1, "the partial block's own slot")
        expectExact(e, &view, "swapped out")
        #expect(view.hashes.isSuperset(of: BlockHash.chain(live, blockTokens: 4)))
        try e.swapIn(3)
        try waitReady(e, 3)
        expectExact(e, &view, "swapped in")
        try e.free(3)
        try e.syncOffload()
        expectExact(e, &view, "end")
    }

    /// Restart rule: a reopened tier announces `allCleared` first (right after the memory
    /// tier's), then each block it found in its journal, so a router still holding the
    /// previous engine's view ends exact too.
    /// Here the journal lost its tail (as a crash before its records were written would): the
    /// new engine finds 5 of the 20 blocks the old one announced.
    @Test(arguments: layouts)
    func aReopenedTierResetsTheViewAndAnnouncesWhatItsJournalHolds(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var router = DiskTierView()
        do {
            let e = try Engine(offloadConfig(layout, dir: dir.path))
            try spillPrompt(e, 1, tokens(81, seed: 60))
            expectExact(e, &router, "before the restart")
            #expect(router.hashes.count == 20)
        }
        #expect(truncate(dir.path + "/kvcache.journal", 5 * 64) == 0, "the first 5 records of 64 bytes")
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        #expect(e.stats().disk.recoveredSlots == 5)
        let events = drainAll(e)
        #expect(Array(events.prefix(2)) == [memoryTierCleared, KVEvent(kind: .allCleared, tier: KVEvent.diskTier, blockHash: 0, parentHash: 0)])
        #expect(events.dropFirst(2).allSatisfy { $0.kind == .blockStored && $0.tier == KVEvent.diskTier } && events.count == 7)
        var fresh = DiskTierView()
        fresh.apply(events)
        router.apply(events)
        let findable = e.offload!.tier!.findableHashes.hashes
        #expect(fresh.hashes == findable && fresh.hashes.count == 5, "a router that saw the restart")
        #expect(router.hashes == findable && router.contradictions.isEmpty, "a router that did not")
    }

    /// A reopened tier announces a block after its parent when it holds both (a router that
    /// builds a prefix tree from events needs the parent first), whatever slots they hold:
    /// a trim spills a freed prompt's blocks tail first, so there the children hold the lower
    /// slots.
    @Test(arguments: layouts)
    func aReopenedTierAnnouncesParentsBeforeChildren(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(81, seed: 70)
        try spillPrompt(try Engine(offloadConfig(layout, dir: dir.path)), 1, prompt)  // closed at once
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        let stored = drainAll(e).filter { $0.kind == .blockStored && $0.tier == KVEvent.diskTier }
        #expect(Set(stored.map(\.blockHash)) == Set(BlockHash.chain(prompt, blockTokens: 4)), "the prompt's 20 blocks")
        var seen: Set<UInt64> = []
        for event in stored {
            #expect(event.parentHash == 0 || seen.contains(event.parentHash), "block \(event.blockHash) before its parent")
            seen.insert(event.blockHash)
        }
    }

    /// A reopened tier announces every block it found even when they outnumber the event
    /// queue's capacity (here 16; event_capacity, 65536 by default, in the ABI): the queue grows at creation to hold them
    /// (and holds the memory tier's `allCleared` beside them). Once they are drained it is
    /// back at its 16 (the creation's room given back too), which later events overflow as
    /// before (the oldest dropped, counted).
    @Test(arguments: layouts)
    func aReopenedTierAnnouncesMoreBlocksThanTheQueueHolds(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.eventCapacity = 16
        try spillPrompt(try Engine(c), 1, tokens(81, seed: 90))  // 20 blocks; closed at once
        let e = try Engine(c)
        var view = DiskTierView()
        expectExact(e, &view, "reopened")
        #expect(view.hashes.count == 20 && e.stats().eventsDropped == 0, "2 + 20 events in a queue of 16")
        let prompt = tokens(81, seed: 91)
        try e.createSequence(2, tokens: prompt)
        try e.free(2)
        try e.trim()  // 20 stored in memory, then spilled: over 40 events
        let left = drainAll(e)
        #expect(e.stats().eventsDropped > 0 && left.count == 16, "the burst drained: full at 16, the oldest dropped")
    }

    /// A spill whose write fails leaves the index: the block announced at its submission is
    /// removed. (A trim's 20 adjacent slots go out as one merged request: the first trim's
    /// request is written, the second's fails.)
    @Test(arguments: layouts)
    func aFailedWriteRemovesTheBlockItAnnounced(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadFault = OffloadFault(reads: false, writes: true, after: 1)
        let e = try Engine(c)
        var view = DiskTierView()
        let prompts = [tokens(81, seed: 70), tokens(81, seed: 71)]
        for (i, prompt) in prompts.enumerated() {
            try e.createSequence(UInt64(i + 1), tokens: prompt)
            try fillKV(e, UInt64(i + 1), count: 81) { prompt[$0] }
            try e.free(UInt64(i + 1))
            try e.trim()
            #expect(view.hashes.count == 20 * i, "before trim \(i)")
            expectExact(e, &view, "trim \(i) submitted")
            #expect(view.hashes.count == 20 * (i + 1), "announced at submission")
            try? e.syncOffload()
            expectExact(e, &view, "trim \(i) written or failed")
        }
        #expect(e.stats().disk.spillsFailed == 20)
        #expect(view.hashes == Set(BlockHash.chain(prompts[0], blockTokens: 4)), "the failed prompt's blocks left")
    }

    /// A slot a read finds corrupt leaves the index: removed.
    @Test(arguments: layouts)
    func aCorruptSlotFoundByAReadIsRemoved(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let prompt = tokens(41, seed: 80)
        try spillPrompt(try Engine(offloadConfig(layout, dir: dir.path)), 1, prompt)  // closed at once
        // Freed blocks join the LRU last first: the trim spilled block 9 - k into slot k.
        corruptSlots(dir: dir.path, slotBytes: Int(Self.slotBytes), 0..<7)
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        var view = DiskTierView()
        expectExact(e, &view, "reopened")
        #expect(view.hashes.count == 10)
        #expect(try e.createSequence(1, tokens: prompt) == 40)
        #expect(throws: KVError.self) { try waitReady(e, 1) }
        try e.free(1)
        #expect(e.stats().disk.loadsFailed == 7)
        expectExact(e, &view, "corrupt slots read")
        #expect(view.hashes == Set(BlockHash.chain(prompt, blockTokens: 4).prefix(3)))
    }
}
