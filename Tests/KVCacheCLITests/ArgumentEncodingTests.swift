import Foundation
import Glibc
import TestSupport
import Testing

/// Arguments that are not UTF-8. Swift's `CommandLine.arguments` repairs their bytes to U+FFFD,
/// so `--offload-dir` naming a directory `d\xff` made, locked and filled `d\u{FFFD}` instead
/// (helper-117); the CLI now refuses them before reading any option.
@Suite("kvcache-cli arguments that are not UTF-8")
struct ArgumentEncodingTests {
    /// Runs the built CLI with `arguments` as raw bytes (Foundation's `Process` takes Strings,
    /// which cannot hold them); its exit status and standard error.
    private func run(_ arguments: [[UInt8]]) throws -> (status: Int32, stderr: String) {
        let cli = cliPath()
        try #require(FileManager.default.isExecutableFile(atPath: cli), "build kvcache-cli first: \(cli)")
        let err = try #require(tmpfile())
        defer { fclose(err) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, fileno(err), 2)
        var argv: [UnsafeMutablePointer<CChar>?] = ([Array(cli.utf8)] + arguments).map { bytes in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
            for (i, b) in bytes.enumerated() { p[i] = CChar(bitPattern: b) }
            p[bytes.count] = 0
            return p
        } + [nil]
        defer { for p in argv { p?.deallocate() } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, cli, &actions, nil, &argv, environ)
        try #require(rc == 0, "posix_spawn: \(rc)")
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        rewind(err)
        var bytes: [UInt8] = []
        while case let c = fgetc(err), c != EOF { bytes.append(UInt8(c)) }
        let exited = status & 0x7f == 0
        return (exited ? (status >> 8) & 0xff : -1, String(decoding: bytes, as: UTF8.self))
    }

    /// `body` on `bytes` as a NUL-terminated C path (bytes Swift's String would repair).
    private func withPath<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
        (bytes + [0]).withUnsafeBufferPointer { body(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self)) }
    }

    /// Names in directory `path` other than `.` and `..`, as raw bytes.
    private func entries(_ path: [UInt8]) throws -> [[UInt8]] {
        let dir = try #require(withPath(path) { opendir($0) })
        defer { closedir(dir) }
        var names: [[UInt8]] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            if name != Array(".".utf8) && name != Array("..".utf8) { names.append(name) }
        }
        return names
    }

    /// A new empty directory holding one subdirectory named `name` (raw bytes); both paths.
    private func directory(with name: [UInt8]) throws -> (parent: String, dir: [UInt8]) {
        let parent = FileManager.default.temporaryDirectory.appendingPathComponent("kvc-argenc-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: false)
        let dir = Array(parent.utf8) + Array("/".utf8) + name
        try #require(withPath(dir) { mkdir($0, 0o755) } == 0)
        return (parent, dir)
    }

    private func load(offloadDir dir: [UInt8]) -> [[UInt8]] {
        ["load", "--requests", "1", "--memory", "64MiB", "--plots", "", "--offload-dir"].map { Array($0.utf8) } + [dir]
    }

    /// A non-UTF-8 `--offload-dir` is refused, naming its position, and nothing is written:
    /// not in the directory given, not in the one its repaired name (`d\u{FFFD}`) names.
    @Test func aNonUTF8OffloadDirIsRefusedAndNothingIsWritten() throws {
        let (parent, dir) = try directory(with: Array("d".utf8) + [0xFF])
        defer { try? FileManager.default.removeItem(atPath: parent) }
        try #require(FileManager.default.createDirectory(atPath: parent + "/d\u{FFFD}", withIntermediateDirectories: false) == ())
        let (status, stderr) = try run(load(offloadDir: dir))
        #expect(status == 64, "\(stderr)")
        #expect(stderr.contains("argument 9 is not UTF-8"), "\(stderr)")
        #expect(try entries(dir).isEmpty)
        #expect(try entries(Array((parent + "/d\u{FFFD}").utf8)).isEmpty)
    }

    /// The same run with the directory's name in UTF-8 runs and fills it (the refusal is the
    /// encoding, not the option).
    @Test func theSameRunWithAUTF8NameWritesItsTier() throws {
        let (parent, dir) = try directory(with: Array("d\u{FF}".utf8))
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let (status, stderr) = try run(load(offloadDir: dir))
        #expect(status == 0, "\(stderr)")
        #expect(try !entries(dir).isEmpty)
    }
}
