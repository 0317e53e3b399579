import Foundation
import TestSupport
import Testing
@testable import KVCacheABI
import KVCache

/// kvc_engine_stats into a buffer of `bufferBytes` bytes filled with 0xAB whose struct_size
/// says `structSize`; returns the status and the buffer.
private func rawStats(_ f: ABIFixture, structSize: UInt32, bufferBytes: Int) -> (kvc_status, [UInt8]) {
    var bytes = [UInt8](repeating: 0xAB, count: bufferBytes)
    bytes.withUnsafeMutableBytes { $0.storeBytes(of: structSize, toByteOffset: 0, as: UInt32.self) }
    LastError.clear()
    let rc = bytes.withUnsafeMutableBytes { kvc_engine_stats(f.handle, $0.baseAddress) }
    return (rc, bytes)
}

@Suite struct StatsABITests {
    @Test(arguments: bothLayouts)
    func statsReportTheWitnessSequencesAndTheBudget(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        let s = try f.stats()
        #expect(s.budgetBytes == f.config.memoryBytes)
        #expect(s.sequences == 2)
        #expect(s.sequencesCreated == 2)
        #expect(s.blocksUsed == 4 + 1)  // 14 tokens and 3 tokens in blocks of 4
        #expect(s.committedBytes > 0 && s.committedBytes <= s.budgetBytes)
        #expect(s.blocksUsed + s.blocksCached <= s.blocksTotal)
    }

