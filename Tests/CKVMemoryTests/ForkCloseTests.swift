import CKVMemory
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `kvm_fork_close_add`: every registered descriptor is closed in a fork's child, however many
/// are registered. Before, one table of 1024 entries held them: past it, registrations failed
/// silently and those descriptors (the disk-tier locks of a process's 342nd engine on) stayed
/// open in the child.
@Suite("Fork close")
struct ForkCloseTests {
    /// In a child process (the table is process-wide): 2,500 registered descriptors of
    /// /dev/null, a fork, and the grandchild counts those still open (exit 0 when none, 1
    /// when some, 2 when the set-up failed); a removed entry's descriptor stays open.
    @Test func everyRegisteredDescriptorIsClosedInAForksChild() async {
        await #expect(processExitsWith: .exitCode(0)) {
            var limit = rlimit()
            let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
            getrlimit(resource, &limit)
            limit.rlim_cur = max(limit.rlim_cur, min(limit.rlim_max, 4096))
            guard setrlimit(resource, &limit) == 0, limit.rlim_cur >= 2600 else { exit(2) }
            var fds: [Int32] = []
            var entries: [Int32] = []
            for _ in 0..<2500 {
                let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { exit(2) }
                let entry = kvm_fork_close_add(fd)
                guard entry >= 0 else { exit(2) }
                fds.append(fd)
                entries.append(entry)
            }
            guard Set(entries).count == entries.count else { exit(2) }
            let kept = fds[1234]
            kvm_fork_close_remove(entries[1234])  // stays open in the child
            let child = fork()
            if child == 0 {
                var open = 0
                for fd in fds where fcntl(fd, F_GETFD) != -1 { open += 1 }
                _exit(open == 1 && fcntl(kept, F_GETFD) != -1 ? 0 : 1)
            }
            guard child > 0 else { exit(2) }
            var status: Int32 = 0
            guard waitpid(child, &status, 0) == child, status & 0x7f == 0 else { exit(2) }
            exit((status >> 8) & 0xff)
        }
    }
}
