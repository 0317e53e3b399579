/// One sequence's offloaded tokens (episodic offload): which disk-tier slot holds the K/V of
/// each token a compaction or a focus took out of memory, keyed by (row, original position)
/// — never by block hash: these records are private to the sequence, are never served as
/// prefix hits, and go when the sequence goes.
///
/// The unit is a token of a *row* (`EvictionState`' rows): per layer (the default) a row is
/// a layer and its token is the layer's whole token slot (K and V of every KV head); per head
/// a row is one KV head of a layer and its token is that head's slice of the slot (`headDim x
/// dtypeBytes` of K and of V at offset `head x headDim x dtypeBytes`, the same in both
/// layouts), since per-head kept sets share token slots: slot j of a layer holds each head's
/// j-th kept token.
///
/// Storage: a *record* is one disk slot (the tier's slot payload, one block of every layer's
/// K and V in the paged layout) holding up to `tokensPerRecord` row tokens of any rows, token
/// `i` at payload offset `i * 2 * entryBytes` (`entryBytes`: `tokenBytes / rowsPerLayer`):
/// its K, then its V, exactly the bytes memory held. At most one record at a time is *open*:
/// its tokens sit in a memory buffer (`OpenRecords`) that later compactions keep filling, not
/// yet on disk; it gets a disk slot when the engine writes it out (`closeOpenRecord`), full
/// or partly filled.
///
/// Entry `record * tokensPerRecord + i` describes token `i` of `record`: its row (-1 when
/// dead: restored or lost), position and, while a read restores it, the memory slot the read
/// fills and the position of the token that left that slot for it.
///
/// A fork's table (`init(forkOf:)`) describes the same disk slots as its parent's: records
/// are immutable once written, so sequences share them, each through its own pin and its own
/// entries (a token restored or dropped by one sequence stays on disk for the other). An open
/// record is never shared: the fork's table opens one with the same entries, whose bytes the
/// engine copies into the fork's own buffer, and each sequence writes its own out later.
///
/// Invariants: a record's `live` count is the number of its entries not dead; a record with a
/// live entry, other than the open one, holds a disk slot pinned once by this sequence (other
/// sequences' tables may hold the same slot, each with its own pin), released (and its id
/// reused) when the count reaches 0; the open record has no slot (`notWritten`), keeps its id
/// while open even with no live entry, and its entries `0..<openCount` were appended (never
/// restoring: a restore from it copies from its buffer at once); `location` maps exactly the
/// live entries that are not being restored, and `recordOfSlot` exactly the written records'
/// slots. Cost: O(1) per token and per record (a dictionary probe); the arrays grow with the
/// records and are reused afterwards.
/// Not thread-safe: the engine serialises calls.
final class OffloadedTokens {
    /// Row tokens one record holds.
    let tokensPerRecord: Int
    /// Bytes of one row token's K (and of its V): `tokenBytes / rowsPerLayer`.
    let entryBytes: Int
    /// Row tokens the table has room for without allocating (`init`).
    let reservedTokens: Int
    /// `recordSlot` of the open record: not on disk yet.
    static let notWritten: Int32 = -2
    /// The open record, or -1; and how many of its entries were appended.
    private(set) var openRecord: Int32 = -1
    private(set) var openCount = 0
    /// Per record: its pinned disk slot, -1 (free id) or `notWritten` (the open record).
    private(set) var recordSlot: [Int32] = []
    /// Per record: entries not dead.
    private(set) var recordLive: [Int32] = []
    private var freeRecords: [Int32] = []
    /// Per entry: row (-1 dead), original position.
    private(set) var entryRow: [Int32] = []
    private(set) var entryPosition: [Int32] = []
    /// Per entry: the memory slot a pending read fills (-1: none), and the position of the token
    /// that left that slot for it.
    private(set) var entryDestination: [Int32] = []
    private(set) var entryDisplaced: [Int32] = []
    /// (row << 32 | position) -> entry, for tokens on disk and not being restored.
    private var location: [UInt64: Int32] = [:]
    /// Disk slot -> the record holding it (written records only).
    private var recordOfSlot: [Int32: Int32] = [:]
    /// Records with a restoring read in flight.
    var readsPending = 0
    /// Tokens lost (a record that could not be written or read back) since `ready` reported it.
    var lostSinceReport = 0

