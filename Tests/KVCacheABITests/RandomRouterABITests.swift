import Testing
@testable import KVCacheABI
@testable import KVRouter

/// Bad input through every `kvc_router_*` call returns a status and a message and changes
/// nothing, checked by difference: two C routers receive the same seeded random sequence of
/// valid calls (add, remove, report, events, prefill observations, routes), and one of them
/// also a bad call before each (NULL pointers, bad weights, duplicate or unknown ids, bad
/// struct sizes and unknown non-zero fields, a bad event kind after good events, zero or too
/// many blocks, zero tokens, prefill observations that are not positive numbers or would make
/// the estimate infinite). Every bad call must fail with a message naming its function, every
/// valid one must give both routers the same status and instance, and after every step the
/// two routers' states (members, loads, cache view, prefill estimate, decisions) must be equal.
@Suite struct RandomRouterABITests {
    private static func below(_ n: Int, _ rng: inout UInt64) -> Int {
        rng &+= 0x9E37_79B9_7F4A_7C15
        var z = rng
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Int((z ^ (z >> 31)) % UInt64(n))
    }

    private static func create(_ policy: UInt32) throws -> OpaquePointer {
        var cfg = [UInt8](repeating: 0, count: 40)
        cfg.withUnsafeMutableBytes { kvc_router_config_init($0.baseAddress) }
        cfg.withUnsafeMutableBytes { $0.storeBytes(of: policy, toByteOffset: 4, as: UInt32.self) }
        var out: OpaquePointer?
        #expect(cfg.withUnsafeBytes { kvc_router_create($0.baseAddress, &out) } == KVC_OK)
        return try #require(out)
    }

