import Foundation
import TestSupport
import Testing

/// `kvcache io-bench` ended by SIGTERM or SIGINT removes what it made (the test file, 1 GiB by
/// default, and the tier's private directory) and exits with 128 + the signal's number; it
/// used to leave the test file behind.
@Suite("io-bench interrupted", .serialized)
struct IOBenchInterruptTests {
    /// SIGTERM as soon as the test file is there; SIGINT once the tier's engine has its files.
    @Test(arguments: [(SIGTERM, false), (SIGINT, true)]) func aSignalRemovesItsFiles(signal: Int32, duringTier: Bool) throws {
        let cli = cliPath()
        try #require(FileManager.default.isExecutableFile(atPath: cli), "build kvcache-cli first: \(cli)")
        let scratch = ScratchDir("interrupt"), dir = scratch.path
        defer { scratch.remove() }
        let child = Process()
        child.executableURL = URL(fileURLWithPath: cli)
        child.arguments = ["io-bench", "--dir", dir, "--file-size", "1MiB", "--block-sizes", "64KiB", "--depths", "1", "--ops", "read",
                           "--no-baseline", "--seconds", "0.5", "--tier", "--tier-sequence-bytes", "4MiB"]
        child.standardOutput = FileHandle.nullDevice
        child.standardError = FileHandle.nullDevice
        try child.run()
        // The test file is made first; the tier's directory after the queue's cells, and its
        // engine's files in it.
        func made() -> Bool {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            guard names.contains("kvcache-io-bench.dat") else { return false }
            guard duringTier else { return true }
            guard let tier = names.first(where: { $0.hasPrefix("kvcache-io-bench-tier-") }) else { return false }
            return ((try? FileManager.default.contentsOfDirectory(atPath: dir + "/" + tier)) ?? []).contains("kvcache.slab")
        }
        var waited = 0
        while !made() && child.isRunning && waited < 30_000 {
            usleep(1000)
            waited += 1
        }
        #expect(child.isRunning, "it ended before the signal")
        kill(child.processIdentifier, signal)
        child.waitUntilExit()
        #expect(child.terminationReason == .exit && child.terminationStatus == 128 + signal, "status \(child.terminationStatus)")
        let left = FileManager.default.subpaths(atPath: dir) ?? ["?"]
        #expect(left.isEmpty, "left: \(left)")
    }
}
