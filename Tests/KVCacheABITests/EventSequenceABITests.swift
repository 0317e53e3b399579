import Testing
@testable import KVCacheABI
@testable import KVRouter

/// One numbered batch drained from an engine (`kvc_drain_events_seq`), kept as the raw
/// `kvc_event` bytes a bus would carry.
private struct Batch {
    var epoch: UInt64 = 0, first: UInt64 = 0, bytes = [UInt8](), count = 0

    init(draining f: ABIFixture) throws {
        bytes = [UInt8](repeating: 0, count: 64 * 24)
        let rc = bytes.withUnsafeMutableBytes { kvc_drain_events_seq(f.handle, $0.baseAddress, 64, &count, &epoch, &first) }
        try #require(rc == KVC_OK && count < 64, "\(String(cString: kvc_last_error()))")
    }

    init(dumping f: ABIFixture) throws {
        bytes = [UInt8](repeating: 0, count: 64 * 24)
        let rc = bytes.withUnsafeMutableBytes { kvc_engine_index_events_seq(f.handle, $0.baseAddress, 64, &count, &epoch, &first) }
        try #require(rc == KVC_OK, "\(String(cString: kvc_last_error()))")
    }

    /// Memory-tier blocks this batch stores.
    var storedHashes: Set<UInt64> {
        bytes.withUnsafeBytes { raw in
            Set((0..<count).filter { raw.load(fromByteOffset: 24 * $0, as: UInt32.self) == 1 }
                .map { raw.loadUnaligned(fromByteOffset: 24 * $0 + 8, as: UInt64.self) })
        }
    }

    func observe(_ r: OpaquePointer, _ instance: UInt32) -> kvc_status {
        bytes.withUnsafeBytes { kvc_router_observe_events_seq(r, instance, epoch, first, $0.baseAddress, count) }
    }

    func resync(_ r: OpaquePointer, _ instance: UInt32) -> kvc_status {
        bytes.withUnsafeBytes { kvc_router_resync_instance(r, instance, epoch, first, $0.baseAddress, count) }
    }
}

/// A router (exact view) with instance 1, and what it credits instance 1 with.
private final class SeqRouter {
    let handle: OpaquePointer
    init() throws {
        var cfg = [UInt8](repeating: 0, count: 40)
        cfg.withUnsafeMutableBytes { kvc_router_config_init($0.baseAddress) }
        var out: OpaquePointer?
        try #require(cfg.withUnsafeBytes { kvc_router_create($0.baseAddress, &out) } == KVC_OK)
        handle = try #require(out)
        try #require(kvc_router_add_instance(handle, 1, 1) == KVC_OK)
    }
    deinit { kvc_router_destroy(handle) }

    var router: Router { Unmanaged<RouterHandle>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue().router }

    /// Hashes the view credits instance 1 (slot 0) with, among `candidates`.
    func held(_ candidates: Set<UInt64>) -> Set<UInt64> { candidates.filter { router.view.table.slots($0) & 1 != 0 } }
}

/// The reviewer's (revchurn) churn scenarios with real engines and the numbered calls: a
/// crashed engine's late batch, redelivery, a restart the control plane reports late, a lost
/// batch. The unnumbered calls keep their behaviour (the late batch's ghosts, shown here).
@Suite struct EventSequenceABITests {
    private func engine() throws -> ABIFixture { try ABIFixture(CConfig.small(KVC_LAYOUT_PAGED)) }

    /// Events are numbered from 1, consecutively across drains, under a non-zero epoch fixed
    /// for the engine and different for another; the dump's position is the next number.
    @Test func drainsAreNumberedUnderTheEnginesEpoch() throws {
        let f = try engine(), g = try engine()
        let first = try Batch(draining: f)
        #expect(first.epoch != 0 && first.first == 1 && first.count == 1)
        try f.create(1, tokens: f.uniqueTokens(1, count: 3 * f.blockTokens))
        let dump = try Batch(dumping: f)
        let second = try Batch(draining: f)
        #expect(second.epoch == first.epoch && second.first == 2 && second.count == 3)
        #expect(dump.epoch == first.epoch && dump.first == 5 && dump.count == 4)
        let empty = try Batch(draining: f)
        #expect(empty.count == 0 && empty.first == 5)
        #expect(try Batch(draining: g).epoch > first.epoch, "an engine created later has a greater epoch")
        var n = 0, epoch: UInt64 = 0
        #expect(kvc_drain_events_seq(f.handle, nil, 0, &n, &epoch, nil) == KVC_ERR_INVALID_ARGUMENT && epoch == 0)
    }

