/// Truncation: a sequence gives back its last tokens (rejected speculative-decoding drafts, a
/// regenerated answer), keeping its prefix, its blocks' sharing and its place in the prefix
/// index.
extension Engine {
    /// Shrinks `seq` to its first `tokens` positions, `1...` the positions it has seen (its
    /// length, unless it has token-eviction state: then `EvictionState.nextPosition`; that
    /// count is a no-op). The server then appends from there as after any append; later
    /// appends take positions from `tokens` on. A speculative decoder at position P that
    /// appended k drafts (P..<P+k) and accepted a calls `truncate(seq, to: P + a)`.
    ///
    /// Without token-eviction state, or observed but never compacted (positions are slots):
    /// - Blocks wholly past the cut are released, last first, as `free` releases them (their
    ///   memory stays committed for the appends that follow: contiguous pages past the cut leave
    ///   the budget but stay mapped until memory is needed or `trim`). Paged: a
    ///   block the prefix index holds stays cached (its K/V are those of the tokens it was
    ///   hashed from, draft tokens included, so it stays correct for them), unless the block
    ///   the cut falls in leaves the index (below): then those only this sequence holds leave
    ///   it too, children first, since no chain reaches them. Contiguous: one that only this
    ///   sequence holds leaves the index instead, since its bytes are the slot's pages, which
    ///   appends rewrite. Either way a block another sequence holds stays indexed, and so do
    ///   cached blocks of other branches under the cut block (their parent then unindexed).
    /// - The block the cut falls in keeps its first tokens. Appends will write the rest of it,
    ///   so it must not stay indexed: held by this sequence alone it leaves the index
    ///   (`blockRemoved`); shared with a fork or other prompts the sequence gets a copy of its
    ///   first tokens (contiguous: a new logical block; the bytes are the slot's), and the
    ///   others keep it. Contiguous: the page holding the cut is copied too when anything but
    ///   the slot and its own indexed blocks before the cut holds it (a fork's mapping, a
    ///   block another sequence holds); a spec-decoding cut usually needs no copy.
    /// - Appends keep being indexed when the cut falls in the partial last block or the last
    ///   full block (whose tokens the engine keeps); a cut further back stops the sequence
    ///   indexing its later blocks (their tokens before the cut are unknown to the engine).
    ///
    /// Compacted (slots hold positions in any order, Engine+Compaction.swift): every layer, and every
    /// head row per head, keeps exactly its tokens at positions below `tokens` (those a
    /// compaction evicted have nothing to remove); kept tokens past the row's new length fill
    /// the holes below it, each with its bytes (none moves for a cut past every compacted
    /// token, the spec-decoding case: the removed tokens are the last slots). The sequence's
    /// length becomes the longest layer; blocks past it are released (an exclusive indexed one
    /// leaves the index), and every block or page a moved token or a later append writes is
    /// made the sequence's own as in `compact` (a block is copied when a fork or the index
    /// shares it; contiguous, a page by the rule of the cut page above).
    /// It indexes no appends, as after any compaction.
    ///
    /// Eviction state (both cases): the removed tokens' positions and scores go; the kept
    /// tokens keep theirs (attention observed while the removed tokens were there stays
    /// credited: the server chooses what it observes); the low-score records follow, so a
    /// following observe and compaction choose exactly as for a sequence that never had the
    /// removed tokens (given the same observations). Episodic: segments wholly past the cut are
    /// dropped, the others end at it; with a disk tier the offloaded tokens at or past it are
    /// dropped from disk (each record's pin goes with its last token).
    ///
    /// Throws `notFound`; `invalidArgument` (tokens outside `1...` the positions seen, a
    /// swapped-out sequence, one whose disk reads (swap-in, prefix hit, episodic restores) have
    /// not all landed: truncate once `ready`, a cut below prompt blocks not yet scheduled); `io`
    /// (a failed disk read spoiled it, `usableSlot`);
    /// `unsupported`, eviction state only (`EvictionState.planTruncation`: per head, the heads
    /// of a layer would keep different counts, which only a cut below compacted positions can
    /// cause; a layer would keep no token; a segment wholly past the cut was already clustered
    /// by a focus); `outOfMemory` (a block or page the truncation must copy finds no room;
    /// only once no swap-out is pending: it waits for them first, `lockedAllocating`).
    /// Each changes nothing: contiguous, the page holding the cut is copied (when another
    /// holder may share it) before anything else changes, so a commit or mapping the OS refuses
    /// there is such an `outOfMemory` too. Compacted, a system call failing while a page is
    /// copied is reported as by `compact`.
    /// Cost: one release per block past the cut; contiguous, O(1) counts for the cut's page
    /// when they prove it the slot's own (`ContiguousMemory.holdsAlone`, a spec-decoding cut's
    /// usual case), else a scan of the blocks on it, and at most one page copy per tensor.
    /// With eviction state add O(rows) for a cut past every compacted position
    /// (`EvictionState.tailFrom`: the drafts since the last compaction or focus), else
    /// O(resident slots) per row and the moves and copies of `compact`. Compacted, a cut that
    /// moves nothing whose appends' blocks (and, contiguous, pages) counts prove the sequence's
    /// own (`appendsWriteOwnMemory`: unshared, unindexed; the spec-decoding case) only releases
    /// what lies past the new length, without `makeWritable`'s marks and scans. Measured
    /// (docs/benchmarks.md, "Speculative decoding"): a round of 8 drafts rolled back to 3 costs
    /// 2.2x appending only the 3 paged (~67 ns more), 1.65x contiguous (~105 ns more), 2.3x
    /// compacted paged (~126 ns more, over a 3-token append that its eviction state makes ~84 ns;
    /// 2026-11-22 14:21); compacted ~92 ns more since a cut that moves nothing skips
    /// `makeWritable` (1.94-1.98x against 2.39-2.65x for the general path, alternated runs,
    /// 2026-11-22 19:20; docs/benchmarks.md).
    public func truncate(_ seq: UInt64, to tokens: Int) throws(KVError) {
        try lockedAllocating { () throws(KVError) in
            let slot = try usableSlot(seq)
            let length = sequences.lengths[slot], state = evictionStates[slot], seen = state?.nextPosition ?? length
            guard tokens >= 1 && tokens <= seen else {
                throw .invalid("cannot truncate sequence \(seq) of \(seen) positions to \(tokens); keep 1...\(seen)")
            }
            guard tokens < seen else { return }
            if let offload, !offload.resident(slot) {
                throw .invalid("sequence \(seq) is not ready: disk reads are still filling its blocks; truncate once it is")
            }
            // Refusals of the eviction state first; observed but never compacted, positions are
            // slots: the plan moves nothing, and the blocks go as without state.
            if let state {
                let newLength = try state.planTruncation(below: tokens)
                if state.compactions > 0 {
                    try compactMemory(slot: slot, state: state, oldLength: length, newLength: newLength, returnMemory: false) {}
                    applyTruncation(slot: slot, state: state, below: tokens)
                    return
                }
            }
            let unscheduled = sequences.unscheduled[slot]
            if !unscheduled.isEmpty && tokens < unscheduled.upperBound * bt {
                throw .invalid("truncating sequence \(seq) to \(tokens) tokens cuts into prompt blocks not scheduled yet "
                               + "(below token \(unscheduled.upperBound * bt)); schedule them first")
            }
            // Contiguous: appends will write the page holding the cut from the cut on, where a
            // fork's tokens or a cached block's (those past the cut included, once released)
            // may lie; it must be the slot's own by then. It is copied when something may hold
            // it besides the sequence, by the rule of `isHeldElsewhere` counting only blocks the
            // sequence alone holds as its own (an upper bound: those it releases or unindexes
            // leave, the rest stay its own), so a cut page that only its own indexed blocks hold
            // needs no copy; and before anything else changes, so that a copy the budget or the
            // OS refuses (a commit, a mapping) leaves the sequence as it was. (Copied after the
            // cut, a failed copy left the cut applied and the page shared: the next append
            // wrote into the fork's K/V; found by helper-119.) O(1) checks prove it the slot's
            // own (`holdsAlone`: only the slot's mapping and indexed blocks of its table hold
            // it) when every block from the cut on is the sequence's alone: those leave the
            // index with the cut, the rest are below it, where appends write nothing, shared or
            // not (an indexed block past the cut that another sequence keeps would keep its
            // bytes on the page that appends rewrite).
            let table = sequences.table(slot), count = sequences.blockCount(slot)
            let pageBytes = Int(config.pageBytes)
            let cutPage = contiguous != nil && tokens * config.tokenBytes % pageBytes != 0 ? tokens * config.tokenBytes / pageBytes : -1
            let cut = tokens / bt, offset = tokens % bt
            func ownFromTheCut() -> Bool {
                for i in cut..<count where blocks.references(table[i]) != 1 { return false }
                return true
            }
            let copyCutPage = cutPage >= 0 && !(contiguous!.holdsAlone(slot: slot, page: cutPage) && ownFromTheCut())
                && contiguous!.isHeldElsewhere(slot: slot, page: cutPage, table: table, blocks: count, own: { self.blocks.references(table[$0]) == 1 })
            if copyCutPage && !contiguous!.fits(1) {
                throw .outOfMemory("truncating sequence \(seq) must copy the page it cuts, and the budget has no page free")
            }
            // A partial last block is never indexed (a swap-out would write it as a full one):
            // the cut block, shared, is replaced by a copy; held alone, it leaves the index.
            let copyCut = offset != 0 && blocks.references(table[cut]) > 1
            if copyCut {
                var freed = 0
                for i in (cut + 1)..<count where blocks.references(table[i]) == 1 { freed += 1 }
                guard blocks.available + freed >= 1 else {
                    throw .outOfMemory("truncating sequence \(seq) must copy the block it cuts (shared), and no block is available")
                }
            }
            // The blocks from the cut on stop standing for an indexed copy before a page or block
            // is taken, which may evict the copy (`BlockPool.endDuplicate`).
            for i in cut..<count { blocks.endDuplicate(table[i]) }
            if copyCutPage {  // a refused copy maps the old page again (`unshare`) and commits nothing more
                let committed = committedBytes
                do throws(KVError) { try contiguous!.unshare(slot: slot, pages: CollectionOfOne(cutPage)) } catch {
                    giveBackCommitted(since: committed)
                    throw error
                }
            }
            // The copy's block is taken before anything is released when one is available, so
            // that a commit failing (the arena's, under memory pressure) changes nothing; else
            // its room is a block this cut releases, whose memory stays committed (the arena
            // reuses held groups first): taken after them, it cannot fail.
            var fresh: Int32 = -1
            if copyCut && blocks.available > 0 { fresh = try blocks.allocate() }
            let kept = cut + (offset != 0 ? 1 : 0)
            // The cut block leaves the index (held alone); then no chain reaches the blocks past it.
            let cutLeaves = offset != 0 && !copyCut && blocks.isIndexed(table[cut])
            for i in stride(from: count - 1, through: kept, by: -1) {
                // A block past the cut that only this sequence holds leaves the index instead of
                // staying cached: contiguous, always, since its bytes are in the slot's pages,
                // which appends rewrite (so the page of the cut needs no copy for it); paged, when
                // the cut block leaves, so that no indexed block outlives its parent (as in the
                // contiguous layout; a tree consumer of the events drops a removed block's subtree).
                if (contiguous != nil || cutLeaves) && blocks.references(table[i]) == 1 && blocks.isIndexed(table[i]) {
                    blocks.unindexUsed(table[i])
                }
                blocks.release(table[i])
            }
            if copyCut {
                if fresh < 0 { fresh = try blocks.allocate() }
                paged?.copy(from: table[cut], to: fresh, tokens: offset)
                blocks.release(table[cut])
                table[cut] = fresh
            } else if offset != 0 {
                blocks.unindexUsed(table[cut])
            }
            rewindChain(slot: slot, from: length, to: tokens)
            if let state { applyTruncation(slot: slot, state: state, below: tokens) }
            sequences.lengths[slot] = tokens
            contiguous?.release(slot: slot, past: tokens)  // kept mapped: the next drafts cross the page again
        }
    }

