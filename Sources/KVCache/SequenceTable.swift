/// Live sequences in fixed slots: id directory, lengths, chain state and block tables, in flat
/// arrays allocated once (`maxSeqs` slots), so that appending allocates nothing here (a
/// sequence's token-eviction state grows apart, `EvictionState.reserve(appending:)`).
///
/// Invariant for a live slot: the block table holds `ceil(length / blockTokens)` blocks; the
/// tail buffer holds the tokens of the last, partial block (`length % blockTokens` of them);
/// `lastHash` is the chain hash of the last full block whose hash is known (the root of the
/// sequence's salt when there is none, `BlockHash.root`: 0 without a salt; read only when
/// `indexesAppends`, and then every block's is known), `lastFingerprint` its `BlockFingerprint`
/// (0 when unknown: a prompt given by hashes); the blocks at
/// `unscheduled` are full and used, each prepared (`BlockPool.prepare`) unless a fork sharing it
/// indexed it meanwhile (or an abort of that fork took it out again: its hash is then 0 and
/// it is never indexed). While a sequence is swapped out its table holds disk slots, and the
/// hashes of its `unscheduled` blocks are kept by the swap-out queue
/// (`SwapOutQueue.takePrepared`) until the swap-in prepares the blocks it reads them into.
///
/// A slot may be *detached* (`detach`): its sequence was freed while disk reads into its memory
/// were still in flight, so its id is gone from the directory (a new sequence may take it) and
/// it is not counted live, but the slot keeps its blocks, ranges and state until the engine
/// closes it once they landed (`OffloadCoordinator.processCompletions`).
final class SequenceTable {
    let maxSeqs: Int
    let maxBlocks: Int
    let blockTokens: Int
    /// log2(`blockTokens`) when it is a power of two (the usual shapes), else -1: `blockIndex`.
    private let blockShift: Int
    private let directory: U64Table
    private let freeSlots: UnsafeMutablePointer<Int32>
    private var freeTop: Int
    /// Per slot: the sequence id.
    let ids: UnsafeMutablePointer<UInt64>
    /// Per slot: tokens held.
    let lengths: UnsafeMutablePointer<Int>
    /// Per slot: chain hash of the last full block.
    let lastHash: UnsafeMutablePointer<UInt64>
    /// Per slot: the fingerprint of the last full block (or the salt's root), 0 when unknown.
    let lastFingerprint: UnsafeMutablePointer<UInt64>
    /// Per slot: whether blocks filled by appends are hashed and indexed (false when the
    /// prompt was given by hashes and its partial block's tokens, or some full block's hash,
    /// are unknown).
    let indexesAppends: UnsafeMutablePointer<Bool>
    /// Per slot: the block-table entries of prompt blocks whose hashes are prepared but not yet
    /// offered to the prefix index, because the server has not scheduled their tokens
    /// (`EngineConfig.indexOnSchedule`; Engine+Schedule.swift). Empty otherwise.
    let unscheduled: UnsafeMutablePointer<Range<Int>>
    /// Per slot: `blockTokens` entries, the tokens of the partial block.
    let tails: UnsafeMutablePointer<Int32>
    /// Per slot: `blockTokens` entries, the tokens of the last full block, valid while
    /// `previousKnown`, with `previousParent` the chain hash before it (its parent, or the
    /// salt's root) and `previousParentFingerprint` its fingerprint: what a truncation into
    /// that block needs to hash it again once appends refill it (`Engine.truncate`).
    let previous: UnsafeMutablePointer<Int32>
    let previousParent: UnsafeMutablePointer<UInt64>
    let previousParentFingerprint: UnsafeMutablePointer<UInt64>
    let previousKnown: UnsafeMutablePointer<Bool>
    /// Per slot: where the create's cached tokens came from (`Engine.prefixSources`), set by
    /// the create (a fork copies its parent's) and kept unchanged until the slot closes.
    let prefixSources: UnsafeMutablePointer<PrefixSources>
    /// Per slot: `maxBlocks` entries, the block table.
    let blocks: UnsafeMutablePointer<Int32>
    /// The slots detached now (`detach`, until `close`), the first `detachedCount` entries, in
    /// no order, so that completions look at them without scanning every slot
    /// (`OffloadCoordinator.finishDeferredFrees`); with `detachedAt`, 8 bytes per slot.
    private let detachedList: UnsafeMutablePointer<Int32>
    /// Per slot: its index in `detachedList` while detached, else -1 (`close` removes it in O(1)).
    private let detachedAt: UnsafeMutablePointer<Int32>
    /// Slots detached now.
    private(set) var detachedCount = 0

