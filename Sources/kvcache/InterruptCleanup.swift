import KVCache
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What SIGINT and SIGTERM remove before they end `kvcache io-bench` (its test file and its
/// tier's private directory, which a signal would otherwise leave behind: 1 GiB by default)
/// and `kvcache evict-eval` (its episodic-offload runs' private tier directories).
/// The handler then exits with 128 + the signal's number, the status a shell reports.
///
/// `kvcache load` installs it in `.stop` mode instead: the first signal is only recorded
/// (`pendingSignal`), for the run to stop its workers and report what completed before it
/// exits with that status itself; a second signal ends the process as in `.exit` mode.
///
/// Signal safety: the handler calls only `strlen`, `unlink`, `rmdir` and `_exit` on C strings
/// made beforehand. Each owner's paths are one allocation of NUL-terminated strings ended by
/// an empty one, published by an atomic store of its address (0: none); a replaced list is
/// never freed, since a handler on another thread may be reading it (a run replaces a few).
/// `install` sets both lists before it installs the handler, so that the handler never runs
/// their (lazy) initialisation.
enum InterruptCleanup {
    /// Who set a list: each replaces only its own.
    enum Owner { case testFile, tierDirectory }

    /// What a signal does: `.exit` removes both lists' paths and exits; `.stop` records the
    /// first signal for the program to poll, and acts as `.exit` on the next one.
    enum Mode { case exit, stop }

    private static let testFileList = Atomic<UInt>(0)
    private static let tierDirectoryList = Atomic<UInt>(0)
    private static let stopMode = Atomic<Bool>(false)
    private static let pending = Atomic<Int32>(0)

    /// In `.stop` mode: the number of the signal taken, 0 until one is. One atomic load.
    static var pendingSignal: Int32 { pending.load(ordering: .acquiring) }

    /// Makes `paths` what a signal removes for `owner`, in order (files before the directory
    /// that holds them: a path `unlink` refuses is `rmdir`ed), replacing its earlier list; []
    /// removes nothing. Cost: one allocation of the paths' bytes (none for []).
    static func set(_ paths: [String], for owner: Owner) {
        var list: UInt = 0
        if !paths.isEmpty {
            var bytes: [CChar] = []
            for path in paths { bytes += path.utf8CString }
            bytes.append(0)
            let copy = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
            copy.initialize(from: bytes, count: bytes.count)
            list = UInt(bitPattern: copy)
        }
        switch owner {
        case .testFile: testFileList.store(list, ordering: .releasing)
        case .tierDirectory: tierDirectoryList.store(list, ordering: .releasing)
        }
    }

    /// Makes the private tier directories `dirs` (each holding one engine's tier files,
    /// `DiskTierFiles.names`, and nothing else) what a signal removes: their files, then them.
    static func setTierDirectories(_ dirs: [String]) {
        set(dirs.flatMap { dir in DiskTierFiles.names.map { dir + "/" + $0 } + [dir] }, for: .tierDirectory)
    }

    /// The actions `install` replaced, to put back.
    struct Installed {
        fileprivate let previous: [(signal: Int32, action: sigaction)]

        /// Puts back the actions `install` replaced, empties both lists and forgets a pending
        /// signal.
        func restore() {
            for (signal, action) in previous { withUnsafePointer(to: action) { _ = sigaction(signal, $0, nil) } }
            set([], for: .testFile)
            set([], for: .tierDirectory)
            stopMode.store(false, ordering: .releasing)
            pending.store(0, ordering: .releasing)
        }
    }

    /// Installs the handler for SIGINT and SIGTERM in `mode`, with both lists empty and no
    /// signal pending, and unblocks them in
    /// the calling thread: a process started from a thread that blocks them (Foundation's
    /// `Process` from a test's thread) inherits that mask and would never take one. A signal
    /// the process was started ignoring (SIGINT of a background job of a non-interactive
    /// shell) stays ignored.
    static func install(_ mode: Mode = .exit) -> Installed {
        set([], for: .testFile)
        set([], for: .tierDirectory)
        pending.store(0, ordering: .releasing)
        stopMode.store(mode == .stop, ordering: .releasing)
        var handler = sigaction()
        handler.__sigaction_handler.sa_handler = { InterruptCleanup.handle($0) }
        sigemptyset(&handler.sa_mask)
        var unblocked = sigset_t()
        sigemptyset(&unblocked)
        var previous: [(signal: Int32, action: sigaction)] = []
        for signal in [SIGINT, SIGTERM] {
            var old = sigaction()
            sigaction(signal, nil, &old)
            if let current = old.__sigaction_handler.sa_handler, unsafeBitCast(current, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self) {
                continue
            }
            sigaction(signal, &handler, nil)
            sigaddset(&unblocked, signal)
            previous.append((signal, old))
        }
        pthread_sigmask(SIG_UNBLOCK, &unblocked, nil)
        return Installed(previous: previous)
    }

    /// The handler: in `.stop` mode the first signal is recorded and nothing else done;
    /// otherwise it removes both lists' paths, then `_exit(128 + signal)`. Lock-free atomics
    /// only (async-signal-safe).
    private static func handle(_ signal: Int32) {
        if stopMode.load(ordering: .acquiring),
           pending.compareExchange(expected: 0, desired: signal, ordering: .acquiringAndReleasing).exchanged {
            return
        }
        remove(testFileList.load(ordering: .acquiring))
        remove(tierDirectoryList.load(ordering: .acquiring))
        _exit(128 + signal)
    }

    /// `unlink`s (or `rmdir`s) each path of the list at address `list`, in order.
    private static func remove(_ list: UInt) {
        guard var path = UnsafePointer<CChar>(bitPattern: list) else { return }
        while path.pointee != 0 {
            if unlink(path) != 0 { rmdir(path) }
            path += strlen(path) + 1
        }
    }
}