    private static func load(_ values: [UInt64], structSize: UInt32 = 48, extra: UInt8 = 0) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 56)
        b.withUnsafeMutableBytes {
            $0.storeBytes(of: structSize, toByteOffset: 0, as: UInt32.self)
            for (i, v) in values.enumerated() { $0.storeBytes(of: v, toByteOffset: 8 + 8 * i, as: UInt64.self) }
        }
        b[52] = extra  // past the 48 bytes this version knows
        return b
    }

    private static func events(_ list: [(kind: UInt32, tier: UInt32, hash: UInt64)]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 24 * max(1, list.count))
        b.withUnsafeMutableBytes {
            for (i, e) in list.enumerated() {
                $0.storeBytes(of: e.kind, toByteOffset: 24 * i, as: UInt32.self)
                $0.storeBytes(of: e.tier, toByteOffset: 24 * i + 4, as: UInt32.self)
                $0.storeBytes(of: e.hash, toByteOffset: 24 * i + 8, as: UInt64.self)
            }
        }
        return b
    }

    /// Hashes the prompts and events use: four chains of six blocks.
    private static let chains: [[UInt64]] = (0..<4).map { c in (0..<6).map { UInt64(c * 100 + $0 + 1) &* 0x9E37_79B9_7F4A_7C15 } }

    /// Describes the state a bad call must not change.
    private static func state(_ r: OpaquePointer) -> String {
        let router = Unmanaged<RouterHandle>.fromOpaque(UnsafeRawPointer(r)).takeUnretainedValue().router
        var out = "live \(router.liveMask) decisions \(router.decisions) switches \(router.sloSwitches) "
            + "estimate \(router.prefill.millisecondsPerToken)"
        var m = router.liveMask
        while m != 0 {
            let s = m.trailingZeroBitCount
            m &= m - 1
            let l = router.loads[s]
            out += " | slot \(s) id \(router.id(ofSlot: s)) load \(l.pendingPrefillTokens)/\(l.runningBlocks)/\(l.freeBlocks)/"
                + "\(l.activeRequests) blocks \(router.view.heldBlocks(slot: s))"
        }
        out += " | view"
        for h in chains.joined() { out += " \(router.view.table.slots(h))" }
        return out
    }

    @Test(arguments: [0, 1, 2, 3, 4, 5] as [UInt32]) func badCallsChangeNothing(policy: UInt32) throws {
        let a = try Self.create(policy), b = try Self.create(policy)
        defer { kvc_router_destroy(a); kvc_router_destroy(b) }
        var rng = UInt64(policy) &+ 77
        let ids: [UInt32] = [5, 6, 7, 8, 9]
        var live = Set<UInt32>()
        var badCalls = 0, routes = 0
        for step in 0..<500 {
            // A bad call on `a` only: it must fail, name its function and change nothing.
            let roll = Self.below(22, &rng)
            if roll == 21 {
                // An observation of DBL_MAX ms, valid on its own, to both; the bad call below
                // repeats it, which would make the decayed sum infinite.
                #expect(kvc_router_observe_prefill(a, 1, .greatestFiniteMagnitude) == kvc_router_observe_prefill(b, 1, .greatestFiniteMagnitude))
            }
            let before = Self.state(a)
            let id = ids[Self.below(ids.count, &rng)]
            let liveId = live.sorted().first ?? id
            let chain = Self.chains[Self.below(Self.chains.count, &rng)]
            var chosen: UInt32 = 0xAAAA
            let (function, status): (String, kvc_status) = switch roll {
            case 0: ("kvc_router_add_instance", kvc_router_add_instance(a, id, [0, -1, .nan, .infinity, 64.01][Self.below(5, &rng)]))
            case 1: ("kvc_router_add_instance", kvc_router_add_instance(nil, id, 1))
            case 2: ("kvc_router_add_instance", live.isEmpty ? kvc_router_add_instance(a, id, 0) : kvc_router_add_instance(a, liveId, 1))
            case 3: ("kvc_router_remove_instance", live.contains(id) ? kvc_router_remove_instance(nil, id) : kvc_router_remove_instance(a, id))
            case 4: ("kvc_router_route", kvc_router_route(a, chain, chain.count, 96, nil))
            case 5: ("kvc_router_route", kvc_router_route(a, nil, 2, 96, &chosen))
            case 6: ("kvc_router_route", kvc_router_route(a, chain, 0, 96, &chosen))
            case 7: ("kvc_router_route", kvc_router_route(a, chain, 3, 0, &chosen))
            case 8: ("kvc_router_route", kvc_router_route(a, chain, chain.count, 16 * chain.count - 16, &chosen))
            case 9: ("kvc_router_route", kvc_router_route(a, chain, -1, 96, &chosen))
            case 10: ("kvc_router_route", kvc_router_route(nil, chain, 2, 32, &chosen))
            case 11: ("kvc_router_report", kvc_router_report(a, liveId, nil))
            case 12: ("kvc_router_report", Self.load([1, 2, 3], structSize: 4).withUnsafeBytes { kvc_router_report(a, liveId, $0.baseAddress) })
            case 13: ("kvc_router_report", Self.load([1, 2, 3], structSize: 56, extra: 1).withUnsafeBytes { kvc_router_report(a, liveId, $0.baseAddress) })
            case 14: ("kvc_router_report", Self.load([1, 2, 3]).withUnsafeBytes { kvc_router_report(a, live.contains(id) ? 999 : id, $0.baseAddress) })
            case 15:
                // Good events first, then a bad kind: the whole batch is refused.
                ("kvc_router_observe_events", Self.events(chain.map { (1, 0, $0) } + [(7, 0, 1)]).withUnsafeBytes {
                    kvc_router_observe_events(a, liveId, $0.baseAddress, chain.count + 1)
                })
            case 16: ("kvc_router_observe_events", kvc_router_observe_events(a, liveId, nil, 2))
            case 17: ("kvc_router_observe_events", Self.events([(1, 0, chain[0])]).withUnsafeBytes {
                kvc_router_observe_events(a, live.contains(id) ? 999 : id, $0.baseAddress, 1)
            })
            case 18: ("kvc_router_observe_prefill", kvc_router_observe_prefill(a, 0, 5))
            case 19: ("kvc_router_observe_prefill", kvc_router_observe_prefill(a, 10, [0, -1, .nan, .infinity][Self.below(4, &rng)]))
            case 20: ("kvc_router_observe_prefill", kvc_router_observe_prefill(nil, 10, 5))
            default: ("kvc_router_observe_prefill", kvc_router_observe_prefill(a, 1, .greatestFiniteMagnitude))
            }
            let message = String(cString: kvc_last_error())
            #expect(status < 0, "step \(step): a bad \(function) call succeeded")
            #expect(message.contains(function), "step \(step): \(function) failed with \"\(message)\"")
            #expect(chosen == 0xAAAA, "step \(step): a failed route wrote its output")
            let after = Self.state(a)
            #expect(after == before, "step \(step): a refused \(function) changed the router:\n\(before)\n\(after)")
            badCalls += 1

            // The same valid call on both routers.
            let same: (OpaquePointer) -> (kvc_status, UInt32)
            switch Self.below(7, &rng) {
            case 0:
                same = { (kvc_router_add_instance($0, id, 1), 0) }
                live.insert(id)
            case 1:
                same = { (kvc_router_remove_instance($0, id), 0) }
                live.remove(id)
            case 2:
                let values = (0..<4).map { _ in Self.below(4, &rng) == 0 ? UInt64.max : UInt64(Self.below(30_000, &rng)) }
                same = { r in (Self.load(values).withUnsafeBytes { kvc_router_report(r, id, $0.baseAddress) }, 0) }
            case 3:
                let kinds = (0..<(1 + Self.below(chain.count, &rng))).map { i -> (kind: UInt32, tier: UInt32, hash: UInt64) in
                    (UInt32(1 + Self.below(5, &rng) / 2), UInt32(Self.below(3, &rng) / 2), chain[i])
                }
                same = { r in (Self.events(kinds).withUnsafeBytes { kvc_router_observe_events(r, id, $0.baseAddress, kinds.count) }, 0) }
            case 4:
                let (t, ms) = (1 + Self.below(9000, &rng), Double(1 + Self.below(900, &rng)))
                same = { (kvc_router_observe_prefill($0, t, ms), 0) }
            default:
                let n = 1 + Self.below(chain.count, &rng)
                let tokens = 16 * n - Self.below(16, &rng)
                same = { r in
                    var out: UInt32 = 0
                    return (kvc_router_route(r, chain, n, tokens, &out), out)
                }
                routes += 1
            }
            let ra = same(a)
            let rb = same(b)
            #expect(ra == rb, "step \(step): the same call gave \(ra) and \(rb)")
            #expect(Self.state(a) == Self.state(b), "step \(step): the routers diverged:\n\(Self.state(a))\n\(Self.state(b))")
        }
        #expect(badCalls == 500 && routes > 100)
    }
}
