import CKVMemory
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Every file the memory module opens is close-on-exec, the /proc and /sys files it reads for
/// a moment included: a process another thread spawns (posix_spawn, fork + exec) keeps none.
/// Before, `/proc/self/maps` (the parent's address layout, read at every contiguous layout's
/// create), `/proc/sys/vm/max_map_count` and the THP settings were opened without O_CLOEXEC,
/// and a program spawned meanwhile held them after its exec.
@Suite("Files in an exec'd child")
struct ExecInheritanceTests {
    /// In an exit test's process: one thread makes 2 MiB-page pools and contiguous ranges in a
    /// loop while this one spawns `ls -l /proc/self/fd/` up to `spawns` times; exits 1 at the
    /// first child that held one of those files, 0 when none did (100: the set-up failed). A
    /// statistical test: on the old code a child inherited one in most spawns, so 300 in a row
    /// without one had no real chance; on correct code no child can.
    @Test func aSpawnedProgramInheritsNoFileAPoolOrARangeRead() async {
        await #expect(processExitsWith: .exitCode(0)) {
            let spawns = 300
            let stop = Atomic<Bool>(false)
            let maker = TestThread {
                let page: UInt64 = 2 << 20
                while !stop.load(ordering: .relaxed) {
                    let (pool, rc) = makePool(budget: 2 * page, tensors: 2, groupBytes: page, pageBytes: page)
                    guard rc == 0 else { exit(100) }
                    var ranges: OpaquePointer?
                    guard kvm_ranges_create(pool, 1, page, &ranges) == 0 else { exit(100) }
                    kvm_ranges_destroy(ranges)
                    kvm_pool_destroy(pool)
                }
            }
            var inherited = false
            for _ in 0..<spawns where !inherited {
                guard let listing = spawnedListing() else { exit(100) }
                inherited = ["/maps", "max_map_count", "shmem_enabled"].contains { listing.contains($0) }
            }
            stop.store(true, ordering: .relaxed)
            maker.join()
            exit(inherited ? 1 : 0)
        }
    }
}

/// What `ls -l /proc/self/fd/` prints in a process spawned now: its descriptors and what they
/// name; nil when the spawn failed.
private func spawnedListing() -> String? {
    var pipeFDs: [Int32] = [-1, -1]
    // This thread alone spawns, so the ends are close-on-exec before any spawn could copy them.
    guard pipe(&pipeFDs) == 0, fcntl(pipeFDs[0], F_SETFD, FD_CLOEXEC) == 0, fcntl(pipeFDs[1], F_SETFD, FD_CLOEXEC) == 0 else { return nil }
    defer { close(pipeFDs[0]) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup("ls"), strdup("-l"), strdup("/proc/self/fd/"), nil]
    defer { for a in argv { free(a) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, "/bin/ls", &actions, nil, argv, environ)
    close(pipeFDs[1])
    guard rc == 0 else { return nil }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(pipeFDs[0], &buffer, buffer.count)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        out += buffer[0..<n]
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return String(decoding: out, as: UTF8.self)
}
