/// Token eviction in the engine: the server reports attention (`observe`), the sequence's
/// policy decides which tokens stay, and `compact` moves their K/V in place.
///
/// After `compact`, layer `l` of a sequence holds `layerLength(l)` tokens in slots
/// `0..<layerLength(l)` of its memory (contiguous: from byte 0 of the layer's ranges; paged:
/// packed into the first blocks of the block table), each with exactly the K/V bytes it had;
/// `positions` says which original position each slot holds. Kept slots below the new length
/// stay where they are and kept slots past it fill the holes in slot order, so a step that
/// evicts e tokens moves at most e tokens per layer (attention is a sum over keys, so their
/// order does not matter; the positions tell the server each key's position id). Later
/// appends continue at `layerLength(l)` in every layer; `length(seq)` is the longest layer.
///
/// Prefix caching after eviction: a block whose bytes a compaction rewrites or drops no
/// longer holds what its chain hash describes, so when no other sequence holds it (the
/// index's entry is no holder) it leaves the prefix index (`blockRemoved`) and, if dropped,
/// its memory returns to the pool; a block another sequence also holds is copied before it
/// is written, so that one and the index keep the original bytes; contiguous, so is a page
/// that another sequence maps or a block other than the sequence's own unwritten ones holds
/// (`ContiguousMemory.isHeldElsewhere`: the bytes of the blocks written are stale anyway).
/// Untouched blocks (typically the leading ones, sinks included) stay indexed. A compacted
/// sequence indexes no block it fills later: its later K/V were computed over an evicted
/// context and match no full-context prefix.
extension Engine {
    /// A new eviction state for `slot` with `eviction`, sized for its current length.
    /// Allocates O(rows x max(length, 1024)) 4-byte words outside `memory_bytes`
    /// (`EvictionState.init`; kvcache.h "Memory outside memory_bytes"); throws
    /// `outOfMemory` naming the bytes when that fails.
    private func newEvictionState(_ slot: Int, _ eviction: EvictionConfig) throws(KVError) -> EvictionState {
        try EvictionState(layers: config.numLayers, heads: config.numKVHeads, config: eviction,
                        length: sequences.lengths[slot], maxCapacity: config.maxSeqTokens)
    }

    /// The eviction state of `slot`, created on first use from the engine's configuration
    /// (throws `outOfMemory` when that fails, creating nothing).
    private func evictionState(_ slot: Int) throws(KVError) -> EvictionState {
        if let s = evictionStates[slot] { return s }
        let s = try newEvictionState(slot, config.eviction)
        evictionStates[slot] = s
        return s
    }

    /// Runs `body` on the eviction state of `slot`; a state created for it is kept only when
    /// `body` succeeds, so that a refused call leaves the sequence as it was (no state, no
    /// memory). Costs what `evictionState` costs.
    private func withEvictionState<T>(_ slot: Int, _ body: (EvictionState) throws(KVError) -> T) throws(KVError) -> T {
        if let s = evictionStates[slot] { return try body(s) }
        let s = try newEvictionState(slot, config.eviction)
        let result = try body(s)
        evictionStates[slot] = s
        return result
    }

    /// The policy configuration `seq` uses: its own (`setEviction`) or the engine's.
    private func evictionConfig(_ slot: Int) -> EvictionConfig { evictionStates[slot]?.config ?? config.eviction }

    /// Overrides the engine's eviction configuration for `seq`. Allowed until its first
    /// compaction (observations so far are dropped; the layer sensitivity and segments the
    /// server gave are kept); afterwards only an equal configuration.
    /// The first configuration that offloads evictions (episodic, with a disk tier) maps the
    /// engine's open-record buffers (`reserveOpenRecords`).
    /// Throws `notFound`, `invalidArgument` (a bad field, or a change after compaction),
    /// `outOfMemory` (the new state or the open-record buffers cannot be allocated; the old
    /// state stays).
    public func setEviction(_ seq: UInt64, _ eviction: EvictionConfig) throws(KVError) {
        try eviction.validate()
        try locked { () throws(KVError) in
            let s = try slot(seq)
            if evictionConfig(s) == eviction { return }  // the configuration it has: nothing changes
            if let old = evictionStates[s], old.compactions > 0 {
                throw .invalid("sequence \(seq) was already compacted; its eviction configuration cannot change")
            }
            let state = try newEvictionState(s, eviction)
            try reserveOpenRecords(for: eviction)
            if let old = evictionStates[s] { state.takeServerInput(from: old) }
            evictionStates[s] = state
        }
    }