    /// A table for records of `payloadBytes` holding row tokens of `entryBytes` of K and
    /// `entryBytes` of V each, with room reserved for `reservedTokens` row tokens in full
    /// records (plus two partly filled ones), so that records added until then allocate
    /// nothing. Cost: about 40 bytes per reserved token (the entries and `location`).
    init(payloadBytes: Int, entryBytes: Int, reservedTokens: Int) {
        precondition(entryBytes > 0 && payloadBytes >= 2 * entryBytes && reservedTokens >= 0)
        self.entryBytes = entryBytes
        self.reservedTokens = reservedTokens
        tokensPerRecord = payloadBytes / (2 * entryBytes)
        let records = reservedTokens / tokensPerRecord + 2
        recordSlot.reserveCapacity(records)
        recordLive.reserveCapacity(records)
        freeRecords.reserveCapacity(records)
        entryRow.reserveCapacity(records * tokensPerRecord)
        entryPosition.reserveCapacity(records * tokensPerRecord)
        entryDestination.reserveCapacity(records * tokensPerRecord)
        entryDisplaced.reserveCapacity(records * tokensPerRecord)
        location.reserveCapacity(reservedTokens)
        recordOfSlot.reserveCapacity(records)
    }

    /// A table for a fork of the sequence `parent` describes: the same disk slots (the caller
    /// pins each once more for the fork), renumbered densely in record order, with the same
    /// live entries; and, when the parent's open record holds a live token
    /// (`hasLiveOpenRecord`), an open record of its own with the same entries at the same
    /// indices and the same `openCount` (the caller copies the first `openCount` tokens of
    /// the parent's buffer into the fork's). Nothing lost to report (the parent's losses are
    /// already out of the state the fork copies). Precondition: no restore of `parent` is
    /// pending (its entries' state is final). Cost: O(parent's records ever held) to scan
    /// plus O(live records × `tokensPerRecord`) time and allocation.
    convenience init(forkOf parent: OffloadedTokens) {
        precondition(parent.readsPending == 0, "a fork copies a table with restores pending")
        self.init(payloadBytes: parent.tokensPerRecord * 2 * parent.entryBytes, entryBytes: parent.entryBytes,
                  reservedTokens: parent.reservedTokens)
        for r in parent.recordSlot.indices where parent.recordSlot[r] >= 0 || (r == parent.openRecord && parent.hasLiveOpenRecord) {
            let record = addRecord(slot: parent.recordSlot[r]), first = r * tokensPerRecord
            for i in 0..<tokensPerRecord where parent.entryRow[first + i] >= 0 {
                add(record: record, index: i, row: Int(parent.entryRow[first + i]), position: parent.entryPosition[first + i])
            }
            if r == parent.openRecord {
                openRecord = record
                openCount = parent.openCount
            }
        }
    }

    /// True when a record is open and holds a live token (one a fork must keep).
    var hasLiveOpenRecord: Bool { openRecord >= 0 && recordLive[Int(openRecord)] > 0 }

    /// Room left in the open record (0 when there is none).
    var openRoom: Int { openRecord >= 0 ? tokensPerRecord - openCount : 0 }

    /// Opens a record with no entry and no disk slot yet. Precondition: none is open.
    func openNewRecord() {
        precondition(openRecord < 0, "a record is open already")
        openRecord = addRecord(slot: Self.notWritten)
        openCount = 0
    }

    /// Describes `row`'s token at `position` as the next token of the open record (its bytes
    /// go to index `openCount` of the buffer). Precondition: `openRoom > 0`.
    func append(row: Int, position: Int32) {
        precondition(openRoom > 0, "the open record is full")
        add(record: openRecord, index: openCount, row: row, position: position)
        openCount += 1
    }

    /// Ends the open record: it now holds disk slot `slot` (written from its buffer, pinned for
    /// this sequence), or, when `slot` is nil (it could not be written), its live entries die
    /// and their (row, position) are returned. A record with no live entry frees its id (the
    /// caller writes nothing and unpins `slot` if it gave one). Precondition: a record is open.
    @discardableResult
    func closeOpenRecord(slot: Int32?) -> [(row: Int, position: Int32)] {
        precondition(openRecord >= 0, "no record is open")
        let r = openRecord
        openRecord = -1
        if let slot, recordLive[Int(r)] > 0 {
            recordSlot[Int(r)] = slot
            recordOfSlot[slot] = r
            return []
        }
        return dropRecord(r).lost
    }

    /// The written record holding disk slot `slot`, or nil. O(1).
    func record(onDiskSlot slot: Int32) -> Int32? { recordOfSlot[slot] }

    /// Kills every live entry of `record` (its tokens are lost: it could not be written) and
    /// frees its id; returns their (row, position) and the record's disk slot (`notWritten`
    /// for the open record; the caller unpins a written one). Precondition: no entry of it is
    /// being restored, and it is not the open record (`closeOpenRecord` first).
    func dropRecord(_ record: Int32) -> (lost: [(row: Int, position: Int32)], slot: Int32) {
        precondition(record != openRecord, "dropping the open record")
        let r = Int(record), first = r * tokensPerRecord, slot = recordSlot[r]
        var lost: [(row: Int, position: Int32)] = []
        for e in first..<(first + tokensPerRecord) where entryRow[e] >= 0 {
            precondition(entryDestination[e] < 0, "dropping a record with a restore pending")
            lost.append((Int(entryRow[e]), entryPosition[e]))
            location[Self.key(Int(entryRow[e]), entryPosition[e])] = nil
            entryRow[e] = -1
        }
        if slot >= 0 { recordOfSlot[slot] = nil }
        recordLive[r] = 0
        recordSlot[r] = -1
        freeRecords.append(record)
        return (lost, slot)
    }

