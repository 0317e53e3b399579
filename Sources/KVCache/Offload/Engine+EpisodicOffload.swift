/// Episodic offload (EpiCache with the disk tier): tokens outside the focused episode are kept
/// on disk instead of dropped, so a later focus on another episode restores them
/// byte-identical.
///
/// It applies to sequences with the episodic policy on an engine with memory and a disk tier;
/// otherwise eviction drops tokens as always. The unit is a token of a *row* of the
/// sequence's `EvictionState`: per layer a row is a layer and its token the layer's whole
/// token slot (K and V of every KV head); per head (`rowsPerLayer == numKVHeads`) a row is one
/// KV head of a layer and its token that head's slice of the slot (slot j of a layer holds
/// each head's j-th kept token, so a head's token lives inside a slot shared with the other
/// heads' tokens). Every step below is per row; per-layer mode is the `rowsPerLayer == 1`
/// case. Counters (`DiskTierStats.tokensOnDisk` ...) count row tokens.
///
/// - `compact` writes the K/V of every row token it evicts (K then V of the row's bytes:
///   exactly the bytes memory held) into records of the sequence's `OffloadedTokens`, and the
///   tokens' eviction state stays in `EvictionState` as parked slots, still candidates.
///   Whole records' worth of tokens are written at once (a slot write each); the rest is
///   appended to the sequence's *open record*, a memory buffer of one slot payload
///   (`OpenRecords`) that later compactions keep filling and that is written out (one slot
///   write) when full. A decode step evicts about one token per row, so it writes a slot only
///   every `blockTokens` steps instead of every step. At most `OpenRecords.capacity` records
///   are open engine-wide; a sequence that needs one when none is free takes the buffer of the
///   least recently appended one, which is written out partly filled first. A focus restores
///   tokens of the open record from its buffer at once; `fork` copies it into a buffer of the
///   child's (no write); `free` discards it. A write the tier refuses (disk full, tier full of
///   pinned slots) loses the record's tokens: dropped from the state, counted in
///   `tokensLost`, reported once by `ready` (`io`). So does a write that fails on the device,
///   for every sequence holding the record at once, once the failure is processed
///   (`loseFailedRecordWrites`: by the next call that processes completions, or a `focus` of
///   the sequence; while any holder has restores pending, once those ended), in the step
///   that uncounts the record from `tokensOnDisk`. No focus serves such a record: one that
///   reads it while another holder waits undoes its restores (`recordFinished`) and the
///   tokens stay parked until they are lost with the record.
/// - `focus` re-chooses each row's resident set among resident and parked tokens with the
///   focused episode's scores, keeping the row's length: a resident token that loses its
///   place is written out, and the parked token that wins it is read back into that very slot
///   (per head: into that head's slice of the slot, the other heads' bytes untouched)
///   (positions change at once; the bytes land asynchronously, counted in the coordinator's
///   `loading`, so `ready` is false until they are there).
/// - A record read that fails or is torn or corrupt copies nothing: every restore it carried is
///   undone (the displaced token, whose bytes never left the slot, is resident again and its
///   disk copy is dropped) and the record's tokens are lost: dropped from the state, counted in
///   `tokensLost`, reported once by `ready` (`io`).
/// - `fork` gives the child the parent's offloaded tokens: its state copy keeps the parked
///   slots, and its own `OffloadedTokens` table describes the same records, each disk slot
///   pinned once more for the child (records are immutable once written), and a copy of the
///   parent's open record in its own buffer. From then on each sequence restores, displaces
///   and drops tokens on its own; a slot goes when the last sequence holding it lets it go.
///   Cost: O(the parent's records × tokens per record) and a copy of at most one slot
///   payload; no I/O unless every open-record buffer is owned (then the least recently
///   appended owner's open record is written out, as for a compaction).
/// - Operations that change the parked set (`compact`, `focus`, an `append` that must drop
///   parked tokens) and `fork` first wait for the sequence's pending restores; `free` releases
///   its pins on its records.
extension Engine: RecordMemory {
    /// Whether compactions of `state` offload evicted tokens to the disk tier: its policy
    /// keeps scores per episode (`ScoreTracking.episodes`), which a focus restores by.
    func offloadsEvictions(_ state: EvictionState) -> Bool { offloadsEvictions(state.tracking) }

