import CKVMemory
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Every descriptor a disk tier holds on its files is closed in a child forked without exec
/// (`kvm_fork_close.h`), not only the own slab's three: a peer's slab and journal, the journal's
/// duplicate a sync pins (`kvm_slab_pin_files`) and a compaction's `kvcache.journal.new`.
/// Before, a child kept those four for as long as it lived (the peer's slab and its disk space
/// after the owner replaced it, a compaction's journal after the rename).
@Suite("Slab descriptors in a fork's child")
struct SlabForkCloseTests {
    /// In an exit test's process (the fork then copies no other test's descriptors): an own
    /// slab, a peer's, a pinned sync and a compaction begun; the child counts the descriptors
    /// naming files of the two directories that are still open, and exits with that count
    /// (the parent exits with it too; 100 when the set-up failed).
    @Test func aForksChildHoldsNoDescriptorOfAnyTierFile() async {
        await #expect(processExitsWith: .exitCode(0)) {
            let own = ScratchDir("forkOwn"), peer = ScratchDir("forkPeer")
            var config = kvm_slab_config(dir: nil, slot_bytes: 8192, max_bytes: 1 << 20, extent_slots: 0, force_buffered: 1)
            var owner: OpaquePointer?, reader: OpaquePointer?, slab: OpaquePointer?
            let opened = peer.path.withCString { dir in
                config.dir = dir
                return kvm_slab_open(&config, &owner) == 0 && kvm_slab_open_peer(&config, &reader) == 0
            } && own.path.withCString { dir in
                config.dir = dir
                return kvm_slab_open(&config, &slab) == 0
            }
            guard opened else { exit(100) }
            var pinned = kvm_slab_files()
            kvm_slab_pin_files(slab, &pinned)
            guard pinned.borrowed == 0, kvm_slab_journal_rewrite_begin(slab) == 0 else { exit(100) }
            let held = tierDescriptors(in: [own.path, peer.path])
            // The owner's three, the reader's two, the slab's three, the pinned journal, .new.
            guard held.count == 10 else { exit(100) }
            let child = fork()
            if child == 0 { _exit(Int32(held.filter { fcntl($0, F_GETFD) != -1 }.count)) }
            var status: Int32 = 0
            guard child > 0, waitpid(child, &status, 0) == child, status & 0x7f == 0 else { exit(100) }
            _ = kvm_slab_sync_files(&pinned)
            kvm_slab_close(slab)
            kvm_slab_close(reader)
            kvm_slab_close(owner)
            exit((status >> 8) & 0xff)
        }
    }
}

/// This process's descriptors open on a file in one of `dirs` (read from /proc/self/fd).
private func tierDescriptors(in dirs: [String]) -> [Int32] {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return fds.compactMap { Int32($0) }.filter { fd in
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)") else { return false }
        return dirs.contains { target.hasPrefix($0 + "/") }
    }
}
