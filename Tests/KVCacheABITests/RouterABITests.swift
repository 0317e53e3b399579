#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import KVCacheABI
@testable import KVRouter

/// `kvc_router_config` / `kvc_instance_load` / `kvc_event` as raw bytes at the header's offsets.
private func routerConfig(policy: UInt32 = 0, structSize: Int = 40) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: max(structSize, 40))
    b.withUnsafeMutableBytes { kvc_router_config_init($0.baseAddress) }
    b.withUnsafeMutableBytes {
        $0.storeBytes(of: UInt32(structSize), toByteOffset: 0, as: UInt32.self)
        $0.storeBytes(of: policy, toByteOffset: 4, as: UInt32.self)
    }
    return b
}

private func load(pending: UInt64, waiting: UInt64 = 0, structSize: UInt32 = 48) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 56)
    b.withUnsafeMutableBytes {
        $0.storeBytes(of: structSize, toByteOffset: 0, as: UInt32.self)
        $0.storeBytes(of: pending, toByteOffset: 8, as: UInt64.self)
        $0.storeBytes(of: waiting, toByteOffset: 40, as: UInt64.self)
    }
    return b
}

private func event(kind: UInt32, hash: UInt64, parent: UInt64) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 24)
    b.withUnsafeMutableBytes {
        $0.storeBytes(of: kind, toByteOffset: 0, as: UInt32.self)
        $0.storeBytes(of: hash, toByteOffset: 8, as: UInt64.self)
        $0.storeBytes(of: parent, toByteOffset: 16, as: UInt64.self)
    }
    return b
}

private func lastError() -> String { String(cString: kvc_last_error()) }

private final class CRouter {
    let handle: OpaquePointer
    init(policy: UInt32 = 0) throws {
        var out: OpaquePointer?
        let rc = routerConfig(policy: policy).withUnsafeBytes { kvc_router_create($0.baseAddress, &out) }
        try #require(rc == KVC_OK, "\(lastError())")
        handle = try #require(out)
    }
    deinit { kvc_router_destroy(handle) }

    func route(_ hashes: [UInt64], tokens: Int, _ instance: inout UInt32) -> kvc_status {
        hashes.withUnsafeBufferPointer { kvc_router_route(handle, $0.baseAddress, $0.count, tokens, &instance) }
    }
}

@Suite struct RouterABITests {
    /// `kvc_router_finish`: overlap cost counts a routed request's blocks at its instance until
    /// it finishes; a finish of hashes not active there, at an unknown instance, or with no
    /// hashes is refused and changes nothing; other policies accept any finish at a live one.
    @Test func finishEndsARequestsActiveBlocks() throws {
        let r = try CRouter(policy: 5)  // KVC_ROUTER_OVERLAP_COST
        #expect(kvc_router_add_instance(r.handle, 7, 1) == KVC_OK)
        let h: [UInt64] = [11, 12, 13]
        var chosen: UInt32 = 0
        #expect(r.route(h, tokens: 48, &chosen) == KVC_OK)
        func finish(_ id: UInt32, _ hashes: [UInt64]) -> kvc_status {
            hashes.withUnsafeBufferPointer { kvc_router_finish(r.handle, id, $0.baseAddress, $0.count) }
        }
        #expect(finish(8, h) == KVC_ERR_NOT_FOUND)
        #expect(finish(7, [11, 99]) == KVC_ERR_INVALID_ARGUMENT)
        #expect(lastError().contains("not active at instance 7"))
        #expect(finish(7, []) == KVC_ERR_INVALID_ARGUMENT)
        #expect(kvc_router_finish(r.handle, 7, nil, 3) == KVC_ERR_INVALID_ARGUMENT)
        #expect(kvc_router_finish(nil, 7, h, 3) == KVC_ERR_INVALID_ARGUMENT)
        #expect(finish(7, h) == KVC_OK, "the refused finishes left the request's blocks in place")
        #expect(finish(7, h) == KVC_ERR_INVALID_ARGUMENT, "finished already")
        let d = try CRouter(policy: 0)
        #expect(kvc_router_add_instance(d.handle, 7, 1) == KVC_OK)
        #expect(h.withUnsafeBufferPointer { kvc_router_finish(d.handle, 7, $0.baseAddress, 3) } == KVC_OK)
    }

