import KVCache
import Testing
@testable import KVRouter

/// The approximate cache view evicts each slot's least recently routed blocks: a block routed
/// again is refreshed, and within one route the first block is the most recent, so a chain
/// loses its tail before its head. Scenarios from the audit that found the FIFO ring (which
/// never refreshed and evicted a chain head first), then the view against a reference LRU
/// model written with arrays over random routes, `forget`s and table refusals.
@Suite struct ApproximateViewLRUTests {
    /// The audit's repro at the default 16,384 blocks per instance: a 2-block hot prompt and a
    /// 16-block unique one routed to the same instance on every iteration. The hot prefix stays
    /// whole throughout (the FIFO lost it at iteration 1023, once 2 + 1024 x 16 blocks had
    /// been credited); once the instance is full it holds the last 1023 unique prompts whole,
    /// the 1024th back by its first 14 blocks (the 16,384 - 2 - 1023 x 16 left), older ones not
    /// at all.
    @Test func aPrefixRoutedEveryIterationStaysWhileUniquePromptsStreamThrough() throws {
        let r = try makeRouter(.prefixTree, instances: 1)
        #expect(r.view.mode == .approximate && r.config.approximateBlocksPerInstance == 16_384)
        let hot = chain(7, count: 2)
        var unique: [[UInt64]] = []
        for k in 0..<1_100 {
            #expect(try r.routeSlot(hot, tokens: 32) == 0)
            unique.append(chain(1_000 + UInt64(k), count: 16))
            #expect(try r.routeSlot(unique[k], tokens: 256) == 0)
            guard r.cached(hot, slot: 0) == 2 else {
                Issue.record("iteration \(k): the hot prefix matches \(r.cached(hot, slot: 0)) of its 2 blocks")
                return
            }
            #expect(r.cached(unique[k], slot: 0) == 16)
        }
        #expect(r.view.heldBlocks(slot: 0) == 16_384)
        let last = unique.count - 1
        #expect(r.cached(unique[last - 1022], slot: 0) == 16)
        #expect(r.cached(unique[last - 1023], slot: 0) == 14, "the oldest partly held prompt keeps its head")
        #expect(r.cached(unique[last - 1024], slot: 0) == 0)
    }

    /// Within one route the first block is the most recent: a 6-block chain followed by a
    /// 4-block one in an 8-block slot keeps the first's 4 leading blocks (the FIFO kept its last
    /// 4, which no prefix match reaches).
    @Test func aChainLosesItsTailBeforeItsHead() {
        let v = CacheView(mode: .approximate, trackedBlocks: 64, approximateBlocksPerInstance: 8)
        let a = chain(1, count: 6), b = chain(2, count: 4)
        a.withUnsafeBufferPointer { v.recordRoute($0, slot: 0) }
        b.withUnsafeBufferPointer { v.recordRoute($0, slot: 0) }
        #expect(a.withUnsafeBufferPointer { v.matchedBlocks($0, slot: 0) } == 4)
        #expect(b.withUnsafeBufferPointer { v.matchedBlocks($0, slot: 0) } == 4)
        #expect(v.table.slots(a[4]) == 0 && v.table.slots(a[5]) == 0 && v.heldBlocks(slot: 0) == 8)
        #expect(v.recencyOrder(slot: 0) == b + a[0..<4])
    }

    /// A route longer than the slot keeps its first blocks (the route stops once the slot holds
    /// nothing else), and a later route refreshes a held prefix instead of evicting it.
    @Test func aRouteLongerThanTheSlotKeepsItsHeadAndRefreshesMove() {
        let v = CacheView(mode: .approximate, trackedBlocks: 64, approximateBlocksPerInstance: 8)
        let long = chain(3, count: 12), other = chain(4, count: 3)
        long.withUnsafeBufferPointer { v.recordRoute($0, slot: 5) }
        #expect(long.withUnsafeBufferPointer { v.matchedBlocks($0, slot: 5) } == 8 && v.heldBlocks(slot: 5) == 8)
        #expect(v.table.count == 8 && v.table.refused == 0)
        // A 1-block prompt evicts block 7; refreshing blocks 0-1 puts them before it, so a new
        // 3-block chain evicts blocks 6, 5, 4.
        let one = chain(5, count: 1)
        one.withUnsafeBufferPointer { v.recordRoute($0, slot: 5) }
        long.withUnsafeBufferPointer { v.recordRoute(UnsafeBufferPointer(rebasing: $0[0..<2]), slot: 5) }
        #expect(v.recencyOrder(slot: 5) == Array(long[0..<2]) + one + long[2..<7])
        other.withUnsafeBufferPointer { v.recordRoute($0, slot: 5) }
        #expect(long.withUnsafeBufferPointer { v.matchedBlocks($0, slot: 5) } == 4)
        #expect(v.recencyOrder(slot: 5) == other + long[0..<2] + one + long[2..<4])
    }

