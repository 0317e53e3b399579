#if canImport(Glibc)
import Glibc
#endif

/// The files the commands write (`--json FILE`, `--plot FILE`, `--plots DIR`; what a failed
/// `--write-trace FILE` leaves, `removePartial` removes), through POSIX
/// calls so that a failure ends the command with one line naming the path and the system's
/// reason ("cannot write PATH: No such file or directory").
enum OutputFile {
    /// Why writing a path failed.
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Writes `text` to `path` atomically: to a new hidden file in its directory (`temporary`),
    /// then renamed over `path`. Throws
    /// `Failure` (and removes the temporary file). An existing path that is neither a regular
    /// file nor a directory (`/dev/stdout`, a FIFO, a device) is written in place: renamed over,
    /// it was replaced by a regular file (as root, `--json /dev/stdout` replaced /dev's link).
    static func write(_ text: String, to path: String) throws {
        if writesInPlace(path) {
            guard let f = fopen(path, "we") else { throw failure("cannot write \(path)") }
            return try put(text, into: f, naming: path)
        }
        let (temp, fd) = try temporary(for: path)
        guard let f = fdopen(fd, "w") else {
            let error = failure("cannot write \(path)")
            close(fd)
            unlink(temp)
            throw error
        }
        do { try put(text, into: f, naming: path) } catch {
            unlink(temp)
            throw error
        }
        guard rename(temp, path) == 0 else {
            let error = failure("cannot write \(path)")
            unlink(temp)
            throw error
        }
    }

    /// Writes `text` into the open stream `f` and closes it; a failure is a `Failure` naming
    /// `path`.
    private static func put(_ text: String, into f: UnsafeMutablePointer<FILE>, naming path: String) throws {
        let bytes = Array(text.utf8)
        let written = fwrite(bytes, 1, bytes.count, f) == bytes.count
        let writeError = errno
        guard fclose(f) == 0, written else {
            throw Failure(description: "cannot write \(path): \(String(cString: strerror(written ? errno : writeError)))")
        }
    }

    /// Throws the `Failure` that `write` would for `path` when `path` is a directory (the
    /// rename would fail) or its directory does not take a new file there (missing, not a
    /// directory, not writable), by creating and removing a temporary file as `write` does:
    /// a command checks its output paths before it spends its run.
    /// Changes nothing.
    static func checkWritable(_ path: String) throws {
        if writesInPlace(path) {
            // Opened only at the write: a FIFO's open waits for a reader.
            guard access(path, W_OK) == 0 else { throw failure("cannot write \(path)") }
            return
        }
        var st = stat()
        if stat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR {
            throw Failure(description: "cannot write \(path): \(String(cString: strerror(EISDIR)))")
        }
        let (temp, fd) = try temporary(for: path)
        close(fd)
        unlink(temp)
    }

    /// Whether writing `output` would overwrite the file at `input`: both exist and are the
    /// same file (device and inode: links and other spellings included), or, when one does
    /// not exist, their paths resolve to the same name (each directory through `realpath`).
    /// A command refuses such an output before it reads its input (`--write-trace` over its
    /// `--trace` truncated the trace before the read). Cost: two `stat` calls, or two
    /// `realpath` calls.
    static func sameFile(_ output: String, _ input: String) -> Bool {
        var a = stat(), b = stat()
        if stat(output, &a) == 0 && stat(input, &b) == 0 { return a.st_dev == b.st_dev && a.st_ino == b.st_ino }
        return resolved(output) == resolved(input)
    }

    /// `path` with its directory resolved by `realpath` (`path` itself when that fails).
    private static func resolved(_ path: String) -> String {
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard let real = realpath(dir, nil) else { return path }
        defer { free(real) }
        let base = String(cString: real)
        return (base == "/" ? "" : base) + "/" + name
    }

    /// Removes `path` if it is a regular file: what a command wrote there before a write
    /// failed. A device, FIFO or symbolic link (`/dev/full`, a pipe) is left alone: it is not
    /// the command's to remove.
    static func removePartial(_ path: String) {
        var st = stat()
        if lstat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFREG { unlink(path) }
    }

    /// Whether `write` writes `path` in place: it exists (through links) and is neither a
    /// regular file nor a directory.
    private static func writesInPlace(_ path: String) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0 else { return false }
        let type = st.st_mode & S_IFMT
        return type != S_IFREG && type != S_IFDIR
    }

    /// The file `write` puts `path`'s bytes in before renaming them over it, created and open
    /// for writing: `.kvcache-` and 10 random base-36 digits in `path`'s directory, a short name
    /// whatever `path`'s length (`PATH.tmp-PID` passed the file system's 255 bytes for a valid
    /// PATH of 250). Created with O_EXCL, so a name someone else made (a symbolic link planted
    /// in a shared directory included) is never opened, and with mode 0666 less the umask, as
    /// the output itself would be (mkstemp's 0600 would make every output private); another
    /// name is tried when one exists. Throws the `Failure` naming `path` when the directory
    /// takes no new file.
    private static func temporary(for path: String) throws -> (name: String, fd: Int32) {
        let dir = path.lastIndex(of: "/").map { String(path[...$0]) } ?? ""
        for _ in 0..<64 {
            let name = dir + ".kvcache-" + String(UInt64.random(in: 0..<3_656_158_440_062_976), radix: 36)
            let fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
            if fd >= 0 { return (name, fd) }
            if errno != EEXIST { break }
        }
        throw failure("cannot write \(path)")
    }

    /// Creates directory `path` and any missing parents (0755), as `mkdir -p`. Throws `Failure`
    /// naming the first component that could not be made a directory.
    static func makeDirectory(_ path: String) throws {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST { throw failure("cannot create the directory \(prefix)") }
            var st = stat()
            guard stat(prefix, &st) == 0 else { throw failure("cannot create the directory \(prefix)") }
            guard st.st_mode & S_IFMT == S_IFDIR else {
                throw Failure(description: "cannot create the directory \(prefix): \(String(cString: strerror(ENOTDIR)))")
            }
            prefix += "/"
        }
    }

    /// `makeDirectory(dir)`, then `checkWritable` for each of `files` in it: a command with
    /// `--plots DIR` calls it before its run, so that a bad directory ends the command at once
    /// instead of after the run. Leaves the directory made. Throws `Failure` first, making
    /// nothing, when one of `files` is the `--trace` file `trace` (`sameFile`): the plot,
    /// written after the run, would replace the trace.
    static func prepareDirectory(_ dir: String, for files: [String], sparing trace: String? = nil) throws {
        if let trace, let file = files.first(where: { sameFile(dir + "/" + $0, trace) }) {
            throw Failure(description: "--plots \(dir) writes \(dir)/\(file), the file --trace reads: it would be overwritten; "
                                       + "give another directory")
        }
        try makeDirectory(dir)
        for file in files { try checkWritable(dir + "/" + file) }
    }

    /// `what` and `strerror(errno)`.
    private static func failure(_ what: String) -> Failure {
        Failure(description: "\(what): \(String(cString: strerror(errno)))")
    }
}
