import Foundation
import TestSupport
import Testing
@testable import KVCache

/// A real crash: `kvcache spill-child` spills one-block prompts to a small disk tier (slots are
/// reused all the time) until it is killed with SIGKILL; an engine restarted on the directory
/// must serve every block its journal lists, byte-identical, and never wrong bytes. (A slot is
/// rewritten only after its FREED record is written, so a process crash leaves no journaled
/// slot half-rewritten; a torn slot would be rejected by verification, counted here as torn.)
@Suite("Disk tier crash recovery", .serialized)
struct CrashRecoveryTests {
    @Test func aKilledSpillingProcessLeavesOnlyVerifiedBlocks() throws {
        let dir = ScratchDir("crash")
        defer { dir.remove() }
        let cli = cliPath()
        try #require(FileManager.default.isExecutableFile(atPath: cli), "build kvcache-cli first: \(cli)")
        let log = dir.path + "/child.log"
        #expect(FileManager.default.createFile(atPath: log, contents: nil))
        let child = Process()
        child.executableURL = URL(fileURLWithPath: cli)
        let offloadBytes: UInt64 = 2 << 20  // 256 slots of 8 KiB
        child.arguments = ["spill-child", "--dir", dir.path, "--offload-bytes", "\(offloadBytes)"]
        child.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try child.run()
        // Kill it while it spills hard: once it finished 3000 prompts (a spill each: every
        // slot reused about 11 times; its journal is compacted meanwhile, so its size no
        // longer tells).
        let journal = dir.path + "/kvcache.journal"
        func promptsReached() throws -> Int {
            (try String(contentsOfFile: log, encoding: .utf8)).split(separator: "\n")
                .compactMap { $0.hasPrefix("prompt ") ? Int($0.dropFirst(7)) : nil }.max() ?? 0
        }
        var waited = 0
        while waited < 30_000 {
            if try promptsReached() >= 3000 || !child.isRunning { break }
            usleep(10_000)
            waited += 10
        }
        #expect(child.isRunning, "the child died on its own")
        // The running child holds the directory: an engine of this process is refused and
        // changes nothing (it would otherwise compact the child's journal under it).
        do {
            _ = try Engine(SpillChildConfig.config(dir: dir.path, offloadBytes: offloadBytes))
            Issue.record("an engine opened the directory the child holds")
        } catch {
            #expect(error.code == .io && error.message.contains("in use by another engine"), "\(error.message)")
        }
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
        #expect(child.terminationReason == .uncaughtSignal && child.terminationStatus == SIGKILL)

        let reached = try promptsReached()
        #expect(reached >= 3000, "the child spilled \(reached) prompts")

        // Plenty of memory: verifying must not spill (and so overwrite slots) itself.
        let journalBytes = (try? FileManager.default.attributesOfItem(atPath: journal)[.size] as? Int) ?? -1
        let e = try Engine(SpillChildConfig.config(dir: dir.path, offloadBytes: offloadBytes))
        let recovered = e.stats().disk.recoveredSlots
        // Seen once under load (not reproduced since): say whether the child had journaled
        // nothing (a journal of 0 bytes) or wrote records the restart found invalid.
        #expect(recovered > 0, "the killed child left \(journalBytes / 64) journal records after \(reached) prompts (waited \(waited) ms)")
        var served = 0, torn = 0, wrongBytes = 0
        for i in 0...(reached + 64) {
            let prompt = (0..<5).map { Int32(truncatingIfNeeded: i &* 1000 &+ $0) }
            let cached = try e.createSequence(UInt64(i + 1), tokens: prompt)
            guard cached > 0 else {
                try e.free(UInt64(i + 1))
                continue
            }
            do throws(KVError) {
                try waitReady(e, UInt64(i + 1))
                served += 1
            } catch {
                #expect(error.code == .io)
                torn += 1
                try e.free(UInt64(i + 1))
                continue
            }
            wrongBytes += try kvDifferences(e, UInt64(i + 1), count: 4) { prompt[$0] }
            try e.free(UInt64(i + 1))
        }
        #expect(wrongBytes == 0, "a block was served with wrong bytes")
        #expect(served + torn == Int(recovered), "every journaled block was looked up and either served or rejected")
        #expect(torn == 0, "a journaled slot was torn: \(torn)")
        #expect(served == Int(recovered), "every block whose journal record completed is served")
        #expect(e.stats().disk.blocksLoaded == UInt64(served))
        print("crash test: child reached prompt \(reached); \(recovered) blocks journaled, \(served) served byte-identical, \(torn) torn and rejected")
    }
}

/// The shape `kvcache spill-child` uses (its `config`), with memory for verification.
enum SpillChildConfig {
    static func config(dir: String, offloadBytes: UInt64) -> EngineConfig {
        var c = smallConfig(.paged, memoryBytes: 64 << 20)
        c.offloadDir = dir
        c.offloadBytes = offloadBytes
        c.modelTag = testModelTag
        return c
    }
}
