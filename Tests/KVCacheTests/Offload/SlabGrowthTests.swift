import Foundation
import Testing
@testable import KVCache

/// The slab grows by extents of 64 slots, or by what fits when less does: on a file system
/// with room for fewer than 64 slots it once tried the whole extent, failed, and so spilled
/// nothing at all, while the room check (`kvm_slab_growable`) counted the slots that fit
/// (helper-68). A real small file system: a tmpfs mounted for the test (needs root, as CI
/// runs).
@Suite("Disk tier: the slab grows into what the file system has left", .serialized)
struct SlabGrowthTests {
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"), arguments: [Layout.paged, .contiguous])
    func aFileSystemShortOfAnExtentStillTakesTheSlotsThatFit(layout: Layout) throws {
        let dir = ScratchDir("small-fs")
        defer { dir.remove() }
        // 256 KiB: the identity and the journal's pages, and about 28 slots of 8 KiB.
        try #require(mount("tmpfs", dir.path, "tmpfs", 0, "size=256k") == 0, "mount: \(String(cString: strerror(errno)))")
        defer { umount2(dir.path, Int32(MNT_DETACH)) }
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        let prompt = tokens(41, seed: 31)  // 10 whole blocks
        try spillPrompt(e, 1, prompt)
        let disk = e.stats().disk
        #expect(disk.blocksSpilled == 10 && disk.spillsFailed == 0, "\(disk.blocksSpilled) spilled, \(disk.spillsFailed) failed")
        #expect(try e.createSequence(2, tokens: prompt) == 40)
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 40) { prompt[$0] } == 0)
    }
}