    @Test func routesToAnAddedInstance() throws {
        let r = try CRouter()
        #expect(kvc_router_add_instance(r.handle, 7, 1) == KVC_OK)
        #expect(kvc_router_add_instance(r.handle, 9, 1) == KVC_OK)
        var chosen: UInt32 = 0
        #expect(r.route([1, 2, 3], tokens: 48, &chosen) == KVC_OK)
        #expect(chosen == 7 || chosen == 9)
    }

    @Test func noInstancesIsNotFound() throws {
        let r = try CRouter()
        var chosen: UInt32 = 12345
        #expect(r.route([1], tokens: 16, &chosen) == -2)
        #expect(chosen == 12345, "output untouched on failure")
        #expect(lastError().contains("kvc_router_route") && lastError().contains("no instance"))
    }

    @Test func unknownAndRemovedInstancesAreNotFound() throws {
        let r = try CRouter()
        #expect(kvc_router_add_instance(r.handle, 1, 1) == KVC_OK)
        #expect(kvc_router_add_instance(r.handle, 1, 1) == -3)
        #expect(kvc_router_remove_instance(r.handle, 2) == -2)
        #expect(load(pending: 5).withUnsafeBytes { kvc_router_report(r.handle, 2, $0.baseAddress) } == -2)
        #expect(kvc_router_remove_instance(r.handle, 1) == KVC_OK)
        #expect(kvc_router_remove_instance(r.handle, 1) == -2)
        #expect(load(pending: 5).withUnsafeBytes { kvc_router_report(r.handle, 1, $0.baseAddress) } == -2)
        #expect(event(kind: 1, hash: 5, parent: 0).withUnsafeBytes { kvc_router_observe_events(r.handle, 1, $0.baseAddress, 1) } == -2)
        var chosen: UInt32 = 0
        #expect(r.route([1], tokens: 16, &chosen) == -2)
        #expect(lastError().contains("instance") || lastError().contains("no instance"))
    }

    @Test func zeroBlocksAndZeroTokensAreInvalid() throws {
        let r = try CRouter()
        #expect(kvc_router_add_instance(r.handle, 1, 1) == KVC_OK)
        var chosen: UInt32 = 0
        #expect(r.route([], tokens: 16, &chosen) == -1)
        #expect(lastError().contains("block hash"))
        #expect(r.route([1], tokens: 0, &chosen) == -1)
        #expect(kvc_router_route(r.handle, nil, 3, 48, &chosen) == -1)
        #expect(lastError().contains("block_hashes is NULL"))
        #expect(kvc_router_route(r.handle, nil, -1, 48, &chosen) == -1)
    }

    @Test func nullPointersAreInvalidNeverACrash() throws {
        var out: OpaquePointer?
        #expect(kvc_router_create(nil, &out) == -1 && out == nil)
        #expect(routerConfig().withUnsafeBytes { kvc_router_create($0.baseAddress, nil) } == -1)
        kvc_router_config_init(nil)
        kvc_router_destroy(nil)
        #expect(kvc_router_add_instance(nil, 1, 1) == -1)
        #expect(kvc_router_remove_instance(nil, 1) == -1)
        var chosen: UInt32 = 0
        #expect(kvc_router_route(nil, [1], 1, 16, &chosen) == -1)
        #expect(kvc_router_report(nil, 1, nil) == -1)
        #expect(kvc_router_observe_events(nil, 1, nil, 0) == -1)
        let r = try CRouter()
        #expect(kvc_router_add_instance(r.handle, 1, 1) == KVC_OK)
        #expect(kvc_router_route(r.handle, [1], 1, 16, nil) == -1)
        #expect(lastError().contains("instance is NULL"))
        #expect(kvc_router_report(r.handle, 1, nil) == -1)
        #expect(kvc_router_observe_events(r.handle, 1, nil, 2) == -1)
        #expect(kvc_router_observe_events(r.handle, 1, nil, 0) == KVC_OK)
    }

