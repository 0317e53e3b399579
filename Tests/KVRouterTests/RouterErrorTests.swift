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
}
