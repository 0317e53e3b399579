import Foundation
import TestSupport
import Testing
@testable import KVCache

/// What a consumer holds of one engine from its KV events, both tiers: per tier, hash ->
/// parent (set semantics: a store of a held block or a removal of one not held is a no-op, as
/// in a router's table).
struct TwoTierView {
    var memory: [UInt64: UInt64] = [:]
    var disk: [UInt64: UInt64] = [:]

    mutating func apply(_ events: [KVEvent]) {
        for event in events {
            let disk = event.tier == KVEvent.diskTier
            switch event.kind {
            case .allCleared:
                if disk { self.disk.removeAll() } else { memory.removeAll() }
            case .blockStored:
                if disk { self.disk[event.blockHash] = event.parentHash } else { memory[event.blockHash] = event.parentHash }
            case .blockRemoved:
                if disk { self.disk[event.blockHash] = nil } else { memory[event.blockHash] = nil }
            }
        }
    }
}

/// The memory index of `e` (hash -> parent), read block by block (not through the dump).
private func memoryIndex(_ e: Engine) -> [UInt64: UInt64] {
    var out: [UInt64: UInt64] = [:]
    for b in 0..<e.blocks.capacity where e.blocks.isIndexed(Int32(b)) {
        out[e.blocks.hash(of: Int32(b))] = e.blocks.parent(of: Int32(b))
    }
    return out
}

/// Hash -> parent of `prompt`'s full blocks (4-token blocks), added to `into`.
private func addChain(_ prompt: [Int32], into known: inout [UInt64: UInt64]) {
    let h = BlockHash.chain(prompt, blockTokens: 4)
    for i in h.indices { known[h[i]] = i > 0 ? h[i - 1] : 0 }
}

/// `Engine.indexEvents` with a disk tier: the memory part, then the disk tier's `allCleared`
/// and a `blockStored` per block its index holds, parents first. A consumer that lost events
/// rebuilds both tiers from it (drain, apply the dump, drain on).
@Suite("Resync of a KV-event consumer from the two-tier index dump", .serialized)
struct IndexDumpTests {
    static let slotBytes: UInt64 = 8192  // smallConfig's slots (DiskTierEventTests)