    /// The padding after struct_size (offset 4) is written 0, as every byte the call owns: a
    /// caller that hashes or compares stats snapshots byte-wise sees no garbage. Before, it
    /// was left as the caller's buffer had it (0xAB here).
    @Test func thePaddingAfterStructSizeIsZeroed() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        let (rc, bytes) = rawStats(f, structSize: UInt32(CStats.size), bufferBytes: CStats.size)
        #expect(rc == KVC_OK)
        #expect(Array(bytes[4..<8]) == [0, 0, 0, 0])
    }

    @Test(arguments: [0, 8, 71] as [UInt32])
    func structSizeBelowTheMinimumIsInvalid(size: UInt32) throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        let (rc, bytes) = rawStats(f, structSize: size, bufferBytes: 128)
        expectStatus(rc, KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_stats", "struct_size", "\(size)"])
        #expect(bytes[4...].allSatisfy { $0 == 0xAB }, "wrote into a rejected struct")
        try f.expectWitnessesIntact()
    }

    @Test func structSizeAboveTheMaximumIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        let (rc, _) = rawStats(f, structSize: 4097, bufferBytes: 128)
        expectStatus(rc, KVC_ERR_INVALID_ARGUMENT, mentioning: ["struct_size", "4097"])
        try f.expectWitnessesIntact()
    }

    @Test func anOlderMinimumSizeStructGetsOnlyTheFieldsThatFit() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        let (rc, bytes) = rawStats(f, structSize: 72, bufferBytes: 128)
        #expect(rc == KVC_OK)
        let s = CStats(bytes: bytes)
        #expect(s.budgetBytes == f.config.memoryBytes)
        #expect(s.sequences == 2)
        #expect(bytes[72...].allSatisfy { $0 == 0xAB }, "wrote past struct_size")
    }

    @Test func aSizeBetweenFieldsWritesOnlyWholeFields() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        let (rc, bytes) = rawStats(f, structSize: 84, bufferBytes: 128)  // sequences_created fits, blocks_evicted half
        #expect(rc == KVC_OK)
        #expect(CStats(bytes: bytes).sequencesCreated == 2)
        #expect(bytes[80...].allSatisfy { $0 == 0xAB })
    }

    /// `huge_pages` is 1 exactly when the kernel maps the engine's K/V in huge pages, as smaps
    /// says after a write (not as the shmem_enabled setting the engine reads says): reported
    /// huge, the written pages are PMD-mapped shmem (`ShmemPmdMapped`, where a memfd's huge
    /// pages are counted) in a mapping the kernel deems eligible (`THPeligible` 1); reported
    /// not huge, no byte of the region is huge-mapped at all. Small pages are never huge.
    @Test(arguments: [UInt64(4096), 2 << 20])
    func hugePagesReportWhatTheKernelGave(pageBytes: UInt64) throws {
        var c = CConfig.small(KVC_LAYOUT_PAGED, memoryBytes: 64 << 20)
        c.pageBytes = pageBytes
        let f = try ABIFixture(c)
        let tokens = f.uniqueTokens(3, count: 2 * f.blockTokens)
        try f.create(3, tokens: tokens)
        try f.write(3, salt: 3, from: 0, to: tokens.count)  // faults the pages in: every tensor's first
        let reported = try f.stats().hugePages
        let engine = Unmanaged<Engine>.fromOpaque(UnsafeRawPointer(f.handle)).takeUnretainedValue()
        let smaps = SmapsFields(start: engine.memoryRegion.start, bytes: engine.memoryRegion.bytes)?.fields ?? [:]
        try #require(smaps["Rss"] ?? 0 > 0, "the region is mapped and written: \(smaps)")
        let pmd = smaps["ShmemPmdMapped"] ?? 0, tensors = 2 * UInt64(c.numLayers)
        if reported == 1 {
            #expect(pageBytes == 2 << 20)
            #expect(pmd >= tensors * pageBytes, "\(pmd) bytes PMD-mapped, one 2 MiB page per tensor written")
            #expect(smaps["THPeligible"] == 1)
        } else {
            #expect(reported == 0)
            #expect(pmd == 0 && smaps["AnonHugePages"] == 0 && smaps["FilePmdMapped"] == 0, "reported not huge: \(smaps)")
        }
        #expect(try f.firstMismatch(3, salt: 3, to: tokens.count) == nil)
    }

    /// A client compiled against the header before the swap-out and open-record counters were
    /// appended (224 bytes, through tokens_lost) gets exactly its fields.
    @Test func aStructOfThePreviousVersionGetsItsFieldsAndNothingPast() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        let (rc, bytes) = rawStats(f, structSize: 224, bufferBytes: 280)
        #expect(rc == KVC_OK)
        #expect(Array(CStats(bytes: bytes).fields[..<27]) == Array((try f.stats()).fields[..<27]))
        #expect(bytes[224...].allSatisfy { $0 == 0xAB }, "wrote past struct_size")
    }

    @Test func aNewerLargerStructGetsEveryFieldAndZeroesTheRest() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        let (rc, bytes) = rawStats(f, structSize: 360, bufferBytes: 368)
        #expect(rc == KVC_OK)
        #expect(CStats(bytes: bytes) == (try f.stats()))
        #expect(bytes[352..<360].allSatisfy { $0 == 0 }, "unknown newer fields must read 0")
        #expect(bytes[360...].allSatisfy { $0 == 0xAB }, "wrote past struct_size")
        #expect(bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } == 360, "struct_size is input only")
    }

    @Test func statsWithNullOutputIsInvalid() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["out", "NULL"]) { kvc_engine_stats($0, nil) }
    }

    @Test func statsWithNullEngineIsInvalid() {
        var bytes = [UInt8](repeating: 0, count: 184)
        bytes[0] = 184
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["engine", "NULL"]) {
            bytes.withUnsafeMutableBytes { kvc_engine_stats(nil, $0.baseAddress) }
        }
    }

    @Test(arguments: bothLayouts)
    func reserveCommitsAheadOfNeedAndTrimGivesItBack(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        let before = try f.stats()
        var committed: UInt64 = 0
        #expect(kvc_engine_reserve(f.handle, 512 << 10, &committed) == KVC_OK)
        #expect(committed >= 512 << 10)
        #expect(committed == (try f.stats()).committedBytes)
        #expect(kvc_engine_reserve(f.handle, .max, nil) == KVC_OK)  // capped at the budget
        #expect((try f.stats()).committedBytes <= (try f.stats()).budgetBytes)
        #expect((try f.stats()).committedBytes > committed)
        try f.expectWitnessesIntact()  // live sequences' bytes untouched
        #expect(kvc_engine_trim(f.handle) == KVC_OK)
        #expect((try f.stats()).committedBytes <= before.committedBytes)
        try f.expectWitnessesIntact()
    }

    @Test func reserveWithNullEngineOrOnAMetadataOnlyEngineFails() throws {
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_engine_reserve", "NULL"]) { kvc_engine_reserve(nil, 1, nil) }
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.metadataOnly = 1
        var e: OpaquePointer?
        #expect(c.bytes.withUnsafeBytes { kvc_engine_create($0.baseAddress, &e) } == KVC_OK)
        defer { kvc_engine_destroy(e) }
        expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["kvc_engine_reserve", "metadata-only"]) { kvc_engine_reserve(e, 1, nil) }
    }

    @Test func trimWithNullEngineIsInvalid() {
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_engine_trim", "NULL"]) { kvc_engine_trim(nil) }
    }

    @Test(arguments: bothLayouts)
    func trimKeepsLiveSequencesAndDropsCachedBlocks(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        try f.create(5, tokens: f.uniqueTokens(5, count: 40))
        #expect(kvc_seq_free(f.handle, 5) == KVC_OK)
        #expect(try f.stats().blocksCached == 10)
        #expect(kvc_engine_trim(f.handle) == KVC_OK)
        let s = try f.stats()
        #expect(s.blocksCached == 0)
        #expect(s.sequences == 2)
        try f.expectWitnessesIntact()
    }
}
