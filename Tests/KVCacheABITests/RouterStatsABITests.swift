import Testing
@testable import KVCacheABI
@testable import KVRouter

/// `kvc_router_stats` as the header lays it out: a `uint32_t struct_size`, 4 bytes of padding,
/// then eleven `uint64_t` counters (96 bytes).
private struct CRouterStats: Equatable {
    static let size = 96
    var decisions: UInt64 = 0, sloSwitches: UInt64 = 0, rebalanceMoves: UInt64 = 0
    var duplicateEvents: UInt64 = 0, staleEvents: UInt64 = 0, refusedGaps: UInt64 = 0
    var refusedFullBatches: UInt64 = 0, refusedInserts: UInt64 = 0, liveInstances: UInt64 = 0
    var trackedBlocks: UInt64 = 0, trackedBlocksLimit: UInt64 = 0

    init() {}

    init(bytes: [UInt8]) {
        let f = bytes.withUnsafeBytes { raw in (0..<11).map { raw.loadUnaligned(fromByteOffset: 8 + 8 * $0, as: UInt64.self) } }
        (decisions, sloSwitches, rebalanceMoves, duplicateEvents) = (f[0], f[1], f[2], f[3])
        (staleEvents, refusedGaps, refusedFullBatches, refusedInserts) = (f[4], f[5], f[6], f[7])
        (liveInstances, trackedBlocks, trackedBlocksLimit) = (f[8], f[9], f[10])
    }
}

/// kvc_router_get_stats into a buffer of `bufferBytes` bytes filled with 0xAB whose struct_size
/// says `structSize`; returns the status and the buffer.
private func rawStats(_ r: OpaquePointer?, structSize: UInt32 = UInt32(CRouterStats.size),
                      bufferBytes: Int = CRouterStats.size) -> (kvc_status, [UInt8]) {
    var bytes = [UInt8](repeating: 0xAB, count: bufferBytes)
    bytes.withUnsafeMutableBytes { $0.storeBytes(of: structSize, toByteOffset: 0, as: UInt32.self) }
    LastError.clear()
    let rc = bytes.withUnsafeMutableBytes { kvc_router_get_stats(r, $0.baseAddress) }
    return (rc, bytes)
}

/// The counters of `r`, requiring success.
private func stats(_ r: OpaquePointer) throws -> CRouterStats {
    let (rc, bytes) = rawStats(r)
    try #require(rc == KVC_OK, "\(String(cString: kvc_last_error()))")
    return CRouterStats(bytes: bytes)
}

/// One `kvc_event` (24 bytes): kind, memory tier, hash, parent 0.
private func event(_ kind: UInt32, _ hash: UInt64 = 0) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 24)
    b.withUnsafeMutableBytes {
        $0.storeBytes(of: kind, toByteOffset: 0, as: UInt32.self)
        $0.storeBytes(of: hash, toByteOffset: 8, as: UInt64.self)
    }
    return b
}

private let cleared = event(3)
private func stored(_ hashes: UInt64...) -> [UInt8] { hashes.flatMap { event(1, $0) } }

/// A numbered batch of `bytes` (whole events) for `instance`.
private func observe(_ r: OpaquePointer, _ instance: UInt32, epoch: UInt64, first: UInt64, _ bytes: [UInt8]) -> kvc_status {
    bytes.withUnsafeBytes { kvc_router_observe_events_seq(r, instance, epoch, first, $0.baseAddress, bytes.count / 24) }
}

/// A router made in Swift with `config`, behind a C handle (the C config has no
/// tracked-blocks bound: kvc_router_create's is 2^26), and instance 1.
private func handle(_ config: RouterConfig) throws -> OpaquePointer {
    let router = try Router(config)
    try router.addInstance(1)
    return OpaquePointer(Unmanaged.passRetained(RouterHandle(router)).toOpaque())
}

/// `kvc_router_get_stats` (KVC_1.2): what a control plane embedding the router sees of its event
/// bus (redelivered, late, lost batches), its decisions and the view's fill.
@Suite struct RouterStatsABITests {
    /// A fresh kvc_router_create router: every counter 0, its instances live, the view empty
    /// under its 2^26 bound.
    @Test func aNewRouterCountsNothing() throws {
        var cfg = [UInt8](repeating: 0, count: 40)
        cfg.withUnsafeMutableBytes { kvc_router_config_init($0.baseAddress) }
        var out: OpaquePointer?
        try #require(cfg.withUnsafeBytes { kvc_router_create($0.baseAddress, &out) } == KVC_OK)
        let r = try #require(out)
        defer { kvc_router_destroy(r) }
        var want = CRouterStats()
        want.trackedBlocksLimit = 1 << 26
        #expect(try stats(r) == want)
        #expect(kvc_router_add_instance(r, 7, 1) == KVC_OK && kvc_router_add_instance(r, 8, 1) == KVC_OK)
        want.liveInstances = 2
        #expect(try stats(r) == want)
    }

