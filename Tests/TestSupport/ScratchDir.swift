import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A fresh directory for one test's files, `/tmp/kvcache-<name>-XXXXXX` (`mkdtemp`: a new
/// name, mode 0700), removed with everything in it by `remove()` and, if the test never got
/// there (a failed `#require`, a thrown error before its `defer`, an exit test's child that
/// calls `exit`) or made it again after removing it, when the process that made it exits
/// (`atexit`): a test run leaves none behind unless a process is killed. A child forked
/// without exec inherits the list but removes nothing at its exit (the directories are its
/// parent's). Cost: a `mkdtemp` and an entry in a locked list per directory (kept to the
/// end); `remove()` is a recursive removal.
public struct ScratchDir: Sendable {
    /// The directory's absolute path.
    public let path: String

    public init(_ name: String = "tier") {
        var template = Array("/tmp/kvcache-\(name)-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        ScratchDir.made.withLock { list in
            if list.owner == 0 { atexit { ScratchDir.removeAll() } }
            list.owner = getpid()
            list.paths.append(path)
        }
    }

    /// Removes the directory and everything in it (again: nothing).
    public func remove() { try? FileManager.default.removeItem(atPath: path) }

    /// Every directory made, and the process that made them.
    private static let made = Mutex((owner: pid_t(0), paths: [String]()))

    private static func removeAll() {
        let paths = made.withLock { $0.owner == getpid() ? $0.paths : [] }
        for path in paths { try? FileManager.default.removeItem(atPath: path) }
    }
}
