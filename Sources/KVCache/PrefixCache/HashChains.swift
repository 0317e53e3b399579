/// A prefix index's map from a public block hash to the ids (memory blocks, disk slots, a
/// peer's slots) indexed under it, told apart by their private `BlockFingerprint`s: a `U64Table` from each hash to the
/// first id of its chain, and per id the next id of the same hash (-1: none).
///
/// The public hash can be collided by a crafted prompt (~2^32 steps, `BlockFingerprint`), and
/// an index that kept one block per hash would let that prompt's block keep another's out (a
/// denial of prefix caching) and tell, by whether its own block got in, whether the other was
/// cached (a presence oracle, across salts too). Here every block of a distinct fingerprint
/// gets its own entry, so a colliding block neither hides nor reveals another. A block of
/// fingerprint 0 (unknown: indexed from hashes alone) is refused while its hash is present, and
/// `find` with fingerprint 0 takes the first block of the hash, whatever its fingerprint.
///
/// Invariant: an id is in at most one chain, and no chain holds two ids of one fingerprint.
/// Cost: `first` one table probe, O(1) expected; `find`, `findEqual`, `insert` and `remove`
/// that plus one step per id ahead in the chain (chains longer than one exist only by crafted
/// collisions, each costing its maker ~2^32 steps). No allocation after `init`. Not thread-safe.
final class HashChains {
    private let table: U64Table
    private let next: UnsafeMutablePointer<Int32>
    /// The owner's per-id fingerprints (`find` compares them; the owner writes an id's by the
    /// time it next calls `find` after `insert`, and keeps it while the id is indexed).
    /// Unowned: the owner outlives this.
    private let fingerprints: UnsafePointer<UInt64>

    /// Distinct hashes indexed.
    var hashCount: Int { table.count }

    /// An index of ids `0..<ids` whose fingerprints are `fingerprints[id]`.
    /// Throws `outOfMemory` (`CheckedAllocations`) when its table (`U64Table`) or 4 bytes per
    /// id cannot be allocated, naming `what` it indexes.
    init(ids: Int, fingerprints: UnsafePointer<UInt64>, _ what: @autoclosure () -> String) throws(KVError) {
        table = try U64Table(maxEntries: ids, what())
        let a = CheckedAllocations()
        next = try a.allocate(repeating: -1, count: max(1, ids), "the collision links of \(what())")
        a.keep()
        self.fingerprints = fingerprints
    }

    deinit { next.deallocate() }

    /// The first id indexed under `hash`, whatever its fingerprint, or -1.
    @inline(__always) func first(_ hash: UInt64) -> Int32 { table.find(hash) }

    /// The id indexed under `hash` whose fingerprint is `fingerprint`, or -1; a `fingerprint`
    /// of 0 (a prompt known by its hashes alone) takes `first(hash)`.
    @inline(__always) func find(_ hash: UInt64, fingerprint: UInt64) -> Int32 {
        fingerprint == 0 ? table.find(hash) : findEqual(hash, fingerprint: fingerprint)
    }

    /// The id indexed under `hash` whose fingerprint equals `fingerprint`, 0 included (an id
    /// known by its hash alone matches only another such), or -1: for sharing a stored copy
    /// instead of writing one (`DiskTier.sharedSwapSlot`), where the bytes must be the block's.
    @inline(__always) func findEqual(_ hash: UInt64, fingerprint: UInt64) -> Int32 {
        var id = table.find(hash)
        while id >= 0 && fingerprints[Int(id)] != fingerprint { id = next[Int(id)] }
        return id
    }

    /// What `insert` did.
    enum Insertion { case refused, newHash, sharedHash }

    /// Indexes unindexed `id`, of `fingerprint`, under `hash`: `newHash` when
    /// `hash` was absent, `sharedHash` when it joined ids of other fingerprints under it, or
    /// `refused` (nothing changes) when an id of its fingerprint is there, or it has
    /// fingerprint 0 and `hash` is present (`find` with 0 finds that one already).
    @discardableResult
    func insert(_ hash: UInt64, _ id: Int32, fingerprint: UInt64) -> Insertion {
        let head = table.find(hash)
        if head < 0 {
            guard table.insert(hash, id) else { return .refused }
            next[Int(id)] = -1
            return .newHash
        }
        guard fingerprint != 0, find(hash, fingerprint: fingerprint) < 0 else { return .refused }
        next[Int(id)] = next[Int(head)]  // after the first: the table keeps its entry
        next[Int(head)] = id
        return .sharedHash
    }

    /// Takes indexed `id` out of `hash`'s chain; returns true when it was the last id of
    /// `hash` (the hash left the index).
    @discardableResult
    func remove(_ hash: UInt64, _ id: Int32) -> Bool {
        let head = table.find(hash)
        precondition(head >= 0, "HashChains.remove of an absent hash")
        let after = next[Int(id)]
        next[Int(id)] = -1
        if head != id {
            var p = head
            while next[Int(p)] != id {
                p = next[Int(p)]
                precondition(p >= 0, "HashChains.remove of an id not under its hash")
            }
            next[Int(p)] = after
            return false
        }
        table.remove(hash)
        if after < 0 { return true }
        table.insert(hash, after)  // the next id becomes the first
        return false
    }

    /// True when `id` is indexed under `hash`. O(chain).
    func contains(_ hash: UInt64, _ id: Int32) -> Bool {
        var i = table.find(hash)
        while i >= 0 && i != id { i = next[Int(i)] }
        return i >= 0
    }
}
