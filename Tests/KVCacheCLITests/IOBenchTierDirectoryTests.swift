import Foundation
import Testing
import TestSupport
@testable import kvcache

/// `kvcache io-bench --tier` runs its engine in a private directory of its own under --dir:
/// it used to empty --dir of a disk tier's files first and after, deleting the tier of an
/// engine that was using the directory.
@Suite("io-bench tier directory")
struct IOBenchTierDirectoryTests {
    @Test func aTiersFilesInTheDirectoryAreLeftByteIdentical() throws {
        let scratch = ScratchDir("tierdir"), dir = scratch.path
        defer { scratch.remove() }
        let names = ["kvcache.slab", "kvcache.journal", "kvcache.identity"]
        for name in names { #expect(FileManager.default.createFile(atPath: dir + "/" + name, contents: Data("someone's \(name)".utf8))) }
        let bench = TierBench(dir: dir, payloadBytes: 64 << 10, sequenceBytes: 4 << 20, seconds: 0.01, asyncSwapOut: false)
        let result = try bench.run()
        #expect(result.writeCell.bytes > 0 && result.readCell.bytes > 0, "it measured")
        for name in names {
            #expect(FileManager.default.contents(atPath: dir + "/" + name) == Data("someone's \(name)".utf8), "\(name)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == names.sorted(), "its private directory is gone")
    }
}