    /// A bus that redelivers, straddles, loses and delivers late: each counter exactly as the
    /// numbered call judged the batch; the view holds the blocks applied; removing the instance
    /// keeps the counters (they are the router's since its creation).
    @Test func aBusThatRedeliversLosesAndDeliversLateIsCounted() throws {
        let r = try handle(RouterConfig(policy: .dualMap))
        defer { kvc_router_destroy(r) }
        let e: UInt64 = 1_000, older: UInt64 = 500, newer: UInt64 = 2_000
        #expect(observe(r, 1, epoch: e, first: 1, cleared) == KVC_OK)
        #expect(observe(r, 1, epoch: e, first: 2, stored(11, 12, 13)) == KVC_OK)
        #expect(observe(r, 1, epoch: e, first: 2, stored(11, 12, 13)) == KVC_OK)  // redelivered: 3 duplicates
        #expect(observe(r, 1, epoch: e, first: 3, stored(12, 13, 14)) == KVC_OK)  // straddling: 2 duplicates, 14 applied
        #expect(observe(r, 1, epoch: e, first: 8, stored(15)) == KVC_ERR_NOT_FOUND)  // 6...7 missing: a gap
        #expect(observe(r, 1, epoch: older, first: 1, cleared + stored(16)) == KVC_OK)  // an older engine's: 2 stale
        var s = try stats(r)
        #expect((s.duplicateEvents, s.staleEvents, s.refusedGaps) == (5, 2, 1))
        #expect((s.trackedBlocks, s.liveInstances, s.refusedFullBatches, s.refusedInserts) == (4, 1, 0, 0))
        // A stale dump counts its events stale; a newer engine's first batch is applied.
        let dump = cleared + stored(11)
        #expect(dump.withUnsafeBytes { kvc_router_resync_instance(r, 1, older, 3, $0.baseAddress, 2) } == KVC_OK)
        #expect(observe(r, 1, epoch: newer, first: 1, cleared + stored(21)) == KVC_OK)
        s = try stats(r)
        #expect((s.duplicateEvents, s.staleEvents, s.refusedGaps, s.trackedBlocks) == (5, 4, 1, 1))
        #expect(kvc_router_remove_instance(r, 1) == KVC_OK)
        s = try stats(r)
        #expect((s.duplicateEvents, s.staleEvents, s.refusedGaps, s.trackedBlocks, s.liveInstances) == (5, 4, 1, 0, 0))
    }

    /// Decisions and DualMap's SLO switches: a second route of the same prompt leaves its
    /// candidate once that candidate's reported backlog puts it past the threshold.
    @Test func decisionsAndSLOSwitchesAreCounted() throws {
        let r = try handle(RouterConfig(policy: .dualMap))
        defer { kvc_router_destroy(r) }
        #expect(kvc_router_add_instance(r, 2, 1) == KVC_OK)
        let hashes: [UInt64] = [101, 102]
        var first: UInt32 = 0, second: UInt32 = 0
        #expect(hashes.withUnsafeBufferPointer { kvc_router_route(r, $0.baseAddress, 2, 32, &first) } == KVC_OK)
        var load = [UInt8](repeating: 0, count: 48)
        load.withUnsafeMutableBytes {
            $0.storeBytes(of: UInt32(48), toByteOffset: 0, as: UInt32.self)
            $0.storeBytes(of: UInt64(1_000_000_000), toByteOffset: 8, as: UInt64.self)  // 1e8 ms of prefill queued
        }
        #expect(load.withUnsafeBytes { kvc_router_report(r, first, $0.baseAddress) } == KVC_OK)
        #expect(hashes.withUnsafeBufferPointer { kvc_router_route(r, $0.baseAddress, 2, 32, &second) } == KVC_OK)
        #expect(second != first)
        let s = try stats(r)
        #expect((s.decisions, s.sloSwitches, s.rebalanceMoves, s.liveInstances) == (2, 1, 0, 2))
    }

