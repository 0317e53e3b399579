import Testing
@testable import KVCache

/// `append(_:tokens:blockHashes:)`: a sequence known by block hashes grows chunk by chunk (a
/// server's chunked prefill, vLLM allocating each chunk's blocks as it schedules it), holding
/// only the blocks of its chunks so far, and ends up indexing exactly what one creation of the
/// whole prompt indexes.
@Suite("Appending by block hashes, both layouts")
struct HashedAppendTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    /// The (hash, parent) pairs of the `blockStored` events among `events`.
    private func stored(_ events: [KVEvent]) -> [[UInt64]] {
        events.filter { $0.kind == .blockStored }.map { [$0.blockHash, $0.parentHash] }
    }

    /// The (hash, parent) pairs of blocks `range` of chain `h`.
    private func pairs(_ h: [UInt64], _ range: Range<Int>) -> [[UInt64]] {
        range.map { [h[$0], $0 > 0 ? h[$0 - 1] : 0] }
    }

    /// A 10-full-block prompt (41 tokens of 4-token blocks) created with its first 9 tokens and
    /// grown by chunks of 10, 10 and 12: after each chunk it holds only the blocks its tokens
    /// cover, and the blocks each chunk completes are indexed under the chain's hashes, in
    /// order, each with its parent; the whole then hits as the prompt created at once does.
    @Test(arguments: layouts)
    func chunksHoldOnlyTheirBlocksAndIndexTheChain(layout: Layout) throws {
        let e = try Engine(smallConfig(layout))
        let prompt = tokens(41, seed: 7)
        let h = BlockHash.chain(prompt, blockTokens: 4)
        #expect(h.count == 10)
        _ = drain(e)
        try h.withUnsafeBufferPointer { chain in
            #expect(try e.createSequence(1, blockHashes: UnsafeBufferPointer(rebasing: chain[0..<2]), tokens: 9) == 0)
            #expect(e.blocksUsed == 3 && stored(drain(e)) == pairs(h, 0..<2))
            var length = 9
            for (chunk, completed) in [(10, 2..<4), (10, 4..<7), (12, 7..<10)] {
                try e.append(1, tokens: chunk, blockHashes: chain)
                length += chunk
                #expect(try e.length(1) == length)
                #expect(e.blocksUsed == UInt64((length + 3) / 4), "after \(length) tokens")
                #expect(stored(drain(e)) == pairs(h, completed), "after \(length) tokens")
            }
        }
        #expect(cachedByHash(e, prompt) == 40)
        #expect(try createByHash(e, 2, prompt) == 40)
    }

    /// Indexing on schedule, the blocks a growth completes are prepared as a created prompt's
    /// are: none is indexed before `schedule` reaches it, and a second create hits nothing
    /// until then.
    @Test(arguments: layouts)
    func indexingOnScheduleTheGrownBlocksWaitForSchedule(layout: Layout) throws {
        var c = smallConfig(layout)
        c.indexOnSchedule = true
        let e = try Engine(c)
        let prompt = tokens(33, seed: 8)
        let h = BlockHash.chain(prompt, blockTokens: 4)
        _ = drain(e)
        try h.withUnsafeBufferPointer { chain in
            _ = try e.createSequence(1, blockHashes: UnsafeBufferPointer(rebasing: chain[0..<2]), tokens: 10)
            try e.schedule(1, tokens: 10)
            #expect(stored(drain(e)) == pairs(h, 0..<2))
            try e.append(1, tokens: 12, blockHashes: chain)
            #expect(stored(drain(e)).isEmpty, "blocks 2...4 wait for their schedule")
            #expect(cachedByHash(e, prompt) == 8)
            try e.schedule(1, tokens: 18)
            #expect(stored(drain(e)) == pairs(h, 2..<4), "block 4 is not wholly scheduled")
            try e.append(1, tokens: 11, blockHashes: chain)  // 33 tokens: blocks 5...7 prepared too
            #expect(stored(drain(e)) == pairs(h, 4..<5), "appending means what came before was scheduled")
            try e.schedule(1, tokens: 33)
            #expect(stored(drain(e)) == pairs(h, 5..<8))
        }
        #expect(cachedByHash(e, prompt) == 32)
    }

    /// Blocks past the given chain are not indexed, and appends afterwards index what they
    /// fill only when the sequence ends on a block boundary with every block's hash given, as
    /// after a creation by hashes.
    @Test func blocksPastTheChainStayUnindexedAndAppendsFollowCreationsRule() throws {
        let e = try Engine(smallConfig(.paged))
        let prompt = tokens(24, seed: 9)
        let h = BlockHash.chain(prompt, blockTokens: 4)
        _ = drain(e)
        try h.withUnsafeBufferPointer { chain in
            _ = try e.createSequence(1, blockHashes: UnsafeBufferPointer(rebasing: chain[0..<1]), tokens: 5)
            try e.append(1, tokens: 11, blockHashes: UnsafeBufferPointer(rebasing: chain[0..<3]))  // 16 tokens, chain of 3
            #expect(stored(drain(e)) == pairs(h, 0..<3), "block 3 is past the chain")
            try e.append(1, tokens: [1, 2, 3, 4])
            #expect(stored(drain(e)).isEmpty, "block 3's hash is unknown: no later block is indexed")

            _ = try e.createSequence(2, blockHashes: UnsafeBufferPointer(rebasing: chain[0..<0]), tokens: 2)
            try e.append(2, tokens: 6, blockHashes: chain)  // 8 tokens: blocks 0 and 1 given (seq 1 indexed them)
            _ = drain(e)
            let next: [Int32] = [5, 6, 7, 8]
            try e.append(2, tokens: next)
            #expect(stored(drain(e)) == [[next.withUnsafeBufferPointer { BlockHash.block(parent: h[1], tokens: $0) }, h[1]]],
                    "on a boundary with every hash given, appends are indexed, chained from the last hash")
        }
    }

    /// Refusals change nothing: a hash of 0, a negative count, no room (the blocks a growth
    /// needs are checked before anything changes), past `maxSeqTokens`, an unknown sequence.
    @Test func refusalsChangeNothing() throws {
        var c = smallConfig(.paged)
        c.metadataOnly = true
        c.memoryBytes = 4 * UInt64(c.blockBytes * c.tensors)  // 4 blocks of 4 tokens
        let e = try Engine(c)
        #expect(e.stats().blocksTotal == 4)
        let h = BlockHash.chain(tokens(20, seed: 10), blockTokens: 4)
        let storage = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: h.count + 2)
        defer { storage.deallocate() }
        _ = storage.initialize(from: h + [h[0], 0])
        let chain = UnsafeBufferPointer(rebasing: storage[0..<h.count])
        let badChain = UnsafeBufferPointer(rebasing: storage[h.count...])  // [h0, 0]
        _ = try e.createSequence(1, blockHashes: UnsafeBufferPointer(rebasing: chain[0..<1]), tokens: 6)
        _ = drain(e)
        #expect(thrown { () throws(KVError) in try e.append(1, tokens: 3, blockHashes: badChain) }?.code == .invalidArgument)
        #expect(thrown { () throws(KVError) in try e.append(1, tokens: -1, blockHashes: chain) }?.code == .invalidArgument)
        #expect(thrown { () throws(KVError) in try e.append(1, tokens: 11, blockHashes: chain) }?.code == .outOfMemory, "17 tokens need 5 blocks")
        #expect(thrown { () throws(KVError) in try e.append(1, tokens: 4096, blockHashes: chain) }?.code == .invalidArgument)
        #expect(thrown { () throws(KVError) in try e.append(9, tokens: 1, blockHashes: chain) }?.code == .notFound)
        #expect(try e.length(1) == 6 && e.blocksUsed == 2 && drain(e).isEmpty)
        try e.append(1, tokens: 10, blockHashes: chain)
        #expect(try e.length(1) == 16 && e.blocksUsed == 4)
    }

    /// A sequence with token-eviction state is refused (its positions are not block positions
    /// once compacted), changing nothing; appending its tokens still works.
    @Test func aSequenceWithEvictionStateIsUnsupported() throws {
        var c = smallConfig(.paged)
        c.eviction = EvictionConfig(.heavyHitter)
        let e = try Engine(c)
        let h = BlockHash.chain(tokens(12, seed: 11), blockTokens: 4)
        try h.withUnsafeBufferPointer { chain in
            _ = try e.createSequence(1, blockHashes: UnsafeBufferPointer(rebasing: chain[0..<1]), tokens: 4)
            try observeAll(e, 1, [Float](repeating: 0.1, count: 2 * 4), n: 4)  // the state exists now
            _ = drain(e)
            let refused = thrown { () throws(KVError) in try e.append(1, tokens: 4, blockHashes: chain) }
            #expect(refused?.code == .unsupported && refused?.message.contains("token-eviction state") == true)
            #expect(try e.length(1) == 4 && e.blocksUsed == 1 && drain(e).isEmpty)
        }
        try e.append(1, tokens: [5])
        #expect(try e.length(1) == 5)
    }
}
