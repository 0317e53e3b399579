import KVCache
import Testing
@testable import KVRouter

/// Dynamo's active blocks (`lib/kv-router` `ActiveSequences::potential_blocks_and_tokens`): the
/// unique prompt blocks of the requests the router sent to a worker and that have not finished,
/// plus only the new request's blocks not already among them.
@Suite struct OverlapCostActiveBlocksTests {
    /// A prompt whose 8 blocks a routed, unfinished request at slot 1 already holds adds no
    /// active block there: 0 prefill + 8 active + 0 new = 8 against 8 + 0 + 8 = 16 at slot 0.
    /// Charging every block of the request again (8 + 8) tied the two, and the tie-break sent
    /// the prompt to slot 0.
    @Test func blocksAlreadyActiveAtAnInstanceAreNotChargedAgain() throws {
        let r = try makeRouter(.overlapCost, instances: 2)
        let h = chain(31, count: 8)  // 128 tokens = 8 blocks
        try r.store(h, at: 1)
        #expect(try r.routeSlot(h, tokens: 128) == 1, "cached at 1: 8 against 16")
        // The engine runs it: 8 blocks used, nothing left to prefill.
        r.report(slot: 1, load: InstanceLoad(runningBlocks: 8, activeRequests: 1))
        #expect(try r.routeSlot(h, tokens: 128) == 1, "its blocks are active at 1 already: 8 against 16")
    }
}

/// `Router.finish` and the bounds of `ActiveBlocks`.
@Suite struct RouterFinishTests {
    /// A request queued at slot 0 (the engine reports no block of it in use) still counts
    /// there: 16 + 8 active + 8 new against 16 + 0 + 8. Reported blocks in use, the count
    /// before, tied them and sent the prompt to slot 0.
    @Test func queuedRequestsCountAsActive() throws {
        let r = try makeRouter(.overlapCost, instances: 2)
        #expect(try r.routeSlot(chain(50, count: 8), tokens: 128) == 0)
        for s in 0..<2 { r.report(slot: s, load: InstanceLoad(pendingPrefillTokens: 128)) }
        #expect(try r.routeSlot(chain(51, count: 8), tokens: 128) == 1)
    }

    /// Active blocks are distinct and refcounted: a shared prefix counts once and leaves with
    /// the last request holding it.
    @Test func sharedBlocksCountOnceAndLeaveWithTheirLastRequest() throws {
        let r = try makeRouter(.overlapCost, instances: 1)
        let a = chain(60, count: 6)
        let b = Array(a[0..<4]) + chain(61, count: 2)
        _ = try r.routeSlot(a, tokens: 96)
        _ = try r.routeSlot(b, tokens: 96)
        let active = try #require(r.active)
        #expect(active.unique(slot: 0) == 8)
        try r.finish(a, at: 0)
        #expect(active.unique(slot: 0) == 6, "b's 6 blocks, 4 of them shared with a")
        try r.finish(b, at: 0)
        #expect(active.unique(slot: 0) == 0)
    }

    /// Bad input is refused and changes nothing: an unknown instance, no hashes, hashes never
    /// routed there, a second finish.
    @Test func badFinishesChangeNothing() throws {
        let r = try makeRouter(.overlapCost, instances: 2)
        let h = chain(70, count: 4)
        #expect(try r.routeSlot(h, tokens: 64) == 0)
        let active = try #require(r.active)
        #expect(failure { try r.finish(h, at: 9) } == .notFound)
        #expect(failure { try r.finish([], at: 0) } == .invalidArgument)
        #expect(failure { try r.finish(h, at: 1) } == .invalidArgument)
        #expect(failure { try r.finish(h + [12345], at: 0) } == .invalidArgument)
        #expect(active.unique(slot: 0) == 4, "a refused finish removes none of the hashes it names")
        try r.finish(h, at: 0)
        #expect(failure { try r.finish(h, at: 0) } == .invalidArgument)
        #expect(active.unique(slot: 0) == 0)
    }

    /// Other policies keep nothing (no `active`) and accept any finish at a live instance;
    /// removing an instance forgets its active blocks.
    @Test func onlyOverlapCostKeepsActiveBlocks() throws {
        for kind in PolicyKind.allCases where kind != .overlapCost {
            let r = try makeRouter(kind, instances: 1)
            #expect(r.active == nil)
            try r.finish([1, 2], at: 0)
            #expect(failure { try r.finish([1, 2], at: 1) } == .notFound)
        }
        let r = try makeRouter(.overlapCost, instances: 1)
        _ = try r.routeSlot(chain(71, count: 3), tokens: 48)
        try r.removeInstance(0)
        try r.addInstance(5)
        #expect(r.active?.unique(slot: 0) == 0, "the slot's next instance starts with no active block")
    }

    /// A server that never calls finish: the request that would take an instance past
    /// `limitPerInstance` distinct blocks first clears its count, whose requests' finishes are
    /// then refused.
    @Test func anInstancesCountIsClearedAtItsLimit() throws {
        let r = try makeRouter(.overlapCost, instances: 1)
        let n = ActiveBlocks.limitPerInstance
        let big = (0..<n).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 | 1 }
        _ = try r.routeSlot(big, tokens: n * 16)
        let active = try #require(r.active)
        #expect(active.unique(slot: 0) == n)
        #expect(active.resets == 0)
        _ = try r.routeSlot([7], tokens: 16)
        #expect(active.unique(slot: 0) == 1)
        #expect(active.resets == 1)
        #expect(failure { try r.finish(big, at: 0) } == .invalidArgument)
        try r.finish([7], at: 0)
        // One request of more hashes than the limit is not counted (it cleared nothing either).
        _ = try r.routeSlot([9], tokens: 16)
        _ = try r.routeSlot(big + [3], tokens: (n + 1) * 16)
        #expect(active.unique(slot: 0) == 1 && active.resets == 1)
        #expect(failure { try r.finish(big + [3], at: 0) } == .invalidArgument)
    }

    /// A hash's reference count saturates instead of trapping (a server routing one prompt 2^32
    /// times without finishing it trapped the UInt32 through the C ABI: helper-148), and says
    /// when the hash was new at the slot.
    @Test func aReferenceCountSaturates() {
        var c: UInt32 = 0
        #expect(ActiveBlocks.increment(&c) && c == 1)
        #expect(!ActiveBlocks.increment(&c) && c == 2)
        c = .max - 1
        #expect(!ActiveBlocks.increment(&c) && c == .max)
        #expect(!ActiveBlocks.increment(&c) && c == .max)
    }

    /// The simulator finishes every request it routed; one whose blocks a reset dropped removes
    /// nothing and is counted (it trapped the replay: helper-148).
    @Test func aFinishOfBlocksAResetDroppedIsCountedNotATrap() throws {
        let r = try makeRouter(.overlapCost, instances: 1)
        let n = ActiveBlocks.limitPerInstance
        let big = (0..<n).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 | 1 }
        _ = try r.routeSlot(big, tokens: n * 16)
        _ = try r.routeSlot([7], tokens: 16)
        big.withUnsafeBufferPointer { r.finish(slot: 0, hashes: $0) }
        #expect(r.finishesOfDroppedBlocks == 1)
        [UInt64(7)].withUnsafeBufferPointer { r.finish(slot: 0, hashes: $0) }
        #expect(r.finishesOfDroppedBlocks == 1 && r.active?.unique(slot: 0) == 0)
    }
}

/// The code `body` failed with, or nil when it succeeded.
private func failure(_ body: () throws -> Void) -> KVError.Code? {
    do { try body() } catch { return (error as? KVError)?.code }
    return nil
}
