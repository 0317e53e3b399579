import Dispatch
import Foundation
import Testing
import TestSupport
import KVCache
@testable import KVCacheABI

/// A drained `kvc_event`, decoded at the header's offsets.
private struct CEvent: Hashable {
    var kind: UInt32, tier: UInt32, blockHash: UInt64, parentHash: UInt64
}

/// Calls `call` (kvc_drain_events or kvc_engine_index_events) with a buffer of `capacity`
/// events filled with 0xAB, requires KVC_OK, checks nothing was written past the events it
/// reports and returns them.
private func events(
    _ f: ABIFixture, capacity: Int,
    _ call: (OpaquePointer?, UnsafeMutableRawPointer?, Int, UnsafeMutablePointer<Int>?) -> kvc_status
) throws -> [CEvent] {
    var bytes = [UInt8](repeating: 0xAB, count: capacity * 24 + 24)
    var n = -1
    let rc = bytes.withUnsafeMutableBytes { call(f.handle, $0.baseAddress, capacity, &n) }
    try #require(rc == KVC_OK)
    try #require(n >= 0 && n <= capacity)
    #expect(bytes[(n * 24)...].allSatisfy { $0 == 0xAB }, "wrote past the events")
    return decode(bytes, count: n)
}

/// Drains up to `capacity` events through the ABI.
private func drain(_ f: ABIFixture, capacity: Int) throws -> [CEvent] { try events(f, capacity: capacity, kvc_drain_events) }

/// The first `count` `kvc_event`s of `bytes`, decoded at the header's offsets.
private func decode(_ bytes: [UInt8], count: Int) -> [CEvent] {
    bytes.withUnsafeBytes { raw in
        (0..<count).map { i in
            CEvent(kind: raw.loadUnaligned(fromByteOffset: 24 * i, as: UInt32.self),
                   tier: raw.loadUnaligned(fromByteOffset: 24 * i + 4, as: UInt32.self),
                   blockHash: raw.loadUnaligned(fromByteOffset: 24 * i + 8, as: UInt64.self),
                   parentHash: raw.loadUnaligned(fromByteOffset: 24 * i + 16, as: UInt64.self))
        }
    }
}

/// An engine's first event: KVC_EVENT_ALL_CLEARED of KVC_TIER_MEMORY (kvc_engine_create).
private let creationEvent = CEvent(kind: 3, tier: 0, blockHash: 0, parentHash: 0)

/// kvc_hash_tokens of `tokens` in blocks of `blockTokens`.
private func hashes(_ tokens: [Int32], blockTokens: UInt32) throws -> [UInt64] {
    var out = [UInt64](repeating: 0, count: tokens.count)
    var n = 0
    try #require(kvc_hash_tokens(tokens, tokens.count, blockTokens, &out, out.count, &n) == KVC_OK)
    return Array(out[0..<n])
}

/// The events a fixture's witness sequence 1001 (3 full blocks and 2 tokens) stored.
private func stored(_ f: ABIFixture) throws -> [CEvent] {
    let chain = try hashes(f.witnesses[1001]!.tokens, blockTokens: 4)
    return chain.enumerated().map { i, h in CEvent(kind: 1, tier: 0, blockHash: h, parentHash: i == 0 ? 0 : chain[i - 1]) }
}

@Suite struct EventABITests {
    /// `KVEvent` is laid out as `kvc_event` (include/kvcache.h: kind, tier, block_hash,
    /// parent_hash at offsets 0, 4, 8, 16; 24 bytes, 8-aligned), `kind` as its 4-byte raw value,
    /// so that kvc_drain_events and kvc_engine_index_events copy events as they are.
    @Test func aKVEventIsLaidOutAsAKVCEvent() {
        #expect(MemoryLayout<KVEvent>.size == 24)
        #expect(MemoryLayout<KVEvent>.stride == 24)
        #expect(MemoryLayout<KVEvent>.alignment == 8)
        #expect(MemoryLayout<KVEvent>.offset(of: \.tier) == 4)
        #expect(MemoryLayout<KVEvent>.offset(of: \.blockHash) == 8)
        #expect(MemoryLayout<KVEvent>.offset(of: \.parentHash) == 16)
        for kind in [KVEvent.Kind.blockStored, .blockRemoved, .allCleared] {
            var event = KVEvent(kind: kind, tier: KVEvent.diskTier, blockHash: 0x1122_3344_5566_7788, parentHash: 0x99)
            let bytes = withUnsafeBytes(of: &event) { Array($0) }
            #expect(decode(bytes, count: 1) == [CEvent(kind: kind.rawValue, tier: 1, blockHash: 0x1122_3344_5566_7788, parentHash: 0x99)])
        }
    }

