import TestSupport
import Testing
@testable import KVCache

/// The events of an engine's creation: its memory tier (tier 0) starts empty and says so
/// first, so that a router applying an instance's events in order forgets what a previous
/// engine of that instance announced, whether or not it noticed the restart.
@Suite("KV events at engine creation", .serialized)
struct CreationEventTests {
    static let diskCleared = KVEvent(kind: .allCleared, tier: KVEvent.diskTier, blockHash: 0, parentHash: 0)

    /// A configuration of each kind an engine can have.
    enum Shape: CaseIterable, Sendable {
        case paged, contiguous, metadataOnly, pagedWithDisk, contiguousWithDisk
        var hasDisk: Bool { self == .pagedWithDisk || self == .contiguousWithDisk }

        func config(dir: String) -> EngineConfig {
            switch self {
            case .paged: return smallConfig(.paged)
            case .contiguous: return smallConfig(.contiguous)
            case .metadataOnly:
                var c = smallConfig(.paged)
                c.metadataOnly = true
                return c
            case .pagedWithDisk: return offloadConfig(.paged, dir: dir)
            case .contiguousWithDisk: return offloadConfig(.contiguous, dir: dir)
            }
        }
    }

    /// Every engine's first event is one `allCleared` of the memory tier; a new disk tier's
    /// own `allCleared` follows it. Neither counts in any statistic.
    @Test(arguments: Shape.allCases)
    func aNewEngineAnnouncesAnEmptyMemoryTierFirst(shape: Shape) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Engine(shape.config(dir: dir.path))
        let events = drainAll(e)
        #expect(events == (shape.hasDisk ? [memoryTierCleared, Self.diskCleared] : [memoryTierCleared]))
        let s = e.stats()
        #expect(s.eventsDropped == 0 && s.blocksEvicted == 0 && s.blocksCached == 0 && s.blocksUsed == 0
                    && s.sequencesCreated == 0 && s.prefixQueryTokens == 0)
        #expect(drainAll(e).isEmpty, "announced once")
        #expect(e.stats() == s, "draining it changes no statistic")
    }

    /// A reopened disk tier's events come after the memory tier's `allCleared`: memory's reset,
    /// the tier's reset, then each block its journal lists.
    @Test(arguments: [Layout.paged, .contiguous])
    func aReopenedTiersEventsFollowTheMemoryTiersClear(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        try spillPrompt(try Engine(offloadConfig(layout, dir: dir.path)), 1, tokens(41, seed: 80))  // 10 blocks; closed at once
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        let events = drainAll(e)
        #expect(Array(events.prefix(2)) == [memoryTierCleared, Self.diskCleared])
        #expect(events.dropFirst(2).allSatisfy { $0.kind == .blockStored && $0.tier == KVEvent.diskTier } && events.count == 12)
        #expect(e.stats().eventsDropped == 0)
    }

    /// The creation's event takes none of the queue's usual room: a server that creates an
    /// engine whose queue holds 16 events and stores 16 blocks before its first drain loses
    /// nothing, and the `allCleared` is still first.
    @Test func theCreationEventTakesNoRoomFromTheQueue() throws {
        var c = smallConfig(.paged)
        c.eventCapacity = 16
        let e = try Engine(c)
        let prompt = tokens(65, seed: 81)  // 16 full blocks
        try e.createSequence(1, tokens: prompt)
        let events = drainAll(e)
        #expect(e.stats().eventsDropped == 0, "1 + 16 events in a queue of 16 (+ 1)")
        #expect(events.first == memoryTierCleared)
        #expect(events.dropFirst().map(\.blockHash) == BlockHash.chain(prompt, blockTokens: 4))
    }

    /// `eventsDropped` and `blocksUsed` read alone what `stats()` reports: 0 and 0 for a new
    /// engine; with a queue of 16 events, 16 blocks held by the first prompt and none dropped;
    /// then a second 16-block prompt drops events and holds 16 more blocks.
    @Test func theDroppedCountAndUsedBlocksReadAloneEqualTheStats() throws {
        var c = smallConfig(.paged)
        c.eventCapacity = 16
        let e = try Engine(c)
        #expect(e.eventsDropped == 0 && e.blocksUsed == 0)
        try e.createSequence(1, tokens: tokens(65, seed: 81))  // 16 full blocks
        #expect(e.eventsDropped == e.stats().eventsDropped && e.eventsDropped == 0)
        #expect(e.blocksUsed == e.stats().blocksUsed && e.blocksUsed == 17)
        try e.createSequence(2, tokens: tokens(65, seed: 82))
        let s = e.stats()
        #expect(e.eventsDropped == s.eventsDropped && s.eventsDropped > 0)
        #expect(e.blocksUsed == s.blocksUsed && s.blocksUsed == 34)
    }

    /// `indexEvents` lists exactly what the memory index holds, whatever the queue lost, and
    /// without a disk tier nothing of tier 1: with a queue of 16 events and 64 blocks, three 16-block prompts and, after the first is
    /// freed, a 29-block one (which evicts the first's 16 cached blocks) drop events; the dump
    /// is one `allCleared` then one `blockStored` (hash, parent) per indexed block, used or
    /// cached, and changes nothing: the stats and the pending events stay.
    @Test func theMemoryIndexDumpListsExactlyTheIndexedBlocks() throws {
        var c = smallConfig(.paged, memoryBytes: 32 << 10)  // 64 blocks of 4 tensors x 128 B
        c.eventCapacity = 16
        let e = try Engine(c)
        try #require(e.stats().blocksTotal == 64)
        let prompts = (0..<3).map { tokens(65, seed: 90 + Int32($0)) } + [tokens(117, seed: 93)]  // 16, 16, 16 and 29 full blocks
        for (i, p) in prompts.prefix(3).enumerated() { try e.createSequence(UInt64(i), tokens: p) }
        try e.free(0)
        try e.createSequence(3, tokens: prompts[3])
        let before = e.stats()
        #expect(before.eventsDropped > 0 && before.blocksEvicted == 16)
        let dump = e.indexEvents()
        #expect(dump.first == memoryTierCleared)
        var expected: [UInt64: UInt64] = [:]
        for p in prompts.dropFirst() {
            let chain = BlockHash.chain(p, blockTokens: 4)
            for (i, h) in chain.enumerated() { expected[h] = i > 0 ? chain[i - 1] : 0 }
        }
        let stored = dump.dropFirst()
        #expect(expected.count == 61)
        #expect(stored.allSatisfy { $0.kind == .blockStored && $0.tier == KVEvent.memoryTier })
        #expect(stored.count == expected.count && stored.allSatisfy { expected[$0.blockHash] == $0.parentHash })
        #expect(e.stats() == before)
        #expect(drainAll(e).count == 17, "the pending events are still there (a queue of 16 + 1, `Engine.init`)")
    }
}
