#if canImport(Glibc)
import Glibc
#endif
import TestSupport
import Testing
@testable import KVCache

/// With `page_bytes` = 2 MiB the K/V really sits in 2 MiB pages, mapped by one page-table entry
/// each (`ShmemPmdMapped` in smaps), in both layouts, whenever the kernel lets this process's
/// shmem use transparent huge pages (see `kernelAllows`; with `advise` only memory faulted
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

    /// Whether the engine takes huge pages here (the top-level and per-size shmem_enabled and
    /// PR_GET_THP_DISABLE: `kvm_shmem_hugepages_refusal`); the test below checks it got them.
    static var kernelAllows: Bool {
        (try? Engine(smallConfig(.paged, pageBytes: 2 << 20, blockTokens: 16)))?.stats().hugePages ?? false
    }

    @Test(.enabled(if: kernelAllows, "shmem transparent huge pages are off for this process (shmem_enabled settings or prctl)"),
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

    /// A process whose transparent huge pages are disabled (prctl PR_SET_THP_DISABLE, as
    /// container runtimes and service managers may set it) gets no huge pages whatever
    /// shmem_enabled says, so `hugePages` reads false and the once-only line on stderr names
    /// the prctl. Before, the pool read only shmem_enabled: under `advise` it reported huge
    /// pages while every page was small, and under `never` blamed that setting. Exit 0 when
    /// false, 1 when reported huge, 2 when the create failed, 3 when the prctl failed.
    @Test func aProcessWithHugePagesDisabledByPrctlGetsNoneAndIsToldWhy() async {
        let result = await #expect(processExitsWith: .exitCode(0), observing: [\.standardErrorContent]) {
            let PR_SET_THP_DISABLE: Int32 = 41
            guard prctl(PR_SET_THP_DISABLE, 1) == 0 else { exit(3) }
            guard let e = try? Engine(smallConfig(.paged, pageBytes: 2 << 20, blockTokens: 16)) else { exit(2) }
            _ = try? Engine(smallConfig(.contiguous, pageBytes: 2 << 20, blockTokens: 16))  // logs nothing more
            exit(e.stats().hugePages ? 1 : 0)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("PR_SET_THP_DISABLE"), "stderr: \(stderr)")
        #expect(stderr.components(separatedBy: "asks for huge pages").count == 2, "one line: \(stderr)")
    }
}
