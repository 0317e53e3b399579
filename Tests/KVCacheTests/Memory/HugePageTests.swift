#if canImport(Glibc)
import Glibc
#endif
import TestSupport
import Testing
@testable import KVCache

/// With `page_bytes` = 2 MiB the K/V really sits in 2 MiB pages, mapped by one page-table entry
/// each (`ShmemPmdMapped` in smaps), in both layouts, whenever the kernel lets shmem use
/// transparent huge pages (`shmem_enabled` not `never`/`deny`; with `advise` only memory faulted
/// through a huge-page-advised mapping gets them, which is why the pool commits that way).
@Suite("Huge pages")
struct HugePageTests {
    /// The kernel's shmem THP mode, the bracketed word of `shmem_enabled`; nil when unreadable.
    static var shmemMode: String? {
        guard let f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r") else { return nil }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 256)
        guard fgets(&line, Int32(line.count), f) != nil else { return nil }
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let open = text.firstIndex(of: "["), let close = text.firstIndex(of: "]") else { return nil }
        return String(text[text.index(after: open)..<close])
    }

    static var kernelAllows: Bool { shmemMode.map { $0 != "never" && $0 != "deny" } ?? false }

    @Test(.enabled(if: kernelAllows, "shmem transparent huge pages are off on this machine (shmem_enabled never/deny)"),
          arguments: [Layout.paged, .contiguous])
    func kvSitsInHugePages(layout: Layout) throws {
        var c = EngineConfig()
        c.layout = layout
        c.numLayers = 2
        c.numKVHeads = 8
        c.headDim = 128  // 2 KiB per token and tensor: a 2 MiB page holds 1024 tokens
        c.pageBytes = 2 << 20
        c.maxSeqs = 4
        c.maxSeqTokens = 4096
        c.memoryBytes = 64 << 20
        let e = try Engine(c)
        let prompt = tokens(3000, seed: 70)
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        #expect(try kvMismatches(e, 1, tokens: prompt, from: 0) == 0)

        let region = e.memoryRegion
        let pmd = smapsBytes("ShmemPmdMapped", start: region.start, bytes: region.bytes)
        // 3000 tokens fill 3 pages in each of the 4 tensors: all 12 written pages are huge.
        #expect(pmd >= 12 * (2 << 20), "\(pmd >> 20) MiB PMD-mapped (shmem_enabled \(Self.shmemMode ?? "?"))")
        #expect(e.stats().committedBytes <= c.memoryBytes)
    }

    /// `stats().hugePages` says whether the memory is in huge pages, as the kernel mapped it
    /// after a write (smaps), not as the shmem_enabled setting the pool reads: reported huge,
    /// every tensor's written page is PMD-mapped shmem (`ShmemPmdMapped`: 4 tensors x 2 MiB);
    /// reported not huge, no byte of the region is huge-mapped. Never huge for smaller pages.
    /// Runs under every shmem mode.
    @Test(arguments: [Layout.paged, .contiguous], [UInt64(64 << 10), 2 << 20])
    func statsSayWhetherPagesAreHuge(layout: Layout, pageBytes: UInt64) throws {
        let e = try Engine(smallConfig(layout, pageBytes: pageBytes, blockTokens: 16))
        let prompt = tokens(32, seed: 71)
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        let region = e.memoryRegion
        try #require(residentBytes(start: region.start, bytes: region.bytes) > 0, "the written K/V is mapped")
        let pmd = smapsBytes("ShmemPmdMapped", start: region.start, bytes: region.bytes)
        let other = smapsBytes("AnonHugePages", start: region.start, bytes: region.bytes)
            + smapsBytes("FilePmdMapped", start: region.start, bytes: region.bytes)
        if e.stats().hugePages {
            #expect(pageBytes == 2 << 20, "only 2 MiB pages can be huge")
            #expect(pmd >= 4 * pageBytes, "\(pmd) bytes PMD-mapped (shmem_enabled \(Self.shmemMode ?? "?"))")
        } else {
            #expect(pmd == 0 && other == 0, "reported not huge, yet \(pmd) + \(other) bytes huge-mapped")
        }
        #expect(try kvMismatches(e, 1, tokens: prompt, from: 0) == 0)
    }
}
