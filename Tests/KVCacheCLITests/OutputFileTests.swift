import Foundation
import Testing
import TestSupport
@testable import kvcache

/// `OutputFile`: what `--json`, `--plot` and `--plots` write, and the one-line reason a
/// failure ends the command with.
@Suite struct OutputFileTests {
    @Test func aWrittenFileReadsBackAndAFailureNamesPathAndReason() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kvcache-out-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try OutputFile.makeDirectory(dir + "/a/b")
        try OutputFile.write("{\"x\": 1}\n", to: dir + "/a/b/r.json")
        #expect(try String(contentsOfFile: dir + "/a/b/r.json", encoding: .utf8) == "{\"x\": 1}\n")

        let missing = dir + "/none/r.json"
        #expect {
            try OutputFile.write("x", to: missing)
        } throws: { error in
            "\(error)" == "cannot write \(missing): No such file or directory"
        }
        // A directory under a regular file: the component that is not a directory is named.
        let under = dir + "/a/b/r.json/plots"
        #expect {
            try OutputFile.makeDirectory(under)
        } throws: { error in
            "\(error)" == "cannot create the directory \(dir)/a/b/r.json: Not a directory"
        }
        try OutputFile.makeDirectory(dir + "/a/b")  // exists already: nothing to do
        // The check a command makes before its run fails as the write would, and leaves nothing.
        #expect {
            try OutputFile.checkWritable(missing)
        } throws: { error in
            "\(error)" == "cannot write \(missing): No such file or directory"
        }
        try OutputFile.checkWritable(dir + "/a/b/r.json")  // an existing file is replaced by `write`
        try OutputFile.checkWritable(dir + "/a/b/new.svg")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/a/b") == ["r.json"], "no temporary file is left")
        // A directory where the file should go: the rename would fail after the run.
        #expect {
            try OutputFile.checkWritable(dir + "/a")
        } throws: { error in
            "\(error)" == "cannot write \(dir)/a: Is a directory"
        }
        // --plots DIR: made, and its files checked, before the run; under a file it fails.
        try OutputFile.prepareDirectory(dir + "/plots/x", for: ["memory.svg"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/plots/x").isEmpty)
        #expect {
            try OutputFile.prepareDirectory(dir + "/a/b/r.json/x", for: ["memory.svg"])
        } throws: { error in
            "\(error)" == "cannot create the directory \(dir)/a/b/r.json: Not a directory"
        }
    }

    /// A name of 250 bytes (the file system takes 255) is written: its temporary name
    /// NAME.tmp-PID was too long ("File name too long", naming NAME).
    @Test func aLongValidNameIsWritten() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kvcache-out-\(UUID().uuidString)").path
        try OutputFile.makeDirectory(dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/" + String(repeating: "a", count: 245) + ".json"
        try OutputFile.checkWritable(path)
        try OutputFile.write("{}\n", to: path)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "{}\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).count == 1, "no temporary file is left")
    }

    /// An output is created with mode 0666 less the process's umask (a temporary file made by
    /// mkstemp, 0600, would make every output private), and no temporary file stays.
    @Test func anOutputHasTheUmasksModeAndNoTemporaryStays() throws {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("Umask:") })
        let mask = try #require(mode_t(line.split(separator: "\t").last!.trimmingCharacters(in: .whitespaces), radix: 8))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kvcache-out-\(UUID().uuidString)").path
        try OutputFile.makeDirectory(dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try OutputFile.write("{}\n", to: dir + "/r.json")
        var st = stat()
        #expect(stat(dir + "/r.json", &st) == 0 && st.st_mode & 0o777 == 0o666 & ~mask, "mode \(String(st.st_mode & 0o777, radix: 8))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["r.json"])
    }

    /// An existing path that is not a regular file (a FIFO here; `/dev/stdout` in use) is
    /// written in place: `write` renamed its temporary file over it, so the FIFO became a
    /// regular file and its reader got nothing (as root, `--json /dev/stdout` replaced the
    /// link in /dev). The check before a run neither opens it (a FIFO's open waits for a
    /// reader) nor leaves a temporary file.
    @Test func aFIFOIsWrittenInPlaceNotReplaced() throws {
        let scratch = ScratchDir("out"), dir = scratch.path
        defer { scratch.remove() }
        let fifo = dir + "/results.json"
        try #require(mkfifo(fifo, 0o600) == 0)
        try OutputFile.checkWritable(fifo)
        let reader = open(fifo, O_RDONLY | O_NONBLOCK)
        try #require(reader >= 0)
        defer { close(reader) }
        try OutputFile.write("{\"x\": 1}\n", to: fifo)
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = read(reader, &buffer, buffer.count)
        #expect(n > 0 && String(decoding: buffer[0..<max(0, n)], as: UTF8.self) == "{\"x\": 1}\n")
        var st = stat()
        #expect(stat(fifo, &st) == 0 && st.st_mode & S_IFMT == S_IFIFO, "the FIFO is still there")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["results.json"], "no temporary file is left")
    }
}
