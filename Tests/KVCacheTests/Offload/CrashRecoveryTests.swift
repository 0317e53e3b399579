import Foundation
import TestSupport
import Testing
@testable import KVCache

/// A real crash: `kvcache spill-child` spills one-block prompts to a small disk tier (slots are
/// reused all the time) until it is killed with SIGKILL; an engine restarted on the directory
/// must recover exactly the slots whose latest journal record is STORED and serve every block
/// its journal lists, byte-identical, and never wrong bytes. (A slot is rewritten only after
/// its FREED record is written, so a process crash leaves no journaled slot half-rewritten; a
/// torn slot would be rejected by verification, counted here as torn.)
@Suite("Disk tier crash recovery", .serialized)
struct CrashRecoveryTests {
    /// 256 slots of 8 KiB (the test suite's shape: 512-byte blocks and the 4 KiB header).
    static let offloadBytes: UInt64 = 2 << 20
    static let slots = 256, slotBytes = 8192
    /// Children killed at most before a kill that left a journaled block.
    static let attempts = 5

    /// A kill can leave no journaled block, as it should: the child spills a block per prompt
    /// and journals a write's STORED record only once it processed its completion (at a later
    /// prompt), so when the device lags 256 spills behind, every slot has been dropped (its
    /// FREED record written) and is being rewritten, and no STORED record follows yet. Seen
    /// under a full parallel `swift test` (1764 records, 0 slots recovered) and reproduced
    /// under I/O load (3 kills in 80 left every slot's latest record FREED, none dropped).
    /// Nothing is then left to verify: such a kill is retried with a new child, up to
    /// `attempts`.
    @Test func aKilledSpillingProcessLeavesOnlyVerifiedBlocks() throws {
        let cli = cliPath()
        try #require(FileManager.default.isExecutableFile(atPath: cli), "build kvcache-cli first: \(cli)")
        var empty: [String] = []
        for _ in 0..<CrashRecoveryTests.attempts {
            let dir = ScratchDir("crash")
            defer { dir.remove() }
            guard let reached = try spillUntilKilled(cli, dir: dir.path) else { return }
            let journal = KilledJournal(dir: dir.path, slots: CrashRecoveryTests.slots, slotBytes: CrashRecoveryTests.slotBytes)
            guard journal.stored > 0 else {
                empty.append("after \(reached) prompts: \(journal)")
                continue
            }
            if !empty.isEmpty { print("crash test: killed again, the earlier kills left no journaled block: \(empty.joined(separator: "; "))") }
            try verifyRestart(dir: dir.path, reached: reached, journal: journal)
            return
        }
        Issue.record("no kill left a journaled block in \(CrashRecoveryTests.attempts) attempts: \(empty.joined(separator: "; "))")
    }

    /// Runs `kvcache spill-child` on `dir` until it finished 3000 prompts (a spill each: every
    /// slot reused about 11 times; its journal is compacted meanwhile, so its size no longer
    /// tells), checks that it holds the directory, kills it with SIGKILL and returns the last
    /// prompt it reached; nil when it died on its own (recorded).
    private func spillUntilKilled(_ cli: String, dir: String) throws -> Int? {
        let log = dir + "/child.log"
        #expect(FileManager.default.createFile(atPath: log, contents: nil))
        let child = Process()
        child.executableURL = URL(fileURLWithPath: cli)
        child.arguments = ["spill-child", "--dir", dir, "--offload-bytes", "\(CrashRecoveryTests.offloadBytes)"]
        child.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try child.run()
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
        guard child.isRunning else {
            Issue.record("the child died on its own after \(try promptsReached()) prompts")
            return nil
        }
        // The running child holds the directory: an engine of this process is refused and
        // changes nothing (it would otherwise compact the child's journal under it).
        do {
            _ = try Engine(SpillChildConfig.config(dir: dir, offloadBytes: CrashRecoveryTests.offloadBytes))
            Issue.record("an engine opened the directory the child holds")
        } catch {
            #expect(error.code == .io && error.message.contains("in use by another engine"), "\(error.message)")
        }
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
        #expect(child.terminationReason == .uncaughtSignal && child.terminationStatus == SIGKILL)
        let reached = try promptsReached()
        #expect(reached >= 3000, "the child spilled \(reached) prompts in \(waited) ms")
        return reached
    }

    /// Restarts an engine on `dir`, whose killed child reached prompt `reached` and left
    /// `journal`: it recovers the slots the journal names stored and serves each block
    /// byte-identical.
    private func verifyRestart(dir: String, reached: Int, journal: KilledJournal) throws {
        // Plenty of memory: verifying must not spill (and so overwrite slots) itself.
        let e = try Engine(SpillChildConfig.config(dir: dir, offloadBytes: CrashRecoveryTests.offloadBytes))
        let disk = e.stats().disk
        let recovered = disk.recoveredSlots
        #expect(disk.slotBytes == UInt64(CrashRecoveryTests.slotBytes))
        #expect(recovered == UInt64(journal.stored) && disk.journalRecordsDropped == 0,
                "recovered \(recovered) slots, dropped \(disk.journalRecordsDropped) journal records, after \(reached) prompts; the killed child's \(journal)")
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