    /// Adds one step's attention for `seq`'s `layer`: `scores` is `[head][token]` row-major,
    /// `nHeads` (= `numKVHeads`) rows of `nTokens` slots (at most `layerLength`), each this
    /// step's attention probabilities summed over the step's queries. With policy `none` the
    /// scores are checked and dropped. Throws `notFound`, `invalidArgument` (layer, head count,
    /// too many tokens, a NaN, infinite or negative score, scores whose float sum overflows;
    /// whatever the policy, nothing changes: a refused first call leaves no eviction state),
    /// `outOfMemory` (the first call of an evicting sequence cannot allocate its eviction
    /// state; nothing changes). Cost: one pass over the scores (about two adds and a compare
    /// each); the first call of an evicting sequence allocates its eviction state
    /// (`newEvictionState`), later ones allocate nothing.
    public func observe(_ seq: UInt64, layer: Int, scores: UnsafePointer<Float>, nHeads: Int, nTokens: Int) throws(KVError) {
        try checkLayer(layer)
        try locked { () throws(KVError) in
            let s = try slot(seq)
            if evictionConfig(s).keepsEveryToken && evictionStates[s] == nil {
                try validateScores(scores, nHeads: nHeads, nTokens: nTokens, layerLength: sequences.lengths[s], layer: layer)
                return
            }
            try withEvictionState(s) { (state) throws(KVError) in
                try state.observe(layer: layer, scores: scores, nHeads: nHeads, nTokens: nTokens)
            }
        }
    }

    private func validateScores(_ scores: UnsafePointer<Float>, nHeads: Int, nTokens: Int, layerLength: Int, layer: Int) throws(KVError) {
        guard nHeads == config.numKVHeads else { throw .invalid("n_heads \(nHeads) is not num_kv_heads \(config.numKVHeads)") }
        guard nTokens <= layerLength else { throw .invalid("\(nTokens) tokens of scores for layer \(layer), which holds \(layerLength)") }
        var minimum: Float = 0, total: Float = 0
        for i in 0..<(nHeads * nTokens) {
            minimum = min(minimum, scores[i])
            total += scores[i]
        }
        guard minimum >= 0 && total.isFinite else {
            throw EvictionState.refusal(scores, heads: nHeads, n: nTokens, layer: layer)
        }
    }

