/// One sequence's offloaded tokens (episodic offload): which disk-tier slot holds the K/V of
/// each token a compaction or a focus took out of memory, keyed by (layer, original
/// position) — never by block hash: these records are private to the sequence, are never
/// served as prefix hits, and go when the sequence goes.
///
/// Storage: a *record* is one disk slot (the tier's slot payload, one block of every layer's
/// K and V in the paged layout) holding up to `tokensPerRecord` tokens of any layers, token
/// `i` at payload offset `i * 2 * tokenBytes`: its K, then its V (every KV head, exactly the
/// bytes memory held). One compaction's evicted tokens fill records in order, so a step that
/// evicts few tokens still writes whole slots, but only as many as it needs.
///
/// Entry `record * tokensPerRecord + i` describes token `i` of `record`: its layer (-1 when
/// dead: restored or lost), position and, while a read restores it, the memory slot the read
/// fills and the position of the token that left that slot for it.
///
/// A fork's table (`init(forkOf:)`) describes the same disk slots as its parent's: records
/// are immutable once written, so sequences share them, each through its own pin and its own
/// entries (a token restored or dropped by one sequence stays on disk for the other).
///
/// Invariants: a record's `live` count is the number of its entries not dead; a record with a
/// live entry holds a disk slot pinned once by this sequence (other sequences' tables may hold
/// the same slot, each with its own pin), released (and its id reused) when the count reaches
/// 0; `location` maps exactly the live entries that are not being restored. Cost: O(1) per
/// token (a dictionary probe); the arrays grow with the records and are reused afterwards.
/// Not thread-safe: the engine serialises calls.
final class OffloadedTokens {
    /// Tokens one record holds.
    let tokensPerRecord: Int
    /// Per record: its pinned disk slot, or -1 (free id).
    private(set) var recordSlot: [Int32] = []
    /// Per record: entries not dead.
    private(set) var recordLive: [Int32] = []
    private var freeRecords: [Int32] = []
    /// Per entry: layer (-1 dead), original position.
    private(set) var entryLayer: [Int32] = []
    private(set) var entryPosition: [Int32] = []
    /// Per entry: the memory slot a pending read fills (-1: none), and the position of the token
    /// that left that slot for it.
    private(set) var entryDestination: [Int32] = []
    private(set) var entryDisplaced: [Int32] = []
    /// (layer << 32 | position) -> entry, for tokens on disk and not being restored.
    private var location: [UInt64: Int32] = [:]
    /// Records with a restoring read in flight.
    var readsPending = 0
    /// Tokens lost (a record that could not be written or read back) since `ready` reported it.
    var lostSinceReport = 0

    /// A table for records of `tokensPerRecord` tokens.
    init(tokensPerRecord: Int) {
        precondition(tokensPerRecord > 0)
        self.tokensPerRecord = tokensPerRecord
    }

    /// A table for a fork of the sequence `parent` describes: the same disk slots (the caller
    /// pins each once more for the fork), renumbered densely in record order, with the same
    /// live entries; nothing lost to report (the parent's losses are already out of the state
    /// the fork copies). Precondition: no restore of `parent` is pending (its entries' state
    /// is final). Cost: O(parent's records ever held) to scan plus O(live records ×
    /// `tokensPerRecord`) time and allocation.
    convenience init(forkOf parent: OffloadedTokens) {
        precondition(parent.readsPending == 0, "a fork copies a table with restores pending")
        self.init(tokensPerRecord: parent.tokensPerRecord)
        for r in parent.recordSlot.indices where parent.recordSlot[r] >= 0 {
            let record = addRecord(slot: parent.recordSlot[r]), first = r * tokensPerRecord
            for i in 0..<tokensPerRecord where parent.entryLayer[first + i] >= 0 {
                add(record: record, index: i, layer: Int(parent.entryLayer[first + i]), position: parent.entryPosition[first + i])
            }
        }
    }

    /// Tokens on disk (live entries).
    var tokenCount: Int { recordLive.reduce(0) { $0 + Int($1) } }

    /// Records holding a disk slot.
    var recordCount: Int { recordSlot.count - freeRecords.count }

    /// A record id for disk slot `slot` (already pinned for this sequence), with no entry yet.
    func addRecord(slot: Int32) -> Int32 {
        precondition(slot >= 0)
        if let r = freeRecords.popLast() {
            recordSlot[Int(r)] = slot
            return r
        }
        let r = Int32(recordSlot.count)
        recordSlot.append(slot)
        recordLive.append(0)
        let entries = (Int(r) + 1) * tokensPerRecord
        entryLayer += [Int32](repeating: -1, count: entries - entryLayer.count)
        entryPosition += [Int32](repeating: 0, count: entries - entryPosition.count)
        entryDestination += [Int32](repeating: -1, count: entries - entryDestination.count)
        entryDisplaced += [Int32](repeating: 0, count: entries - entryDisplaced.count)
        return r
    }

    /// Records token `index` of `record`: `layer`'s token at `position`. Precondition: the
    /// entry is dead and the token is not on disk already.
    func add(record: Int32, index: Int, layer: Int, position: Int32) {
        let e = Int(record) * tokensPerRecord + index
        precondition(entryLayer[e] < 0 && index < tokensPerRecord)
        entryLayer[e] = Int32(layer)
        entryPosition[e] = position
        entryDestination[e] = -1
        recordLive[Int(record)] += 1
        let inserted = location.updateValue(Int32(e), forKey: Self.key(layer, position)) == nil
        precondition(inserted, "layer \(layer) position \(position) is already on disk")
    }

    /// The entry of `layer`'s token at `position` on disk, or nil.
    func entry(layer: Int, position: Int32) -> Int? { location[Self.key(layer, position)].map(Int.init) }

    /// The record and index of entry `e`.
    func record(of e: Int) -> (record: Int32, index: Int) { (Int32(e / tokensPerRecord), e % tokensPerRecord) }

    /// Marks entry `e` as being restored into memory slot `destination`, where it replaces the
    /// token at `displaced` (no longer found by `entry`).
    func beginRestore(_ e: Int, destination: Int, displaced: Int32) {
        precondition(entryLayer[e] >= 0 && entryDestination[e] < 0)
        location[Self.key(Int(entryLayer[e]), entryPosition[e])] = nil
        entryDestination[e] = Int32(destination)
        entryDisplaced[e] = displaced
    }

    /// Kills entry `e` (restored, lost or dropped); returns the record's disk slot when that
    /// was its last live entry (the caller unpins it; the record id is free again), else -1.
    func remove(_ e: Int) -> Int32 {
        precondition(entryLayer[e] >= 0, "entry \(e) is dead")
        if entryDestination[e] < 0 { location[Self.key(Int(entryLayer[e]), entryPosition[e])] = nil }
        entryLayer[e] = -1
        entryDestination[e] = -1
        let r = e / tokensPerRecord
        recordLive[r] -= 1
        guard recordLive[r] == 0 else { return -1 }
        let slot = recordSlot[r]
        recordSlot[r] = -1
        freeRecords.append(Int32(r))
        return slot
    }

    /// The disk slots of every record (to unpin when the sequence goes).
    var slots: [Int32] { recordSlot.filter { $0 >= 0 } }

    @inline(__always) private static func key(_ layer: Int, _ position: Int32) -> UInt64 {
        UInt64(layer) << 32 | UInt64(UInt32(bitPattern: position))
    }
}