    /// Whether compactions of a state tracking `tracking` offload evicted tokens: on an engine
    /// with memory and a disk tier, when it tracks episodes.
    private func offloadsEvictions(_ tracking: ScoreTracking) -> Bool {
        offload != nil && (paged != nil || contiguous != nil) && tracking.contains(.episodes)
    }

    /// Maps the open-record buffers (`OpenRecords.reserve`) when sequences configured by
    /// `eviction` offload evictions and they are not mapped yet: at create for the engine's
    /// configuration, at `setEviction` for a sequence's, before its state takes it. So every
    /// state that offloads evictions finds them mapped (a fork's copies its parent's
    /// configuration), and an engine none of whose sequences can (no episodic policy) maps
    /// none. Throws `outOfMemory` naming them; nothing changed then. O(1) once mapped.
    func reserveOpenRecords(for eviction: EvictionConfig) throws(KVError) {
        guard let offload, offloadsEvictions(eviction.tracking) else { return }
        try offload.openRecords.reserve()
    }

    /// The offloaded-token table of sequence slot `s`, created on first use for `state`'s rows
    /// (its granularity is fixed by then: `setEviction` refuses a change after a compaction),
    /// with room for as many tokens as the state has slots (`rows x capacity`), so that
    /// decode steps' compactions add records without allocating until the state grows or the
    /// records held at once (some partly live after focus calls) outnumber that room.
    private func tokenTable(_ s: Int, _ offload: OffloadCoordinator, _ state: EvictionState) -> OffloadedTokens {
        if let t = offload.offloadedTokens[s] { return t }
        let t = OffloadedTokens(payloadBytes: offload.tier.payloadBytes, entryBytes: rowBytes(state),
                                reservedTokens: state.rows * state.capacity)
        offload.offloadedTokens[s] = t
        return t
    }

    /// Waits until no restore of `s` is pending (each landed or was undone).
    func settleRestores(_ s: Int) {
        guard let offload, let t = offload.offloadedTokens[s], t.readsPending > 0 else { return }
        offload.waitResident(s)
        precondition(t.readsPending == 0)
    }

    /// Writes the row tokens the planned compaction of `s` evicts (their bytes still in place)
    /// into records (`writeTokens`), row by row in `forEachPlannedEviction` order, gathered a
    /// record's worth at a time in the coordinator's scratch (`recordRows`, `recordSlots`):
    /// each full gathering is one record, written from memory; the last, partial one goes to
    /// the open record. Once the tier refuses a record, the tokens not written are unsaved.
    /// Returns the (row, position) of the unsaved tokens, and of parked tokens lost with an
    /// open record that could not be written (the caller drops all of them, parked by then,
    /// after `applyPlan`). Allocates nothing unless tokens are unsaved or lost (their list).
    func offloadEvictions(slot s: Int, state: EvictionState) -> [(row: Int, position: Int32)] {
        guard let offload else { return [] }
        let t = tokenTable(s, offload, state), rows = offload.recordRows, slots = offload.recordSlots
        var gathered = 0, refused = false, unsaved: [(row: Int, position: Int32)] = []
        func writeGathered() {
            var written = 0
            if !refused {
                let lost: [(row: Int, position: Int32)]
                (written, lost) = writeTokens(slot: s, state: state, rows: rows, slots: slots, count: gathered)
                unsaved += lost
            }
            if written < gathered {
                refused = true
                lose(gathered - written, t)
                for j in written..<gathered { unsaved.append((Int(rows[j]), state.position(row: Int(rows[j]), slot: Int(slots[j])))) }
            }
            gathered = 0
        }
        for r in 0..<state.rows {
            state.forEachPlannedEviction(row: r) { slot in
                rows[gathered] = Int32(r)
                slots[gathered] = slot
                gathered += 1
                if gathered == t.tokensPerRecord { writeGathered() }
            }
        }
        if gathered > 0 { writeGathered() }
        offload.tier.flush()
        return unsaved + writeOpenRecordIfFull(s)
    }

