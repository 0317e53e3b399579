import CKVMemory
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A fork() in another thread while a registered descriptor is being closed gives the child
/// the descriptor closed or registered, never open and unregistered (`kvm_fork_close.h`):
/// the removal from the table and the close sit in one fork bracket. Before, a fork between
/// them (fork copies the descriptor table before the handlers run) left the child holding the
/// descriptor for its life: a sync's journal duplicate, the slab, its lock, the io_uring ring.
///
/// Each test holds the close path open between the removal and the close
/// (`kvm_fork_close_on_remove`), has another thread fork meanwhile, and gives the fork up to
/// `forkSeconds` to finish before the close goes on: on correct code the fork waits for the
/// close (the hook's wait runs out) and the child holds nothing; on the old code the fork
/// finished inside the gap and the child held the descriptor.
@Suite("Fork during a close")
struct ForkDuringCloseTests {
    /// The journal duplicate a sync pins (`kvm_slab_pin_files`), closed by
    /// `kvm_slab_sync_files` through `kvm_fork_close_close`.
    @Test func aForkDuringASyncsCloseLeavesTheChildNoJournal() async {
        await #expect(processExitsWith: .exitCode(0)) {
            let dir = ScratchDir("forkDuringClose")
            var config = kvm_slab_config(dir: nil, slot_bytes: 8192, max_bytes: 1 << 20, extent_slots: 0, force_buffered: 1)
            var slab: OpaquePointer?
            guard dir.path.withCString({ config.dir = $0; return kvm_slab_open(&config, &slab) }) == 0 else { exit(100) }
            var pinned = kvm_slab_files()
            kvm_slab_pin_files(slab, &pinned)
            guard pinned.borrowed == 0 else { exit(100) }
            let status = forkWhileClosing(pinned.journal_fd) { _ = kvm_slab_sync_files(&pinned) }
            kvm_slab_close(slab)
            exit(status)
        }
    }

    /// The io_uring ring, closed by `kvm_io_destroy` (`io_uring_queue_exit`).
    @Test(.enabled(if: ioUringWorks)) func aForkDuringAQueuesDestroyLeavesTheChildNoRing() async {
        await #expect(processExitsWith: .exitCode(0)) {
            let fd = open("/dev/null", O_RDWR | O_CLOEXEC)
            let io = fd >= 0 ? ioQueue(on: fd, depth: 4) : nil
            let rings = descriptors(naming: "anon_inode:[io_uring]")
            guard let io, kvm_io_backend(io) == Int32(KVM_IO_URING), rings.count == 1 else { exit(100) }
            exit(forkWhileClosing(rings[0]) { kvm_io_destroy(io) })
        }
    }
}

/// How long the hook keeps a close waiting for the fork it started.
private let forkSeconds = 2

/// Shared by the hook, the forking thread and its child (one exit test's process).
private nonisolated(unsafe) var target: Int32 = -1
private nonisolated(unsafe) let forkNow = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
private nonisolated(unsafe) let forked = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
/// "/proc/self/fd/<target>" and what it named before the close, as C strings, and a buffer
/// for the child's readlink: made before the fork, so that the child allocates nothing.
private nonisolated(unsafe) var link: [CChar] = []
private nonisolated(unsafe) var named: [CChar] = []
private nonisolated(unsafe) var read = [CChar](repeating: 0, count: 4096)

/// Runs in kvm_fork_close_remove: for the target, asks for the fork and waits for it to
/// return in the parent, for up to `forkSeconds`.
private let holdTheCloseOpen: @convention(c) (Int32) -> Void = { fd in
    guard fd == target else { return }
    sem_post(forkNow)
    var deadline = timespec()
    clock_gettime(CLOCK_REALTIME, &deadline)
    deadline.tv_sec += forkSeconds
    while sem_timedwait(forked, &deadline) != 0 && errno == EINTR {}
}

/// Closes `fd` with `close` while another thread forks in the middle of it; the child exits 1
/// when it holds `fd` still naming what it named, else 0. Returns the child's exit status
/// (100 when the set-up failed).
private func forkWhileClosing(_ fd: Int32, _ close: () -> Void) -> Int32 {
    target = fd
    link = Array("/proc/self/fd/\(fd)".utf8CString)
    guard let was = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)") else { return 100 }
    named = Array(was.utf8CString)
    guard sem_init(forkNow, 0, 0) == 0, sem_init(forked, 0, 0) == 0 else { return 100 }
    nonisolated(unsafe) var child: pid_t = -1
    let forker = TestThread {
        while sem_wait(forkNow) != 0 && errno == EINTR {}
        child = fork()
        if child == 0 {
            let n = readlink(link, &read, read.count)
            _exit(n == named.count - 1 && memcmp(read, named, n) == 0 ? 1 : 0)
        }
        sem_post(forked)
    }
    kvm_fork_close_on_remove(holdTheCloseOpen)
    close()
    kvm_fork_close_on_remove(nil)
    forker.join()
    var status: Int32 = 0
    guard child > 0, waitpid(child, &status, 0) == child, status & 0x7f == 0 else { return 100 }
    return (status >> 8) & 0xff
}

/// This process's descriptors whose /proc/self/fd link reads `target`.
private func descriptors(naming target: String) -> [Int32] {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return fds.compactMap { Int32($0) }.filter {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)")) == target
    }
}
