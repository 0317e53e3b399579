import KVCache
import Testing
@testable import KVRouter

@Suite struct RouterErrorTests {
    @Test func routingWithNoInstancesIsNotFound() throws {
        let r = try Router(RouterConfig())
        #expect(throws: KVError.self) { try r.routeSlot([1], tokens: 1) }
        do { _ = try r.routeSlot([1], tokens: 1) } catch { #expect(error.code == .notFound) }
    }

    @Test func zeroBlocksIsInvalid() throws {
        let r = try makeRouter(.dualMap, instances: 2)
        do {
            _ = try r.routeSlot([], tokens: 10)
            Issue.record("routed a request without hashes")
        } catch { #expect(error.code == .invalidArgument) }
    }

    @Test func unknownAndRemovedInstancesAreNotFound() throws {
        let r = try makeRouter(.dualMap, instances: 2)
        #expect(throws: KVError(.notFound, "instance 7 is not in the router")) { try r.report(7, load: InstanceLoad()) }
        try r.removeInstance(1)
        #expect(throws: KVError.self) { try r.removeInstance(1) }
        #expect(throws: KVError.self) { try r.report(1, load: InstanceLoad()) }
        for k in 0..<100 { #expect(try r.route([UInt64(k + 1)].withUnsafeBufferPointer { $0 }, tokens: 1) == 0) }
    }

    @Test func addingTwiceIsExistsAndTheSixtyFifthIsRefused() throws {
        let r = try makeRouter(.roundRobin, instances: 64)
        #expect(throws: KVError.self) { try r.addInstance(3) }
        do { try r.addInstance(1000) } catch { #expect(error.code == .invalidArgument) }
        #expect(r.instanceCount == 64)
    }

    @Test func badConfigNamesTheField() {
        var c = RouterConfig()
        c.keyBlocks = 0
        do { _ = try Router(c) } catch { #expect(error.message.contains("key_blocks")) }
    }

    /// The slot fast paths (`report(slot:load:)`, `observe(slot:events:)`, package-internal:
    /// the simulator and the C ABI) take live slots only: `isLive` is true exactly for the slots
    /// of live instances, and a removed instance's slot traps (an exit test) instead of feeding
    /// the slot's next owner; the id-based public calls say `notFound` and change nothing.
    @Test func slotFastPathsTakeOnlyLiveSlots() async throws {
        let r = try makeRouter(.dualMap, instances: 3)
        try r.removeInstance(1)
        #expect(r.isLive(0) && !r.isLive(1) && r.isLive(2) && !r.isLive(3) && !r.isLive(-1) && !r.isLive(64))
        let stored = [KVEvent(kind: .blockStored, blockHash: 42, parentHash: 0)]
        #expect(throws: KVError(.notFound, "instance 1 is not in the router")) {
            try stored.withUnsafeBufferPointer { (e) throws(KVError) in try r.observe(1, events: e) }
        }
        #expect(r.view.heldBlocks(slot: 1) == 0 && r.view.table.slots(42) == 0)
        stored.withUnsafeBufferPointer { r.observe(slot: 2, events: $0) }
        #expect(r.view.table.slots(42) == 1 << 2)
        await #expect(processExitsWith: .failure) {
            let r = try makeRouter(.dualMap, instances: 2)
            try r.removeInstance(1)
            r.report(slot: 1, load: InstanceLoad(pendingPrefillTokens: 1))
        }
        await #expect(processExitsWith: .failure) {
            let r = try makeRouter(.dualMap, instances: 2)
            try r.removeInstance(1)
            [KVEvent(kind: .blockStored, blockHash: 42, parentHash: 0)].withUnsafeBufferPointer { r.observe(slot: 1, events: $0) }
        }
    }

    /// Each ring holds at most `RouterConfig.maxRingPositions` (524,288) positions: with 4,096
    /// virtual nodes two instances of weight 64 fill it exactly, a third (even of weight 1)
    /// is `invalidArgument` with the numbers and changes nothing (membership, ring sizes,
    /// every consistent-hash route), and it fits once one leaves. At the default 128 virtual
    /// nodes, 64 instances of weight 64 fit.
    @Test func anInstanceThatWouldPassTheRingLimitIsRefusedAndChangesNothing() throws {
        let r = try makeRouter(.consistentHash, instances: 0) { $0.virtualNodes = 4096 }
        try r.addInstance(1, weight: 64)
        try r.addInstance(2, weight: 64)
        #expect(RouterConfig.maxRingPositions == 2 * 4096 * 64 && r.ring1.count > 524_000)
        let rings = (r.ring1.count, r.ring2.count)
        func routes() throws -> [UInt32] { try (1...200).map { k in try r.route([UInt64(k)].withUnsafeBufferPointer { $0 }, tokens: 1) } }
        let before = try routes()
        do {
            try r.addInstance(3, weight: 1)
            Issue.record("a ring past its limit was built")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("4096 positions") && error.message.contains("524288") && error.message.contains("hold 524288"),
                    "\(error.message)")
        }
        #expect(r.instanceCount == 2 && r.slot(of: 3) < 0 && (r.ring1.count, r.ring2.count) == rings)
        #expect(try routes() == before)
        try r.removeInstance(2)
        try r.addInstance(3, weight: 1)
        #expect(r.instanceCount == 2)
        #expect(RouterConfig.maxInstances * 64 * RouterConfig().virtualNodes == RouterConfig.maxRingPositions)
    }
}