    /// Applies `seq`'s policy down to `budgetTokens` per layer (the mean, with adaptive
    /// budgets) and compacts its K/V in place (see the extension's comment), releasing the
    /// blocks and pages no longer needed. Returns the sequence's new length (longest layer).
    /// Policy `none` changes nothing, nor does a budget every layer fits (the sequence stays
    /// uncompacted: its appends' blocks are still indexed, `setEviction` may still change its
    /// policy). Episodic with a disk tier (per layer or per head): the
    /// evicted row tokens' K/V are written to the tier and their eviction state kept
    /// (Engine+EpisodicOffload.swift); a token whose record cannot be written is dropped as
    /// without a tier (`tokensLost`).
    /// With a disk tier it first waits for the sequence's pending reads and, offloading, for a
    /// free staging buffer, without the lock (`awaitOffloadReady`).
    /// Throws `notFound`, `invalidArgument` (budget 0, or the sequence is swapped out), `io` (a
    /// failed disk read spoiled it, `usableSlot`), `outOfMemory` (a shared block or page must
    /// be copied and the budget has no room, or the OS refused a copy's memory, whose commits
    /// are given back, `giveBackCommitted`; then nothing changed; with swap-outs pending it
    /// first waits for them, `lockedAllocating`; or the first call of a sequence never
    /// observed cannot allocate its eviction state, `newEvictionState`). Cost: the policy's
    /// O(tokens) per layer, plus
    /// copying the moved tokens (at most the evicted count per layer) and any shared block or
    /// page written; offloading adds one copy of each evicted token's
    /// K/V (into staging, or into the sequence's open record) and one slot write per
    /// `tokensPerRecord` evicted row tokens: whole records at once, the rest when the open record
    /// fills up (or, when more sequences compact than records may be open, when its buffer is
    /// taken: at worst one slot write per compaction that evicts).
    @discardableResult
    public func compact(_ seq: UInt64, budgetTokens: Int) throws(KVError) -> Int {
        guard budgetTokens > 0 else { throw .invalid("budget_tokens is 0: a layer keeps at least one token") }
        return try lockedAllocating { () throws(KVError) -> Int in
            var s = try usableSlot(seq)
            if evictionConfig(s).keepsEveryToken { return sequences.lengths[s] }
            // Compaction moves bytes and releases blocks: every disk read still filling the
            // sequence (prefix hit, swap-in, a focus's restores) must land first, or it would
            // land on the compacted layout or on a released block; offloading, its first record
            // write takes a staging buffer. Both waited for without the lock.
            s = try awaitOffloadReady(seq, stagingBuffer: offloadsEvictions(try evictionState(s)))
            let state = try evictionState(s)
            state.parksEvictions = offloadsEvictions(state)
            if state.parksEvictions { settleRestores(s) }
            let oldLength = sequences.lengths[s]
            let newLength = state.plan(budget: budgetTokens)
            // A budget every layer fits changes nothing: the sequence is not compacted (its
            // appends' blocks still enter the prefix index; `setEviction` may still change its
            // policy), so a server may call this every step from the first.
            guard state.plansEviction else { return oldLength }
            var unsaved: [(row: Int, position: Int32)] = []
            try compactMemory(slot: s, state: state, oldLength: oldLength, newLength: newLength) {
                if state.parksEvictions { unsaved = offloadEvictions(slot: s, state: state) }
            }
            state.applyPlan()
            dropParked(state, unsaved)
            sequences.lengths[s] = newLength
            sequences.indexesAppends[s] = false
            sequences.unscheduled[s] = 0..<0  // its bytes moved: prepared blocks are never indexed
            return newLength
        }
    }

    /// Moves the planned tokens' bytes, after making every block or page written exclusive
    /// and calling `beforeMoves` (evicted tokens' bytes are still in place then), and releases
    /// what lies past `newLength`. Throws (changing nothing) only before the first change.
    /// A plan that moves nothing, whose appends' memory `appendsWriteOwnMemory` proves the
    /// sequence's own, skips `makeWritable` (it would change nothing): O(rows) and the cost of
    /// that check then, plus the releases.
    /// Also a compacted sequence's truncation (`truncate`), whose plan drops the tokens past
    /// the cut: without `returnMemory` the released pages stay mapped and committed for the
    /// appends that follow (`ContiguousMemory.release`, no `PagedMemory.trim`).
    func compactMemory(
        slot s: Int, state: EvictionState, oldLength: Int, newLength: Int, returnMemory: Bool = true, beforeMoves: () -> Void
    ) throws(KVError) {
        // Appends then write each layer from its new length on, into blocks (and pages) no
        // byte moves into: a block whose tail this drops may still be indexed or shared.
        let shortest = state.shortestPlannedLength, appendsFrom = shortest < oldLength ? shortest : nil
        // Nothing moves (a truncation's cut past every compacted token, the spec-decoding
        // case) and counts prove the appends' memory the sequence's own: no scan to do.
        if !state.plansMoves && appendsWriteOwnMemory(slot: s, from: appendsFrom ?? newLength, length: newLength) {
            beforeMoves()
            releaseBlocks(slot: s, from: oldLength, to: newLength, returnMemory: returnMemory)
            return
        }
        let table = sequences.table(s)
        try makeWritable(slot: s, state: state, length: newLength, appendsFrom: appendsFrom) { mark in
            for r in 0..<state.rows {
                let m = state.plannedMoves(row: r)
                for j in stride(from: 0, to: m.count, by: 2) { mark(Int(m[j])) }
            }
        }
        beforeMoves()
        // Move the bytes.
        if paged != nil || contiguous != nil {
            let bytes = rowBytes(state)
            for r in 0..<state.rows {
                let m = state.plannedMoves(row: r)
                for j in stride(from: 0, to: m.count, by: 2) {
                    let d = Int(m[j]), src = Int(m[j + 1])
                    for kv in 0..<2 {
                        let to = rowAddress(slot: s, table: table, state: state, row: r, kv: kv, token: d)
                        to.copyMemory(from: rowAddress(slot: s, table: table, state: state, row: r, kv: kv, token: src), byteCount: bytes)
                    }
                }
            }
        }
        releaseBlocks(slot: s, from: oldLength, to: newLength, returnMemory: returnMemory)
    }

