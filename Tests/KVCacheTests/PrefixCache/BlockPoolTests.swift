import Testing
@testable import KVCache

@Suite("Block pool")
struct BlockPoolTests {
    @Test func allocatesEveryBlockOnceThenRunsOut() throws {
        let pool = BlockPool(capacity: 8)
        let blocks = try (0..<8).map { _ in try pool.allocate() }
        #expect(Set(blocks).count == 8)
        #expect(throws: KVError.self) { try pool.allocate() }
        pool.release(blocks[3])
        #expect(try pool.allocate() == blocks[3])
    }

    /// Two blocks of one public hash and different fingerprints (a crafted collision) are both
    /// indexed and found by their fingerprints, while the events and the dump stay a set of
    /// hashes: one `blockStored` when the hash appears, one `blockRemoved` when its last block
    /// leaves, whichever leaves first.
    @Test(arguments: [false, true])
    func collidingBlocksAreBothIndexedAndTheEventsStayASet(firstLeavesFirst: Bool) throws {
        let pool = BlockPool(capacity: 4)
        let a = try pool.allocate(), b = try pool.allocate(), c = try pool.allocate()
        #expect(pool.insert(a, hash: 42, parent: 0, fingerprint: 1))
        #expect(pool.insert(b, hash: 42, parent: 7, fingerprint: 2), "a collision gets its own entry")
        #expect(!pool.insert(c, hash: 42, parent: 0, fingerprint: 1), "the same block again does not")
        #expect(pool.lookup(42, fingerprint: 1) == a && pool.lookup(42, fingerprint: 2) == b)
        #expect(pool.lookup(42, fingerprint: 3) == -1 && pool.lookup(42, fingerprint: 0) >= 0)
        #expect(drained(pool) == [KVEvent(kind: .blockStored, blockHash: 42, parentHash: 0)])
        var dump: [KVEvent] = []
        pool.appendIndexed(to: &dump)
        #expect(dump.map(\.blockHash) == [42], "the dump lists a hash once")
        pool.release(a)
        pool.release(b)
        let (first, second) = firstLeavesFirst ? (a, b) : (b, a)
        pool.evict(first)
        #expect(drained(pool).isEmpty, "the hash is still present")
        #expect(pool.lookup(42, fingerprint: firstLeavesFirst ? 2 : 1) == second)
        #expect(pool.lookup(42, fingerprint: firstLeavesFirst ? 1 : 2) == -1)
        dump = []
        pool.appendIndexed(to: &dump)
        #expect(dump.map(\.blockHash) == [42])
        pool.evict(second)
        #expect(drained(pool).map(\.kind) == [.blockRemoved] && pool.lookup(42, fingerprint: 0) == -1)
        #expect(pool.insert(c, hash: 42, parent: 0, fingerprint: 1), "the hash is free again")
    }

    private func drained(_ pool: BlockPool) -> [KVEvent] {
        var out = [KVEvent](repeating: KVEvent(kind: .allCleared, blockHash: 0, parentHash: 0), count: 16)
        let n = out.withUnsafeMutableBufferPointer { pool.events.drain(into: $0) }
        return Array(out[..<n])
    }

    @Test func releasedIndexedBlocksAreCachedAndEvictedOldestFirst() throws {
        let pool = BlockPool(capacity: 3)
        let a = try pool.allocate(), b = try pool.allocate(), c = try pool.allocate()
        pool.insert(a, hash: 10, parent: 0, fingerprint: 0)
        pool.insert(b, hash: 11, parent: 10, fingerprint: 0)
        pool.release(b)  // cached first: the oldest
        pool.release(a)
        #expect(pool.cachedCount == 2)
        pool.release(c)  // not indexed: freed
        _ = try pool.allocate()  // takes the free one
        _ = try pool.allocate()  // evicts b
        #expect(pool.lookup(11, fingerprint: 0) == -1)
        #expect(pool.lookup(10, fingerprint: 0) == a)
        #expect(pool.evictedCount == 1)
    }

    @Test func aHitTakesACachedBlockOutOfTheLRU() throws {
        let pool = BlockPool(capacity: 2)
        let a = try pool.allocate()
        pool.insert(a, hash: 7, parent: 0, fingerprint: 0)
        pool.release(a)
        pool.retain(pool.lookup(7, fingerprint: 0))
        #expect(pool.cachedCount == 0)
        #expect(pool.usedCount == 1)
        _ = try pool.allocate()
        #expect(throws: KVError.self) { try pool.allocate() }  // a is in use: not evictable
    }

