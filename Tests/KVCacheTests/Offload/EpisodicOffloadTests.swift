import Foundation
import TestSupport
import Testing
@testable import KVCache

/// Episodic offload: with the disk tier, tokens outside the focused episode go to disk on
/// `compact` and come back byte-identical on a later `focus`, per layer and per head (then
/// counts are of head tokens, `rowsPerLayer(e)` per layer token, and each KV head keeps its
/// own set: head h's heavy hitters are the topic's shifted by h).
@Suite struct EpisodicOffloadTests {
    static let layouts: [Layout] = [.paged, .contiguous]
    /// Kept sets per layer (false) and per KV head (true).
    static let perHead = [false, true]
    /// Every layout at both granularities, for tests with a third argument.
    static let shapes: [(Layout, Bool)] = layouts.flatMap { layout in perHead.map { (layout, $0) } }
    /// Topic A's heavy hitters (in segment A = 0..<256) and topic B's (segment B = 256..<512).
    static let heavyA: [Int32] = (0..<10).map { 5 + 25 * $0 }
    static let heavyB: [Int32] = (0..<10).map { 260 + 25 * $0 }
    /// The recent window (2 tokens) of a 512-token sequence.
    static let recent: [Int32] = [510, 511]
    static let queryA: [Float] = [1, 0], queryB: [Float] = [0, 1]

    /// An episodic engine (2 episodes, a 2-token recent window), with a disk tier in `dir` when
    /// given, and whatever `configure` changes.
    func engine(_ layout: Layout, dir: String?, perHead: Bool = false, configure: (inout EngineConfig) -> Void = { _ in }) throws -> Engine {
        var c = dir.map { offloadConfig(layout, dir: $0) } ?? smallConfig(layout)
        c.eviction = EvictionConfig(.episodic)
        c.eviction.episodes = 2
        c.eviction.recentTokens = 2
        c.eviction.perHead = perHead
        configure(&c)
        return try Engine(c)
    }

    func focus(_ e: Engine, _ query: [Float], seq: UInt64 = 1) throws -> Int {
        try query.withUnsafeBufferPointer { try e.focus(seq, query: $0) }
    }

    /// Rows per layer of `e`'s sequences: its KV heads per head, else 1 (a count of row tokens
    /// is `rowsPerLayer(e)` times the count of layer tokens).
    func rowsPerLayer(_ e: Engine) -> Int { e.config.eviction.perHead ? e.config.numKVHeads : 1 }

    /// How far each head's heavy hitters lie from the previous head's (per head: 1, so that
    /// every head keeps a different set).
    func headShift(_ e: Engine) -> Int { e.config.eviction.perHead ? 1 : 0 }

    /// The positions each row of `layer` of `seq` holds (one row per layer, or one per head).
    func rowPositions(_ e: Engine, _ seq: UInt64, layer: Int) throws -> [[Int32]] {
        let pos = try positions(e, seq, layer: layer), n = pos.count / rowsPerLayer(e)
        return (0..<rowsPerLayer(e)).map { Array(pos[($0 * n)..<(($0 + 1) * n)]) }
    }

    /// Every row of sequence `seq` holds exactly its `heavy` hitters (head h's shifted by
    /// `h * headShift`) and the recent window, and every held slot has its tokens' bytes.
    func expectHolds(_ e: Engine, _ heavy: [Int32], _ toks: [Int32], seq: UInt64 = 1, sourceLocation: SourceLocation = #_sourceLocation) throws {
        for layer in 0..<2 {
            for (row, held) in try rowPositions(e, seq, layer: layer).enumerated() {
                let expected = heavy.map { $0 + Int32(row * headShift(e)) } + Self.recent
                #expect(held.sorted() == expected.sorted(), "layer \(layer) row \(row)", sourceLocation: sourceLocation)
            }
        }
        #expect(try slotMismatches(e, seq, tokens: toks) == 0, sourceLocation: sourceLocation)
    }

    /// Freeing sequence `seq` (the last one holding records) leaves no slot of the tier in use.
    func expectFreeReleasesRecords(_ e: Engine, seq: UInt64 = 1, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try e.free(seq)
        try e.syncOffload()
        #expect(e.stats().disk.storedSlots == 0, sourceLocation: sourceLocation)
    }

    /// What `seq` holds: every layer's positions, and the K then V bytes of every held slot.
    func held(_ e: Engine, _ seq: UInt64) throws -> (positions: [[Int32]], bytes: [UInt8]) {
        (try (0..<e.config.numLayers).map { try positions(e, seq, layer: $0) }, try heldBytes(e, seq))
    }

    /// Sequence 1 of 512 tokens with distinct K/V bytes per token and layer, two registered
    /// topics whose turns attended to their own heavy hitters, focused on topic A and compacted
    /// to 12 tokens per layer. Returns the prompt and the committed bytes before the compaction.
    @discardableResult
    func compactedOnTopicA(_ e: Engine) throws -> (tokens: [Int32], committedBytes: UInt64) {
        let toks = tokens(512, seed: 7)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try Self.queryA.withUnsafeBufferPointer { try e.addSegment(1, start: 0, end: 256, embedding: $0) }
        try observeAll(e, 1, scores(e, n: 512, heavy: Set(Self.heavyA.map(Int.init)), headShift: headShift(e)), n: 512)
        _ = try focus(e, Self.queryA)  // credits turn A to A's episode
        try Self.queryB.withUnsafeBufferPointer { try e.addSegment(1, start: 256, end: 512, embedding: $0) }
        try observeAll(e, 1, scores(e, n: 512, heavy: Set(Self.heavyB.map(Int.init)), headShift: headShift(e)), n: 512)
        _ = try focus(e, Self.queryA)  // credits turn B to B's episode, focuses A
        let committed = e.stats().committedBytes
        #expect(try e.compact(1, budgetTokens: 12) == 12)
        return (toks, committed)
    }

