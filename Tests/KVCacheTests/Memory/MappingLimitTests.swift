import CKVMemory
import Testing
@testable import KVCache

/// The contiguous layout under the mapping limit (`vm.max_map_count`): when mapping a new page
/// run would pass the limit, the engine unmaps the pages of free slots (their groups stay in
/// the pool, held by the prefix cache) and retries, so live sequences keep growing and cached
/// prefixes keep their bytes. The limit is lowered through `kvm_ranges_set_mapping_limit`:
/// reaching the real one takes about 65k mappings.
@Suite("Contiguous layout: reclaiming mappings at the limit")
struct MappingLimitTests {
    @Test func growthPastTheLimitUnmapsFreeSlotsAndKeepsEveryByte() throws {
        let e = try Engine(smallConfig(.contiguous))
        let memory = try #require(e.contiguous)
        let ranges = memory.ranges
        let pageTokens = memory.pageBytes / memory.tokenBytes  // 128
        // Four cached prompts of one page each, in slots that are then freed (still mapped).
        let prompts = (0..<4).map { tokens(pageTokens, seed: Int32(10 + $0)) }
        for (i, p) in prompts.enumerated() {
            try e.createSequence(UInt64(100 + i), tokens: p)
            try writeKV(e, UInt64(100 + i), tokens: p, from: 0)
        }
        for i in 0..<4 { try e.free(UInt64(100 + i)) }
        // Two live sequences growing a page at a time in turn, so that every page of each is
        // a run of its own (its successor group is the other's).
        var grown: [UInt64: [Int32]] = [1: tokens(pageTokens, seed: 1), 2: tokens(pageTokens, seed: 2)]
        for seq in [UInt64(1), 2] {
            try e.createSequence(seq, tokens: grown[seq]!)
            try writeKV(e, seq, tokens: grown[seq]!, from: 0)
        }
        let stillMapped = (0..<memory.slots).filter { slot in
            kvm_ranges_mapped(ranges, UInt32(slot)) > 0 && ![try? e.slot(1), try? e.slot(2)].contains(slot)
        }
        #expect(stillMapped.count == 2)  // two freed prompts' slots were reused by 1 and 2
        // Each page either sequence grows by is one mapping more per tensor (a run right after
        // the one before it); each free slot's page unmapped gives two back (its run and the
        // stretch after it, which merges with the reserved pages around it). Room for 3 pages
        // more: growth needs 6, so both free slots' pages must go.
        let pageMappings = UInt64(memory.tensors)
        let limit = kvm_ranges_mappings(ranges) + 3 * pageMappings
        kvm_ranges_set_mapping_limit(ranges, limit)
        #expect(kvm_ranges_mapping_limit(ranges) == limit)
        for round in 1...3 {
            for seq in [UInt64(1), 2] {
                let more = tokens(pageTokens, seed: Int32(1000 * Int(seq) + round))
                try e.append(seq, tokens: more)
                try writeKV(e, seq, tokens: more, from: grown[seq]!.count)
                grown[seq]! += more
                #expect(kvm_ranges_mappings(ranges) <= limit)
            }
        }
        for slot in stillMapped { #expect(kvm_ranges_mapped(ranges, UInt32(slot)) == 0) }  // reclaimed
        for seq in [UInt64(1), 2] { #expect(try kvMismatches(e, seq, tokens: grown[seq]!, from: 0) == 0) }
        // Every cached prompt is still served, byte-identical, once a live slot is freed for it.
        try e.free(2)
        for (i, p) in prompts.enumerated() {
            let cached = try e.createSequence(UInt64(200 + i), tokens: p)
            #expect(cached == pageTokens - e.config.blockTokens)  // full blocks short of the last token
            #expect(try kvMismatches(e, UInt64(200 + i), tokens: Array(p.prefix(cached)), from: 0) == 0)
            #expect(kvm_ranges_mappings(ranges) <= limit)
            try e.free(UInt64(200 + i))
        }
        #expect(try kvMismatches(e, 1, tokens: grown[1]!, from: 0) == 0)
    }

    /// At vm.max_map_count a trim's unmap can fail for some tensors only (the hook fails all
    /// but the first). The page must leave the table all the same: it once stayed listed as the
    /// slot's own, so the sequence growing back over it kept it without mapping it, and the
    /// server's writes to the first tensors faulted (SIGSEGV).
    @Test func aTrimUnmapFailingForSomeTensorsLeavesTheSequenceWritable() throws {
        let e = try Engine(smallConfig(.contiguous))
        let memory = try #require(e.contiguous)
        let pageTokens = memory.pageBytes / memory.tokenBytes
        let prompt = tokens(2 * pageTokens, seed: 3)
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        try e.truncate(1, to: pageTokens)  // page 1 unpinned, still mapped
        let slot = UInt32(try e.slot(1))
        #expect(kvm_ranges_mapped(memory.ranges, slot) == 2)
        kvm_ranges_fail_mmaps(memory.ranges, 1, UInt32(memory.tensors - 1))
        try e.trim()
        #expect(kvm_ranges_mapped(memory.ranges, slot) == 1)
        let more = tokens(pageTokens, seed: 4)
        try e.append(1, tokens: more)
        try writeKV(e, 1, tokens: more, from: pageTokens)
        #expect(try kvMismatches(e, 1, tokens: Array(prompt.prefix(pageTokens)) + more, from: 0) == 0)
    }

    /// A truncation into a page a fork shares copies the page (`unshare`); when the copy's mmap
    /// fails (the hook fails the first), that page maps its old group again: the truncation is
    /// refused and changes nothing (the copy comes before the cut), both sequences keep their
    /// bytes, and the pins are as before. (Before, found by helper-103: the page stayed unmapped below the sequence's
    /// length, the copy read into it ("Bad address") and group -1 was pinned.) When the
    /// mapping back fails too (every mmap failing), the error says the page is lost and the
    /// sequence is freed without a trap; the fork keeps its bytes.
    @Test(arguments: [false, true])
    func aTruncationWhoseCopyCannotBeMappedKeepsTheOldPage(mappingBackFails: Bool) throws {
        let e = try Engine(smallConfig(.contiguous))
        let memory = try #require(e.contiguous)
        let pageTokens = memory.pageBytes / memory.tokenBytes
        let prompt = tokens(2 * pageTokens, seed: 3)
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        try e.fork(parent: 1, child: 2)  // both pages shared whole
        let slot = UInt32(try e.slot(1))
        let before = kvm_ranges_group(memory.ranges, slot, 1), pinned = memory.pinnedGroups
        kvm_ranges_fail_mmaps(memory.ranges, 0, mappingBackFails ? 1000 : 1)
        let error = thrown { () throws(KVError) in try e.truncate(1, to: pageTokens + 3) }
        kvm_ranges_fail_mmaps(memory.ranges, 0, 0)
        #expect(error?.code == .outOfMemory, "\(String(describing: error))")
        #expect(try e.length(1) == 2 * pageTokens, "refused: nothing cut")
        #expect(try kvMismatches(e, 2, tokens: prompt, from: 0) == 0)
        if mappingBackFails {
            #expect(error?.message.contains("page 1 of the sequence could not be mapped again") == true)
            #expect(kvm_ranges_group(memory.ranges, slot, 1) == -1)
            try e.free(1)
        } else {
            #expect(kvm_ranges_group(memory.ranges, slot, 1) == before, "the page maps its old group")
            #expect(memory.pinnedGroups == pinned)
            #expect(try kvMismatches(e, 1, tokens: prompt, from: 0) == 0)
            try e.free(1)
        }
        #expect(try kvMismatches(e, 2, tokens: prompt, from: 0) == 0)
        try e.free(2)
        #expect(memory.pinnedGroups == 0)
    }
}
