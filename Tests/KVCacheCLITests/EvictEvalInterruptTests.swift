import Foundation
import TestSupport
import Testing

/// `kvcache evict-eval` with episodic-offload runs an engine per budget on a disk tier in a
/// private `/tmp/kvcache-evict-eval-XXXXXX` directory, removed when its run ends. Ended by
/// SIGTERM or SIGINT it removes them too and exits with 128 + the signal's number; it used to
/// die of the signal and leave them (with their slab files) behind.
@Suite("evict-eval interrupted", .serialized)
struct EvictEvalInterruptTests {
    /// The signal comes once the three runs' engines have their slab files open. The child
    /// starts with no signal blocked (a `Process` started from a test's thread inherits a mask
    /// blocking them, and the old code then simply finished its run).
    @Test(arguments: [SIGTERM, SIGINT]) func aSignalRemovesTheTierDirectories(signal: Int32) throws {
        let cli = cliPath()
        try #require(FileManager.default.isExecutableFile(atPath: cli), "build kvcache-cli first: \(cli)")
        let pid = try spawnUnblocked(cli, ["evict-eval", "--synthetic", "long-decode", "--policies", "episodic-offload",
                                           "--budgets", "0.1,0.2,0.5"])
        var status: Int32 = 0
        var exited = false
        var tiers: Set<String> = []
        var waited = 0
        while tiers.count < 3 && !exited && waited < 30_000 {
            usleep(1000)
            waited += 1
            tiers = tierDirectories(of: pid)
            exited = waitpid(pid, &status, WNOHANG) == pid
        }
        defer { for dir in tiers { try? FileManager.default.removeItem(atPath: dir) } }  // what the old code left
        #expect(!exited && tiers.count == 3, "it ended before the signal, or opened \(tiers)")
        kill(pid, signal)
        while !exited && waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signalled = status & 0x7f
        #expect(signalled == 0 && (status >> 8) & 0xff == 128 + signal,
                signalled == 0 ? "status \((status >> 8) & 0xff)" : "killed by signal \(signalled)")
        let left = tiers.filter { FileManager.default.fileExists(atPath: $0) }
        #expect(left.isEmpty, "left: \(left.sorted())")
    }
}

/// Starts `path` with `arguments`, no signal blocked and SIGINT / SIGTERM at their default
/// action, its output discarded; returns its pid (the caller waits for it).
private func spawnUnblocked(_ path: String, _ arguments: [String]) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t(), defaults = sigset_t()
    sigemptyset(&none)
    sigemptyset(&defaults)
    sigaddset(&defaults, SIGINT)
    sigaddset(&defaults, SIGTERM)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, &attributes, &argv, environ)
    try #require(rc == 0, "posix_spawn: \(rc)")
    return pid
}

/// The directories of the slab files process `pid` holds open (/proc/<pid>/fd's links).
private func tierDirectories(of pid: Int32) -> Set<String> {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
    let targets = fds.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/" + $0) }
    return Set(targets.filter { $0.hasSuffix("/kvcache.slab") }.map { String($0.dropLast("/kvcache.slab".count)) })
}