    /// Writes the K/V of token slots `slots[j]` of rows `rows[j]` of `s` (their positions
    /// from `state`), `j < count`, into records, in order: as many whole records as the
    /// tokens fill are written into new records (a slot write each, straight from memory), the
    /// rest is copied into the open record, which is first written out when the rest does not
    /// fit. Returns how many were written (all, or up to the first record the tier refused:
    /// disk full, tier full of pinned slots), and the parked tokens of earlier calls lost with
    /// a refused open record (counted here; the caller drops them from the state once it no
    /// longer needs its slot indices). The open record may be left full: the caller then ends
    /// with `writeOpenRecordIfFull`, once it no longer restores from its buffer. The caller
    /// flushes the tier's writes (`DiskTier.flush`).
    private func writeTokens(slot s: Int, state: EvictionState, rows: UnsafePointer<Int32>, slots: UnsafePointer<Int32>,
                             count: Int) -> (written: Int, lost: [(row: Int, position: Int32)])
    {
        guard let offload, count > 0 else { return (0, []) }
        let t = tokenTable(s, offload, state), perRecord = t.tokensPerRecord
        let whole = count / perRecord * perRecord
        var written = 0, lost: [(row: Int, position: Int32)] = []
        while written < whole {
            let chunk = written..<(written + perRecord)
            let diskSlot: Int32
            do throws(KVError) {
                diskSlot = try offload.tier.writeRecord(tokens: perRecord) { copyTokens(slot: s, state: state, rows: rows, slots: slots, chunk, to: $0) }
            } catch {
                break
            }
            let record = t.addRecord(slot: diskSlot)
            for (i, j) in chunk.enumerated() {
                t.add(record: record, index: i, row: Int(rows[j]), position: state.position(row: Int(rows[j]), slot: Int(slots[j])))
            }
            written = chunk.upperBound
        }
        if written == whole && whole < count {
            let rest = whole..<count
            if t.openRecord >= 0 && t.openRoom < rest.count { lost = writeOpenRecord(s, t) }
            let buffer = openRecordBuffer(s)
            if t.openRecord < 0 { t.openNewRecord() }
            copyTokens(slot: s, state: state, rows: rows, slots: slots, rest, to: buffer + t.openCount * 2 * t.entryBytes)
            for j in rest { t.append(row: Int(rows[j]), position: state.position(row: Int(rows[j]), slot: Int(slots[j]))) }
            offload.tokensInOpenRecords += UInt64(rest.count)
            offload.openRecords.touch(s)
            written = count
        }
        lose(lost.count, t)
        offload.tokensOffloaded += UInt64(written)
        return (written, lost)
    }

    /// Writes out `s`'s open record when it is full; returns the tokens lost because the tier
    /// refused the write (counted here, parked in the state by then: the caller drops them).
    func writeOpenRecordIfFull(_ s: Int) -> [(row: Int, position: Int32)] {
        guard let offload, let t = offload.offloadedTokens[s], t.openRecord >= 0 && t.openRoom == 0 else { return [] }
        let lost = writeOpenRecord(s, t)
        lose(lost.count, t)
        offload.tier.flush()
        return lost
    }

    /// Copies the K then V of row `rows[j]`'s part of token slot `slots[j]` of `s` (rows of
    /// `state`), for `j` in `chunk`, to `payload` (token `i` of the chunk at `i * 2 * rowBytes`).
    private func copyTokens(slot s: Int, state: EvictionState, rows: UnsafePointer<Int32>, slots: UnsafePointer<Int32>, _ chunk: Range<Int>,
                            to payload: UnsafeMutableRawPointer) {
        let table = sequences.table(s), bytes = rowBytes(state)
        for (i, j) in chunk.enumerated() {
            for kv in 0..<2 {
                let from = rowAddress(slot: s, table: table, state: state, row: Int(rows[j]), kv: kv, token: Int(slots[j]))
                (payload + (2 * i + kv) * bytes).copyMemory(from: from, byteCount: bytes)
            }
        }
    }

