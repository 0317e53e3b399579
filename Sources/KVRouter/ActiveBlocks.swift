import KVCache

/// Dynamo's active blocks (`lib/kv-router` `ActiveSequences`): per instance, the prompt block
/// hashes of the requests routed there that have not finished (queued ones included), each
/// refcounted, so an instance's active blocks are its distinct hashes (O(1)) and a request's
/// new blocks there are its hashes not among them. Only policies with
/// `PolicyKind.countsActiveBlocks` (overlap cost) keep one; `Router.route` adds a request's
/// hashes, `Router.finish` removes them when the server says the request finished, as Dynamo's
/// `free` does at completion (its `mark_prefill_completed` drops pending prefill tokens only,
/// which the load reports carry here). Output blocks are not counted, as in Dynamo by default.
///
/// Memory is bounded: an instance holds at most `limitPerInstance` distinct hashes (an entry
/// of its flat count table, `HashCounts`, 32-64 bytes, plus a shared mask-table entry, 32-128
/// bytes, each: 64-192 bytes an active hash; at most 8 MiB of count table an instance). A
/// request that would take it past that first clears the instance's set (counted in `resets`):
/// a server that never calls finish makes the count restart from its latest requests rather
/// than grow (Dynamo expires requests unfinished after 5 minutes instead); the cleared
/// requests' later finishes are refused, changing nothing. A request of more hashes than the
/// limit is not counted at all (its finish is refused alike). A hash's reference count
/// saturates at `UInt32.max` (a server that routes one prompt 4 billion times and never
/// finishes it). Not thread-safe.
public final class ActiveBlocks {
    /// Distinct active hashes an instance may hold: 262,144 blocks, 4M tokens of 16-token
    /// blocks routed and unfinished at one instance.
    public static let limitPerInstance = 1 << 18
    /// Per slot: reference count of each active hash (`RouterConfig.maxInstances` tables).
    private let counts: UnsafeMutablePointer<HashCounts>
    /// Per hash: the slots where it is active (for one probe per hash in `countPresent`).
    private let table: BlockMaskTable
    /// Per slot: how many of the hashes last given to `countPresent` are active there.
    public let present: UnsafeMutablePointer<Int>
    /// Instances' sets cleared because a request would take them past `limitPerInstance`.
    public private(set) var resets: UInt64 = 0

    /// Empty sets for every slot.
    init() {
        counts = .allocate(capacity: RouterConfig.maxInstances)
        for s in 0..<RouterConfig.maxInstances { (counts + s).initialize(to: HashCounts()) }  // an array each
        table = BlockMaskTable(maxEntries: RouterConfig.maxInstances * Self.limitPerInstance)
        present = .allocate(capacity: RouterConfig.maxInstances)
        present.initialize(repeating: 0, count: RouterConfig.maxInstances)
    }

    deinit {
        for s in 0..<RouterConfig.maxInstances { counts[s].deallocate() }
        counts.deallocate()
        present.deallocate()
    }

    /// Distinct active hashes at `slot` (Dynamo's `active_blocks`). O(1).
    @inline(__always) public func unique(slot: Int) -> Int { counts[slot].count }

    /// Fills `present[s]` for the slots of `slots`: how many of `hashes` are active at `s`
    /// (so Dynamo's `new_blocks` is `hashes.count - present[s]`; a hash of 0, which the table
    /// never holds, counts as new). One table probe per hash
    /// plus one step per slot it is active at; no allocation.
    @inline(__always)
    func countPresent(_ hashes: UnsafeBufferPointer<UInt64>, slots: UInt64) {
        var m = slots
        while m != 0 {
            present[m.trailingZeroBitCount] = 0
            m &= m - 1
        }
        for h in hashes {
            var b = table.slots(h) & slots
            while b != 0 {
                present[b.trailingZeroBitCount] += 1
                b &= b - 1
            }
        }
    }

    /// Adds one reference to each of `hashes` at `slot`, first clearing the slot's set if they
    /// could take it past `limitPerInstance`; nothing for more hashes than the limit. One
    /// count-table probe and, for a hash new there, one mask-table probe per hash; allocates
    /// when the slot's count table or the mask table grows.
    func add(_ hashes: UnsafeBufferPointer<UInt64>, slot: Int) {
        if hashes.count > Self.limitPerInstance { return }
        if counts[slot].count + hashes.count > Self.limitPerInstance {
            clear(slot: slot)
            resets += 1
        }
        let bit: UInt64 = 1 << UInt64(slot)
        for h in hashes where counts[slot].add(h) { table.set(h, bit) }
    }

    /// Adds one to `count`, saturating; whether it was 0 (the hash is new at the slot): the
    /// rule of `HashCounts.add`, which takes its entry in place.
    @inline(__always)
    static func increment(_ count: inout UInt32) -> Bool {
        defer { if count < .max { count += 1 } }
        return count == 0
    }

    /// Removes one reference to each of `hashes` at `slot`; returns false, changing nothing,
    /// when one of them has none there (a hash repeated in the prompt whose last reference an
    /// earlier occurrence took is passed over). Two count-table probes per hash, one mask-table
    /// probe per hash whose last reference goes.
    func remove(_ hashes: UnsafeBufferPointer<UInt64>, slot: Int) -> Bool {
        for h in hashes where !counts[slot].contains(h) { return false }
        let bit: UInt64 = 1 << UInt64(slot)
        for h in hashes where counts[slot].release(h) { table.clear(h, bit) }
        return true
    }

    /// Forgets every active hash at `slot` (keeping its count table's array). O(that array).
    func clear(slot: Int) {
        let bit: UInt64 = 1 << UInt64(slot)
        counts[slot].forEachKey { table.clear($0, bit) }
        counts[slot].removeAll()
    }
}