    /// Throws `outOfMemory` when its arrays cannot be allocated (`CheckedAllocations`): the
    /// block tables take 4 x max_seqs x ceil(max_seq_tokens / block_tokens) bytes (up to 1 GiB),
    /// the partial and last full blocks' tokens 8 x max_seqs x block_tokens.
    init(maxSeqs: Int, maxBlocks: Int, blockTokens: Int) throws(KVError) {
        self.maxSeqs = maxSeqs
        self.maxBlocks = maxBlocks
        self.blockTokens = blockTokens
        blockShift = blockTokens & (blockTokens - 1) == 0 ? blockTokens.trailingZeroBitCount : -1
        let a = CheckedAllocations()
        let perSlot = "the per-sequence state (max_seqs \(maxSeqs))"
        blocks = try a.allocate(count: maxSeqs * maxBlocks,
                                "the block tables (max_seqs x max_seq_tokens / block_tokens: \(maxSeqs) x \(maxBlocks) entries)")
        tails = try a.allocate(count: maxSeqs * blockTokens, "the partial blocks' tokens (max_seqs x block_tokens: \(maxSeqs) x \(blockTokens))")
        previous = try a.allocate(count: maxSeqs * blockTokens, "the last full blocks' tokens (max_seqs x block_tokens: \(maxSeqs) x \(blockTokens))")
        freeSlots = try a.allocate(count: maxSeqs, perSlot)
        for i in 0..<maxSeqs { freeSlots[i] = Int32(maxSeqs - 1 - i) }
        freeTop = maxSeqs
        ids = try a.allocate(count: maxSeqs, perSlot)
        lengths = try a.allocate(repeating: 0, count: maxSeqs, perSlot)
        lastHash = try a.allocate(count: maxSeqs, perSlot)
        lastFingerprint = try a.allocate(count: maxSeqs, perSlot)
        indexesAppends = try a.allocate(repeating: true, count: maxSeqs, perSlot)
        unscheduled = try a.allocate(repeating: 0..<0, count: maxSeqs, perSlot)
        previousParent = try a.allocate(count: maxSeqs, perSlot)
        previousParentFingerprint = try a.allocate(count: maxSeqs, perSlot)
        previousKnown = try a.allocate(repeating: false, count: maxSeqs, perSlot)
        prefixSources = try a.allocate(repeating: .zero, count: maxSeqs, perSlot)
        detachedList = try a.allocate(count: maxSeqs, perSlot)
        detachedAt = try a.allocate(repeating: -1, count: maxSeqs, perSlot)
        directory = try U64Table(maxEntries: maxSeqs, perSlot)
        a.keep()
    }

    deinit {
        freeSlots.deallocate()
        ids.deallocate()
        lengths.deallocate()
        lastHash.deallocate()
        lastFingerprint.deallocate()
        previous.deallocate()
        previousParent.deallocate()
        previousParentFingerprint.deallocate()
        previousKnown.deallocate()
        indexesAppends.deallocate()
        unscheduled.deallocate()
        tails.deallocate()
        prefixSources.deallocate()
        blocks.deallocate()
        detachedList.deallocate()
        detachedAt.deallocate()
    }

    /// Live sequences (detached slots are not).
    var count: Int { maxSeqs - freeTop - detachedCount }
    /// True when no slot is free (detached slots are not free).
    var isFull: Bool { freeTop == 0 }

    /// The slot of sequence `id`, or -1.
    @inline(__always) func slot(of id: UInt64) -> Int { Int(directory.find(id)) }

