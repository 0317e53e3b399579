import CKVMemory
import Testing
@testable import KVCache

/// `reserve(bytes:)` keeps memory committed until `trim`: a compaction of one sequence gives
/// back only what lies beyond the reservation (before, it trimmed the whole pool, and 16 KiB of
/// a 32 MiB reservation stayed). `trim` then gives the reservation back.
@Suite struct ReserveKeptTests {
    @Test(arguments: [Layout.paged, .contiguous])
    func aCompactionKeepsTheReservation(layout: Layout) throws {
        var c = smallConfig(layout)
        c.eviction = EvictionConfig(.heavyHitter)
        let e = try Engine(c)
        let reserved = try e.reserve(bytes: 32 << 20)
        #expect(reserved >= 32 << 20)
        let toks = tokens(1024, seed: 3)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        try observeAll(e, 1, scores(e, n: 1024, heavy: [0, 5, 9, 33, 40, 41], headShift: 0), n: 1024)
        #expect(try e.compact(1, budgetTokens: 16) == 16)
        let after = e.stats().committedBytes
        #expect(after >= 32 << 20, "reserved \(reserved) bytes; after one compaction \(after) are committed")
        try e.trim()
        #expect(e.stats().committedBytes < 1 << 20, "trim gives the reservation back")
    }

    /// What a sequence committed beyond the reservation still goes back at its compaction: the
    /// reservation is a floor, not a stop to memory return.
    @Test(arguments: [Layout.paged, .contiguous])
    func aCompactionReturnsWhatLiesBeyondTheReservation(layout: Layout) throws {
        var c = smallConfig(layout)
        c.eviction = EvictionConfig(.heavyHitter)
        let e = try Engine(c)
        _ = try e.reserve(bytes: 64 << 10)
        let toks = tokens(4096, seed: 4)
        try e.createSequence(1, tokens: toks)
        try writeKV(e, 1, tokens: toks, from: 0)
        let before = e.stats().committedBytes
        try observeAll(e, 1, scores(e, n: 4096, heavy: [0, 5, 9, 33, 40, 41], headShift: 0), n: 4096)
        #expect(try e.compact(1, budgetTokens: 16) == 16)
        let after = e.stats().committedBytes
        #expect(before >= 512 << 10 && after >= 64 << 10 && after < 128 << 10,
                "reserved 64 KiB, committed \(before) before the compaction, \(after) after")
    }

    /// A reserve the OS refuses part-way reserves what it committed, not its target: a later
    /// call refused by a failed commit then gives back what it committed (ERRORS: committed
    /// bytes are as before). Before, the whole target counted as reserved from the first step,
    /// and the refused create kept its first batch (found by helper-122).
    @Test(arguments: [Layout.paged, .contiguous])
    func aRefusedReserveReservesOnlyWhatItCommitted(layout: Layout) throws {
        let e = try Engine(smallConfig(layout, memoryBytes: 4 << 20))
        let pool = e.paged?.pool ?? e.contiguous!.pool
        kvm_pool_fail_commits(pool, 0)
        let refused = caught { _ = try e.reserve(bytes: 4 << 20) }
        kvm_pool_fail_commits(pool, -1)
        #expect(refused?.code == .outOfMemory)
        #expect(e.reservedBytes == e.stats().committedBytes)
        let before = e.stats().committedBytes
        kvm_pool_fail_commits(pool, 1)  // the create's second commit batch fails
        let create = caught { _ = try e.createSequence(1, tokens: tokens(3000, seed: 1)) }
        kvm_pool_fail_commits(pool, -1)
        #expect(create?.code == .outOfMemory)
        #expect(e.stats().committedBytes == before)
    }
}