    /// (a) The old engine's last batch, delivered after its replacement's ALL_CLEARED: stale,
    /// ignored (the unnumbered call credits its blocks for good). (b) Its first batch
    /// redelivered: stale too; the new engine's redelivered: a duplicate, clearing nothing.
    @Test func aCrashedEnginesLateBatchLeavesNoGhost() throws {
        let r = try SeqRouter()
        let old = try engine()
        #expect(try Batch(draining: old).observe(r.handle, 1) == KVC_OK)
        try old.create(1, tokens: old.uniqueTokens(1, count: 2 * old.blockTokens))
        let applied = try Batch(draining: old)
        #expect(applied.observe(r.handle, 1) == KVC_OK)
        try old.create(2, tokens: old.uniqueTokens(2, count: 2 * old.blockTokens))
        let late = try Batch(draining: old)  // in flight when the engine dies
        let replacement = try engine()
        let restart = try Batch(draining: replacement)
        try replacement.create(3, tokens: replacement.uniqueTokens(3, count: 2 * replacement.blockTokens))
        let fresh = try Batch(draining: replacement)
        #expect(restart.observe(r.handle, 1) == KVC_OK && fresh.observe(r.handle, 1) == KVC_OK)
        #expect(late.observe(r.handle, 1) == KVC_OK)
        #expect(restart.observe(r.handle, 1) == KVC_OK)  // redelivered: clears nothing
        let all = applied.storedHashes.union(late.storedHashes).union(fresh.storedHashes)
        #expect(r.held(all) == fresh.storedHashes && fresh.storedHashes.count == 2)
        #expect(r.router.staleEvents == UInt64(late.count) && r.router.duplicateEvents == 1)
        // The unnumbered call as before: the late batch is applied, its blocks credited.
        #expect(late.bytes.withUnsafeBytes { kvc_router_observe_events(r.handle, 1, $0.baseAddress, late.count) } == KVC_OK)
        #expect(r.held(all) == fresh.storedHashes.union(late.storedHashes))
    }

    /// (c) A new engine's first batch applied before the control plane's remove + add of the
    /// instance: its next batch is refused as a gap (it was applied onto the emptied view,
    /// missing the first batch's blocks); the dump's resync credits every block.
    @Test func anAddAfterTheNewEnginesFirstBatchIsHealedByAResync() throws {
        let r = try SeqRouter()
        let e = try engine()
        try e.create(1, tokens: e.uniqueTokens(1, count: 2 * e.blockTokens))
        let first = try Batch(draining: e)
        #expect(first.observe(r.handle, 1) == KVC_OK)
        #expect(kvc_router_remove_instance(r.handle, 1) == KVC_OK && kvc_router_add_instance(r.handle, 1, 1) == KVC_OK)
        try e.create(2, tokens: e.uniqueTokens(2, count: 2 * e.blockTokens))
        let next = try Batch(draining: e)
        #expect(next.observe(r.handle, 1) == KVC_ERR_NOT_FOUND)
        #expect(String(cString: kvc_last_error()).hasPrefix("kvc_router_observe_events_seq(instance 1, first_seq 4): events 1...3 of "
                                                            + "epoch 0x"))
        let all = first.storedHashes.union(next.storedHashes)
        #expect(r.held(all).isEmpty, "nothing applied")
        #expect(try Batch(dumping: e).resync(r.handle, 1) == KVC_OK)
        #expect(next.observe(r.handle, 1) == KVC_OK)  // redelivered: the dump holds it
        #expect(r.held(all) == all && all.count == 4)
    }

    /// A lost batch: the next is refused, naming the missing events and the remedy, and
    /// changes nothing; after the resync nothing is missed and nothing repeated.
    @Test func aLostBatchIsRefusedAndResynced() throws {
        let r = try SeqRouter()
        let e = try engine()
        #expect(try Batch(draining: e).observe(r.handle, 1) == KVC_OK)
        try e.create(1, tokens: e.uniqueTokens(1, count: 2 * e.blockTokens))
        let lost = try Batch(draining: e)  // events 2...3
        try e.create(2, tokens: e.uniqueTokens(2, count: e.blockTokens))
        let after = try Batch(draining: e)  // event 4
        #expect(after.observe(r.handle, 1) == KVC_ERR_NOT_FOUND)
        let epoch = String(after.epoch, radix: 16)
        #expect(String(cString: kvc_last_error()) == "kvc_router_observe_events_seq(instance 1, first_seq 4): events 2...3 of epoch 0x"
                + String(repeating: "0", count: 16 - epoch.count) + epoch + " of instance 1 are missing (this batch starts at 4, the "
                + "router has applied its events up to 1): nothing applied; resync the instance from its engine's dump "
                + "(kvc_engine_index_events_seq, then kvc_router_resync_instance)")
        let all = lost.storedHashes.union(after.storedHashes)
        #expect(r.held(all).isEmpty && r.router.refusedGaps == 1)
        let dump = try Batch(dumping: e)
        #expect(dump.resync(r.handle, 1) == KVC_OK)
        try e.create(3, tokens: e.uniqueTokens(3, count: e.blockTokens))
        let later = try Batch(draining: e)
        #expect(later.first == dump.first && later.observe(r.handle, 1) == KVC_OK)
        #expect(r.held(all.union(later.storedHashes)) == all.union(later.storedHashes))
    }
}