    /// Applies `state`'s planned truncation of `slot` to the positions below `cut`, dropping
    /// the offloaded tokens at or past it from disk, and sets the sequence's length to its
    /// longest layer.
    private func applyTruncation(slot: Int, state: EvictionState, below cut: Int) {
        state.applyTruncation(below: cut) { row, position in dropOffloaded(offload!.offloadedTokens[slot]!, row: row, position: position) }
        sequences.lengths[slot] = state.maxLength
    }

    /// Sets `slot`'s chain state for a cut from `length` to `tokens` tokens: the last full
    /// block's hash and the partial block's tokens, or no more indexed appends when the cut
    /// falls before the last full block (or in it, with its tokens unknown).
    private func rewindChain(slot: Int, from length: Int, to tokens: Int) {
        guard sequences.indexesAppends[slot] else { return }
        let lastFull = length / bt - 1, cut = tokens / bt
        if cut > lastFull { return }  // in the partial block: its first tokens are in the tail already
        guard cut == lastFull && sequences.previousKnown[slot] else {
            sequences.indexesAppends[slot] = false
            return
        }
        sequences.tail(slot).update(from: sequences.previous + slot * bt, count: tokens % bt)
        sequences.lastHash[slot] = sequences.previousParent[slot]
        sequences.lastFingerprint[slot] = sequences.previousParentFingerprint[slot]
        sequences.previousKnown[slot] = false
    }
}