    /// Writes out `s`'s open record from its buffer (one slot write, full or partly filled);
    /// it is closed either way (with no live token it is closed without a write). Returns the
    /// (row, position) of its live tokens when the tier refused the write: they are lost, not
    /// yet counted nor dropped from the state (`s`'s pending restores are settled first, so
    /// that none of them still needs a lost displaced token). A write that fails later on the
    /// device loses them as for any record (`loseFailedRecordWrites`).
    private func writeOpenRecord(_ s: Int, _ t: OffloadedTokens) -> [(row: Int, position: Int32)] {
        let offload = offload!
        offload.tokensInOpenRecords -= UInt64(t.openCount)
        guard t.recordLive[Int(t.openRecord)] > 0 else { return t.closeOpenRecord(slot: nil) }
        let buffer = offload.openRecords.buffer(of: s)!, bytes = t.openCount * 2 * t.entryBytes
        do throws(KVError) {
            let diskSlot = try offload.tier.writeRecord(tokens: t.openCount) { $0.copyMemory(from: buffer, byteCount: bytes) }
            // Waiting for a staging buffer processes completions: an undone restore may have
            // taken the record's last live token meanwhile (the slot then goes after its write).
            if t.recordLive[Int(t.openRecord)] == 0 { offload.tier.unpin(diskSlot) }
            return t.closeOpenRecord(slot: diskSlot)
        } catch {
            settleRestores(s)
            return t.closeOpenRecord(slot: nil)
        }
    }

    /// The open-record buffer of `s`, acquired when it has none: when every buffer is owned,
    /// the least recently appended owner's open record is written out partly filled first
    /// (`flushOpenRecord`) and its buffer changes hands.
    private func openRecordBuffer(_ s: Int) -> UnsafeMutableRawPointer {
        let records = offload!.openRecords
        if let buffer = records.buffer(of: s) { return buffer }
        if records.isFull {
            let victim = records.victim()
            flushOpenRecord(victim)
            records.release(victim)
        }
        return records.acquire(for: s)
    }

    /// Writes out sequence slot `s`'s open record, if any, partly filled (to take its buffer);
    /// tokens lost because the tier refused the write are dropped from its state at once,
    /// counted and reported by its `ready`.
    private func flushOpenRecord(_ s: Int) {
        guard let offload, let t = offload.offloadedTokens[s], t.openRecord >= 0 else { return }
        let lost = writeOpenRecord(s, t)
        lose(lost.count, t)
        dropParked(evictionStates[s]!, lost)
        offload.tier.flush()
    }

    /// Counts `n` tokens of `t`'s sequence lost (reported once by its `ready`).
    private func lose(_ n: Int, _ t: OffloadedTokens) {
        offload!.tokensLost += UInt64(n)
        t.lostSinceReport += n
    }

    /// Drops `tokens` (each parked in `state`) from the parked slots.
    func dropParked(_ state: EvictionState, _ tokens: [(row: Int, position: Int32)]) {
        for (row, position) in tokens { state.removeParked(row: row, slot: state.parkedSlot(row: row, position: position)) }
    }