    /// `kvc_router_config_init_size` writes exactly `size` bytes (defaults, zeroes past the
    /// 40 it knows) and sets struct_size to it; the symbol `kvc_router_config_init` writes the
    /// first version's 40 bytes, so that a struct growing later never has an old binary's
    /// call write past its end. Sizes outside the accepted range write nothing.
    @Test func theSizedInitialiserWritesExactlyTheCallersBytes() {
        func initialised(_ size: Int, buffer: Int = 64) -> [UInt8] {
            var b = [UInt8](repeating: 0xEE, count: buffer)
            b.withUnsafeMutableBytes { kvc_router_config_init_size($0.baseAddress, size) }
            return b
        }
        let whole = initialised(40)
        #expect(whole[0..<4] == [40, 0, 0, 0] && whole[40...].allSatisfy { $0 == 0xEE })
        #expect(Array(whole[4..<40]) == Array(routerConfig()[4..<40]), "the defaults kvc_router_create reads")
        let older = initialised(32)
        #expect(older[0..<4] == [32, 0, 0, 0] && Array(older[4..<32]) == Array(whole[4..<32]) && older[32...].allSatisfy { $0 == 0xEE })
        let newer = initialised(48)
        #expect(newer[0..<4] == [48, 0, 0, 0] && newer[40..<48].allSatisfy { $0 == 0 } && newer[48...].allSatisfy { $0 == 0xEE })
        for size in [0, 31, 4097] { #expect(initialised(size).allSatisfy { $0 == 0xEE }, "size \(size)") }
        var symbol = [UInt8](repeating: 0xEE, count: 64)
        symbol.withUnsafeMutableBytes { kvc_router_config_init($0.baseAddress) }
        #expect(symbol[..<40] == whole[..<40] && symbol[40...].allSatisfy { $0 == 0xEE })
        var out: OpaquePointer?
        #expect(newer.withUnsafeBytes { kvc_router_create($0.baseAddress, &out) } == KVC_OK)
        kvc_router_destroy(out)
    }

    /// A batch whose stored blocks could take the view past its bound is refused whole through
    /// the C ABI (KVC_ERR_OUT_OF_MEMORY with its message), the view unchanged; a batch that
    /// adds nothing new is applied. (The bound is 2^26 blocks in a kvc_router_create router;
    /// here a router of 4, made in Swift, behind the same handle.)
    @Test func observeEventsRefusesABatchPastTheViewsBoundWhole() throws {
        var c = RouterConfig(policy: .dualMap)
        c.trackedBlocks = 4
        let router = try Router(c)
        try router.addInstance(1)
        let handle = OpaquePointer(Unmanaged.passRetained(RouterHandle(router)).toOpaque())
        defer { kvc_router_destroy(handle) }
        func observe(_ hashes: [UInt64]) -> kvc_status {
            let bytes = hashes.flatMap { event(kind: 1, hash: $0, parent: 0) }
            return bytes.withUnsafeBytes { kvc_router_observe_events(handle, 1, $0.baseAddress, hashes.count) }
        }
        #expect(observe([11, 12, 13]) == KVC_OK)
        let rc = observe([13, 14, 15])
        expectStatus(rc, KVC_ERR_OUT_OF_MEMORY, mentioning: ["kvc_router_observe_events", "holds 3 distinct blocks of the 4", "could add 2"])
        #expect(router.view.table.count == 3 && router.view.heldBlocks(slot: router.slot(of: 1)) == 3, "nothing applied")
        #expect(observe([13, 12, 14]) == KVC_OK)
        #expect(router.view.table.count == 4 && router.view.table.refused == 0)
    }

    @Test func wrongStructSizesAreRejected() throws {
        var out: OpaquePointer?
        for size in [0, 8, 31] {
            #expect(routerConfig(structSize: size).withUnsafeBytes { kvc_router_create($0.baseAddress, &out) } == -1)
            #expect(lastError().contains("struct_size"))
        }
        #expect(routerConfig(structSize: 100_000).withUnsafeBytes { kvc_router_create($0.baseAddress, &out) } == -1)
        // An older caller (through prefill_ms_per_token) is accepted with defaults after.
        #expect(routerConfig(structSize: 32).withUnsafeBytes { kvc_router_create($0.baseAddress, &out) } == KVC_OK)
        kvc_router_destroy(out)
        // A newer caller with a non-zero unknown field is refused.
        var newer = routerConfig(structSize: 48)
        newer[44] = 1
        #expect(newer.withUnsafeBytes { kvc_router_create($0.baseAddress, &out) } == -7)
        #expect(routerConfig(policy: 99).withUnsafeBytes { kvc_router_create($0.baseAddress, &out) } == -1)
        #expect(lastError().contains("policy 99"))

        let r = try CRouter()
        #expect(kvc_router_add_instance(r.handle, 1, 1) == KVC_OK)
        #expect(load(pending: 1, structSize: 4).withUnsafeBytes { kvc_router_report(r.handle, 1, $0.baseAddress) } == -1)
        #expect(load(pending: 1, structSize: 32).withUnsafeBytes { kvc_router_report(r.handle, 1, $0.baseAddress) } == KVC_OK)
    }

    /// `waiting_requests` is read at offset 40 (llm-d's queue score); a 40-byte struct from
    /// the previous header ends before it and reports 0, whatever lies past it.
    @Test func waitingRequestsSteerLLMDAndAnOlderStructReportsNone() throws {
        let r = try CRouter(policy: 6)  // KVC_ROUTER_LLM_D
        #expect(kvc_router_add_instance(r.handle, 1, 1) == KVC_OK)
        #expect(kvc_router_add_instance(r.handle, 2, 1) == KVC_OK)
        var instance: UInt32 = 0
        #expect(load(pending: 0, waiting: 5).withUnsafeBytes { kvc_router_report(r.handle, 1, $0.baseAddress) } == KVC_OK)
        #expect(load(pending: 0, waiting: 0).withUnsafeBytes { kvc_router_report(r.handle, 2, $0.baseAddress) } == KVC_OK)
        #expect(r.route([7], tokens: 16, &instance) == KVC_OK)
        #expect(instance == 2, "the instance with the shorter queue")
        #expect(load(pending: 0, waiting: 5, structSize: 40).withUnsafeBytes { kvc_router_report(r.handle, 1, $0.baseAddress) }
                    == KVC_OK)
        #expect(load(pending: 0, waiting: 0, structSize: 40).withUnsafeBytes { kvc_router_report(r.handle, 2, $0.baseAddress) }
                    == KVC_OK)
        #expect(r.route([8], tokens: 16, &instance) == KVC_OK)
        #expect(instance == 1, "both report 0 waiting: a tie, the lower slot")
        var newer = load(pending: 0, structSize: 56)
        newer[48] = 1
        #expect(newer.withUnsafeBytes { kvc_router_report(r.handle, 1, $0.baseAddress) } == KVC_ERR_UNSUPPORTED)
        #expect(lastError().contains("48"))
    }

    @Test func badWeightsAreInvalid() throws {
        let r = try CRouter()
        for w in [0, -1, .nan, .infinity, 65] as [Double] { #expect(kvc_router_add_instance(r.handle, 1, w) == -1) }
        for i in 0..<64 { #expect(kvc_router_add_instance(r.handle, UInt32(i), 1) == KVC_OK) }
        #expect(kvc_router_add_instance(r.handle, 64, 1) == -1)
        #expect(lastError().contains("at most 64"))
    }

    /// Each hash ring holds at most 524,288 positions (virtual_nodes x weight summed over the
    /// instances): with virtual_nodes 4096, two instances of weight 64 fill it; a third is
    /// KVC_ERR_INVALID_ARGUMENT with the numbers and changes nothing (consistent-hash routes
    /// unchanged, the instance unknown).
    @Test func addingPastTheRingLimitIsInvalidAndChangesNothing() throws {
        var cfg = routerConfig(policy: 3)  // consistent hash: routes are a function of the rings
        cfg.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(4096), toByteOffset: 12, as: UInt32.self) }  // virtual_nodes
        var out: OpaquePointer?
        try #require(cfg.withUnsafeBytes { kvc_router_create($0.baseAddress, &out) } == KVC_OK, "\(lastError())")
        let r = try #require(out)
        defer { kvc_router_destroy(r) }
        #expect(kvc_router_add_instance(r, 1, 64) == KVC_OK)
        #expect(kvc_router_add_instance(r, 2, 64) == KVC_OK)
        func routes() -> [UInt32] {
            (1...200).map { k in
                var id: UInt32 = 0
                #expect([UInt64(k)].withUnsafeBufferPointer { kvc_router_route(r, $0.baseAddress, 1, 1, &id) } == KVC_OK)
                return id
            }
        }
        let before = routes()
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_router_add_instance", "instance 3", "positions", "524288"]) {
            kvc_router_add_instance(r, 3, 1)
        }
        #expect(routes() == before)
        #expect(kvc_router_remove_instance(r, 3) == KVC_ERR_NOT_FOUND)
    }

    @Test func eventsSteerDualMapToTheCachingCandidate() throws {
        let r = try CRouter(policy: 0)
        for i in 0..<8 { #expect(kvc_router_add_instance(r.handle, UInt32(i), 1) == KVC_OK) }
        let hashes: [UInt64] = [11, 22, 33, 44]
        var first: UInt32 = 0
        #expect(r.route(hashes, tokens: 64, &first) == KVC_OK)
        // Tell the router a different instance caches the prompt; find its other candidate by
        // trying each instance: only a candidate can win by affinity.
        var winners = Set<UInt32>()
        for i in 0..<8 {
            let r2 = try CRouter(policy: 0)
            for j in 0..<8 { #expect(kvc_router_add_instance(r2.handle, UInt32(j), 1) == KVC_OK) }
            var stream: [UInt8] = []
            var parent: UInt64 = 0
            for h in hashes { stream += event(kind: 1, hash: h, parent: parent); parent = h }
            #expect(stream.withUnsafeBytes { kvc_router_observe_events(r2.handle, UInt32(i), $0.baseAddress, hashes.count) } == KVC_OK)
            var chosen: UInt32 = 0
            #expect(r2.route(hashes, tokens: 64, &chosen) == KVC_OK)
            if chosen == UInt32(i) { winners.insert(chosen) }
        }
        #expect(winners.count == 2, "exactly the two candidates win when they cache the prompt: \(winners)")
        #expect(winners.contains(first))
    }

    @Test func observedPrefillsCalibrateTheEstimate() throws {
        let r = try CRouter(policy: 0)
        #expect(kvc_router_observe_prefill(r.handle, 0, 5) == -1)
        #expect(kvc_router_observe_prefill(r.handle, 10, .nan) == -1)
        #expect(kvc_router_observe_prefill(r.handle, 10, -1) == -1)
        #expect(kvc_router_observe_prefill(nil, 10, 1) == -1)
        #expect(kvc_router_observe_prefill(r.handle, 1000, 500) == KVC_OK)
        let handle = Unmanaged<RouterHandle>.fromOpaque(UnsafeRawPointer(r.handle)).takeUnretainedValue()
        #expect(handle.router.prefill.millisecondsPerToken == 0.5)
    }

    /// A batch with a bad kind is refused whole: its good events before the bad one are not
    /// applied either. Shown through routing (overlap-cost, exact view): the same events
    /// without the bad one steer a prompt of those blocks to the instance that stored them;
    /// refused, the route is the blind one.
    @Test func aBadEventKindChangesNothing() throws {
        let chain: [UInt64] = (1...8).map { 100 + $0 }
        let stored = chain.indices.flatMap { event(kind: 1, hash: chain[$0], parent: $0 > 0 ? chain[$0 - 1] : 0) }
        func router() throws -> CRouter {
            let r = try CRouter(policy: 5)
            for i: UInt32 in 1...4 { #expect(kvc_router_add_instance(r.handle, i, 1) == KVC_OK) }
            return r
        }
        var blind: UInt32 = 0
        #expect(try router().route(chain, tokens: 8 * 16, &blind) == KVC_OK)
        let holder: UInt32 = blind == 1 ? 2 : 1
        let informed = try router()
        #expect(stored.withUnsafeBytes { kvc_router_observe_events(informed.handle, holder, $0.baseAddress, 8) } == KVC_OK)
        var chosen: UInt32 = 0
        #expect(informed.route(chain, tokens: 8 * 16, &chosen) == KVC_OK)
        #expect(chosen == holder, "the stored chain steers the route")

        let r = try router()
        let bad = stored + event(kind: 9, hash: 6, parent: 5)
        #expect(bad.withUnsafeBytes { kvc_router_observe_events(r.handle, holder, $0.baseAddress, 9) } == -1)
        #expect(lastError().contains("events[8].kind 9"))
        #expect(r.route(chain, tokens: 8 * 16, &chosen) == KVC_OK)
        #expect(chosen == blind, "no event of the refused batch was applied")
    }

    /// More block hashes than the prompt's tokens fill is refused, naming both counts, and
    /// changes nothing: the output stays untouched and the next route is the one it would be.
    @Test func moreHashesThanTheTokensFillAreInvalid() throws {
        let r = try CRouter(policy: 1)  // round-robin: a changed decision count would show
        for i: UInt32 in 1...3 { #expect(kvc_router_add_instance(r.handle, i, 1) == KVC_OK) }
        var chosen: UInt32 = 99
        #expect(r.route([1, 2, 3], tokens: 32, &chosen) == -1)
        #expect(lastError().contains("n_blocks 3") && lastError().contains("n_tokens 32"), "\(lastError())")
        #expect(chosen == 99)
        #expect(r.route([1, 2, 3], tokens: 33, &chosen) == KVC_OK, "a partial last block's hash is accepted")
        #expect(chosen == 1, "the refused route took no turn")
    }

    /// A report of UINT64_MAX everywhere routes, and the router's own advance saturates.
    @Test func hugeLoadsRoute() throws {
        for policy: UInt32 in 0...5 {
            let r = try CRouter(policy: policy)
            for i: UInt32 in 1...2 {
                #expect(kvc_router_add_instance(r.handle, i, 1) == KVC_OK)
                var l = load(pending: .max)
                l.withUnsafeMutableBytes {
                    $0.storeBytes(of: UInt64.max, toByteOffset: 16, as: UInt64.self)
                    $0.storeBytes(of: UInt64.max, toByteOffset: 32, as: UInt64.self)
                }
                #expect(l.withUnsafeBytes { kvc_router_report(r.handle, i, $0.baseAddress) } == KVC_OK)
            }
            var chosen: UInt32 = 0
            #expect(r.route([1, 2], tokens: 32, &chosen) == KVC_OK, "policy \(policy): \(lastError())")
            #expect(kvc_router_route(r.handle, [7], 1, Int.max, &chosen) == KVC_OK, "policy \(policy): \(lastError())")
        }
    }

    /// An observation each of whose numbers is valid but that would make the estimate
    /// infinite is refused, and the estimate stays what it was.
    @Test func anObservationThatWouldBreakTheEstimateIsRefused() throws {
        let r = try CRouter(policy: 0)
        let handle = Unmanaged<RouterHandle>.fromOpaque(UnsafeRawPointer(r.handle)).takeUnretainedValue()
        #expect(kvc_router_observe_prefill(r.handle, 1, .greatestFiniteMagnitude) == KVC_OK)
        let before = handle.router.prefill.millisecondsPerToken
        #expect(kvc_router_observe_prefill(r.handle, 1, .greatestFiniteMagnitude) == -1)
        #expect(lastError().contains("infinite or 0"), "\(lastError())")
        #expect(handle.router.prefill.millisecondsPerToken == before)
        // On a fresh router the ratio of 5e-324 ms to Int.max tokens would be 0.
        let fresh = try CRouter(policy: 0)
        #expect(kvc_router_observe_prefill(fresh.handle, Int.max, .leastNonzeroMagnitude) == -1)
        #expect(Unmanaged<RouterHandle>.fromOpaque(UnsafeRawPointer(fresh.handle)).takeUnretainedValue().router.prefill.millisecondsPerToken == 0.1)
    }

    /// Events of the disk tier or of a tier this library does not know are accepted and leave
    /// the view alone, as does a stored hash 0; the instance's block count shows it.
    @Test func eventsOfOtherTiersAndHashZeroLeaveTheViewAlone() throws {
        let r = try CRouter(policy: 5)
        #expect(kvc_router_add_instance(r.handle, 1, 1) == KVC_OK)
        var stream: [UInt8] = []
        for tier: UInt32 in [1, 2, 0xFFFF_FFFF] {
            var e = event(kind: 1, hash: 42, parent: 0)
            e.withUnsafeMutableBytes { $0.storeBytes(of: tier, toByteOffset: 4, as: UInt32.self) }
            stream += e
        }
        stream += event(kind: 1, hash: 0, parent: 0)
        #expect(stream.withUnsafeBytes { kvc_router_observe_events(r.handle, 1, $0.baseAddress, 4) } == KVC_OK)
        let handle = Unmanaged<RouterHandle>.fromOpaque(UnsafeRawPointer(r.handle)).takeUnretainedValue()
        #expect(handle.router.view.heldBlocks(slot: 0) == 0)
        #expect(handle.router.view.table.count == 0)
    }

    /// `kvc_router_observe_events` reads a C array of `kvc_event` (8-aligned) in place and
    /// still accepts a misaligned one (byte offsets 1 and 4: a packed buffer), copying it in
    /// 32-event chunks: the same batches of both kinds give the same view. Batches of 100 and
    /// 71 events cross the chunks; stored, removed, other-tier and all-cleared events of two
    /// instances.
    @Test(arguments: [0, 1, 4])
    func anArrayAtAnyAlignmentGivesTheSameView(offset: Int) throws {
        typealias Event = (kind: UInt32, tier: UInt32, hash: UInt64)
        func stored(_ hashes: ClosedRange<UInt64>, tier: UInt32 = 0) -> [Event] { hashes.map { (1, tier, $0) } }
        func removed(_ hashes: ClosedRange<UInt64>) -> [Event] { hashes.map { (2, 0, $0) } }
        func cleared(tier: UInt32) -> [Event] { [(3, tier, 0)] }
        let first: [Event] = stored(1...60) + removed(1...10) + stored(100...109, tier: 1) + cleared(tier: 1) + stored(61...79)
        let second: [Event] = stored(50...89) + cleared(tier: 0) + stored(70...99)
        let batches: [(instance: UInt32, events: [Event])] = [(1, first), (2, second)]
        let r = try CRouter(policy: 0)
        for i: UInt32 in 1...2 { #expect(kvc_router_add_instance(r.handle, i, 1) == KVC_OK) }
        for (instance, events) in batches {
            let raw = UnsafeMutableRawPointer.allocate(byteCount: events.count * 24 + 8, alignment: 8)
            defer { raw.deallocate() }
            for (i, e) in events.enumerated() {
                let bytes = event(kind: e.kind, hash: e.hash, parent: 0)
                bytes.withUnsafeBytes { (raw + offset + 24 * i).copyMemory(from: $0.baseAddress!, byteCount: 24) }
                (raw + offset + 24 * i).storeBytes(of: e.tier, toByteOffset: 4, as: UInt32.self)
            }
            #expect(kvc_router_observe_events(r.handle, instance, raw + offset, events.count) == KVC_OK, "\(lastError())")
        }
        let view = Unmanaged<RouterHandle>.fromOpaque(UnsafeRawPointer(r.handle)).takeUnretainedValue().router.view
        #expect(view.heldBlocks(slot: 0) == 69)  // 11...79
        #expect(view.heldBlocks(slot: 1) == 30)  // 70...99
        #expect(view.table.count == 89)
        for h: UInt64 in 1...110 {
            let expected: UInt64 = (11...79 ~= h ? 1 : 0) | (70...99 ~= h ? 2 : 0)
            #expect(view.table.slots(h) == expected, "hash \(h)")
        }
    }
    /// A count whose bytes overflow (n x 24 past PTRDIFF_MAX) is no array: refused before
    /// any event is read. It read past the caller's one event (revchurn: 2^63/24 + 1 events).
    /// In a child process: the old code's overrun must not take the test run down.
    @Test func anEventCountWhoseBytesOverflowIsInvalid() async {
        await #expect(processExitsWith: .success) {
            var cfg = [UInt8](repeating: 0, count: 40)
            cfg.withUnsafeMutableBytes { kvc_router_config_init($0.baseAddress) }
            var r: OpaquePointer?
            guard cfg.withUnsafeBytes({ kvc_router_create($0.baseAddress, &r) }) == KVC_OK, let r,
                  kvc_router_add_instance(r, 1, 1) == KVC_OK else { exit(2) }
            let huge = Int.max / 24 + 1
            let rc = event(kind: 1, hash: 5, parent: 0).withUnsafeBytes { kvc_router_observe_events(r, 1, $0.baseAddress, huge) }
            let expected = "kvc_router_observe_events(instance 1): n_events \(huge) is larger than PTRDIFF_MAX / 24: "
                + "the bytes of that many 24-byte elements would overflow"
            exit(rc == KVC_ERR_INVALID_ARGUMENT && lastError() == expected ? 0 : 1)
        }
    }
}