    /// The reference: per slot an array, most recently routed first, updated by the documented
    /// rule one hash at a time (`CacheView.recordRoute`).
    struct Model {
        var lists: [[UInt64]] = Array(repeating: [], count: 4)
        var refused: UInt64 = 0
        let capacity: Int, tracked: Int

        var union: Set<UInt64> { lists.reduce(into: Set<UInt64>()) { $0.formUnion($1) } }

        mutating func route(_ hashes: [UInt64], slot: Int) {
            var placed = 0  // the route's hashes lead the list
            for h in hashes where h != 0 {
                if let j = lists[slot].firstIndex(of: h) {
                    lists[slot].remove(at: j)
                    if j < placed { placed -= 1 }
                } else {
                    if lists[slot].count == capacity {
                        if placed == capacity { break }  // nothing but this route's hashes left
                        lists[slot].removeLast()
                    }
                    let u = union
                    if !u.contains(h) && u.count >= tracked {  // the table is full: refused
                        refused += 1
                        break
                    }
                }
                lists[slot].insert(h, at: placed)
                placed += 1
            }
        }
    }

    /// Random routes (prefixes of 6 conversations of 10 chained blocks, some with a repeated
    /// hash, a hash 0 or a unique tail) to 4 slots, and `forget`s; 5-block slots (16-entry
    /// recency maps, so probes collide and removals shift entries), and a table of 12 entries
    /// (fewer than the 4 x 5 the slots may hold: it refuses) or 200 (it never does). After
    /// every step each slot's recency order, the table's masks over every hash used, its count
    /// and refusals equal the model's.
    @Test(arguments: [12, 200]) func theViewIsTheReferenceLRU(tracked: Int) {
        let conversations = (0..<6).map { chain(100 + UInt64($0), count: 10) }
        var everyRefused: UInt64 = 0, everyEvicting = 0, everyForget = 0
        for seed in 1...40 {
            var rng = SplitMix64(seed: UInt64(seed))
            let v = CacheView(mode: .approximate, trackedBlocks: tracked, approximateBlocksPerInstance: 5)
            var model = Model(capacity: 5, tracked: tracked)
            var universe = Set(conversations.joined())
            for step in 0..<400 {
                let slot = Int(rng.next() % 4)
                if rng.next() % 12 == 0 {
                    if !model.lists[slot].isEmpty { everyForget += 1 }
                    v.forget(slot: slot)
                    model.lists[slot] = []
                } else {
                    let c = conversations[Int(rng.next() % 6)]
                    var route = Array(c[0..<(1 + Int(rng.next() % 10))])
                    switch rng.next() % 8 {
                    case 0: route.insert(route[Int(rng.next() % UInt64(route.count))], at: Int(rng.next() % UInt64(route.count + 1)))
                    case 1: route.insert(0, at: Int(rng.next() % UInt64(route.count + 1)))
                    case 2: route += chain(10_000 + UInt64(seed * 1000 + step), count: 1 + Int(rng.next() % 3))
                    default: break
                    }
                    universe.formUnion(route)
                    if model.lists[slot].count == 5 && route.contains(where: { $0 != 0 && !model.lists[slot].contains($0) }) {
                        everyEvicting += 1
                    }
                    route.withUnsafeBufferPointer { v.recordRoute($0, slot: slot) }
                    model.route(route, slot: slot)
                }
                var agreed = true
                for s in 0..<4 {
                    agreed = agreed && v.recencyOrder(slot: s) == model.lists[s] && v.heldBlocks(slot: s) == model.lists[s].count
                }
                for h in universe where h != 0 {
                    let mask = (0..<4).reduce(UInt64(0)) { $0 | (model.lists[$1].contains(h) ? 1 << UInt64($1) : 0) }
                    agreed = agreed && v.table.slots(h) == mask
                }
                agreed = agreed && v.table.count == model.union.count && v.table.refused == model.refused
                guard agreed else {
                    Issue.record("seed \(seed) step \(step): the view and the model differ (slot \(slot): \(v.recencyOrder(slot: slot)) vs \(model.lists[slot]))")
                    return
                }
            }
            everyRefused += model.refused
        }
        #expect(everyEvicting > 1000 && everyForget > 100, "\(everyEvicting) evicting routes, \(everyForget) forgets of a held slot")
        #expect(tracked < 100 ? everyRefused > 100 : everyRefused == 0, "\(everyRefused) refused with room for \(tracked)")
    }
}