    /// A freed block keeps its prepared hash (the free touches none), and the next
    /// allocation of its id clears it: a new owner never inherits a hash it could index
    /// (the swap-in that left a block unprepared once indexed another prompt's hash).
    @Test func anAllocationClearsThePreviousOwnersPreparedHash() throws {
        let pool = BlockPool(capacity: 1)
        let a = try pool.allocate()
        pool.prepare(a, hash: 21, parent: 20, fingerprint: 22)
        #expect(pool.prepared(a) == (hash: 21, parent: 20, fingerprint: 22))
        pool.release(a)
        #expect(try pool.allocate() == a)
        #expect(pool.prepared(a) == (hash: 0, parent: 0, fingerprint: 0))
        #expect(!pool.insert(a, hash: pool.prepared(a).hash, parent: pool.prepared(a).parent, fingerprint: 0), "nothing to index under")
    }

    @Test func aHashIsIndexedOnce() throws {
        let pool = BlockPool(capacity: 2)
        let a = try pool.allocate(), b = try pool.allocate()
        #expect(pool.insert(a, hash: 5, parent: 0, fingerprint: 0))
        #expect(!pool.insert(b, hash: 5, parent: 0, fingerprint: 0))
        #expect(pool.lookup(5, fingerprint: 0) == a)
    }
}

@Suite("Event queue")
struct EventQueueTests {
    @Test func keepsOrderAndDropsTheOldestWhenFull() throws {
        let q = try EventQueue(capacity: 3)
        for h in 1...5 { q.push(KVEvent(kind: .blockStored, blockHash: UInt64(h), parentHash: 0)) }
        #expect(q.dropped == 2)
        var out = [KVEvent](repeating: KVEvent(kind: .allCleared, blockHash: 0, parentHash: 0), count: 2)
        let n = out.withUnsafeMutableBufferPointer { q.drain(into: $0) }
        #expect(n == 2)
        #expect(out.map(\.blockHash) == [3, 4])
        #expect(q.count == 1)
    }

    @Test func growingKeepsThePendingEventsInOrderAndAddsRoom() throws {
        let q = try EventQueue(capacity: 3)
        for h in 1...5 { q.push(KVEvent(kind: .blockStored, blockHash: UInt64(h), parentHash: 0)) }  // wrapped: 3, 4, 5
        try q.grow(by: 2, "test")
        #expect(q.capacity == 5)
        for h in 6...7 { q.push(KVEvent(kind: .blockStored, blockHash: UInt64(h), parentHash: 0)) }
        #expect(q.dropped == 2, "the two new events fit")
        q.push(KVEvent(kind: .blockStored, blockHash: 8, parentHash: 0))
        #expect(q.dropped == 3, "full again: the oldest goes, as before")
        var out = [KVEvent](repeating: KVEvent(kind: .allCleared, blockHash: 0, parentHash: 0), count: 8)
        let n = out.withUnsafeMutableBufferPointer { q.drain(into: $0) }
        #expect(out.prefix(n).map(\.blockHash) == [4, 5, 6, 7, 8])
    }
}

@Suite("Block pool over paged memory")
struct PagedBlockPoolTests {
    @Test func holdsExactlyTheBlocksOfItsBudgetAndCommitsMemoryForThem() throws {
        let c = smallConfig(.paged, memoryBytes: 512 << 10)  // 1024 blocks of 4 tensors x 128 B
        let pool = try BlockPool(pagedMemory: c)
        #expect(pool.capacity == 1024)
        let blocks = try (0..<1024).map { _ in try pool.allocate() }
        #expect(Set(blocks).count == 1024)
        #expect(throws: KVError.self) { try pool.allocate() }
        for b in blocks { pool.release(b) }
        #expect(try pool.allocate() >= 0)
    }

    @Test func aBadConfigIsRefusedWithAStatus() {
        var c = smallConfig(.paged)
        c.pageBytes = 3000
        let error = thrown { () throws(KVError) in _ = try BlockPool(pagedMemory: c) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("page_bytes 3000") == true)
    }
}