    /// Free page groups a compaction's trim leaves committed beyond the reservation, pool-wide:
    /// a decoder that compacts back to a budget on a group edge every step freed a group each
    /// step and committed (zeroed) it again on the next append, 206 us + 89 us a step against
    /// 2.7 us + 0.11 us one token off the edge (helper-135). `Engine.trim` keeps none.
    static let compactionSpareGroups: UInt32 = 1

    /// Releases `s`'s blocks past its first `newLength` of `oldLength` token slots, in table
    /// order (an exclusive indexed one leaves the index: its bytes are rewritten or dropped),
    /// and the pages past `newLength`: with `returnMemory` unmapped and the pool trimmed down to
    /// the reservation (`reservedBytes`: what `reserve` committed stays until `trim`), else
    /// unpinned and kept mapped (`ContiguousMemory.release`). Contiguous, the pages go even
    /// when no block does: the last block's later pages may still map a group a fork or the
    /// prefix cache holds (`makeWritable` made the block the sequence's own, and only the
    /// pages up to `newLength` its own), and appends must map them afresh
    /// (`ContiguousMemory.grow`), not write them. Cost: one release per block, one unpin per
    /// page (plus a trim with `returnMemory`: the pool's only when a block went, O(1) when
    /// the pool has no more than `compactionSpareGroups` free committed groups).
    func releaseBlocks(slot s: Int, from oldLength: Int, to newLength: Int, returnMemory: Bool) {
        let table = sequences.table(s)
        let oldBlocks = (oldLength + bt - 1) / bt, newBlocks = (newLength + bt - 1) / bt
        for i in newBlocks..<oldBlocks {
            let b = table[i]
            if blocks.references(b) == 1 && blocks.isIndexed(b) { blocks.unindexUsed(b) }
            blocks.release(b)
        }
        if returnMemory {
            contiguous?.shrink(slot: s, to: newLength, keeping: reservedBytes, spare: Self.compactionSpareGroups)
            if newBlocks < oldBlocks { paged?.trim(keeping: reservedBytes, spare: Self.compactionSpareGroups) }
        } else {
            contiguous?.release(slot: s, past: newLength)
        }
    }

    /// True when `makeWritable(slot: s, state:, length: length, appendsFrom: from)` with no
    /// destination would change nothing and throw nothing: every block of the slots
    /// `from..<length` is held by `s` alone and unindexed, and, contiguous, no page they cover
    /// is held elsewhere even counting only blocks `s` alone holds as its own (the rule of
    /// `makeWritable`'s capacity check, so no page would be a candidate for a copy). False
    /// proves nothing (then `makeWritable` decides). For a truncation that moves nothing (a
    /// compacted sequence's spec-decoding cut: its appends since the last compaction are
    /// usually its own, unindexed). Cost: O(blocks from `from`); contiguous, plus a scan of
    /// the blocks on each page from `from`'s.
    func appendsWriteOwnMemory(slot s: Int, from: Int, length: Int) -> Bool {
        let table = sequences.table(s)
        let alone = { (i: Int) in self.blocks.references(table[i]) == 1 }
        for i in from / bt..<max(from / bt, (length + bt - 1) / bt) where !alone(i) || blocks.isIndexed(table[i]) { return false }
        guard let contiguous else { return true }
        let firstPage = from * config.tokenBytes / Int(config.pageBytes), count = sequences.blockCount(s)
        for p in firstPage..<max(firstPage, contiguous.pages(for: length))
        where contiguous.isHeldElsewhere(slot: s, page: p, table: table, blocks: count, own: alone) { return false }
        return true
    }

