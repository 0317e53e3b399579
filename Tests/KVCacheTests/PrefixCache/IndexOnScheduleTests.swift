import TestSupport
import Testing
@testable import KVCache

/// `smallConfig` (4-token blocks) indexing prompts as they are scheduled.
private func scheduling(_ config: EngineConfig) -> EngineConfig {
    var c = config
    c.indexOnSchedule = true
    return c
}

/// The `blockStored` events among `events`, as (hash, parent) pairs.
private func stored(_ events: [KVEvent]) -> [[UInt64]] {
    events.filter { $0.kind == .blockStored }.map { [$0.blockHash, $0.parentHash] }
}

/// The (hash, parent) pairs of blocks `range` of `prompt`'s chain.
private func chain(_ prompt: [Int32], _ range: Range<Int>) -> [[UInt64]] {
    let h = BlockHash.chain(prompt, blockTokens: 4)
    return range.map { [h[$0], $0 > 0 ? h[$0 - 1] : 0] }
}

@Suite("Indexing prompt blocks as they are scheduled (index_on_schedule), both layouts")
struct IndexOnScheduleTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    /// A prompt being computed in chunks: a second request for it must not hit its blocks
    /// before they are scheduled.
    @Test(arguments: layouts)
    func aSecondCreateBeforeAnyScheduleHitsNothing(layout: Layout) throws {
        let e = try Engine(scheduling(smallConfig(layout)))
        let prompt = tokens(40, seed: 3)
        #expect(try e.createSequence(1, tokens: prompt) == 0)
        #expect(stored(drain(e)).isEmpty, "create indexes none of the prompt's new blocks")
        #expect(e.cachedPrefixTokens(prompt) == 0)
        #expect(try e.createSequence(2, tokens: prompt) == 0)
        #expect(e.stats().prefixHitTokens == 0)
    }

    @Test(arguments: layouts)
    func afterAScheduleExactlyTheScheduledFullBlocksHit(layout: Layout) throws {
        let e = try Engine(scheduling(smallConfig(layout)))
        let prompt = tokens(40, seed: 4)
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: Array(prompt.prefix(18)), from: 0)  // the first chunk: 18 tokens
        try e.schedule(1, tokens: 18)
        #expect(stored(drain(e)) == chain(prompt, 0..<4), "blocks 0...3; block 4 is not wholly scheduled")
        #expect(try e.createSequence(2, tokens: prompt) == 16)
        #expect(try kvMismatches(e, 2, tokens: Array(prompt.prefix(16)), from: 0) == 0)
    }

    /// Chunked prefill: each forward pass schedules the next chunk; the blocks enter the index
    /// in chain order, each with its parent's hash, and a smaller value changes nothing.
    @Test(arguments: layouts)
    func chunkedSchedulesIndexInOrderWithTheirParents(layout: Layout) throws {
        let e = try Engine(scheduling(smallConfig(layout)))
        let prompt = tokens(41, seed: 5)  // 10 full blocks and one token
        try e.createSequence(1, tokens: prompt)
        _ = drain(e)
        try e.schedule(1, tokens: 16)
        #expect(stored(drain(e)) == chain(prompt, 0..<4))
        try e.schedule(1, tokens: 12)
        try e.schedule(1, tokens: 19)
        #expect(stored(drain(e)).isEmpty, "monotonic: nothing new below block 4's end")
        try e.schedule(1, tokens: 41)
        #expect(stored(drain(e)) == chain(prompt, 4..<10))
        try e.schedule(1, tokens: 41)
        #expect(drain(e).isEmpty)
        #expect(e.cachedPrefixTokens(prompt) == 40)
    }

    /// A decode step means the whole prompt was scheduled: the append indexes its rest, then
    /// the block the append fills, as without the mode.
    @Test(arguments: layouts)
    func anAppendIndexesTheRestOfThePromptFirst(layout: Layout) throws {
        let e = try Engine(scheduling(smallConfig(layout)))
        let prompt = tokens(38, seed: 6)  // 9 full blocks, 2 tokens in the tenth
        try e.createSequence(1, tokens: prompt)
        try e.schedule(1, tokens: 20)
        _ = drain(e)
        try e.append(1, tokens: [])
        #expect(drain(e).isEmpty, "an empty append changes nothing")
        let decoded: [Int32] = [901, 902]
        try e.append(1, tokens: decoded)
        #expect(stored(drain(e)) == chain(prompt + decoded, 5..<10))
        try writeKV(e, 1, tokens: prompt + decoded, from: 0)
        let next = prompt + decoded + [903]
        #expect(try e.createSequence(2, tokens: next) == 40)
        #expect(try kvMismatches(e, 2, tokens: Array(next.prefix(40)), from: 0) == 0)
    }

    /// Unknown sequences and a tokens count past the length are refused, and nothing changes:
    /// not the caller's unscheduled blocks, not another sequence's cached prefix or bytes.
    @Test(arguments: layouts)
    func badInputIsRefusedAndChangesNothing(layout: Layout) throws {
        let e = try Engine(scheduling(smallConfig(layout)))
        let pending = tokens(40, seed: 7), done = tokens(24, seed: 8)
        try e.createSequence(1, tokens: pending)
        try e.createSequence(2, tokens: done)
        try writeKV(e, 2, tokens: done, from: 0)
        try e.schedule(2, tokens: 24)
        try e.free(2)
        _ = drain(e)
        let before = e.stats()
        #expect(thrown { () throws(KVError) in try e.schedule(77, tokens: 4) }?.code == .notFound)
        #expect(thrown { () throws(KVError) in try e.schedule(1, tokens: 41) }?.code == .invalidArgument)
        #expect(thrown { () throws(KVError) in try e.schedule(1, tokens: -1) }?.code == .invalidArgument)
        #expect(drain(e).isEmpty)
        #expect(e.stats() == before)
        #expect(e.cachedPrefixTokens(pending) == 0, "the refused calls indexed none of sequence 1's blocks")
        #expect(try e.createSequence(3, tokens: done + [1]) == 24, "another sequence's cached prefix stays")
        #expect(try kvMismatches(e, 3, tokens: done, from: 0) == 0)
        try e.schedule(1, tokens: 40)
        #expect(stored(drain(e)) == chain(pending, 0..<10), "sequence 1 still schedules all its blocks")
    }

    /// Blocks never scheduled are never indexed: a plain free leaves only the scheduled ones.
    @Test(arguments: layouts)
    func freeLeavesOnlyTheScheduledBlocksCached(layout: Layout) throws {
        let e = try Engine(scheduling(smallConfig(layout)))
        let prompt = tokens(40, seed: 9)
        try e.createSequence(1, tokens: prompt)
        try e.schedule(1, tokens: 16)
        try e.free(1)
        #expect(e.stats().blocksCached == 4)
        #expect(e.stats().blocksUsed == 0)
        #expect(stored(drain(e)) == chain(prompt, 0..<4))
        #expect(try e.createSequence(2, tokens: prompt) == 16)
        try e.free(2)
        try e.createSequence(3, tokens: tokens(40, seed: 10))
        try e.free(3)
        #expect(e.stats().blocksCached == 4, "a sequence never scheduled leaves nothing indexed")
    }

    /// Abort unindexes what was scheduled but not computed; the unscheduled blocks need nothing.
    @Test(arguments: layouts)
    func abortRemovesOnlyScheduledUncomputedBlocks(layout: Layout) throws {
        let e = try Engine(scheduling(smallConfig(layout)))
        let prompt = tokens(40, seed: 11)
        try e.createSequence(1, tokens: prompt)
        try e.schedule(1, tokens: 24)  // blocks 0...5 scheduled; the pass computed 16 tokens
        try writeKV(e, 1, tokens: Array(prompt.prefix(16)), from: 0)
        _ = drain(e)
        try e.free(1, computedTokens: 16)
        let removed = drain(e).filter { $0.kind == .blockRemoved }.map { [$0.blockHash, $0.parentHash] }
        #expect(removed == chain(prompt, 4..<6), "blocks 4 and 5 only; 6...9 were never indexed")
        #expect(e.stats().blocksCached == 4)
        #expect(try e.createSequence(2, tokens: prompt) == 16)
        #expect(try kvMismatches(e, 2, tokens: Array(prompt.prefix(16)), from: 0) == 0)
    }

    /// A fork child shares the parent's unscheduled blocks and its watermark: either may
    /// schedule them, each block is indexed once, and the child keeps them past the parent.
    @Test(arguments: layouts)
    func aForkChildInheritsTheWatermark(layout: Layout) throws {
        let e = try Engine(scheduling(smallConfig(layout)))
        let prompt = tokens(40, seed: 12)
        try e.createSequence(1, tokens: prompt)
        try e.schedule(1, tokens: 8)
        try writeKV(e, 1, tokens: prompt, from: 0)  // before the fork: a fork's shared tokens are never written
        try e.fork(parent: 1, child: 2)
        #expect(stored(drain(e)) == chain(prompt, 0..<2), "the fork indexes nothing")
        try e.schedule(2, tokens: 24)
        #expect(stored(drain(e)) == chain(prompt, 2..<6))
        try e.schedule(1, tokens: 24)
        #expect(drain(e).isEmpty, "the parent's blocks 2...5 are the child's, already indexed")
        try e.schedule(1, tokens: 32)
        #expect(stored(drain(e)) == chain(prompt, 6..<8))
        try e.free(1)
        try e.schedule(2, tokens: 40)
        #expect(stored(drain(e)) == chain(prompt, 8..<10), "the child indexes the rest after the parent is gone")
        #expect(try e.createSequence(3, tokens: prompt) == 36)
        #expect(try kvMismatches(e, 3, tokens: Array(prompt.prefix(36)), from: 0) == 0)
    }

    /// Blocks a fork's parent scheduled and then aborted uncomputed left the index for good:
    /// the child, which shares them, does not index them again.
    @Test(arguments: layouts)
    func aForkChildDoesNotReindexBlocksItsParentAborted(layout: Layout) throws {
        let e = try Engine(scheduling(smallConfig(layout)))
        let prompt = tokens(40, seed: 20)
        try e.createSequence(1, tokens: prompt)
        try e.fork(parent: 1, child: 2)
        try e.schedule(1, tokens: 40)
        try e.free(1, computedTokens: 8)
        #expect(drain(e).filter { $0.kind == .blockRemoved }.count == 8, "blocks 2...9")
        try e.schedule(2, tokens: 40)
        #expect(stored(drain(e)).isEmpty)
        #expect(e.cachedPrefixTokens(prompt) == 8)
    }

    /// A compaction moves bytes: the blocks not scheduled before it are never indexed, not by
    /// a later schedule and not by an append.
    @Test(arguments: layouts)
    func aCompactionEndsTheSchedule(layout: Layout) throws {
        var c = scheduling(smallConfig(layout))
        c.eviction = EvictionConfig(.streamingLLM)
        let e = try Engine(c)
        let prompt = tokens(40, seed: 13)
        try e.createSequence(1, tokens: prompt)
        try e.schedule(1, tokens: 8)
        try writeKV(e, 1, tokens: prompt, from: 0)
        #expect(try e.compact(1, budgetTokens: 20) == 20)
        _ = drain(e)
        try e.schedule(1, tokens: 20)
        try e.append(1, tokens: tokens(8, seed: 14))
        #expect(stored(drain(e)).isEmpty)
        #expect(e.cachedPrefixTokens(prompt) <= 8, "at most the blocks scheduled before the compaction")
    }

    /// A swap-out in the middle of a prefill keeps the unscheduled range: its blocks go to disk
    /// as the sequence's own slots (no prompt finds their uncomputed bytes there), come back
    /// unindexed, and once the server resumes the prefill `schedule` indexes them as usual;
    /// whether the swap-out's own call finished it or a later call settled it (`swapOutAsync`).
    @Test(arguments: layouts, [false, true])
    func aSwapOutKeepsTheSchedule(layout: Layout, asynchronous: Bool) throws {
        let dir = ScratchDir("sched")
        defer { dir.remove() }
        let e = try Engine(scheduling(offloadConfig(layout, dir: dir.path)))
        let prompt = tokens(40, seed: 15)
        try e.createSequence(1, tokens: prompt)
        try e.schedule(1, tokens: 16)
        try writeKV(e, 1, tokens: Array(prompt.prefix(16)), from: 0)
        try writeKV(e, 1, tokens: Array(prompt[16...]), from: 16, salt: 9)  // what was there before the pass: not its K/V
        if asynchronous {
            try e.swapOutAsync(1)
            try e.syncOffload()  // every write completed: the swap-out is settled, the memory released
            #expect(e.stats().disk.swapOuts == 1)
        } else {
            try e.swapOut(1)
        }
        #expect(e.cachedPrefixTokens(prompt) == 16, "the unscheduled blocks are not found on disk")
        #expect(thrown { () throws(KVError) in try e.schedule(1, tokens: 40) }?.code == .invalidArgument)
        _ = drain(e)
        try e.swapIn(1)
        try waitReady(e, 1)
        #expect(stored(drain(e).filter { $0.tier == 0 }) == chain(prompt, 0..<4), "the swap-in indexes the scheduled blocks only")
        #expect(try e.createSequence(2, tokens: prompt) == 16)
        try waitReady(e, 2)
        try e.free(2)
        try e.schedule(1, tokens: 28)  // the server resumes the prefill
        try writeKV(e, 1, tokens: Array(prompt[16..<28]), from: 16)
        #expect(stored(drain(e)) == chain(prompt, 4..<7))
        try e.schedule(1, tokens: 40)
        try writeKV(e, 1, tokens: Array(prompt[28...]), from: 28)
        #expect(stored(drain(e)) == chain(prompt, 7..<10))
        #expect(try e.createSequence(3, tokens: prompt) == 36)
        try waitReady(e, 3)
        #expect(try kvMismatches(e, 3, tokens: Array(prompt.prefix(36)), from: 0) == 0)
    }

    /// A fork child that schedules shared blocks while its parent is swapped out indexes them;
    /// the parent's swap-in reads its own copies (its slots are unhashed), and its schedule
    /// then indexes the blocks whose hashes no other block holds, and leaves out the others.
    @Test(arguments: layouts)
    func aForkChildSchedulesWhileItsParentIsSwappedOut(layout: Layout) throws {
        let dir = ScratchDir("sched")
        defer { dir.remove() }
        let e = try Engine(scheduling(offloadConfig(layout, dir: dir.path)))
        let prompt = tokens(40, seed: 21)
        try e.createSequence(1, tokens: prompt)
        try e.schedule(1, tokens: 8)
        try writeKV(e, 1, tokens: prompt, from: 0)  // before the fork: a fork's shared tokens are never written
        try e.fork(parent: 1, child: 2)
        try e.swapOut(1)
        _ = drain(e)
        try e.schedule(2, tokens: 24)
        #expect(stored(drain(e)) == chain(prompt, 2..<6))
        try e.swapIn(1)
        try waitReady(e, 1)
        _ = drain(e)
        try e.schedule(1, tokens: 40)
        #expect(stored(drain(e)) == chain(prompt, 6..<10), "blocks 2...5 have their hashes indexed by the child's blocks")
        try e.free(2)
        try e.free(1)
        #expect(try e.createSequence(3, tokens: prompt) == 36)
        try waitReady(e, 3)
        #expect(try kvMismatches(e, 3, tokens: Array(prompt.prefix(36)), from: 0) == 0)
    }

    /// A swapped-out fork child whose unscheduled blocks its parent indexed meanwhile (so its
    /// disk slots carry their hashes) is swapped in while the parent's blocks still hold those
    /// hashes: its fresh blocks cannot be indexed, and are prepared under the kept hashes, so
    /// its next append indexes nothing. They were left unprepared (contiguous: the swap-in
    /// shares no block), and a fresh block keeps no earlier owner's prepared hash either, so
    /// the append indexed them under the hashes of a prompt freed unscheduled, whose blocks'
    /// ids they took: a later create of that prompt was served the child's bytes (helper-87,
    /// from abi_model seed 180055).
    @Test(arguments: layouts)
    func aSwappedInChildWhoseHashesAreHeldIndexesNoStaleHash(layout: Layout) throws {
        let dir = ScratchDir("sched")
        defer { dir.remove() }
        let e = try Engine(scheduling(offloadConfig(layout, dir: dir.path)))
        let parent = tokens(48, seed: 22), other = tokens(48, seed: 23)
        try e.createSequence(1, tokens: parent)
        try writeKV(e, 1, tokens: parent, from: 0)
        try e.fork(parent: 1, child: 2)
        try e.schedule(1, tokens: 48)
        try e.swapOut(2)
        try e.createSequence(3, tokens: other)  // freed unscheduled: its blocks' ids go back to the pool
        try writeKV(e, 3, tokens: other, from: 0)
        try e.free(3)
        _ = drain(e)
        try e.swapIn(2)
        try waitReady(e, 2)
        try e.append(2, tokens: [7])
        #expect(stored(drain(e)).filter { chain(other, 0..<12).contains($0) }.isEmpty, "no block indexed under the freed prompt's hashes")
        let hit = try e.createSequence(4, tokens: other)
        try waitReady(e, 4)
        #expect(try kvMismatches(e, 4, tokens: Array(other.prefix(hit)), from: 0) == 0)
        #expect(try kvMismatches(e, 2, tokens: parent, from: 0) == 0)
    }

    /// A cancelled asynchronous swap-out leaves the sequence as it was: still scheduling.
    @Test(arguments: layouts)
    func aCancelledSwapOutKeepsTheSchedule(layout: Layout) throws {
        let dir = ScratchDir("sched")
        defer { dir.remove() }
        var c = scheduling(offloadConfig(layout, dir: dir.path))
        c.offloadForceThreads = true  // whose I/O the test can hold in flight
        let e = try Engine(c)
        let prompt = tokens(40, seed: 16)
        try e.createSequence(1, tokens: prompt)
        #expect(e.pauseOffloadIO(true))
        try e.swapOutAsync(1)
        try e.swapIn(1)  // the writes are held: cancels
        #expect(e.pauseOffloadIO(false))
        try e.syncOffload()
        _ = drain(e)
        try e.schedule(1, tokens: 40)
        #expect(stored(drain(e)) == chain(prompt, 0..<10))
    }

    /// Blocks found in the disk tier are indexed at creation (their K/V is cached, not
    /// computed); when their read fails the sequence is spoiled (`schedule` is refused like
    /// every call on its K/V) and its unscheduled blocks, which follow the failed one in the
    /// chain, are never indexed.
    @Test(arguments: layouts)
    func aFailedDiskReadEndsTheSchedule(layout: Layout) throws {
        let dir = ScratchDir("sched")
        defer { dir.remove() }
        var c = scheduling(offloadConfig(layout, dir: dir.path))
        c.offloadFault = OffloadFault(reads: true, writes: false)  // the spills succeed, every read fails
        let e = try Engine(c)
        let prompt = tokens(41, seed: 18), longer = prompt + tokens(40, seed: 19)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: 41) { prompt[$0] }
        try e.schedule(1, tokens: 41)
        try e.free(1)
        try e.trim()
        try e.syncOffload()
        _ = drain(e)
        #expect(try e.createSequence(2, tokens: longer) == 40)  // 40 tokens from disk, 41 fresh
        #expect(stored(drain(e).filter { $0.tier == 0 }) == chain(longer, 0..<10), "the disk hits, not the new blocks")
        #expect(thrown { () throws(KVError) in try waitReady(e, 2) }?.code == .io)
        #expect(thrown { () throws(KVError) in try e.schedule(2, tokens: 81) }?.code == .io)
        try e.free(2)
        #expect(stored(drain(e)).isEmpty, "the blocks after the spoiled prefix are never indexed")
    }

    /// Without the mode the prompt is indexed at creation and `schedule` only checks its input.
    @Test(arguments: layouts)
    func withoutTheModeCreateIndexesAndScheduleChangesNothing(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let prompt = tokens(40, seed: 17)
        try e.createSequence(1, tokens: prompt)
        #expect(stored(drain(e)) == chain(prompt, 0..<10))
        try e.schedule(1, tokens: 40)
        #expect(drain(e).isEmpty)
        #expect(thrown { () throws(KVError) in try e.schedule(1, tokens: 41) }?.code == .invalidArgument)
        #expect(thrown { () throws(KVError) in try e.schedule(2, tokens: 0) }?.code == .notFound)
        #expect(try e.createSequence(2, tokens: prompt) == 36)
    }

    /// The engines a prompt given by block hashes is tested on: both layouts with memory, and
    /// a metadata-only engine (paged, no memory; what the simulator runs).
    static let hashEngines: [(Layout, Bool)] = [(.paged, false), (.contiguous, false), (.paged, true)]

    /// A prompt given by its block hashes (`createSequence(_:blockHashes:tokens:)`) with a
    /// partial last block: creation indexes nothing and emits no event; `schedule` indexes the
    /// given hashes in order with their parents; a second create hits exactly the scheduled
    /// blocks; an append indexes the rest of the prompt but not the block it fills (the
    /// partial block's tokens are unknown).
    @Test(arguments: hashEngines)
    func aPromptGivenByHashesIsIndexedAsScheduled(layout: Layout, metadataOnly: Bool) throws {
        var c = scheduling(smallConfig(layout))
        c.metadataOnly = metadataOnly
        let e = try Engine(c)
        #expect(drain(e) == [memoryTierCleared], "the engine's creation")
        let prompt = tokens(42, seed: 30)  // 10 full blocks and 2 tokens
        let hashes = BlockHash.chain(prompt, blockTokens: 4)
        #expect(try hashes.withUnsafeBufferPointer { (h) throws(KVError) in try e.createSequence(1, blockHashes: h, tokens: 42) } == 0)
        #expect(drain(e).isEmpty, "creation indexes none of the prompt's blocks")
        if !metadataOnly { try writeKV(e, 1, tokens: prompt, from: 0) }
        try e.schedule(1, tokens: 18)
        #expect(stored(drain(e)) == chain(prompt, 0..<4))
        #expect(try hashes.withUnsafeBufferPointer { (h) throws(KVError) in try e.createSequence(2, blockHashes: h, tokens: 42) } == 16)
        #expect(e.stats().prefixHitTokens == 16)
        if !metadataOnly { #expect(try kvMismatches(e, 2, tokens: Array(prompt.prefix(16)), from: 0) == 0) }
        try e.append(1, tokens: [901, 902, 903])
        #expect(stored(drain(e)) == chain(prompt, 4..<10), "the rest of the prompt; block 10 (2 unknown tokens) is not indexed")
        // By hash: blocks indexed from hashes alone carry no fingerprint, so a lookup by
        // tokens finds none of them (include/kvcache.h, BLOCK HASH).
        #expect(hashes.withUnsafeBufferPointer { e.cachedPrefixBlocks($0) } == 10)
        #expect(BlockHash.chain(prompt + [901, 902, 903], blockTokens: 4).withUnsafeBufferPointer { e.cachedPrefixBlocks($0) } == 10)
        #expect(e.cachedPrefixTokens(prompt) == 0)
        try e.schedule(2, tokens: 42)
        #expect(drain(e).isEmpty, "sequence 2's blocks 4...9 have their hashes indexed already")
    }

    /// A prompt given by hashes that ends on a block boundary knows every token before its
    /// appends: the append indexes the rest of the prompt, then the block it fills, chained.
    @Test(arguments: hashEngines)
    func aWholeBlockPromptGivenByHashesIndexesItsAppends(layout: Layout, metadataOnly: Bool) throws {
        var c = scheduling(smallConfig(layout))
        c.metadataOnly = metadataOnly
        let e = try Engine(c)
        let prompt = tokens(40, seed: 31), decoded: [Int32] = [911, 912, 913, 914]
        let hashes = BlockHash.chain(prompt, blockTokens: 4)
        _ = try hashes.withUnsafeBufferPointer { (h) throws(KVError) in try e.createSequence(1, blockHashes: h, tokens: 40) }
        try e.schedule(1, tokens: 8)
        #expect(stored(drain(e)) == chain(prompt, 0..<2))
        try e.append(1, tokens: decoded)
        #expect(stored(drain(e)) == chain(prompt + decoded, 2..<11))
        #expect(BlockHash.chain(prompt + decoded + [1], blockTokens: 4).withUnsafeBufferPointer { e.cachedPrefixBlocks($0) } == 11)
        #expect(e.cachedPrefixTokens(prompt + decoded + [1]) == 0, "no fingerprints: a lookup by tokens finds none")
    }
}