    /// After a focus: per row, swaps the resident tokens the focused episode ranks below
    /// parked ones for those (see the extension's comment). Throws `outOfMemory` (nothing
    /// restored) when a shared block or page must be copied and the budget has no room.
    /// Plans every row twice (`planRestore`: first to mark the displaced slots writable and
    /// count the pairs, then to restore), gathering a record's worth of pairs at a time in the
    /// coordinator's scratch (`recordRows`, `recordSlots`, `recordWinners`) as
    /// `offloadEvictions` does, the remainder first: it goes to the open record, the other
    /// gatherings each to a new record (a slot write each); then the winners' reads are issued,
    /// one per record restored from, in record order so that adjacent slots merge. Allocates
    /// nothing unless tokens are lost (their list) or the table grows (`OffloadedTokens`).
    /// Cost: O(resident + parked) per row, plus O(records x tokens per record) to find the
    /// records to read.
    func restoreFocused(slot s: Int, state: EvictionState) throws(KVError) {
        guard let offload else { return }
        var pairs = 0
        try makeWritable(slot: s, state: state, length: sequences.lengths[s]) { mark in
            for r in 0..<state.rows {
                state.planRestore(row: r) { out, _ in
                    mark(Int(out))
                    pairs += 1
                }
            }
        }
        guard pairs > 0 else { return }
        let t = tokenTable(s, offload, state), table = sequences.table(s)
        let rows = offload.recordRows, slots = offload.recordSlots, winners = offload.recordWinners
        var gathered = 0, refused = false, lost: [(row: Int, position: Int32)] = []
        // The displaced tokens go to disk first (copied into staging now), so that their slots
        // may be overwritten; a pair whose displaced token could not be written stays as it is.
        func restoreGathered() {
            var written = 0
            if !refused {
                let refusedOpen: [(row: Int, position: Int32)]
                (written, refusedOpen) = writeTokens(slot: s, state: state, rows: rows, slots: slots, count: gathered)
                lost += refusedOpen
                refused = written < gathered
            }
            for j in 0..<written {
                let r = Int(rows[j]), d = Int(slots[j]), p = Int(winners[j])
                guard let e = t.entry(row: r, position: state.position(row: r, slot: p)) else {
                    // The winner was lost with a refused open record: no swap, and the displaced
                    // token, still resident, needs no copy on disk.
                    unpin(t.remove(t.entry(row: r, position: state.position(row: r, slot: d))!))
                    continue
                }
                t.beginRestore(e, destination: d, displaced: state.position(row: r, slot: d))
                state.swapSlots(row: r, d, p)
                offload.markLoading(table[d / bt], 1)
            }
            gathered = 0
        }
        // The partial gathering comes first: only it touches the open record (which it may
        // have to write out, or lose), before any restore from that record has begun.
        var limit = pairs % t.tokensPerRecord == 0 ? t.tokensPerRecord : pairs % t.tokensPerRecord
        for r in 0..<state.rows {
            state.planRestore(row: r) { out, win in
                rows[gathered] = Int32(r)
                slots[gathered] = out
                winners[gathered] = win
                gathered += 1
                if gathered == limit {
                    restoreGathered()
                    limit = t.tokensPerRecord
                }
            }
        }
        precondition(gathered == 0, "a row planned another restore the second time")
        offload.tier.flush()
        for r in 0..<t.recordCount where t.isRestoring(r) {
            t.readsPending += 1
            let target = LoadTarget(block: -1, slot: Int32(s), position: 0, tokens: 0, record: Int32(r))
            if r == Int(t.openRecord) {  // its bytes are in memory: copied at once
                scatterRecord(target, from: offload.openRecords.buffer(of: s)!)
                recordFinished(target, ok: true)
                continue
            }
            offload.tier.load(t.recordSlot[r], into: target)
        }
        dropParked(state, lost + writeOpenRecordIfFull(s))
        offload.tier.flush()
    }

    // MARK: RecordMemory

    func scatterRecord(_ target: LoadTarget, from data: UnsafeRawPointer) {
        let s = Int(target.slot), t = offload!.offloadedTokens[s]!, state = evictionStates[s]!, table = sequences.table(s)
        let bytes = t.entryBytes, first = Int(target.record) * t.tokensPerRecord
        for i in 0..<t.tokensPerRecord where t.entryRow[first + i] >= 0 && t.entryDestination[first + i] >= 0 {
            let r = Int(t.entryRow[first + i]), d = Int(t.entryDestination[first + i])
            for kv in 0..<2 {
                let to = rowAddress(slot: s, table: table, state: state, row: r, kv: kv, token: d)
                to.copyMemory(from: data + (2 * i + kv) * bytes, byteCount: bytes)
            }
        }
    }