    /// Makes every block (and, contiguous, page) of the first `length` token slots of `s` that
    /// holds a token slot `destinations` marks, or a slot from `appendsFrom` on (including the
    /// rest of the last block and page, which appends fill), writable by `s` alone: a block
    /// another sequence holds too is copied (the shared one stays indexed), an exclusive
    /// indexed block leaves the index (its bytes will no longer match its hash; the index's
    /// hold is not a reference); then a page is copied when held elsewhere
    /// (`ContiguousMemory.isHeldElsewhere`: another slot maps it, or a block that is
    /// not the sequence's own, or that stays indexed after being dropped, holds it), not when
    /// only the sequence's own unwritten indexed blocks hold it. Throws `outOfMemory`
    /// (changing nothing) when the copies do not fit, and throws what a failed commit, mapping
    /// or page read throws, also changing nothing: every step that can fail (the fresh blocks,
    /// the pages' copies) runs before the first change, and what it committed is given back
    /// (`giveBackCommitted`). Before copying anything it waits, under the lock, until the
    /// sequence's pending disk reads landed, and throws `io` (changing nothing) when one of
    /// them failed (`awaitUsable`), as a copy on write does. Cost: O(marks + blocks and pages from the lowest one marked), a scan of the
    /// blocks on each written page (contiguous), plus one copy per shared block or page.
    func makeWritable(slot s: Int, state: EvictionState, length: Int, appendsFrom: Int? = nil,
                      destinations: ((Int) -> Void) -> Void) throws(KVError) {
        let table = sequences.table(s)
        let newBlocks = (length + bt - 1) / bt
        let tokenBytes = config.tokenBytes
        // Which blocks (and, contiguous, pages) receive bytes: flags kept with the state so
        // that a decode step allocates nothing, all false between calls; only the range from
        // the lowest one marked is visited, so an append or a decode step that writes near the
        // end costs O(blocks it writes), not O(blocks of the sequence).
        let pageCount = contiguous?.pages(for: length) ?? 0, pageBytes = Int(config.pageBytes)
        // Grown by doubling: a growing sequence truncated each round (speculative decoding)
        // would otherwise allocate a new array at every block it grows by.
        if state.writtenBlocks.count < newBlocks {
            state.writtenBlocks = [Bool](repeating: false, count: max(newBlocks, 2 * state.writtenBlocks.count))
        }
        if state.writtenPages.count < pageCount {
            state.writtenPages = [Bool](repeating: false, count: max(pageCount, 2 * state.writtenPages.count))
        }
        var lowBlock = newBlocks, lowPage = pageCount
        defer {
            for i in lowBlock..<max(lowBlock, newBlocks) { state.writtenBlocks[i] = false }
            for p in lowPage..<max(lowPage, pageCount) { state.writtenPages[p] = false }
        }
        destinations { d in
            state.writtenBlocks[d / bt] = true
            lowBlock = min(lowBlock, d / bt)
            if contiguous != nil {
                // Every page the slot covers: a token wider than two pages (10 KiB tokens on
                // 4 KiB pages) covers some it neither starts nor ends on.
                let lo = d * tokenBytes / pageBytes, hi = (d * tokenBytes + tokenBytes - 1) / pageBytes
                for p in lo...hi { state.writtenPages[p] = true }
                lowPage = min(lowPage, lo)
            }
        }
        if let from = appendsFrom {
            lowBlock = min(lowBlock, from / bt)
            for i in from / bt..<max(from / bt, newBlocks) { state.writtenBlocks[i] = true }
            if contiguous != nil {
                let firstPage = from * tokenBytes / pageBytes
                lowPage = min(lowPage, firstPage)
                for p in firstPage..<max(firstPage, pageCount) { state.writtenPages[p] = true }
            }
        }
        // Capacity first. Blocks: every shared one written is copied. Pages: an upper bound of
        // the copies below, the same rule counting only blocks the sequence alone holds as its
        // own (below, a written shared block is replaced by a fresh one first and an unwritten
        // one counts as own; counting neither can only add pages). So a compaction that copies
        // nothing needs no free group: the first one at a full budget after a prefill.
        // The pages it finds are the only ones the copy below may take, so only they are
        // checked again there.
        let alone = { (i: Int) in self.blocks.references(table[i]) == 1 }
        var candidates: [Int] = []  // allocates only when some page may need a copy
        if let contiguous {
            for p in lowPage..<max(lowPage, pageCount) where state.writtenPages[p] && contiguous.isHeldElsewhere(
                slot: s, page: p, table: table, blocks: sequences.blockCount(s), own: alone) { candidates.append(p) }
            guard contiguous.fits(candidates.count) else {
                throw .outOfMemory("\(candidates.count) shared pages must be copied and the budget has no room")
            }
        }
        var need = 0
        for i in lowBlock..<max(lowBlock, newBlocks) where state.writtenBlocks[i] && blocks.references(table[i]) > 1 { need += 1 }
        guard need <= blocks.available else {
            throw .outOfMemory("\(need) shared blocks must be copied, \(blocks.available) are available")
        }
        // A copy must see the bytes a disk read (a swap-in or prefix hit the sequence shares
        // with a fork) is still bringing in; compaction waited already, an append did not.
        if need > 0 || !candidates.isEmpty { try awaitUsable(s) }
        // Every step that can fail (a commit, a mapping, a read) comes first, so that a failure
        // changes nothing: the fresh blocks of the copies, then, contiguous, the pages' copies.
        // A written page is copied only when something else holds it once the blocks change
        // below: a written block leaves the index (one the sequence alone holds) or the table
        // (a shared one, for a fresh block that holds no page), so the indexed blocks below
        // `length` still holding it are the sequence's own, unwritten ones; past it (a
        // compaction's or truncation's dropped blocks, released next), one the sequence holds
        // alone leaves the index on release, one a fork holds stays there with its bytes, which
        // later appends would overwrite. (Before, found by helper-119: the blocks changed first,
        // and a failing copy or page copy left them copied, unindexed and their events sent.)
        // The blocks whose bytes change, written or dropped, stop standing for an indexed copy
        // before a block or page is taken: that may evict the copy (`BlockPool.endDuplicate`).
        for i in lowBlock..<max(lowBlock, sequences.blockCount(s)) where i >= newBlocks || state.writtenBlocks[i] {
            blocks.endDuplicate(table[i])
        }
        var taken = 0
        let committed = committedBytes
        do throws(KVError) {
            while taken < need {
                scratchCopies[taken] = try blocks.allocate()
                taken += 1
            }
            if let contiguous, !candidates.isEmpty {
                // The blocks' change below, told of the table as it still is: a written shared
                // block is no longer the sequence's own, every other one below `length` is.
                let own = { (i: Int) in alone(i) || (i < newBlocks && !state.writtenBlocks[i]) }
                let shared = candidates.filter { p in
                    contiguous.isHeldElsewhere(slot: s, page: p, table: table, blocks: sequences.blockCount(s), own: own)
                }
                try contiguous.unshare(slot: s, pages: shared)
            }
        } catch {
            for i in 0..<taken { blocks.release(scratchCopies[i]) }
            giveBackCommitted(since: committed)
            throw error
        }
        // Make the written blocks exclusive and unindexed.
        taken = 0
        for i in lowBlock..<max(lowBlock, newBlocks) where state.writtenBlocks[i] {
            let b = table[i]
            if blocks.references(b) > 1 {
                // Paged, the bytes are copied into the fresh block; contiguous, they live in the
                // slot's pages (unshared above) and the sequence only gets its own logical block.
                let fresh = scratchCopies[taken]
                taken += 1
                paged?.copy(from: b, to: fresh, tokens: bt)
                blocks.release(b)
                table[i] = fresh
            } else {
                blocks.unindexUsed(b)
            }
        }
    }

