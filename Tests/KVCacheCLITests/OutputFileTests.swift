import Foundation
import Testing
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
}
