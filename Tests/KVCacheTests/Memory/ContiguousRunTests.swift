import CKVMemory
import Testing
@testable import KVCache

/// The contiguous layout maps a run of consecutive pool groups with one mmap per tensor, so a
/// create's cost is its number of runs. With the budget full, the free space can be groups of
/// one between pinned ones (appends of many sequences take single groups in turn); a create then
/// evicts cached blocks for longer runs instead of mapping those one by one, and appends take the
/// single groups (`kvm_pool_alloc_run_fit`).
@Suite("Contiguous layout: creates map runs, not single groups")
struct ContiguousRunTests {
    @Test func aCreateUnderAFullBudgetEvictsForARunRatherThanMappingSingleGroups() throws {
        var config = smallConfig(.contiguous, memoryBytes: 40 * 4 * 4096)
        config.maxSeqs = 32
        let e = try Engine(config)
        let memory = try #require(e.contiguous)
        #expect(memory.groups == 40)
        let pageTokens = memory.pageBytes / memory.tokenBytes  // 128
        // 20 one-page sequences too short for a full block (nothing of them is cached): groups 0-19.
        for i in 0..<20 { try e.createSequence(UInt64(100 + i), tokens: tokens(3, seed: Int32(100 + i))) }
        // A cached prompt of 20 pages in groups 20-39, then every other short sequence freed: the
        // pool is full, and all it can give back without eviction are groups of one.
        let cachedPrompt = tokens(20 * pageTokens, seed: 7)
        try e.createSequence(1, tokens: cachedPrompt)
        try e.free(1)
        for i in stride(from: 1, to: 20, by: 2) { try e.free(UInt64(100 + i)) }
        #expect(kvm_pool_free_groups(memory.pool) == 0)

        let prompt = tokens(8 * pageTokens, seed: 9)
        try e.createSequence(2, tokens: prompt)
        try writeKV(e, 2, tokens: prompt, from: 0)
        let slot = try e.slot(2)
        let groups = (0..<8).map { kvm_ranges_group(memory.ranges, UInt32(slot), UInt32($0)) }
        // Page 0 keeps the group the slot's last sequence left it (nothing else holds it); the
        // other 7 pages are one run of the evicted prompt's groups, not 7 single groups.
        #expect(groups[0] < 20)
        #expect(groups[1] >= 20)
        #expect((1..<7).allSatisfy { groups[$0 + 1] == groups[$0] + 1 })
        #expect(try kvMismatches(e, 2, tokens: prompt, from: 0) == 0)

        // An append takes a single group, leaving runs for creates.
        let before = kvm_pool_free_groups(memory.pool)
        try e.append(100, tokens: tokens(pageTokens, seed: 11))
        let grown = kvm_ranges_group(memory.ranges, UInt32(try e.slot(100)), 1)
        #expect(grown >= 0 && grown < 20)  // one of the freed short sequences' groups
        #expect(kvm_pool_free_groups(memory.pool) == before - 1)
        for i in stride(from: 0, to: 20, by: 2) { #expect(try e.length(UInt64(100 + i)) == (i == 0 ? 3 + pageTokens : 3)) }
    }
}
