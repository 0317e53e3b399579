import Testing
@testable import KVCache

/// The order of `Engine.indexEvents`' memory part: every block after its parent when the memory
/// index holds that parent, as a tree consumer rebuilding from the dump needs (Dynamo's radix
/// tree stores a block only under a parent it already holds). Block ids follow no chain order
/// once allocations reuse evicted blocks, so a dump in block order listed children first.
@Suite("Index dump order")
struct IndexDumpOrderTests {
    /// Seeded random creates (four shared 4-block system prefixes, random tails from a small
    /// vocabulary, so appends and prompts meet in shared chains), appends, frees, truncations
    /// and trims, at a budget small enough that allocations evict cached blocks; after every
    /// step the dump's memory part is the memory index, each block with its parent, and lists
    /// each block after its parent unless the parent is absent from the dump. The run must
    /// reach dumps where a block's id is below its parent's (where block order fails).
    @Test(arguments: [Layout.paged, .contiguous])
    func everyDumpedBlockFollowsItsParentInMemory(layout: Layout) throws {
        let e = try Engine(smallConfig(layout, memoryBytes: 64 << 10))
        var rng = SplitMix64(seed: 0x5EED_0047)
        func below(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        var live: [UInt64: Int] = [:]  // seq -> length
        var childBeforeParentId = 0, evictions = 0, misordered = 0, firstMisordered = ""
        for step in 0..<1500 {
            let seq = UInt64(below(12))
            if live[seq] == nil {
                let system = Int32(below(4))
                let prompt = (0..<16).map { system &* 100 &+ Int32($0) } + (0..<(1 + below(40))).map { _ in Int32(1000 + below(6)) }
                if (try? e.createSequence(seq, tokens: prompt)) != nil { live[seq] = prompt.count }
            } else {
                switch below(6) {
                case 0:
                    try e.free(seq)
                    live[seq] = nil
                case 1:  // contiguous may refuse, out of memory, to copy the page of the cut
                    let n = 1 + below(live[seq]!)
                    if (try? e.truncate(seq, to: n)) != nil { live[seq] = n }
                case 2 where below(8) == 0:
                    try e.trim()
                default:
                    let more = (0..<(1 + below(9))).map { _ in Int32(1000 + below(6)) }
                    if live[seq]! + more.count <= 200, (try? e.append(seq, tokens: more)) != nil {
                        live[seq]! += more.count
                    } else {
                        try e.free(seq)
                        live[seq] = nil
                    }
                }
            }
            _ = drain(e)
            var block: [UInt64: Int32] = [:], index: [UInt64: UInt64] = [:]
            for b in 0..<Int32(e.blocks.capacity) where e.blocks.isIndexed(b) {
                block[e.blocks.hash(of: b)] = b
                index[e.blocks.hash(of: b)] = e.blocks.parent(of: b)
            }
            let dump = e.indexEvents()
            #expect(dump.first == memoryTierCleared)
            let stored = dump.dropFirst()
            #expect(stored.allSatisfy { $0.kind == .blockStored && $0.tier == KVEvent.memoryTier })
            #expect(Dictionary(stored.map { ($0.blockHash, $0.parentHash) }, uniquingKeysWith: { a, _ in a }) == index
                    && stored.count == index.count, "step \(step): the dump is the memory index")
            var listed = Set<UInt64>(), beforeParent = 0
            for event in stored {
                let parentListed = index[event.parentHash] != nil
                if parentListed && !listed.contains(event.parentHash) { beforeParent += 1 }
                if parentListed && block[event.blockHash]! < block[event.parentHash]! { childBeforeParentId += 1 }
                listed.insert(event.blockHash)
            }
            if beforeParent > 0 && misordered == 0 { firstMisordered = "step \(step): \(beforeParent) of \(stored.count)" }
            if beforeParent > 0 { misordered += 1 }
            evictions = Int(e.stats().blocksEvicted)
        }
        #expect(misordered == 0, "dumps listing blocks before their parent; the first at \(firstMisordered)")
        #expect(childBeforeParentId > 100, "block ids out of chain order (\(childBeforeParentId)): block order fails")
        #expect(evictions > 100, "allocations evicted cached blocks (\(evictions))")
    }
}
