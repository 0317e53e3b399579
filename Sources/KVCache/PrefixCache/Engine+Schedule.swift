/// Indexing as scheduled (`EngineConfig.indexOnSchedule`), after vLLM's
/// `cache_blocks(request, num_computed_tokens + num_new_tokens)`: a server with chunked prefill
/// computes a long prompt over several forward passes, so a prompt block must not be served
/// to another sequence before the pass that computes it is scheduled. `createSequence`
/// prepares the prompt's new full blocks (`BlockPool.prepare`, their range in
/// `SequenceTable.unscheduled`) and indexes none; `schedule` indexes them as the server
/// schedules their tokens, `append` the rest before its own blocks. A later prompt can then hit
/// only blocks that a forward pass no later than its own computes.
///
/// What the other calls do with prepared blocks: `fork` hands the child the same range (the
/// blocks are shared; the first of the two to schedule one indexes it); `free` and `abort`
/// free them unindexed (nothing to take out of the index); a compaction ends the range, so
/// those blocks are never indexed (their bytes moved). A completed swap-out keeps it: the
/// blocks go to disk uncomputed as private slots (unhashed: no prompt finds them in the disk
/// tier, no swap-in shares them), their hashes stay with the swap-out queue
/// (`SwapOutQueue.takePrepared`), and the swap-in reads them into fresh blocks prepared under
/// those hashes. The server resumes the prefill after the swap-in and schedules those tokens
/// as usual, so `schedule` indexes them then: never before a pass that computes them, and the
/// uncomputed bytes read back are overwritten by that pass (the server waits for `ready`, so
/// no read lands after it). `schedule` of a swapped-out sequence is refused. A failed disk
/// read ends the range (the blocks follow a spoiled one).
extension Engine {
    /// The server has scheduled the tokens of `seq` below `tokens` for computation, in this
    /// forward pass or an earlier one: its prompt blocks that lie wholly below `tokens` and are
    /// not indexed yet enter the prefix index now, in chain order, with a `blockStored` event
    /// each (a block whose hash another block already holds stays out, as at creation); in the
    /// contiguous layout each then holds its pages. Monotonic: blocks already offered stay, a
    /// smaller `tokens` than before changes nothing; so does an engine without
    /// `indexOnSchedule`, which indexed them at creation.
    /// Throws `notFound`, `invalidArgument` (`tokens` beyond the sequence's length, or the
    /// sequence is swapped out), `io` (a failed disk read spoiled it, `usableSlot`); then
    /// nothing changed. Cost: O(1) plus one index insertion per
    /// block indexed.
    public func schedule(_ seq: UInt64, tokens: Int) throws(KVError) {
        try locked { () throws(KVError) in
            let s = try usableSlot(seq)
            guard tokens >= 0 && tokens <= sequences.lengths[s] else {
                throw .invalid("tokens \(tokens) is beyond the \(sequences.lengths[s]) tokens of sequence \(seq)")
            }
            indexScheduled(slot: s, below: tokens / bt)
        }
    }

    /// Indexes `slot`'s prepared prompt blocks below block-table entry `end`, in order, and
    /// removes them from its unscheduled range. O(blocks indexed).
    func indexScheduled(slot s: Int, below end: Int) {
        let pending = sequences.unscheduled[s]
        let stop = min(end, pending.upperBound)
        guard stop > pending.lowerBound else { return }
        let table = sequences.table(s)
        for i in pending.lowerBound..<stop {
            let (hash, parent, fingerprint) = blocks.prepared(table[i])
            index(table[i], hash: hash, parent: parent, fingerprint: fingerprint, slot: s, position: i)
        }
        sequences.unscheduled[s] = stop..<pending.upperBound
    }
}
