import Testing
@testable import KVCache

/// `HashChains.forEachParentsFirst`, the order of both tiers' index dumps, on a hand-made
/// index: exactly which events, in which order, for reversed chains, a colliding hash, an id
/// outside the index with a stale hash, an absent parent and a parent cycle.
@Suite("Parents-first listing")
struct ParentsFirstTests {
    @Test func listsEachHashOnceAfterItsAncestorsInIdOrderOfRuns() throws {
        let ids = 10
        let hashes = UnsafeMutablePointer<UInt64>.allocate(capacity: ids)
        let parents = UnsafeMutablePointer<UInt64>.allocate(capacity: ids)
        let fingerprints = UnsafeMutablePointer<UInt64>.allocate(capacity: ids)
        defer { hashes.deallocate(); parents.deallocate(); fingerprints.deallocate() }
        hashes.initialize(repeating: 0, count: ids)
        parents.initialize(repeating: 0, count: ids)
        fingerprints.initialize(repeating: 0, count: ids)
        let index = try HashChains(ids: ids, fingerprints: fingerprints, "test")
        func put(_ id: Int, _ hash: UInt64, parent: UInt64, fingerprint: UInt64) {
            hashes[id] = hash
            parents[id] = parent
            fingerprints[id] = fingerprint
            #expect(index.insert(hash, Int32(id), fingerprint: fingerprint) != .refused)
        }
        put(0, 30, parent: 20, fingerprint: 1)  // chain 10 <- 20 <- 30, ids in reverse order
        put(1, 20, parent: 10, fingerprint: 1)
        put(2, 10, parent: 0, fingerprint: 1)
        put(3, 20, parent: 99, fingerprint: 2)  // collides with id 1: listed once, as id 1
        hashes[4] = 40  // not indexed: a stale hash is ignored
        parents[4] = 30
        put(5, 50, parent: 77, fingerprint: 1)  // its parent is in no index: starts a run
        put(6, 60, parent: 70, fingerprint: 1)  // a cycle 60 <-> 70 (crafted collisions)
        put(7, 70, parent: 60, fingerprint: 1)
        put(9, 80, parent: 30, fingerprint: 1)  // a child of 30, after it
        var events: [KVEvent] = []
        index.forEachParentsFirst(ids: ids, hashes: hashes, parents: parents, tier: KVEvent.diskTier) { events.append($0) }
        #expect(events.allSatisfy { $0.kind == .blockStored && $0.tier == KVEvent.diskTier })
        let listed = events.map { [$0.blockHash, $0.parentHash] }
        #expect(listed == [[10, 0], [20, 10], [30, 20], [50, 77], [70, 60], [60, 70], [80, 30]])
    }
}
