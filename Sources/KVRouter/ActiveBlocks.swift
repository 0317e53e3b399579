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
/// Memory is bounded: an instance holds at most `limitPerInstance` distinct hashes (one
/// dictionary entry, about 24 bytes, plus a shared mask-table entry, 32-128 bytes, each). A
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
    /// Per slot: reference count of each active hash.
    private var counts: [[UInt64: UInt32]]
    /// Per hash: the slots where it is active (for one probe per hash in `countPresent`).
    private let table: BlockMaskTable
    /// Per slot: how many of the hashes last given to `countPresent` are active there.
    public let present: UnsafeMutablePointer<Int>
    /// Instances' sets cleared because a request would take them past `limitPerInstance`.
    public private(set) var resets: UInt64 = 0

    /// Empty sets for every slot.
    init() {
        counts = Array(repeating: [:], count: RouterConfig.maxInstances)
        table = BlockMaskTable(maxEntries: RouterConfig.maxInstances * Self.limitPerInstance)
        present = .allocate(capacity: RouterConfig.maxInstances)
        present.initialize(repeating: 0, count: RouterConfig.maxInstances)
    }

    deinit { present.deallocate() }

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
    /// dictionary probe (the entry updated in place) and, for a hash new there, one table probe
    /// per hash; allocates when the slot's dictionary or the table grows.
    func add(_ hashes: UnsafeBufferPointer<UInt64>, slot: Int) {
        if hashes.count > Self.limitPerInstance { return }
        if counts[slot].count + hashes.count > Self.limitPerInstance {
            clear(slot: slot)
            resets += 1
        }
        let bit: UInt64 = 1 << UInt64(slot)
        for h in hashes where Self.increment(&counts[slot][h, default: 0]) { table.set(h, bit) }
    }

    /// Adds one to `count`, saturating; whether it was 0 (the hash is new at the slot). Takes
    /// the dictionary entry in place: one probe per hash.
    @inline(__always)
    static func increment(_ count: inout UInt32) -> Bool {
        defer { if count < .max { count += 1 } }
        return count == 0
    }

    /// Removes one reference to each of `hashes` at `slot`; returns false, changing nothing,
    /// when one of them has none there. Two dictionary probes per hash, one table probe per
    /// hash whose last reference goes.
    func remove(_ hashes: UnsafeBufferPointer<UInt64>, slot: Int) -> Bool {
        for h in hashes where counts[slot][h] == nil { return false }
        let bit: UInt64 = 1 << UInt64(slot)
        for h in hashes {
            guard let c = counts[slot][h] else { continue }  // a hash repeated in the prompt
            if c == 1 {
                counts[slot][h] = nil
                table.clear(h, bit)
            } else {
                counts[slot][h] = c - 1
            }
        }
        return true
    }

    /// Forgets every active hash at `slot` (keeping its dictionary's storage). O(its hashes).
    func clear(slot: Int) {
        let bit: UInt64 = 1 << UInt64(slot)
        for h in counts[slot].keys { table.clear(h, bit) }
        counts[slot].removeAll(keepingCapacity: true)
    }
}