    /// Takes the most recently freed slot (the top of the free stack) for `id`, empty, and
    /// returns it. The table must not be full (`isFull`). O(1).
    func open(_ id: UInt64) -> Int {
        freeTop -= 1
        let slot = Int(freeSlots[freeTop])
        directory.insert(id, Int32(slot))
        ids[slot] = id
        lengths[slot] = 0
        lastHash[slot] = 0
        lastFingerprint[slot] = 0
        indexesAppends[slot] = true
        unscheduled[slot] = 0..<0
        previousKnown[slot] = false
        return slot
    }

    /// Records `tokens` (`blockTokens` of them) as `slot`'s last full block, hashed from
    /// `parent` and fingerprinted from `parentFingerprint`. O(blockTokens).
    @inline(__always) func setPrevious(_ slot: Int, tokens: UnsafePointer<Int32>, parent: UInt64, parentFingerprint: UInt64) {
        (previous + slot * blockTokens).update(from: tokens, count: blockTokens)
        previousParent[slot] = parent
        previousParentFingerprint[slot] = parentFingerprint
        previousKnown[slot] = true
    }

    /// Copies `from`'s chain state (last hash and fingerprint, whether appends are indexed,
    /// the last full block's tokens, the partial block's) to `to` (a fork). O(blockTokens).
    func copyChain(from: Int, to: Int) {
        lastHash[to] = lastHash[from]
        lastFingerprint[to] = lastFingerprint[from]
        indexesAppends[to] = indexesAppends[from]
        tail(to).update(from: tail(from), count: blockTokens)
        (previous + to * blockTokens).update(from: previous + from * blockTokens, count: blockTokens)
        previousParent[to] = previousParent[from]
        previousParentFingerprint[to] = previousParentFingerprint[from]
        previousKnown[to] = previousKnown[from]
    }

    /// Takes live `slot`'s id out of the directory (`slot(of:)` no longer finds it; a new
    /// sequence may take the id) while the slot stays taken, its contents untouched, until
    /// `close`. O(1).
    func detach(_ slot: Int) {
        precondition(detachedAt[slot] < 0, "slot \(slot) detached twice")
        directory.remove(ids[slot])
        detachedList[detachedCount] = Int32(slot)
        detachedAt[slot] = Int32(detachedCount)
        detachedCount += 1
    }

    /// True when `slot` is detached (freed, waiting for its reads, until `close`). O(1).
    func isDetached(_ slot: Int) -> Bool { detachedAt[slot] >= 0 }

    /// The `i`th of the `detachedCount` slots detached now, in no order; closing one moves the
    /// last into its place (so a loop that may close them runs from the last down). O(1).
    func detachedSlot(_ i: Int) -> Int { Int(detachedList[i]) }

    /// Returns `slot` (live or detached) to the free slots. O(1).
    func close(_ slot: Int) {
        let at = Int(detachedAt[slot])
        if at >= 0 {
            detachedCount -= 1
            let last = detachedList[detachedCount]
            detachedList[at] = last
            detachedAt[Int(last)] = Int32(at)
            detachedAt[slot] = -1
        } else {
            directory.remove(ids[slot])
        }
        lengths[slot] = 0
        freeSlots[freeTop] = Int32(slot)
        freeTop += 1
    }

    /// The block table of `slot`.
    @inline(__always) func table(_ slot: Int) -> UnsafeMutablePointer<Int32> { blocks + slot * maxBlocks }
    /// The tail buffer of `slot`.
    @inline(__always) func tail(_ slot: Int) -> UnsafeMutablePointer<Int32> { tails + slot * blockTokens }
    /// Blocks in `slot`'s table.
    @inline(__always) func blockCount(_ slot: Int) -> Int { blocks(holding: lengths[slot]) }
    /// The block position of token `position` (>= 0): `position / blockTokens`, a shift when
    /// `blockTokens` is a power of two: every append and block-table call takes it, and a
    /// 64-bit division costs tens of cycles.
    @inline(__always) func blockIndex(_ position: Int) -> Int { blockShift >= 0 ? position >> blockShift : position / blockTokens }
    /// Blocks holding `tokens` tokens: ceil(tokens / blockTokens).
    @inline(__always) func blocks(holding tokens: Int) -> Int { blockIndex(tokens + blockTokens - 1) }
}
