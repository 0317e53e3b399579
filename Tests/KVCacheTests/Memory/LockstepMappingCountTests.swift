import TestSupport
import Testing
@testable import KVCache

/// The engine's mapping count (`kvc_stats.mappings`) is the kernel's under lockstep decode:
/// two sequences appended 16 tokens at a time in turn take alternate pages, so each page is a
/// run of its own right after the other's, and the count must equal the VMAs /proc/self/smaps
/// shows in the engine's reservation. It once counted twice as many (a reserved split after
/// every run), refusing appends at half of vm.max_map_count (revlong's `lc lockstep`).
@Suite("Contiguous layout: the mapping count under lockstep decode")
struct LockstepMappingCountTests {
    @Test func theCountIsTheKernelsThroughGrowthAndFrees() throws {
        let e = try Engine(smallConfig(.contiguous))
        let memory = try #require(e.contiguous)
        let region = memory.region
        func kernel() -> UInt64 { UInt64(SmapsFields(start: region.start, bytes: region.bytes)?.mappings ?? -1) }
        let pageTokens = memory.pageBytes / memory.tokenBytes
        for seq in [UInt64(1), 2] { try e.createSequence(seq, tokens: tokens(1, seed: Int32(seq))) }
        var length = 1
        while length + 16 <= 8 * pageTokens {
            for seq in [UInt64(1), 2] { try e.append(seq, tokens: tokens(16, seed: Int32(seq) * 100 + Int32(length))) }
            length += 16
            #expect(e.stats().mappings == kernel(), "both at \(length) tokens")
        }
        #expect(e.stats().mappings > 2 * 8 * UInt64(memory.tensors), "each page a run of its own")
        try e.free(1)
        #expect(e.stats().mappings == kernel(), "one freed")
        try e.truncate(2, to: 3 * pageTokens + 5)
        #expect(e.stats().mappings == kernel(), "truncated")
        try e.free(2)
        try e.trim()
        #expect(e.stats().mappings == kernel(), "both freed, trimmed")
    }
}