    /// Runs `body` on an engine with a disk tier (a scratch directory removed afterwards) and
    /// the prompt of its `compactedOnTopicA` sequence 1.
    func withCompactedOnTopicA(_ layout: Layout, perHead: Bool, _ body: (Engine, [Int32]) throws -> Void) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead)
        try body(e, try compactedOnTopicA(e).tokens)
    }

    /// Appends `count` tokens (`seed`) to sequence 1 of `compactedOnTopicA` (12 slots a row),
    /// writes their K/V (positions 512..., slots 12...) as the server would, returns them.
    func appendWritten(_ e: Engine, _ count: Int, seed: Int32 = 11) throws -> [Int32] {
        let extra = tokens(count, seed: seed)
        try e.append(1, tokens: extra)
        try writeKV(e, 1, tokens: extra, from: 512, slot: 12)
        return extra
    }

    @Test(arguments: layouts, perHead)
    func evictedTokensGoToDiskAndAFocusRestoresThemByteIdentical(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead)
        let baseline = e.stats().disk, rows = UInt64(rowsPerLayer(e))
        let (toks, committedFull) = try compactedOnTopicA(e)
        let compacted = e.stats()
        try expectHolds(e, Self.heavyA, toks)
        #expect(compacted.committedBytes < committedFull)
        #expect(compacted.disk.tokensOffloaded == rows * 2 * 500, "every evicted token of every row")
        #expect(compacted.disk.tokensOnDisk == rows * 2 * 500)
        #expect(compacted.disk.tokenRecords == 125, "8 layer tokens of 64 bytes (16 head tokens of 32) fill one 512-byte slot payload")
        #expect(compacted.disk.storedSlots >= baseline.storedSlots)
        try e.syncOffload()
        #expect(e.stats().disk.bytesWritten >= baseline.bytesWritten + 125 * e.stats().disk.slotBytes)
        #expect(e.stats().disk.storedSlots == baseline.storedSlots + 125)

        #expect(try focus(e, Self.queryB) != -1)
        let ready = try e.ready(1), restored = e.stats().disk.tokensRestored
        #expect(ready == (restored == rows * 2 * 10), "ready exactly when every restored token landed")
        try waitReady(e, 1)
        let after = e.stats()
        #expect(after.disk.tokensRestored == rows * 2 * 10)
        #expect(after.disk.tokensLost == 0 && after.disk.loadsFailed == 0)
        #expect(after.disk.bytesRead > compacted.disk.bytesRead)
        #expect(after.disk.tokensOnDisk == rows * (2 * 500 + 16) && after.disk.tokenRecords == 127 && after.disk.tokensInOpenRecords == rows * 4,
                "the ten A tokens per row went out (two records, the rest in the open one); the restored B tokens' bytes stay in theirs")
        for layer in 0..<2 { #expect(try e.layerLength(1, layer: layer) == 12) }
        try expectHolds(e, Self.heavyB, toks)  // every byte of every restored token, per head

        // Appends continue at the layer length, and a focus back on A restores A's tokens.
        let all = toks + (try appendWritten(e, 3, seed: 8))
        for layer in 0..<2 {
            for held in try rowPositions(e, 1, layer: layer) { #expect(Array(held.suffix(3)) == [512, 513, 514]) }
        }
        #expect(try slotMismatches(e, 1, tokens: all) == 0)
        #expect(try focus(e, Self.queryA) != -1)
        try waitReady(e, 1)
        for layer in 0..<2 {
            // 15 slots: the new recent window (513, 514), A's heavy hitters, and three tokens
            // tied at A's background score.
            for (row, held) in try rowPositions(e, 1, layer: layer).enumerated() {
                #expect(held.count == 15 && Set(held).count == 15)
                #expect(Set(Self.heavyA.map { $0 + Int32(row * headShift(e)) } + [513, 514]).isSubset(of: Set(held)))
            }
        }
        #expect(try slotMismatches(e, 1, tokens: all) == 0)

        // Freeing the sequence releases its records.
        try e.free(1)
        try e.syncOffload()
        let freed = e.stats().disk
        #expect(freed.storedSlots == baseline.storedSlots)
        #expect(freed.tokenRecords == 0 && freed.tokensOnDisk == 0 && freed.tokensInOpenRecords == 0)
    }

    /// Truncation with tokens on disk: the offloaded tokens at or past the cut leave the disk
    /// (a record goes with its last token), segment B ends at the cut, and a focus on B
    /// restores only tokens below it, byte-identical. A cut below B's start, already
    /// clustered, is refused and changes nothing.
    @Test(arguments: layouts, perHead)
    func truncationDropsTheOffloadedTokensPastTheCut(layout: Layout, perHead: Bool) throws {
        try withCompactedOnTopicA(layout, perHead: perHead) { e, toks in
            try e.syncOffload()
            let before = e.stats(), held = try held(e, 1)
            do throws(KVError) {
                try e.truncate(1, to: 200)
                Issue.record("a cut below segment B's start was accepted")
            } catch {
                #expect(error.code == .unsupported)
            }
            #expect(e.stats() == before)
            #expect(try self.held(e, 1) == held)
            try e.truncate(1, to: 300)
            try e.syncOffload()
            #expect(e.stats().disk.tokenRecords < before.disk.tokenRecords, "records of tokens past the cut are gone")
            for layer in 0..<2 {
                for (row, kept) in try rowPositions(e, 1, layer: layer).enumerated() {
                    #expect(kept.sorted() == Self.heavyA.map { $0 + Int32(row * headShift(e)) }.sorted(), "the recent window went")
                }
            }
            #expect(try focus(e, Self.queryB) != -1)
            try waitReady(e, 1)
            for layer in 0..<2 {
                for (row, kept) in try rowPositions(e, 1, layer: layer).enumerated() {
                    #expect(kept.count == 10 && kept.allSatisfy { $0 < 300 })
                    #expect(Set([260, 285].map { Int32($0 + row * headShift(e)) }).isSubset(of: Set(kept)), "B's heavy hitters below the cut")
                }
            }
            #expect(try slotMismatches(e, 1, tokens: toks) == 0)
            #expect(e.stats().disk.tokensLost == 0)
            try expectFreeReleasesRecords(e)
        }
    }

    /// A focus that restores offloaded tokens into slots of tokens appended since the
    /// compaction (512, outside the 2-token recent window): a cut at 512 must still find each
    /// row's tokens by position, not take the last slots.
    @Test(arguments: layouts, perHead)
    func aCutAfterARestoreKeepsTheRestoredTokens(layout: Layout, perHead: Bool) throws {
        try withCompactedOnTopicA(layout, perHead: perHead) { e, prompt in
            let toks = prompt + (try appendWritten(e, 3, seed: 8))  // 512..<515: slots 12..<15
            #expect(try focus(e, Self.queryB) != -1)
            try waitReady(e, 1)
            for layer in 0..<2 {
                for kept in try rowPositions(e, 1, layer: layer) { #expect(!kept.contains(512), "512 was displaced by a B token") }
            }
            try e.truncate(1, to: 512)
            for layer in 0..<2 {
                #expect(try e.layerLength(1, layer: layer) == 13, "513 and 514 went, the restored tokens stay")
                for kept in try rowPositions(e, 1, layer: layer) { #expect(kept.allSatisfy { $0 < 512 }) }
            }
            #expect(try slotMismatches(e, 1, tokens: toks) == 0)
            try e.append(1, tokens: tokens(2, seed: 9))  // positions 512, 513 again
            for layer in 0..<2 {
                for kept in try rowPositions(e, 1, layer: layer) { #expect(kept.suffix(2) == [512, 513]) }
            }
            try expectFreeReleasesRecords(e)
        }
    }

    /// A free of a sequence whose focus's record reads are held in flight (the thread backend,
    /// paused) returns without waiting for them: the open record is discarded at once, another
    /// thread's create returns meanwhile, and once the reads landed (the sync) every record is
    /// released, the counters back to the baseline, no slot pinned.
    @Test(arguments: layouts, perHead)
    func aFreeWithRecordReadsInFlightReturnsAndReleasesTheRecordsOnceTheyLanded(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead) { $0.offloadForceThreads = true }
        let baseline = e.stats().disk
        try compactedOnTopicA(e)
        try e.syncOffload()
        #expect(e.pauseOffloadIO(true))
        #expect(try focus(e, Self.queryB) != -1)  // record writes and reads submitted, held
        #expect(try e.ready(1) == false)
        let order = EventLog()
        let freer = loggedCall("free", order) { try e.free(1) }
        let freed = waitUntil(seconds: 10) { order.events.contains("free returned") }
        if freed {
            let during = e.stats()
            #expect(during.sequences == 0 && during.blocksUsed > 0, "gone at once, its memory held while the reads land")
            #expect(during.disk.tokensInOpenRecords == 0, "the freed sequence's open record is discarded at once")
        }
        let other = tokens(4 * 3 + 1, seed: 41)
        let creator = loggedCall("create", order) { _ = try e.createSequence(2, tokens: other) }
        let created = waitUntil(seconds: 10) { order.events.contains("create returned") }
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        freer.join()
        creator.join()
        #expect(freed && created, "the free did not wait for the record reads under the lock")
        #expect(order.events == ["free returned", "create returned", "I/O resumed"])
        try e.syncOffload()
        let after = e.stats()
        #expect(e.offload!.deferredFreeCount == 0 && after.sequences == 1)
        #expect(after.disk.tokenRecords == 0 && after.disk.tokensOnDisk == 0 && after.disk.tokensInOpenRecords == 0)
        #expect(after.disk.storedSlots == baseline.storedSlots)
        try e.free(2)
        #expect(e.offloadSlotAudit == (0, 0))
        #expect(e.stats().blocksUsed == 0)
    }

    /// A focus whose record writes find every staging buffer in flight (another sequence's
    /// 1200-block prefix read: 1024 reads held by the paused thread backend, 176 queued) waits
    /// for a buffer without the engine's lock, behind the queued reads: another thread's append
    /// returns meanwhile; then every restored token lands byte-identical, nothing lost.
    @Test(arguments: layouts)
    func aFocusFindingEveryBufferInFlightWaitsForOneWithoutTheLock(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path) {
            $0.offloadForceThreads = true
            $0.maxSeqTokens = 8192
        }
        let (toks, _) = try compactedOnTopicA(e)
        let big = tokens(4 * 1200 + 1, seed: 60), other = tokens(4 * 3 + 1, seed: 61)
        try spillPrompt(e, 9, big)
        try e.createSequence(3, tokens: other)
        try fillKV(e, 3, count: other.count) { other[$0] }
        try e.syncOffload()
        let before = e.stats().disk
        #expect(e.pauseOffloadIO(true))
        #expect(try e.createSequence(9, tokens: big) == 4 * 1200)  // 1024 reads held, 176 queued
        #expect(!e.offload!.tier.hasFreeStage && e.offload!.tier.pendingReadCount == 176)
        let order = EventLog()
        let focuser = loggedCall("focus", order) { _ = try focus(e, Self.queryB) }
        let waiting = waitUntil(seconds: 10) { e.offload!.waitingCalls == 1 }
        #expect(waiting, "the focus waits for a staging buffer without the lock (a wait under it would hold it)")
        let appended = appendThenResumeIO(e, order: order)
        focuser.join()
        #expect(waiting && appended)
        #expect(order.events == ["append returned", "I/O resumed", "focus returned"])
        try waitReady(e, 1)
        try waitReady(e, 9)
        try expectHolds(e, Self.heavyB, toks)
        let after = e.stats().disk
        #expect(after.tokensRestored == before.tokensRestored + UInt64(2 * 10) && after.tokensLost == 0 && after.loadsFailed == 0)
        #expect(try kvDifferences(e, 9, count: 4 * 1200) { big[$0] } == 0)
        #expect(try kvDifferences(e, 3, count: other.count) { other[$0] } == 0)
    }

    @Test(arguments: layouts, perHead)
    func aCorruptRecordIsNeverServedItsTokensAreLost(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead)
        let rows = UInt64(rowsPerLayer(e))
        let toks = try compactedOnTopicA(e).tokens
        try e.syncOffload()
        let slotBytes = Int(e.stats().disk.slotBytes), slots = Int(e.stats().disk.storedSlots)
        corruptSlots(dir: dir.path, slotBytes: slotBytes, 0..<slots)  // every record is corrupt
        _ = try focus(e, Self.queryB)
        var failure: KVError?
        do { try waitReady(e, 1) } catch { failure = error }
        #expect(failure?.code == .io)
        #expect(failure?.message.contains("stays usable") == true)
        #expect(try e.ready(1), "the loss is reported once")
        try e.syncOffload()  // the records the focus wrote lost every token (undone): freed once written
        let s = e.stats().disk
        #expect(s.loadsFailed > 0)
        #expect(s.tokensRestored == 0)
        #expect(s.tokensLost >= rows * 2 * 10, "at least the chosen B tokens")
        #expect(s.tokensOnDisk == rows * 2 * 500 - s.tokensLost && s.tokenRecords == 125 - s.tokensLost / (8 * rows),
                "the lost tokens' records left the disk (whole records: a failed read loses its record)")
        #expect(s.tokensInOpenRecords == rows * 4, "the open record keeps its buffer until it is written or freed")
        // The restores were undone: the displaced tokens, whose bytes never left memory, stay.
        try expectHolds(e, Self.heavyA, toks)
        try expectFreeReleasesRecords(e)
    }

    @Test(arguments: layouts, perHead)
    func anIOErrorOnReadBackLosesTheTokensAndServesNoWrongBytes(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead) { $0.offloadFault = OffloadFault(reads: true, writes: false) }
        let toks = try compactedOnTopicA(e).tokens
        try e.syncOffload()  // the records are on disk: the focus must read them
        _ = try focus(e, Self.queryB)
        var failure: KVError?
        do { try waitReady(e, 1) } catch { failure = error }
        #expect(failure?.code == .io)
        let s = e.stats().disk
        #expect(s.loadsFailed > 0 && s.tokensRestored == 0 && s.tokensLost >= UInt64(rowsPerLayer(e)) * 2 * 10)
        try expectHolds(e, Self.heavyA, toks)
        try expectFreeReleasesRecords(e)
    }

    @Test(arguments: layouts, perHead)
    func aFullTierDropsTheTokensItCannotHoldAsWithoutATier(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let slotBytes = try Engine(offloadConfig(layout, dir: dir.path)).stats().disk.slotBytes
        let e = try engine(layout, dir: dir.path, perHead: perHead) { $0.offloadBytes = 16 * slotBytes }
        let toks = try compactedOnTopicA(e).tokens, rows = UInt64(rowsPerLayer(e))
        var s = e.stats().disk
        #expect(s.tokensOffloaded == 16 * 8 * rows, "16 slots of 8 layer tokens (16 head tokens)")
        #expect(s.tokensLost == rows * (2 * 500 - 16 * 8))
        #expect(s.tokensOnDisk == 16 * 8 * rows)
        var failure: KVError?
        do { try waitReady(e, 1) } catch { failure = error }
        #expect(failure?.message.contains("stays usable") == true)
        // The reason, which once read "()": the tier's refusal was not kept for the report; and
        // which named swapped-out sequences or pending I/O, not the records that held the slots.
        let reason = "(offload tier full: all 16 slots are held: 16 by offloaded-token records (episodic offload), "
            + "0 by blocks of swapped-out sequences, 0 by reads or writes in flight)"
        #expect(failure?.message.contains(reason) == true, "\(failure?.message ?? "")")
        #expect(try e.ready(1), "reported once")
        try expectHolds(e, Self.heavyA, toks)
        // A focus restores only the B tokens that were saved, nothing is lost. Per layer the
        // 128 saved tokens (layer 0's first evicted, positions below 150) hold none: nothing
        // moves. Per head the 256 saved (head 0's) reach past 260, B's first heavy hitter: it
        // comes back, and the A token it displaces goes to the open record (memory).
        _ = try focus(e, Self.queryB)
        try waitReady(e, 1)
        s = e.stats().disk
        #expect(s.tokensRestored == (perHead ? 1 : 0) && s.tokensOnDisk == 16 * 8 * rows)
        #expect(s.tokensLost == rows * (2 * 500 - 16 * 8))
        if perHead {
            let head0 = try rowPositions(e, 1, layer: 0)[0]
            #expect(head0.contains(260) && Set(head0).intersection(Self.heavyA).count == 9)
            #expect(try rowPositions(e, 1, layer: 0)[1].sorted() == (Self.heavyA.map { $0 + 1 } + Self.recent).sorted())
            #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        } else {
            try expectHolds(e, Self.heavyA, toks)
        }
        try expectFreeReleasesRecords(e)
    }

    /// A restore into blocks shared with a fork must copy them first; with the budget full the
    /// focus fails with `outOfMemory` and changes nothing: the old focus stands, no byte or
    /// position moves, nothing is written or lost; with room again it succeeds. (Paged only:
    /// the contiguous layout never shares a 12-token layer's page, because a fork copies the
    /// partly filled boundary page; the shared-page copy check is the same one compaction
    /// uses, tested in CompactionTests.) While a swap-out is pending the focus waits for its
    /// memory instead of failing.
    @Test(arguments: perHead)
    func aFocusWithNoRoomToCopySharedBlocksIsOutOfMemoryAndKeepsTheOldFocus(perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(.paged, dir: dir.path, perHead: perHead) {
            $0.memoryBytes = 256 << 10
            $0.offloadForceThreads = true  // so that its I/O can be held in flight below
        }
        let toks = try compactedOnTopicA(e).tokens
        try e.syncOffload()
        try e.fork(parent: 1, child: 2)  // every block and page of 1 is shared
        var filler = min(4096, Int(e.stats().blocksTotal - e.stats().blocksUsed) * 4 + 8)
        while filler > 1 && (try? e.createSequence(3, tokens: tokens(filler, seed: 9))) == nil { filler -= 1 }
        #expect(filler > 1)
        var extra: [UInt64] = []  // what a long create could not take (contiguous: lone groups)
        while extra.count < 64, (try? e.createSequence(100 + UInt64(extra.count), tokens: tokens(1, seed: 10))) != nil {
            extra.append(100 + UInt64(extra.count))
        }
        let state = e.evictionStates[e.sequences.slot(of: 1)]!
        let focusedA = state.focusedEpisode
        let before = (try positions(e, 1, layer: 0), try positions(e, 1, layer: 1), e.stats())
        let error = caught { _ = try focus(e, Self.queryB) }
        #expect(error?.code == .outOfMemory)
        #expect(state.focusedEpisode == focusedA, "the old focus stands")
        #expect(try positions(e, 1, layer: 0) == before.0 && positions(e, 1, layer: 1) == before.1)
        #expect(e.stats() == before.2, "nothing written, read, lost or allocated")
        try expectHolds(e, Self.heavyA, toks)
        // With a swap-out of the filler pending, the focus waits for its memory instead.
        #expect(e.pauseOffloadIO(true))
        try e.swapOutAsync(3)
        let order = EventLog()
        let focuser = loggedCall("focus", order) { _ = try Self.queryB.withUnsafeBufferPointer { try e.focus(1, query: $0) } }
        #expect(waitUntil { e.offloadWaitingCalls == 1 }, "the focus waits for the swap-out")
        order.add("I/O resumed")
        #expect(e.pauseOffloadIO(false))
        focuser.join()
        #expect(order.events == ["I/O resumed", "focus returned"])
        #expect(state.focusedEpisode != focusedA)
        try waitReady(e, 1)
        try expectHolds(e, Self.heavyB, toks)
        for seq in extra { try e.free(seq) }
        try e.free(3)
        try e.free(2)
        try e.free(1)
        try e.syncOffload()
        #expect(e.stats().disk.tokenRecords == 0 && e.stats().disk.tokensOnDisk == 0)  // (freed blocks may stay spilled)
    }

    @Test(arguments: layouts, perHead)
    func withoutATierEvictedTokensAreDroppedAsBefore(layout: Layout, perHead: Bool) throws {
        let e = try engine(layout, dir: nil, perHead: perHead)
        let toks = try compactedOnTopicA(e).tokens
        _ = try focus(e, Self.queryB)
        #expect(try e.ready(1))
        try expectHolds(e, Self.heavyA, toks)
        #expect(e.stats().disk == DiskTierStats())
    }

    @Test(arguments: layouts, perHead)
    func anAppendPastMaxSeqTokensDropsParkedTokens(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead) { $0.maxSeqTokens = 64 }
        let rows = UInt64(rowsPerLayer(e))
        var toks = tokens(64, seed: 3)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try observeAll(e, 1, scores(e, n: 64, heavy: [1, 9, 20, 30, 40, 50]), n: 64)
        try e.compact(1, budgetTokens: 8)
        #expect(e.stats().disk.tokensOnDisk == rows * 2 * 56)
        // 8 resident + 56 parked + 1 new exceed the 64 a row may hold: one parked token goes.
        let extra = tokens(1, seed: 4)
        try e.append(1, tokens: extra)
        toks += extra
        #expect(e.stats().disk.tokensOnDisk == rows * 2 * 56 && e.stats().disk.tokenRecords == 14,
                "the dropped tokens' bytes stay on disk while their records hold other tokens")
        #expect(try e.layerLength(1, layer: 0) == 9)
        for held in try rowPositions(e, 1, layer: 1) { #expect(held.last == 64) }
        try writeKV(e, 1, tokens: extra, from: 64, slot: 8)  // the server writes position 64 at slot 8
        #expect(try slotMismatches(e, 1, tokens: toks) == 0)
        try e.free(1)
        try e.syncOffload()
        #expect(e.stats().disk.storedSlots == 0 && e.stats().disk.tokensOnDisk == 0)
    }

    /// A free while a focus's restore reads are in flight discards the open record at once
    /// (`discardOpenRecord`), with the disk entries of the displaced tokens that went there.
    /// When those reads then fail, undoing each restore finds no entry for such a token: it
    /// trapped (the engine went down); now the deferred free completes and leaves nothing on
    /// disk, pinned or in open records (helper-106).
    @Test(arguments: layouts, perHead)
    func aFreeWhileFailingRestoreReadsAreInFlightCompletes(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead) {
            $0.offloadForceThreads = true
            $0.offloadFault = OffloadFault(reads: true, writes: false)
        }
        _ = try compactedOnTopicA(e)
        try e.syncOffload()  // its records on disk: the focus reads them
        #expect(e.pauseOffloadIO(true))
        _ = try focus(e, Self.queryB)
        #expect(e.stats().disk.tokensInOpenRecords > 0, "displaced tokens in the open record")
        try e.free(1)  // reads in flight: the slot waits for them
        #expect(e.pauseOffloadIO(false))
        try e.syncOffload()  // the reads fail
        #expect(e.stats().sequences == 0 && e.stats().blocksUsed == 0, "the deferred free completed")
        let d = e.stats().disk
        #expect(d.tokenRecords == 0 && d.tokensOnDisk == 0 && d.tokensInOpenRecords == 0)
        #expect(e.offloadSlotAudit.pinned == 0)
    }

    /// Growing the eviction state (an append past its capacity of 1024 slots a row) keeps
    /// every row's parked tokens, also when rows park different counts: a tier of 16 slots
    /// saved only the first row's (layer 0's 128 per layer, head 0's 256 per head; the rest
    /// were lost).
    @Test(arguments: layouts, perHead)
    func growingTheStateKeepsEveryRowsParkedTokens(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let slotBytes = try Engine(offloadConfig(layout, dir: dir.path)).stats().disk.slotBytes
        let e = try engine(layout, dir: dir.path, perHead: perHead) { $0.offloadBytes = 16 * slotBytes }
        let toks = try compactedOnTopicA(e).tokens
        #expect(caught { try waitReady(e, 1) }?.code == .io, "the lost tokens, reported once")
        let state = e.evictionStates[e.sequences.slot(of: 1)]!
        func parked() -> [[Int32]] {
            (0..<state.rows).map { r in (state.parkedStart(row: r)..<state.capacity).map { state.position(row: r, slot: $0) }.sorted() }
        }
        let before = parked(), onDisk = e.stats().disk.tokensOnDisk
        #expect(before.map(\.count) == (perHead ? [256, 0, 0, 0] : [128, 0]) && state.capacity == 1024)
        let extra = try appendWritten(e, 900)  // 12 + 900 resident and 256 (128) parked pass 1024
        #expect(state.capacity == 2048)
        #expect(parked() == before)
        #expect(e.stats().disk.tokensOnDisk == onDisk)
        #expect(try slotMismatches(e, 1, tokens: toks + extra) == 0)
        try expectFreeReleasesRecords(e)
    }

    /// A focus after the state grew restores every offloaded token the episode ranks above the
    /// appended ones, byte-identical: B's turn scored positions 0..<512, the 600 appended
    /// tokens have no score, so all 500 parked tokens of every row come back (12 + 600
    /// resident, 500 parked: the focused set of 612 is 0..<512 and 100 appended tokens).
    @Test(arguments: layouts, perHead)
    func aFocusAfterTheStateGrewRestoresTheRightBytes(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead)
        let toks = try compactedOnTopicA(e).tokens, rows = UInt64(rowsPerLayer(e))
        let extra = try appendWritten(e, 600)
        #expect(e.evictionStates[e.sequences.slot(of: 1)]!.capacity == 2048)
        #expect(try focus(e, Self.queryB) != -1)
        try waitReady(e, 1)
        // Every write processed first: a restored record's slot is freed (leaving
        // `tokensOnDisk`) only once its own write completed, which on a loaded machine can be
        // after the focus's reads (seen once in a whole-suite run).
        try e.syncOffload()
        let s = e.stats().disk
        #expect(s.tokensRestored == rows * 2 * 500 && s.tokensLost == 0)
        #expect(s.tokensOnDisk == rows * 2 * 500, "\(s)")
        for layer in 0..<2 {
            for held in try rowPositions(e, 1, layer: layer) {
                #expect(held.count == 612 && Set(held).isSuperset(of: (0..<512).map(Int32.init)))
            }
        }
        #expect(try slotMismatches(e, 1, tokens: toks + extra) == 0)
        try expectFreeReleasesRecords(e)
    }

    /// A fork inherits the parent's offloaded tokens: focused on the other episode, each child
    /// restores exactly the positions and bytes the parent got for that focus, whatever the
    /// parent did since (focused, compacted again, was freed).
    @Test(arguments: layouts, perHead)
    func aForkInheritsTheOffloadedTokens(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead)
        let toks = try compactedOnTopicA(e).tokens
        try e.fork(parent: 1, child: 2)
        try e.fork(parent: 1, child: 3)
        try expectHolds(e, Self.heavyA, toks, seq: 2)
        #expect(try focus(e, Self.queryB) != -1)
        try waitReady(e, 1)
        try expectHolds(e, Self.heavyB, toks)
        let parentFocusedOnB = try held(e, 1)
        #expect(try e.compact(1, budgetTokens: 6) == 6, "the parent parks and writes tokens of its own")

        #expect(try focus(e, Self.queryB, seq: 2) != -1)
        try waitReady(e, 2)
        let child = try held(e, 2)
        #expect(child.positions == parentFocusedOnB.positions)
        #expect(child.bytes == parentFocusedOnB.bytes, "byte for byte")

        try e.free(1)
        try e.syncOffload()
        #expect(try focus(e, Self.queryB, seq: 3) != -1)
        try waitReady(e, 3)
        let orphan = try held(e, 3)
        #expect(orphan.positions == parentFocusedOnB.positions, "the parent's free left the records the fork holds")
        #expect(orphan.bytes == parentFocusedOnB.bytes, "byte for byte")

        // Back on A: the tokens the child's own focus displaced come back from its records.
        #expect(try focus(e, Self.queryA, seq: 2) != -1)
        try waitReady(e, 2)
        try expectHolds(e, Self.heavyA, toks, seq: 2)
        #expect(e.stats().disk.tokensLost == 0)
    }

    /// Freeing a parent and its fork, in either order, after the fork diverged (a focus that
    /// restored from the shared records and wrote its own), returns the tier to its slot counts
    /// before the compaction; a record held by both counts once. A fork that fails (the child
    /// exists) takes no pin.
    @Test(arguments: shapes, [true, false])
    func freeingAForkAndItsParentInEitherOrderReleasesEveryRecord(shape: (layout: Layout, perHead: Bool), parentFirst: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(shape.layout, dir: dir.path, perHead: shape.perHead)
        let rows = UInt64(rowsPerLayer(e))
        let empty = e.offloadSlotAudit
        let toks = try compactedOnTopicA(e).tokens
        try e.syncOffload()
        let compacted = e.stats().disk, audit = e.offloadSlotAudit
        #expect(audit.pinned == 125)

        try e.fork(parent: 1, child: 2)
        #expect(caught { try e.fork(parent: 1, child: 2) }?.code == .exists)
        try e.syncOffload()
        let forked = e.stats().disk
        #expect(e.offloadSlotAudit == audit, "the fork pins the parent's slots, writes none")
        #expect(forked.storedSlots == compacted.storedSlots && forked.bytesWritten == compacted.bytesWritten)
        #expect(forked.tokensOffloaded == compacted.tokensOffloaded)
        #expect(forked.tokensOnDisk == rows * 2 * 500 && forked.tokenRecords == 125, "records held by both count once")

        #expect(try focus(e, Self.queryB, seq: 2) != -1)
        try waitReady(e, 2)
        try expectHolds(e, Self.heavyB, toks, seq: 2)
        let diverged = e.stats().disk
        #expect(diverged.tokensRestored == rows * 2 * 10 && diverged.tokensOnDisk == rows * (2 * 500 + 16) && diverged.tokenRecords == 127)
        #expect(diverged.tokensInOpenRecords == rows * 4, "the child's displaced tokens: two records of its own, the rest in its open one")

        let (first, second): (UInt64, UInt64) = parentFirst ? (1, 2) : (2, 1)
        try e.free(first)
        try e.syncOffload()
        let survivor = e.stats().disk  // the child holds every record the parent did, and its own
        #expect(survivor.tokensOnDisk == rows * (parentFirst ? 2 * 500 + 16 : 2 * 500) && survivor.tokenRecords == (parentFirst ? 127 : 125))
        #expect(survivor.tokensInOpenRecords == (parentFirst ? rows * 4 : 0))
        #expect(e.offloadSlotAudit.pinned == e.stats().disk.tokenRecords, "one pin per record of the survivor")
        try expectHolds(e, second == 1 ? Self.heavyA : Self.heavyB, toks, seq: second)
        try expectFreeReleasesRecords(e, seq: second)
        #expect(e.offloadSlotAudit == empty)
        #expect(e.stats().disk.tokenRecords == 0 && e.stats().disk.tokensOnDisk == 0)
    }

    @Test(arguments: layouts, perHead)
    func aSwappedOutSequenceIsNeitherCompactedNorRestored(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead)
        let toks = try compactedOnTopicA(e).tokens
        try e.swapOut(1)
        #expect(caught { try e.compact(1, budgetTokens: 4) }?.code == .invalidArgument)
        #expect(caught { _ = try focus(e, Self.queryB) }?.code == .invalidArgument)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(e.stats().disk.tokensOnDisk == UInt64(rowsPerLayer(e)) * 2 * 500)
        try expectHolds(e, Self.heavyA, toks)
    }

    /// A focus right after a swap-in, before its reads landed: the tokens the restore displaces
    /// are copied to disk from memory, so their bytes must have arrived first (the focus waits,
    /// as compaction does); every restored byte is then right.
    @Test(arguments: layouts, perHead)
    func aFocusRightAfterASwapInRestoresTheRightBytes(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead)
        let toks = try compactedOnTopicA(e).tokens
        try e.swapOut(1)
        try e.syncOffload()  // else the reads would be served from staging at once
        try e.swapIn(1)
        #expect(try focus(e, Self.queryB) != -1)
        try waitReady(e, 1)
        try expectHolds(e, Self.heavyB, toks)
        #expect(try focus(e, Self.queryA) != -1)  // the displaced A tokens come back from disk
        try waitReady(e, 1)
        try expectHolds(e, Self.heavyA, toks)
    }

    @Test(arguments: layouts, perHead)
    func badInputChangesNothingWhileTokensAreOnDisk(layout: Layout, perHead: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path, perHead: perHead)
        let toks = try compactedOnTopicA(e).tokens
        let snapshot = { () throws -> String in
            "\(try positions(e, 1, layer: 0)) \(try positions(e, 1, layer: 1)) \(e.stats().disk.tokensOnDisk) \(e.stats().disk.tokenRecords) \(try slotMismatches(e, 1, tokens: toks))"
        }
        let before = try snapshot()
        #expect(caught { _ = try [Float](repeating: 1, count: 3).withUnsafeBufferPointer { try e.focus(1, query: $0) } }?.code == .invalidArgument)
        #expect(caught { _ = try [Float.nan, 0].withUnsafeBufferPointer { try e.focus(1, query: $0) } }?.code == .invalidArgument)
        #expect(caught { _ = try Self.queryB.withUnsafeBufferPointer { try e.focus(2, query: $0) } }?.code == .notFound)
        #expect(caught { try e.compact(1, budgetTokens: 0) }?.code == .invalidArgument)
        #expect(caught { try e.free(2) }?.code == .notFound)
        #expect(try snapshot() == before)
    }

    /// A focus refused for a bad query (wrong dimension, no segment) changes nothing, not even
    /// by processing completions or waiting for them: with sequence 2's prefix reads complete
    /// on the device but unprocessed, the statistics stay as they were and the sequence is not
    /// ready until a call that may process them. Before, the focus waited for the reads
    /// (processing them) and only then checked the query.
    @Test(arguments: layouts)
    func aFocusRefusedForItsQueryDoesNotProcessCompletions(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path) { $0.offloadForceThreads = true }
        let prompt = tokens(4 * 8 + 2, seed: 87)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        try e.free(1)
        try e.trim()  // its blocks now only on disk
        try e.syncOffload()  // their writes done: the create reads them from the device
        #expect(e.pauseOffloadIO(true))
        #expect(try e.createSequence(2, tokens: prompt) == 32, "read from disk, held")
        #expect(e.pauseOffloadIO(false))
        let tier = e.offload!.tier!
        // A guard against a hang, not a timing assertion: every read completes on the device.
        #expect(waitUntil(seconds: 20) { tier.readyCompletions == tier.inflight })
        #expect(!e.offload!.resident(e.sequences.slot(of: 2)), "its reads are not processed yet")
        let before = e.stats()
        #expect(thrown { () throws(KVError) in _ = try Self.queryA.withUnsafeBufferPointer { (q) throws(KVError) in try e.focus(2, query: q) } }?.code == .invalidArgument, "no segment")
        try Self.queryA.withUnsafeBufferPointer { try e.addSegment(2, start: 0, end: 8, embedding: $0) }
        let wrong: [Float] = [1, 0, 0]
        #expect(thrown { () throws(KVError) in _ = try wrong.withUnsafeBufferPointer { (q) throws(KVError) in try e.focus(2, query: q) } }?.code == .invalidArgument, "dimension")
        #expect(e.stats() == before, "a refused focus processed completions")
        #expect(!e.offload!.resident(e.sequences.slot(of: 2)), "its reads not processed yet")
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 32) { prompt[$0] } == 0)
    }
}