    /// kvc_engine_index_events without a disk tier dumps the memory index alone: ALL_CLEARED of
    /// the memory tier, then a BLOCK_STORED per indexed block (witness 1001's three full
    /// blocks; 1002 has none), and changes nothing (the pending events drain as before). A
    /// short buffer gets the prefix and KVC_ERR_BUFFER_TOO_SMALL with the full count; capacity
    /// 0 with NULL out asks for the count; NULL n_events is invalid.
    @Test(arguments: bothLayouts)
    func theIndexDumpListsEveryIndexedBlock(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        let dump = try events(f, capacity: 8, kvc_engine_index_events)
        try #require(dump.count == 4)
        let witness = try stored(f)
        #expect(dump.first == creationEvent)
        #expect(Set(dump.dropFirst().map(\.blockHash)) == Set(witness.map(\.blockHash)))
        #expect(dump.dropFirst().allSatisfy { witness.contains($0) }, "each with its parent, memory tier")
        var bytes = [UInt8](repeating: 0xAB, count: 8 * 24)
        var n = -1
        LastError.clear()
        expectStatus(bytes.withUnsafeMutableBytes { kvc_engine_index_events(f.handle, $0.baseAddress, 2, &n) }, KVC_ERR_BUFFER_TOO_SMALL,
                     mentioning: ["kvc_engine_index_events", "4 events"])
        #expect(n == 4)
        LastError.clear()
        n = -1
        expectStatus(kvc_engine_index_events(f.handle, nil, 0, &n), KVC_ERR_BUFFER_TOO_SMALL, mentioning: ["capacity 0"])
        #expect(n == 4)
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_engine_index_events", "n_events"]) {
            kvc_engine_index_events(f.handle, nil, 0, nil)
        }
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_engine_index_events", "NULL"]) {
            kvc_engine_index_events(f.handle, nil, 3, &n)
        }
        #expect(try drain(f, capacity: 64) == [creationEvent] + witness, "the pending events stay")
    }

    /// With a disk tier, kvc_engine_index_events dumps the memory index (witness 1001's three
    /// blocks after a trim spilled sequence 5's ten), then ALL_CLEARED of the disk tier and a
    /// BLOCK_STORED (hash, parent) per block it holds, parents first: 15 events. A short
    /// buffer gets exactly that prefix (nothing past it) and BUFFER_TOO_SMALL with 15; bad
    /// arguments fail and change nothing; the pending events drain afterwards as before.
    @Test(arguments: bothLayouts)
    func theIndexDumpListsTheDiskTiersBlocksAfterTheMemoryIndex(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        var c = CConfig.small(layout)
        c.offloadBytes = 16 << 20
        let f = try ABIFixture(c, offloadDir: dir)
        try f.addWitness(1001, tokens: f.uniqueTokens(1001, count: 3 * f.blockTokens + 2))
        let prompt = f.uniqueTokens(5, count: 41)
        try f.spill(5, prompt: prompt, salt: 5)
        let chain = try hashes(prompt, blockTokens: 4)
        let spilled = chain.enumerated().map { i, h in CEvent(kind: 1, tier: 1, blockHash: h, parentHash: i == 0 ? 0 : chain[i - 1]) }
        let before = try f.stats()

        let dump = try events(f, capacity: 32, kvc_engine_index_events)
        try #require(dump.count == 15)
        let witness = try stored(f)
        #expect(dump[0] == creationEvent && Set(dump[1...3]) == Set(witness), "the memory part")
        #expect(dump[4] == CEvent(kind: 3, tier: 1, blockHash: 0, parentHash: 0), "the disk tier's ALL_CLEARED")
        #expect(dump[5...] == spilled[...], "the ten spilled blocks, each after its parent")

        var short = [UInt8](repeating: 0xAB, count: 32 * 24)
        var n = -1
        LastError.clear()
        expectStatus(short.withUnsafeMutableBytes { kvc_engine_index_events(f.handle, $0.baseAddress, 7, &n) }, KVC_ERR_BUFFER_TOO_SMALL,
                     mentioning: ["kvc_engine_index_events", "15 events", "capacity 7"])
        #expect(n == 15 && decode(short, count: 7) == Array(dump.prefix(7)), "the prefix that fits")
        #expect(short[(7 * 24)...].allSatisfy { $0 == 0xAB }, "wrote past the capacity")
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_engine_index_events", "n_events"]) {
            kvc_engine_index_events(f.handle, nil, 0, nil)
        }
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_engine_index_events", "NULL"]) {
            kvc_engine_index_events(f.handle, nil, 32, &n)
        }
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_engine_index_events"]) {
            kvc_engine_index_events(nil, nil, 0, &n)
        }
        #expect(try f.stats() == before, "no dump moved a statistic")
        try f.expectWitnessesIntact()
        let pending = try drain(f, capacity: 256)
        #expect(pending.first == creationEvent && pending.filter { $0.tier == 1 && $0.kind == 1 }.count == 10,
                "the pending events stay: creation to the trim's spills")
        #expect(try f.create(6, tokens: prompt) == 40, "the dump moved no block: the prefix is read back")
    }

    @Test(arguments: bothLayouts)
    func storedEventsCarryTheChainedHashesOfThePrompt(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        #expect(try drain(f, capacity: 64) == [creationEvent] + (try stored(f)))
    }

    @Test func drainingInSmallBatchesKeepsOrderAndLosesNothing() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        try f.create(5, tokens: f.uniqueTokens(5, count: 200))  // 50 more stored events
        var all: [CEvent] = []
        while true {
            let batch = try drain(f, capacity: 7)
            all += batch
            if batch.count < 7 { break }
        }
        let chain = try hashes(f.witnesses[1001]!.tokens, blockTokens: 4) + hashes(f.uniqueTokens(5, count: 200), blockTokens: 4)
        #expect(all.first == creationEvent)
        #expect(all.dropFirst().map(\.blockHash) == chain)
        #expect(try drain(f, capacity: 7).isEmpty)
    }

    @Test func trimReportsTheCachedBlocksLeaving() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        try f.create(5, tokens: f.uniqueTokens(5, count: 8))
        #expect(kvc_seq_free(f.handle, 5) == KVC_OK)
        _ = try drain(f, capacity: 64)
        #expect(kvc_engine_trim(f.handle) == KVC_OK)
        let removed = try drain(f, capacity: 64)
        #expect(Set(removed.map(\.blockHash)) == Set(try hashes(f.uniqueTokens(5, count: 8), blockTokens: 4)))
        #expect(removed.allSatisfy { $0.kind == 2 })
    }

    @Test func drainWithZeroCapacityAndNullOutputDrainsNothing() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var n = -1
        #expect(kvc_drain_events(f.handle, nil, 0, &n) == KVC_OK)
        #expect(n == 0)
        #expect(try drain(f, capacity: 64) == [creationEvent] + (try stored(f)))
    }

    @Test func drainWithNullOutputAndACapacityIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var n = 0
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["out", "NULL"]) { kvc_drain_events($0, nil, 4, &n) }
        #expect(try drain(f, capacity: 64) == [creationEvent] + (try stored(f)), "a failed drain lost events")
    }

    @Test func drainWithNullCountIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var bytes = [UInt8](repeating: 0, count: 96)
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_events", "NULL"]) { e in
            bytes.withUnsafeMutableBytes { kvc_drain_events(e, $0.baseAddress, 4, nil) }
        }
        #expect(try drain(f, capacity: 64) == [creationEvent] + (try stored(f)), "a failed drain lost events")
    }

    @Test func drainWithNullEngineIsInvalid() {
        var bytes = [UInt8](repeating: 0, count: 96)
        var n = 0
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["engine", "NULL"]) {
            bytes.withUnsafeMutableBytes { kvc_drain_events(nil, $0.baseAddress, 4, &n) }
        }
    }

    /// Two threads draining at once each get a disjoint subset (kvcache.h): 40 prompts' 80
    /// stores (each freed at once, its blocks cached: memory for all of them, so no removal),
    /// drained 3 at a time by two threads, arrive exactly once between them, none lost.
    @Test func twoThreadsDrainingAtOnceShareTheEventsWithoutLossOrRepeat() throws {
        nonisolated(unsafe) let f = try ABIFixture(layout: KVC_LAYOUT_PAGED, memoryBytes: 4 << 20)
        while try !drain(f, capacity: 64).isEmpty {}
        var expected = Set<CEvent>()
        for seq in UInt64(1)...40 {
            let tokens = f.uniqueTokens(seq, count: 8)
            _ = try f.create(seq, tokens: tokens)
            #expect(kvc_seq_free(f.handle, seq) == KVC_OK)  // its blocks stay cached: no event
            let chain = try hashes(tokens, blockTokens: 4)
            expected.insert(CEvent(kind: 1, tier: 0, blockHash: chain[0], parentHash: 0))
            expected.insert(CEvent(kind: 1, tier: 0, blockHash: chain[1], parentHash: chain[0]))
        }
        try #require(expected.count == 80)
        nonisolated(unsafe) var got: [[CEvent]] = [[], []]
        nonisolated(unsafe) var failures: [String] = ["", ""]
        DispatchQueue.concurrentPerform(iterations: 2) { thread in
            var bytes = [UInt8](repeating: 0, count: 3 * 24)
            while true {
                var n = -1
                let rc = bytes.withUnsafeMutableBytes { kvc_drain_events(f.handle, $0.baseAddress, 3, &n) }
                guard rc == KVC_OK, n >= 0, n <= 3 else { failures[thread] = "rc \(rc), n \(n)"; return }
                if n == 0 { return }
                got[thread] += decode(bytes, count: n)
            }
        }
        #expect(failures == ["", ""])
        let all = got[0] + got[1]
        #expect(all.count == 80, "\(got[0].count) + \(got[1].count) events")
        #expect(Set(all) == expected)
        #expect(Set(got[0]).isDisjoint(with: Set(got[1])))
        #expect(try drain(f, capacity: 4).isEmpty)
    }
}