    /// An exact view at its bound: a batch that could pass it is refused whole, through either
    /// observe call, and counted once per batch; the view's fill and bound are reported.
    @Test func batchesRefusedByAFullExactViewAreCounted() throws {
        var c = RouterConfig(policy: .dualMap)
        c.trackedBlocks = 4
        let r = try handle(c)
        defer { kvc_router_destroy(r) }
        let plain = stored(11, 12, 13)
        #expect(plain.withUnsafeBytes { kvc_router_observe_events(r, 1, $0.baseAddress, 3) } == KVC_OK)
        let past = stored(13, 14, 15)
        #expect(past.withUnsafeBytes { kvc_router_observe_events(r, 1, $0.baseAddress, 3) } == KVC_ERR_OUT_OF_MEMORY)
        #expect(observe(r, 1, epoch: 9, first: 1, cleared + stored(11, 12, 13, 14, 15)) == KVC_ERR_OUT_OF_MEMORY)
        var s = try stats(r)
        #expect((s.refusedFullBatches, s.refusedInserts, s.trackedBlocks, s.trackedBlocksLimit) == (2, 0, 3, 4))
        #expect(observe(r, 1, epoch: 9, first: 1, cleared + stored(11, 12, 13, 14)) == KVC_OK)
        s = try stats(r)
        #expect((s.refusedFullBatches, s.trackedBlocks) == (2, 4))
    }

    /// An approximate view at its bound: a route whose new blocks the view cannot hold stops
    /// crediting at the first refused one, counted once per such route.
    @Test func routesAnApproximateViewCannotCreditAreCounted() throws {
        var c = RouterConfig(policy: .dualMap)
        c.view = .approximate
        c.trackedBlocks = 4
        let r = try handle(c)
        defer { kvc_router_destroy(r) }
        func route(_ hashes: [UInt64]) -> kvc_status {
            var chosen: UInt32 = 0
            return hashes.withUnsafeBufferPointer { kvc_router_route(r, $0.baseAddress, $0.count, 16 * $0.count, &chosen) }
        }
        #expect(route([1, 2, 3]) == KVC_OK && route([4, 5, 6]) == KVC_OK && route([7]) == KVC_OK && route([1, 2]) == KVC_OK)
        let s = try stats(r)
        #expect((s.decisions, s.refusedInserts, s.refusedFullBatches, s.trackedBlocks, s.trackedBlocksLimit) == (4, 2, 0, 4, 4))
    }

    @Test func aNullRouterOrOutputIsInvalid() throws {
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_router_get_stats", "router", "NULL"]) { rawStats(nil).0 }
        let r = try handle(RouterConfig(policy: .dualMap))
        defer { kvc_router_destroy(r) }
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_router_get_stats", "out", "NULL"]) { kvc_router_get_stats(r, nil) }
    }

    /// Below KVC_ROUTER_STATS_MIN_SIZE (every field of the first version) or above
    /// KVC_STRUCT_SIZE_MAX: refused, naming the struct and the size, nothing written.
    @Test(arguments: [0, 8, 95, 4097] as [UInt32])
    func aStructSizeOutOfRangeIsInvalid(size: UInt32) throws {
        let r = try handle(RouterConfig(policy: .dualMap))
        defer { kvc_router_destroy(r) }
        let (rc, bytes) = rawStats(r, structSize: size, bufferBytes: 128)
        expectStatus(rc, KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_router_get_stats", "kvc_router_stats", "struct_size", "\(size)"])
        #expect(bytes[4...].allSatisfy { $0 == 0xAB }, "wrote into a rejected struct")
    }

    /// A newer caller's larger struct: every field written, the padding after struct_size and
    /// the bytes past this version's fields up to its struct_size zeroed, nothing past that,
    /// struct_size itself unchanged.
    @Test func aNewerLargerStructGetsEveryFieldAndZeroesTheRest() throws {
        let r = try handle(RouterConfig(policy: .dualMap))
        defer { kvc_router_destroy(r) }
        #expect(observe(r, 1, epoch: 3, first: 1, cleared + stored(31)) == KVC_OK)
        let (rc, bytes) = rawStats(r, structSize: 112, bufferBytes: 120)
        #expect(rc == KVC_OK)
        #expect(CRouterStats(bytes: bytes) == (try stats(r)))
        #expect(bytes[4..<8].allSatisfy { $0 == 0 } && bytes[96..<112].allSatisfy { $0 == 0 }, "unknown newer fields must read 0")
        #expect(bytes[112...].allSatisfy { $0 == 0xAB }, "wrote past struct_size")
        #expect(bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } == 112, "struct_size is input only")
    }
}