    /// `view` against `e` now: the memory tier's index (hash and parent), the disk tier's
    /// findable hashes, each disk block's parent as its prompt's chain says (`known`).
    private func expectExact(_ e: Engine, _ view: TwoTierView, _ known: [UInt64: UInt64], _ phase: String,
                             sourceLocation: SourceLocation = #_sourceLocation) {
        let mem = memoryIndex(e)
        #expect(view.memory == mem, "\(phase): view \(view.memory.count) memory blocks, index \(mem.count)",
                sourceLocation: sourceLocation)
        let findable = e.offload!.tier!.findableHashes.hashes
        #expect(Set(view.disk.keys) == findable, "\(phase): view \(view.disk.count) disk blocks, tier \(findable.count)",
                sourceLocation: sourceLocation)
        #expect(view.disk.allSatisfy { known[$0.key] == $0.value }, "\(phase): a disk block with a wrong parent",
                sourceLocation: sourceLocation)
    }

    /// The dump's shape: memory `allCleared` and memory stores, then disk `allCleared` and
    /// disk stores, each disk block after its parent when the tier holds the parent.
    private func expectShape(_ dump: [KVEvent], sourceLocation: SourceLocation = #_sourceLocation) {
        let diskCleared = KVEvent(kind: .allCleared, tier: KVEvent.diskTier, blockHash: 0, parentHash: 0)
        guard let split = dump.firstIndex(of: diskCleared) else {
            Issue.record("no disk-tier allCleared", sourceLocation: sourceLocation)
            return
        }
        #expect(dump.first == memoryTierCleared, sourceLocation: sourceLocation)
        #expect(dump[1..<split].allSatisfy { $0.kind == .blockStored && $0.tier == KVEvent.memoryTier }, sourceLocation: sourceLocation)
        let disk = dump[(split + 1)...]
        #expect(disk.allSatisfy { $0.kind == .blockStored && $0.tier == KVEvent.diskTier }, sourceLocation: sourceLocation)
        let held = Set(disk.map(\.blockHash))
        var seen: Set<UInt64> = []
        for event in disk {
            #expect(!held.contains(event.parentHash) || seen.contains(event.parentHash),
                    "disk block \(event.blockHash) before its parent", sourceLocation: sourceLocation)
            seen.insert(event.blockHash)
        }
    }

    /// A consumer drains, then misses a gap (a queue of 48 events; spills, drops for room,
    /// reloads, frees and trims push hundreds), then drains what is left: its view is wrong in
    /// both tiers. With one more spill pushed before the dump (its writes still in flight) and
    /// drained only after it (events the dump already reflects), it applies the dump and then that drain: exact in
    /// both tiers; and stays exact through further spills, reloads, frees and trims drained
    /// as they come. The dump changes nothing in the engine.
    @Test(arguments: [Layout.paged, .contiguous])
    func aConsumerThatLostEventsRebuildsBothTiersFromTheDump(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path, memoryBytes: 64 << 10, offloadBytes: 40 * Self.slotBytes)
        c.eventCapacity = 48
        let e = try Engine(c)
        var known: [UInt64: UInt64] = [:]
        var view = TwoTierView()
        view.apply(drainAll(e))
        expectExact(e, view, known, "open")

        // The gap: 60 blocks spilled through 40 slots, a reload of the last prompt, a trim.
        let prompts = (0..<3).map { tokens(81, seed: 140 + Int32($0)) }  // 20 full blocks each
        for (i, p) in prompts.enumerated() {
            addChain(p, into: &known)
            try spillPrompt(e, UInt64(1 + i), p)
        }
        #expect(try e.createSequence(4, tokens: prompts[2]) == 80, "read back from disk")
        try waitReady(e, 4)
        let partial = tokens(41, seed: 150)  // 10 blocks resident, not spilled yet
        addChain(partial, into: &known)
        try e.createSequence(5, tokens: partial)
        try fillKV(e, 5, count: 41) { partial[$0] }
        try e.free(4)
        try e.trim()
        try e.syncOffload()
        #expect(e.stats().eventsDropped > 0 && e.stats().disk.slotsEvicted > 0, "the gap dropped events and disk slots")
        view.apply(drainAll(e))
        #expect(view.memory != memoryIndex(e) || Set(view.disk.keys) != e.offload!.tier!.findableHashes.hashes,
                "without the dump the view is wrong")

        // Events pushed before the dump and drained after it: a spill whose writes are still
        // in flight (the dump lists blocks being written: a lookup finds them).
        let late = tokens(33, seed: 151)  // 8 blocks
        addChain(late, into: &known)
        try e.createSequence(6, tokens: late)
        try fillKV(e, 6, count: 33) { late[$0] }
        try e.free(6)
        try e.trim()
        #expect(e.offload!.tier!.inflight > 0, "checked while the spills are in flight")
        let before = e.stats()
        let dump = e.indexEvents()
        #expect(e.stats() == before, "the dump changes no statistic")
        expectShape(dump)
        #expect(dump.count == 2 + memoryIndex(e).count + e.offload!.tier!.findableHashes.hashes.count)
        view.apply(dump)
        expectExact(e, view, known, "dump applied")
        let pending = drainAll(e)
        #expect(!pending.isEmpty, "the late spill's events were still pending: the dump did not drain them")
        view.apply(pending)
        expectExact(e, view, known, "the late spill drained after the dump")

        // Further operations, drained as they come.
        try e.free(5)
        view.apply(drainAll(e))
        expectExact(e, view, known, "free")
        try e.trim()
        view.apply(drainAll(e))
        expectExact(e, view, known, "trim: the partial prompt's blocks spilled")
        try e.syncOffload()
        view.apply(drainAll(e))
        expectExact(e, view, known, "spills written")
        #expect(try e.createSequence(7, tokens: late) == 32, "the late prompt read back from disk")
        try waitReady(e, 7)
        view.apply(drainAll(e))
        expectExact(e, view, known, "reloaded")
        try e.free(7)
        try e.trim()
        try e.syncOffload()
        view.apply(drainAll(e))
        expectExact(e, view, known, "end")
        #expect(!view.disk.isEmpty && e.stats().eventsDropped == before.eventsDropped, "no drop after the dump")
    }

    /// An engine reopened on the same directory dumps the blocks its journal listed (the
    /// creation's announcement of them lost to later drops): the dump's disk part is the
    /// spilled prompt's 20 blocks with their parents, parents first, after the memory index.
    @Test func aRestartedEngineDumpsTheBlocksItsJournalListed() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(.paged, dir: dir.path)
        c.eventCapacity = 16
        let prompt = tokens(81, seed: 160)
        try spillPrompt(try Engine(c), 1, prompt)  // closed at once
        let e = try Engine(c)
        #expect(e.stats().disk.recoveredSlots == 20)
        // 30 memory stores: the queue (16, grown by the 22 creation events) overflows.
        try e.createSequence(2, tokens: tokens(121, seed: 161))
        #expect(e.stats().eventsDropped > 0)
        let dump = e.indexEvents()
        expectShape(dump)
        var known: [UInt64: UInt64] = [:]
        addChain(prompt, into: &known)
        var view = TwoTierView()
        view.apply(dump)
        #expect(view.memory.count == 30 && view.disk == known, "the journal's 20 blocks, each with its parent")
        expectExact(e, view, known, "reopened")
    }
}
