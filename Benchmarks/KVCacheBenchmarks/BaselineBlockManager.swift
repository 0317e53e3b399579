import KVCache

/// The baseline the engine's benchmarks are compared with: a block manager written the
/// straightforward way with Swift's standard collections, as a first implementation would be.
///
/// - Free blocks: an `Array` used as a stack (`popLast` / `append`, O(1)).
/// - Reference counts: an `Array<Int32>` indexed by block id (0 while free), as vLLM keeps
///   `ref_cnt` on each block (until 2026-11-24 a `Dictionary<Int32, Int>`, a hash lookup per
///   block that the engine's flat counts do not pay, which about doubled this baseline's
///   allocate+free and fork+free times).
/// - Sequences: `Dictionary<UInt64, Sequence>`, each with its block table as an `Array<Int32>`
///   and its length; updated in place through the dictionary's modify accessor (no copy).
/// - Prefix index: `Dictionary<UInt64, Int32>` from `BlockHash` chain hash to block; the
///   index holds one reference per indexed block and never evicts. Only prompts are indexed
///   (`appendToken` takes no token, so it cannot hash the blocks it fills).
///
/// It is fair, not deliberately slow: every operation is O(1) amortized or O(blocks) like the
/// engine's, capacities are reserved up front, and it uses the same `BlockHash`. It does
/// less than the engine: no memory behind blocks, no lock, no LRU of cached blocks, no events.
/// Not thread-safe.
final class BaselineBlockManager {
    /// One sequence: its block table and how many tokens it holds.
    struct Sequence {
        var blocks: [Int32]
        var length: Int
    }

    let blockTokens: Int
    private(set) var freeBlocks: [Int32]
    private(set) var refCounts: [Int32]
    private(set) var sequences: [UInt64: Sequence] = [:]
    private(set) var prefixIndex: [UInt64: Int32] = [:]

    /// A manager of `capacity` blocks of `blockTokens` tokens, all free.
    init(capacity: Int, blockTokens: Int) {
        precondition(capacity > 0 && blockTokens > 0)
        self.blockTokens = blockTokens
        freeBlocks = (0..<Int32(capacity)).reversed()
        refCounts = Array(repeating: 0, count: capacity)
    }

    /// Takes a free block with one reference; nil when none is free.
    @inline(__always)
    func allocate() -> Int32? {
        guard let block = freeBlocks.popLast() else { return nil }
        refCounts[Int(block)] = 1
        return block
    }

    /// Drops one reference to `block`; the last one returns it to the free list.
    @inline(__always)
    func release(_ block: Int32) {
        precondition(refCounts[Int(block)] > 0, "release of free block \(block)")
        refCounts[Int(block)] -= 1
        if refCounts[Int(block)] == 0 { freeBlocks.append(block) }
    }

    /// Creates `id` with `tokens`: reuses indexed blocks of the leading full blocks, allocates
    /// the rest and indexes the new full blocks. Returns the cached prefix in tokens; nil when
    /// there are not enough free blocks (nothing changed then).
    func createSequence(_ id: UInt64, tokens: UnsafeBufferPointer<Int32>) -> Int? {
        precondition(sequences[id] == nil && tokens.count >= 1)
        let blockCount = (tokens.count + blockTokens - 1) / blockTokens
        let fullBlocks = tokens.count / blockTokens
        var table: [Int32] = []
        table.reserveCapacity(blockCount)
        var hashes: [UInt64] = []
        hashes.reserveCapacity(fullBlocks)
        var parent: UInt64 = 0
        for i in 0..<fullBlocks {
            parent = BlockHash.block(parent: parent, tokens: UnsafeBufferPointer(rebasing: tokens[i * blockTokens..<(i + 1) * blockTokens]))
            hashes.append(parent)
        }
        // Hits: leading indexed blocks, leaving at least one token to compute.
        while table.count < hashes.count, (table.count + 1) * blockTokens < tokens.count,
              let block = prefixIndex[hashes[table.count]] {
            table.append(block)
        }
        let hit = table.count
        guard freeBlocks.count >= blockCount - hit else { return nil }
        for block in table { refCounts[Int(block)] += 1 }
        for i in hit..<blockCount {
            let block = allocate()!
            table.append(block)
            if i < hashes.count {
                // The index holds its own reference, so an indexed block is never reused
                // while the index names it (this baseline never evicts).
                prefixIndex[hashes[i]] = block
                refCounts[Int(block)] += 1
            }
        }
        sequences[id] = Sequence(blocks: table, length: tokens.count)
        return hit * blockTokens
    }

    /// Appends one token to `id`, taking a new block when the last one is full.
    /// Returns false when `id` does not exist or no block is free (nothing changed then).
    /// One hash lookup; the sequence is mutated in place through `values`.
    @inline(__always)
    func appendToken(_ id: UInt64) -> Bool {
        guard let index = sequences.index(forKey: id) else { return false }
        if sequences.values[index].length % blockTokens == 0 {
            guard let block = allocate() else { return false }
            sequences.values[index].blocks.append(block)
        }
        sequences.values[index].length += 1
        return true
    }

    /// How many leading tokens of `tokens` are cached: walks the chain hashes of its full
    /// blocks through the index until the first miss (at most `tokens.count - 1`, like
    /// `Engine.cachedPrefixTokens`).
    func cachedPrefixTokens(_ tokens: UnsafeBufferPointer<Int32>) -> Int {
        guard tokens.count > 1 else { return 0 }
        var parent: UInt64 = 0
        var hit = 0
        while hit < (tokens.count - 1) / blockTokens {
            parent = BlockHash.block(parent: parent, tokens: UnsafeBufferPointer(rebasing: tokens[hit * blockTokens..<(hit + 1) * blockTokens]))
            if prefixIndex[parent] == nil { break }
            hit += 1
        }
        return hit * blockTokens
    }

    /// Creates `child` with a copy of `parent`'s block table, one more reference on each block.
    func fork(parent: UInt64, child: UInt64) -> Bool {
        guard let source = sequences[parent], sequences[child] == nil else { return false }
        var table: [Int32] = []
        table.reserveCapacity(source.blocks.count + 1)
        table.append(contentsOf: source.blocks)
        for block in table { refCounts[Int(block)] += 1 }
        sequences[child] = Sequence(blocks: table, length: source.length)
        return true
    }

    /// Frees `id`, releasing its reference on every block; indexed blocks stay cached (held by
    /// the index).
    @discardableResult
    func free(_ id: UInt64) -> Bool {
        guard let sequence = sequences.removeValue(forKey: id) else { return false }
        for block in sequence.blocks { release(block) }
        return true
    }
}