    /// Address of token slot `token` of tensor `tensor` of `slot` (memory-backed engines).
    @inline(__always)
    func address(slot: Int, table: UnsafeMutablePointer<Int32>, tensor: Int, token: Int) -> UnsafeMutableRawPointer {
        if let contiguous { return contiguous.base(slot, tensor: tensor) + token * config.tokenBytes }
        return paged!.address(table[token / bt], tensor: tensor) + (token % bt) * config.tokenBytes
    }

    /// Bytes of one row's part of a token slot, per K|V tensor: the whole `tokenBytes` per
    /// layer, one KV head's `headDim x dtypeBytes` per head.
    @inline(__always)
    func rowBytes(_ state: EvictionState) -> Int { config.tokenBytes / state.rowsPerLayer }

    /// Address of row `row`'s part of token slot `token` of `slot`, in K (`kv` 0) or V (1): the
    /// layer's token slot, plus the head's offset in per-head mode (head `h`'s `headDim x
    /// dtypeBytes` bytes at `h x rowBytes`, in both layouts) (memory-backed engines).
    @inline(__always)
    func rowAddress(slot: Int, table: UnsafeMutablePointer<Int32>, state: EvictionState, row: Int, kv: Int, token: Int) -> UnsafeMutableRawPointer {
        let rowsPerLayer = state.rowsPerLayer
        return address(slot: slot, table: table, tensor: 2 * (row / rowsPerLayer) + kv, token: token) + (row % rowsPerLayer) * rowBytes(state)
    }