    /// A record id for disk slot `slot` (already pinned for this sequence) or `notWritten`,
    /// with no entry yet.
    func addRecord(slot: Int32) -> Int32 {
        precondition(slot >= 0 || slot == Self.notWritten)
        if let r = freeRecords.popLast() {
            recordSlot[Int(r)] = slot
            if slot >= 0 { recordOfSlot[slot] = r }
            return r
        }
        let r = Int32(recordSlot.count)
        if slot >= 0 { recordOfSlot[slot] = r }
        recordSlot.append(slot)
        recordLive.append(0)
        let entries = (Int(r) + 1) * tokensPerRecord
        entryRow.append(contentsOf: repeatElement(-1, count: entries - entryRow.count))
        entryPosition.append(contentsOf: repeatElement(0, count: entries - entryPosition.count))
        entryDestination.append(contentsOf: repeatElement(-1, count: entries - entryDestination.count))
        entryDisplaced.append(contentsOf: repeatElement(0, count: entries - entryDisplaced.count))
        return r
    }

    /// Records token `index` of `record`: `row`'s token at `position`. Precondition: the
    /// entry is dead and the token is not on disk already.
    func add(record: Int32, index: Int, row: Int, position: Int32) {
        let e = Int(record) * tokensPerRecord + index
        precondition(entryRow[e] < 0 && index < tokensPerRecord)
        entryRow[e] = Int32(row)
        entryPosition[e] = position
        entryDestination[e] = -1
        recordLive[Int(record)] += 1
        let inserted = location.updateValue(Int32(e), forKey: Self.key(row, position)) == nil
        precondition(inserted, "row \(row) position \(position) is already on disk")
    }

    /// The entry of `row`'s token at `position` on disk, or nil.
    func entry(row: Int, position: Int32) -> Int? { location[Self.key(row, position)].map(Int.init) }

    /// The record and index of entry `e`.
    func record(of e: Int) -> (record: Int32, index: Int) { (Int32(e / tokensPerRecord), e % tokensPerRecord) }

    /// Records numbered so far (ids `0..<recordCount`, free ones included).
    var recordCount: Int { recordSlot.count }

    /// Whether an entry of `record` is being restored (`beginRestore`, not ended yet).
    /// O(tokensPerRecord).
    func isRestoring(_ record: Int) -> Bool {
        let first = record * tokensPerRecord
        return entryDestination[first..<(first + tokensPerRecord)].contains { $0 >= 0 }
    }

    /// Marks entry `e` as being restored into memory slot `destination`, where it replaces the
    /// token at `displaced` (no longer found by `entry`).
    func beginRestore(_ e: Int, destination: Int, displaced: Int32) {
        precondition(entryRow[e] >= 0 && entryDestination[e] < 0)
        location[Self.key(Int(entryRow[e]), entryPosition[e])] = nil
        entryDestination[e] = Int32(destination)
        entryDisplaced[e] = displaced
    }

    /// Ends entry `e`'s restore without restoring it (its record's read could not serve it,
    /// and its tokens are lost later, with the record): it is on disk again as far as this
    /// table says, found by `entry`. Precondition: `e` is being restored.
    func abandonRestore(_ e: Int) {
        precondition(entryRow[e] >= 0 && entryDestination[e] >= 0, "entry \(e) is not being restored")
        entryDestination[e] = -1
        location[Self.key(Int(entryRow[e]), entryPosition[e])] = Int32(e)
    }

    /// Kills entry `e` (restored, lost or dropped); returns the record's disk slot when that
    /// was its last live entry (the caller unpins it; the record id is free again), else -1
    /// (always for the open record, which stays open).
    func remove(_ e: Int) -> Int32 {
        precondition(entryRow[e] >= 0, "entry \(e) is dead")
        if entryDestination[e] < 0 { location[Self.key(Int(entryRow[e]), entryPosition[e])] = nil }
        entryRow[e] = -1
        entryDestination[e] = -1
        let r = e / tokensPerRecord
        recordLive[r] -= 1
        guard recordLive[r] == 0 && r != Int(openRecord) else { return -1 }
        let slot = recordSlot[r]
        recordOfSlot[slot] = nil
        recordSlot[r] = -1
        freeRecords.append(Int32(r))
        return slot
    }

    /// The disk slots of every record (to unpin when the sequence goes).
    var slots: [Int32] { recordSlot.filter { $0 >= 0 } }

    @inline(__always) private static func key(_ row: Int, _ position: Int32) -> UInt64 {
        UInt64(row) << 32 | UInt64(UInt32(bitPattern: position))
    }
}