    /// A read of a record whose write failed (in `failedRecordWrites`: it completed, failed,
    /// before the read was issued) undoes its restores but loses nothing here: its tokens stay
    /// parked and are lost with the record by every holder at once (`loseFailedRecordWrites`),
    /// while it still counts on disk.
    func recordFinished(_ target: LoadTarget, ok: Bool) {
        let offload = offload!, s = Int(target.slot), t = offload.offloadedTokens[s]!, state = evictionStates[s]!
        let table = sequences.table(s), first = Int(target.record) * t.tokensPerRecord
        let writeFailed = !ok && offload.failedRecordWrites.contains(t.recordSlot[Int(target.record)])
        t.readsPending -= 1
        for e in first..<(first + t.tokensPerRecord) where t.entryRow[e] >= 0 {
            let r = Int(t.entryRow[e]), d = Int(t.entryDestination[e])
            if d >= 0 {
                offload.markLoading(table[d / bt], -1)
                if ok {
                    offload.tokensRestored += 1
                } else {
                    // Undo the swap: the displaced token's bytes never left slot d.
                    let displaced = t.entryDisplaced[e]
                    let p = state.parkedSlot(row: r, position: displaced)
                    precondition(p >= 0, "a displaced token left the parked slots while its restore was pending")
                    state.swapSlots(row: r, d, p)
                    // A freed sequence's open record was discarded at `free` (`discardOpenRecord`),
                    // the displaced token's entry with it when it went there.
                    if let x = t.entry(row: r, position: displaced) {
                        unpin(t.remove(x))
                    } else {
                        precondition(sequences.isDetached(s), "displaced token \(displaced) of row \(r) is not on disk")
                    }
                    if writeFailed {
                        t.abandonRestore(e)  // parked again, in slot p
                        continue
                    }
                    state.removeParked(row: r, slot: p)
                }
            } else if writeFailed {
                continue  // lost with the record
            } else if !ok {
                state.removeParked(row: r, slot: state.parkedSlot(row: r, position: t.entryPosition[e]))
            } else {
                continue  // stays on disk
            }
            if !ok {
                offload.tokensLost += 1
                t.lostSinceReport += 1
            }
            unpin(t.remove(e))
        }
    }

    /// All holders of a failed record at once, so that no snapshot counts a holder's tokens
    /// both on disk and lost (nor in neither); none while any has restores pending, which may
    /// still need a displaced token the record holds. O(maxSeqs) per failed record.
    func loseFailedRecordWrites() {
        let offload = offload!
        offload.failedRecordWrites.removeAll { diskSlot in
            let holders = (0..<config.maxSeqs).filter { offload.offloadedTokens[$0]?.record(onDiskSlot: diskSlot) != nil }
            guard holders.allSatisfy({ offload.offloadedTokens[$0]!.readsPending == 0 }) else { return false }
            for s in holders {
                let t = offload.offloadedTokens[s]!
                let (lost, held) = t.dropRecord(t.record(onDiskSlot: diskSlot)!)
                offload.tier.unpin(held)
                lose(lost.count, t)
                dropParked(evictionStates[s]!, lost)
            }
            offload.tier.releaseFailedRecord(diskSlot)  // uncounted with the losses; the coordinator's pin goes
            return true
        }
    }

    /// Unpins a record's disk slot when `remove` returned one (its last token left it).
    private func unpin(_ diskSlot: Int32) {
        if diskSlot >= 0 { offload!.tier.unpin(diskSlot) }
    }

    /// Makes room for `n` appended tokens in every row of `s`'s state: when resident plus
    /// parked tokens would exceed `maxSeqTokens`, the tokens in the row's lowest parked slots
    /// are dropped from state and disk: right after a compaction its lowest-ranked ones; after
    /// a focus (its displaced tokens take the restored ones' slots), a loss or a truncation, in
    /// no particular order. The state's
    /// buffers were grown before (`EvictionState.reserve(appending:)`).
    func makeRoomForAppend(slot s: Int, state: EvictionState, n: Int) {
        let limit = config.maxSeqTokens
        if state.maxOccupied + n > limit, let offload {
            settleRestores(s)
            let t = offload.offloadedTokens[s]
            for r in 0..<state.rows {
                while state.length(row: r) + state.parkedCount(row: r) + n > limit {
                    let p = state.parkedStart(row: r)
                    dropOffloaded(t!, row: r, position: state.position(row: r, slot: p))
                    state.removeParked(row: r, slot: p)
                }
            }
        }
    }