    /// Slots `layer` of `seq` holds (its `length` unless the sequence was compacted).
    /// Throws `notFound`, `invalidArgument` (layer).
    public func layerLength(_ seq: UInt64, layer: Int) throws(KVError) -> Int {
        try checkLayer(layer)
        return try locked { () throws(KVError) -> Int in
            let s = try slot(seq)
            return evictionStates[s]?.length(layer: layer) ?? sequences.lengths[s]
        }
    }

    /// Writes the original positions `layer` of `seq` holds, slot by slot, into `into` (as
    /// many as fit) and returns the full count: `layerLength` per-layer, or
    /// `numKVHeads * layerLength` in per-head mode (head-major: head h's slots at
    /// `h * layerLength`; also before anything was observed, every head then holding
    /// `0..<length`). Throws `notFound`, `invalidArgument` (layer).
    public func positions(_ seq: UInt64, layer: Int, into: UnsafeMutableBufferPointer<Int32>) throws(KVError) -> Int {
        try checkLayer(layer)
        return try locked { () throws(KVError) -> Int in
            let s = try slot(seq)
            guard let state = evictionStates[s] else {
                let n = sequences.lengths[s], rows = evictionConfig(s).perHead ? config.numKVHeads : 1
                for i in 0..<min(n * rows, into.count) { into[i] = Int32(i % n) }
                return n * rows
            }
            let n = state.length(layer: layer)
            var out = 0
            for row in 0..<state.rowsPerLayer {
                for p in state.positions(layer: layer, row: row) {
                    if out < into.count { into[out] = p }
                    out += 1
                }
            }
            precondition(out == n * state.rowsPerLayer)
            return out
        }
    }

    /// Registers conversation segment `[start, end)` (original positions already appended)
    /// of `seq` with its embedding, for the episodic policy's clustering.
    /// Throws `notFound`, `unsupported` (the sequence's policy is not episodic: no focus could
    /// use the segment, and `setEviction` would drop it), `invalidArgument` (bounds,
    /// dimension, non-finite values, more than `EvictionState.maxSegments`), `outOfMemory`
    /// (the first call of a sequence without eviction state cannot allocate it,
    /// `newEvictionState`; nothing changes).
    public func addSegment(_ seq: UInt64, start: Int, end: Int, embedding: UnsafeBufferPointer<Float>) throws(KVError) {
        try locked { () throws(KVError) in
            let s = try slot(seq)
            guard evictionConfig(s).tracking.contains(.episodes) else {
                throw KVError(.unsupported, "segments serve the episodic policy; sequence \(seq) uses \(evictionConfig(s).policy.name)")
            }
            if evictionStates[s] == nil, config.eviction.embeddingDim != 0, embedding.count != config.eviction.embeddingDim {
                throw .invalid("embedding dimension \(embedding.count) is not embedding_dim \(config.eviction.embeddingDim)")
            }
            try withEvictionState(s) { (state) throws(KVError) in try state.addSegment(start: start, end: end, embedding: embedding) }
        }
    }

