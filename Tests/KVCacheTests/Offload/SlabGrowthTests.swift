import Foundation
import TestSupport
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

/// File systems the slab once could not grow on at all, so that the tier stored nothing while
/// the engine opened and every sync said OK: one without fallocate (ext3's files without
/// extents, as NFS before 4.2 and many FUSE file systems), where the slab now grows sparse;
/// and one that reports no size (ramfs: 0 blocks, 0 free), which the room check took for a
/// full one. Real file systems mounted for the test (needs root, as CI runs).
@Suite("Disk tier: the slab grows where fallocate is refused or no size is reported", .serialized)
struct SlabGrowthFileSystemTests {
    /// Spills a 41-token prompt (10 blocks) into a tier in `dir`, syncs, and checks that an
    /// engine opened anew on `dir` finds the 10 blocks and serves them byte-identical.
    private func expectStoredAcrossARestart(dir: String) throws {
        let prompt = tokens(41, seed: 37)
        do {
            let e = try Engine(offloadConfig(.paged, dir: dir))
            try spillPrompt(e, 1, prompt)
            let disk = e.stats().disk
            #expect(disk.blocksSpilled == 10 && disk.spillsFailed == 0, "\(disk.blocksSpilled) spilled, \(disk.spillsFailed) failed")
        }
        let e = try Engine(offloadConfig(.paged, dir: dir))
        #expect(e.stats().disk.recoveredSlots == 10)
        #expect(try e.createSequence(2, tokens: prompt) == 40)
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 40) { prompt[$0] } == 0)
    }

    @Test(.enabled(if: geteuid() == 0, "mounting a loop device needs root"))
    func aFileSystemWithoutFallocateStoresBlocksInASparseSlab() throws {
        let m = try #require(mountImage(type: "ext3", mkfs: "/usr/sbin/mkfs.ext3", bytes: 32 << 20), "mkfs.ext3 and mount -o loop")
        defer { unmountImage(m) }
        try expectStoredAcrossARestart(dir: m.mount.path)
    }

    /// A sparse slab's space is taken by its writes: on a full disk they fail as any write
    /// does (counted, the slot given back), what the tier held is still served, and once space
    /// is free again the same slots take new blocks.
    @Test(.enabled(if: geteuid() == 0, "mounting a loop device needs root"))
    func aSparseSlabsWritesOnAFullDiskFailCleanly() throws {
        let m = try #require(mountImage(type: "ext3", mkfs: "/usr/sbin/mkfs.ext3", bytes: 32 << 20), "mkfs.ext3 and mount -o loop")
        defer { unmountImage(m) }
        let e = try Engine(offloadConfig(.paged, dir: m.mount.path))
        let stored = tokens(41, seed: 41), refused = tokens(41, seed: 42), later = tokens(41, seed: 43)
        try spillPrompt(e, 1, stored)
        // Another writer takes every block left (root: the reserved ones too).
        let filler = m.mount.path + "/filler"
        let fd = open(filler, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)  // a child another test spawns meanwhile must not keep it open
        try #require(fd >= 0)
        let chunk = [UInt8](repeating: 1, count: 4096)
        while write(fd, chunk, chunk.count) > 0 {}
        #expect(errno == ENOSPC)
        close(fd)
        try e.createSequence(2, tokens: refused)
        try fillKV(e, 2, count: 41) { refused[$0] }
        try e.free(2)
        try e.trim()
        _ = try? e.syncOffload()  // the journal's appends may fail too: that is the sync's to say
        let full = e.stats().disk
        #expect(full.blocksSpilled == 20 && full.spillWritesFailed == 10, "\(full.blocksSpilled) spilled, \(full.spillWritesFailed) writes failed")
        #expect(try e.createSequence(3, tokens: stored) == 40)
        try waitReady(e, 3)
        #expect(try kvDifferences(e, 3, count: 40) { stored[$0] } == 0)
        try e.free(3)

        unlink(filler)
        // ext3 hands an unlinked file's blocks back only when its journal commits (every 5 s,
        // or at a sync), and only once no process holds the file open (the filler is opened
        // O_CLOEXEC: without it a child that a parallel test spawned while it was open kept
        // its blocks, and three full runs saw 20 writes failed here where 10 were expected).
        sync()  // (syncfs is not imported without _GNU_SOURCE; sync commits this journal too)
        try spillPrompt(e, 4, later)
        let freed = e.stats().disk
        #expect(freed.blocksSpilled == 30 && freed.spillWritesFailed == 10, "\(freed.blocksSpilled) spilled, \(freed.spillWritesFailed) writes failed")
        #expect(try e.createSequence(5, tokens: later) == 40)
        try waitReady(e, 5)
        #expect(try kvDifferences(e, 5, count: 40) { later[$0] } == 0)
    }

    @Test(.enabled(if: geteuid() == 0, "mounting a ramfs needs root"))
    func aFileSystemReportingNoSizeIsNotFull() throws {
        let dir = ScratchDir("ramfs")
        defer { dir.remove() }
        try #require(mount("ramfs", dir.path, "ramfs", 0, nil) == 0, "mount: \(String(cString: strerror(errno)))")
        defer { umount2(dir.path, Int32(MNT_DETACH)) }
        try expectStoredAcrossARestart(dir: dir.path)
    }
}