    /// Drops row `row`'s token at `position` from `t` (its sequence's offloaded tokens) and
    /// the sequence's pin on its record's disk slot when it was the record's last live token;
    /// the caller removes its parked slot. Precondition: the token is on disk, not being
    /// restored. O(1).
    func dropOffloaded(_ t: OffloadedTokens, row: Int, position: Int32) {
        unpin(t.remove(t.entry(row: row, position: position)!))
    }

    /// Gives fork `to` the offloaded tokens of `from`, before `to` copies `from`'s eviction
    /// state (parked slots included): its own table of the same records, each disk slot pinned
    /// once more for `to`, and a copy of `from`'s open record in a buffer of its own (nothing
    /// written). Records are immutable once written, so sharing their slots is safe; each
    /// sequence drops its own pin when its last live entry in the record dies or it is freed.
    /// An open record is still being filled, so each sequence gets its own: both later fill and
    /// write theirs independently (the copied tokens then reach the disk once per sequence).
    /// Taking the buffer may write out the open record of the least recently appended owner
    /// (`openRecordBuffer`), `from` included: then `to` shares that record on disk like the
    /// others. Cannot fail (a pin is a count; a refused write loses that owner's tokens, as in
    /// a compaction). Precondition: no restore of `from` is pending (`settleRestores`).
    /// Cost: `OffloadedTokens.init(forkOf:)`, a pin per record, a copy of at most one slot
    /// payload; a slot write only when every open-record buffer is owned.
    func inheritOffloadedTokens(from: Int, to: Int) {
        guard let offload, let t = offload.offloadedTokens[from] else { return }
        if t.hasLiveOpenRecord { _ = openRecordBuffer(to) }
        let inherited = OffloadedTokens(forkOf: t)
        for diskSlot in inherited.slots { offload.tier.pin(diskSlot) }
        if inherited.openRecord >= 0 {
            let records = offload.openRecords
            records.buffer(of: to)!.copyMemory(from: records.buffer(of: from)!, byteCount: inherited.openCount * 2 * inherited.entryBytes)
            offload.tokensInOpenRecords += UInt64(inherited.openCount)
        }
        offload.offloadedTokens[to] = inherited
    }

    /// Discards the open record of sequence slot `s` (never written) and gives its buffer back:
    /// at release (`releaseOffloadedTokens`), and already at `free` of a sequence whose slot
    /// waits for its reads (`SequenceTable.detach`), so that no other sequence writes the freed
    /// one's record out to take its buffer meanwhile.
    /// Its restores from the open record were copied at once, so none is pending; but the
    /// displaced tokens of restores still reading other records may have gone into it, so a
    /// failed read's undo (`recordFinished`) finds no entry for them once the slot is detached.
    /// O(tokens of the record).
    func discardOpenRecord(_ s: Int) {
        guard let offload, let t = offload.offloadedTokens[s] else { return }
        if t.openRecord >= 0 {
            offload.tokensInOpenRecords -= UInt64(t.openCount)
            _ = t.closeOpenRecord(slot: nil)
        }
        offload.openRecords.release(s)
    }

    /// Releases every record of sequence slot `s` (it is being freed); its open record, never
    /// written, is discarded with its buffer.
    func releaseOffloadedTokens(_ s: Int) {
        guard let offload, let t = offload.offloadedTokens[s] else { return }
        precondition(t.readsPending == 0, "a freed sequence is released once its reads landed")
        for diskSlot in t.slots { offload.tier.unpin(diskSlot) }
        discardOpenRecord(s)
        offload.offloadedTokens[s] = nil
    }

    /// Reports (once) the tokens of `s` lost since the last report: throws `io`.
    func reportLostTokens(_ s: Int, seq: UInt64) throws(KVError) {
        guard let offload, let t = offload.offloadedTokens[s], t.lostSinceReport > 0 else { return }
        let n = t.lostSinceReport
        t.lostSinceReport = 0
        throw KVError(.io, "\(n) offloaded tokens of sequence \(seq) could not be written or read back (\(offload.tier.lastFailure)); "
                          + "they were dropped, never served: the sequence stays usable, re-read kvc_seq_positions")
    }
}