    /// Episodic policy: clusters `seq`'s segments into episodes if they changed, credits the
    /// attention observed since the previous focus to the episode of the segment added last
    /// (the turn those queries belonged to), then focuses the episode nearest to `query`
    /// (compaction keeps its heavy hitters, plus the current turn's) and returns it.
    /// With a disk tier each row (a layer, or a layer's KV head per head) then re-chooses its
    /// resident tokens among all its tokens, in memory and on disk, by the focused episode's
    /// scores, keeping its length:
    /// the chosen offloaded tokens are read back asynchronously into the slots of the resident
    /// tokens they displace, which are written out first (Engine+EpisodicOffload.swift); the
    /// sequence is not `ready` until the reads land; with a disk tier the focus first waits
    /// for the sequence's pending reads and a free staging buffer, without the lock
    /// (`awaitOffloadReady`), and drops the tokens of records
    /// whose write failed (never read back). Throws `notFound`, `invalidArgument` (no
    /// segment, dimension, non-finite values; with a disk tier, a swapped-out sequence), `io`
    /// (offloading: a failed disk read spoiled it, `usableSlot`), `unsupported` (another
    /// policy), `outOfMemory`
    /// (the restore must copy a shared block or page and the budget has no room: the previous
    /// focus stands and nothing is restored; only the re-clustering and crediting above, which
    /// any later focus would do the same way, are kept; with swap-outs pending it first waits
    /// for them, `lockedAllocating`). Cost: k-means when the segments changed; with
    /// offloaded tokens O(resident + offloaded) per row, one copy and one slot write per
    /// `tokensPerRecord` displaced tokens (as for `compact`), one slot read per record
    /// restored from (none for the open record: copied from its buffer).
    public func focus(_ seq: UInt64, query: UnsafeBufferPointer<Float>) throws(KVError) -> Int {
        try lockedAllocating { () throws(KVError) -> Int in
            var s = try slot(seq)
            guard evictionConfig(s).tracking.contains(.episodes) else {
                throw KVError(.unsupported, "focus needs the episodic policy; sequence \(seq) uses \(evictionConfig(s).policy.name)")
            }
            try withEvictionState(s) { (state) throws(KVError) in try state.checkFocus(query) }  // refused before any wait
            var state = try evictionState(s)
            if offloadsEvictions(state) {
                // A restore writes into memory, and the tokens it displaces are copied to disk
                // from memory: every read still filling the sequence (prefix hit, swap-in,
                // earlier restores) lands first, and its first record write takes a staging
                // buffer. Both waited for without the lock (the sequence is looked up again).
                s = try awaitOffloadReady(seq, stagingBuffer: true)
                state = try evictionState(s)
                settleRestores(s)
                // Tokens of records whose write failed are lost now, not chosen and read back.
                if offload?.failedRecordWrites.isEmpty == false { loseFailedRecordWrites() }
            }
            guard offloadsEvictions(state) else { return try state.focus(query) }
            let episode = try state.nearestEpisode(query), previous = state.focusedEpisode
            state.focusedEpisode = episode
            do throws(KVError) { try restoreFocused(slot: s, state: state) } catch {
                state.focusedEpisode = previous  // nothing was restored: the old focus stands
                throw error
            }
            return episode
        }
    }

    /// Sets `seq`'s per-layer sensitivity (`numLayers` values >= 0, not all 0) for adaptive
    /// budgets. Throws `notFound`, `invalidArgument`, `outOfMemory` (the first call of a
    /// sequence without eviction state cannot allocate it, `newEvictionState`; nothing changes).
    public func setLayerSensitivity(_ seq: UInt64, _ values: UnsafeBufferPointer<Float>) throws(KVError) {
        try locked { () throws(KVError) in
            try withEvictionState(try slot(seq)) { (state) throws(KVError) in try state.setSensitivity(values) }
        }
    }
}
