import Foundation
import TestSupport
import Testing
@testable import KVCache

/// `DiskTierFiles.remove` (the CLI's cold starts, its interrupt cleanup through `names`) leaves
/// nothing of a tier behind, a compaction's unfinished journal included: a directory left with
/// `kvcache.journal.new` could not be removed (evict-eval's SIGINT test caught one).
@Suite struct DiskTierFilesTests {
    @Test func removeLeavesNoTierFileBehind() throws {
        let dir = ScratchDir("tierfiles")
        defer { dir.remove() }
        let written = ["kvcache.slab", "kvcache.journal", "kvcache.journal.new", "kvcache.identity", "kvcache.identity.tmp"]
        for name in written { #expect(FileManager.default.createFile(atPath: dir.path + "/" + name, contents: Data([1]))) }
        try DiskTierFiles.remove(in: dir.path)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == [])
        #expect(Set(DiskTierFiles.names) == Set(written))
    }
}
