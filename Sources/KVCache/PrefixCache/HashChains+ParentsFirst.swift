/// Listing a prefix index parents first, for the index dump (`Engine.indexEvents`) and a
/// reopened disk tier's announcement: a consumer building a prefix tree (such as Dynamo's radix
/// tree) stores a block only under a parent it holds, and ids follow no chain order once
/// evicted blocks or dropped slots are reused (a trim spills a freed chain's tail first).
extension HashChains {
    /// Calls `body` with a `blockStored` of `tier` (hash, parent) per hash this index holds, for
    /// the hash's first id (`first`: ids of a colliding hash are listed once, as the events
    /// announce a hash once), each after its ancestors this index holds; `hashes[id]` and
    /// `parents[id]` are the hash and parent hash of each id in `0..<ids` (those of an id the
    /// index does not hold are ignored, whatever they are). An id whose parent the index lacks
    /// (a chain's first block, parent 0; a parent in another tier or none) starts a run: from
    /// each unlisted id in id order, the walk goes up to the first ancestor listed or absent and
    /// the path is listed top down. A parent cycle (only by crafted collisions) is cut where the
    /// walk meets it again.
    ///
    /// Two passes, so that no hash lookup waits for another: the first looks up, per id, whether
    /// it is its hash's first and which id is its parent's first, each lookup independent of the
    /// last (the processor overlaps their cache misses); the second walks those parent ids in
    /// scratch that stays in cache. A walk up the chains by hash lookups, each waiting for the
    /// one before (a table of 12 bytes per slot, 2-4 slots per id: 3 MiB for 65,536 blocks),
    /// took 4x the time (docs/events.md).
    /// Cost: O(ids), two hash lookups per id with a nonzero hash, one allocation of 8 bytes per
    /// id of scratch, and `body`'s.
    func forEachParentsFirst(ids: Int, hashes: UnsafePointer<UInt64>, parents: UnsafePointer<UInt64>,
                             tier: UInt32, _ body: (KVEvent) -> Void) {
        guard ids > 0 else { return }
        let scratch = UnsafeMutablePointer<Int32>.allocate(capacity: 2 * ids)
        defer { scratch.deallocate() }
        // up[id]: the id of its parent's first block, or one of these.
        let (up, path) = (scratch, scratch + ids)
        let (noParent, listed, notListed): (Int32, Int32, Int32) = (-1, -2, -3)
        for id in 0..<ids {
            let hash = hashes[id]
            if hash == 0 || first(hash) != Int32(id) {
                up[id] = notListed
            } else {
                up[id] = parents[id] == 0 ? noParent : first(parents[id])  // -1 when absent
            }
        }
        for id in 0..<ids where up[id] >= noParent {
            var n = 0
            var s = id
            while true {  // up to the first ancestor listed, absent, or on this path (a cycle)
                path[n] = Int32(s)
                n += 1
                let u = Int(up[s])
                up[s] = listed
                guard u >= 0 && up[u] >= noParent else { break }
                s = u
            }
            while n > 0 {  // the path top down
                n -= 1
                let p = Int(path[n])
                body(KVEvent(kind: .blockStored, tier: tier, blockHash: hashes[p], parentHash: parents[p]))
            }
        }
    }
}
