import Foundation
import TestSupport
import Testing
@testable import KVCache

/// Each fault gives a status and a message, leaves the data in memory, and the engine serves on.
@Suite("Disk tier faults", .serialized)
struct DiskTierFaultTests {
    /// A sequence with known bytes, then checks that it is intact and the engine still serves.
    private func expectServing(_ e: Engine, seq: UInt64, prompt: [Int32]) throws {
        #expect(try e.ready(seq))
        #expect(try kvDifferences(e, seq, count: prompt.count) { prompt[$0] } == 0)
        try e.append(seq, tokens: [42])
        #expect(try e.length(seq) == prompt.count + 1)
        let other = tokens(30, seed: 99)
        try e.createSequence(77, tokens: other)
        try e.free(77)
    }

    /// An engine of `layout` in `dir` whose tier fails every read (its writes succeed), with
    /// `healthy` (if any) live as sequence 10, written, and a 41-token prompt written, freed and
    /// spilled: a create of the prompt hits its 40 full-block tokens on disk, and their reads
    /// fail. (Synced: else reads of blocks still being written come from staging buffers.)
    private func failingReadsEngine(_ layout: Layout, dir: ScratchDir, healthy: [Int32]? = nil) throws -> (Engine, [Int32]) {
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadFault = OffloadFault(reads: true, writes: false)
        let e = try Engine(c)
        if let healthy {
            try e.createSequence(10, tokens: healthy)
            try fillKV(e, 10, count: healthy.count) { healthy[$0] }
        }
        let prompt = tokens(41, seed: 9)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: 41) { prompt[$0] }
        try e.free(1)
        try e.trim()
        try e.syncOffload()
        return (e, prompt)
    }

    /// The fault-injection variable's grammar: a value that is not it is refused (it once meant
    /// "no faults"), whatever directory it names.
    @Test func theFaultVariableIsParsedOrRefused() throws {
        let scratch = ScratchDir("fault")
        defer { scratch.remove() }
        let dir = scratch.path + "/tier", other = scratch.path + "/tier@x"
        for d in [dir, other] { mkdir(d, 0o755) }
        #expect(try DiskTier.environmentFault(nil, dir: dir) == nil)
        #expect(try DiskTier.environmentFault("", dir: dir) == nil)
        #expect(try DiskTier.environmentFault("write:3", dir: dir) == OffloadFault(reads: false, writes: true, after: 3))
        #expect(try DiskTier.environmentFault("read:0@\(dir)", dir: dir) == OffloadFault(reads: true, writes: false, after: 0))
        #expect(try DiskTier.environmentFault("all:7@\(other)", dir: dir) == nil, "a directory may hold @; this is another")
        #expect(try DiskTier.environmentFault("all:7@\(other)", dir: other) == OffloadFault(reads: true, writes: true, after: 7))
        for bad in ["writes:3", "write", "write:", "write:-1", "write:3:4", "write:3@", "read:x@/other", ":3", "all:1e3"] {
            do {
                _ = try DiskTier.environmentFault(bad, dir: dir)
                Issue.record("\(bad) was accepted")
            } catch {
                #expect(error.code == .invalidArgument)
                #expect(error.message.hasPrefix("KVCACHE_OFFLOAD_FAULT=\(bad) is not OPS:N or OPS:N@DIR"))
            }
        }
        #expect(try DiskTier.environmentForcesThreads("threads"))
        #expect(try !DiskTier.environmentForcesThreads("uring") && !DiskTier.environmentForcesThreads(nil) && !DiskTier.environmentForcesThreads(""))
        #expect(throws: KVError.self) { try DiskTier.environmentForcesThreads("thread") }
    }

    /// OPS:N@DIR compared DIR with offload_dir as strings: the same directory with a trailing
    /// slash, a double slash, a "." or ".." step or through a symbolic link injected nothing,
    /// silently, and a DIR that does not exist (mistyped) was "another engine's". Both now
    /// resolve to a device and inode; a DIR that does not exist is refused.
    @Test func theFaultDirectoryIsTheSameDirectoryHoweverSpelled() throws {
        let scratch = ScratchDir("fault")
        defer { scratch.remove() }
        let dir = scratch.path + "/tier", other = scratch.path + "/other", link = scratch.path + "/link"
        for d in [dir, other] { mkdir(d, 0o755) }
        symlink(dir, link)
        let fault = OffloadFault(reads: false, writes: true, after: 0)
        for spelling in [dir, dir + "/", scratch.path + "//tier", dir + "/.", other + "/../tier", link] {
            #expect(try DiskTier.environmentFault("write:0@\(spelling)", dir: dir) == fault, "\(spelling)")
            #expect(try DiskTier.environmentFault("write:0@\(dir)", dir: spelling) == fault, "offload_dir \(spelling)")
        }
        #expect(try DiskTier.environmentFault("write:0@\(other)", dir: dir) == nil)
        #expect(try DiskTier.environmentFault("write:0@\(dir)", dir: scratch.path + "/missing") == nil,
                "an offload_dir that does not exist is another directory (the engine then refuses it)")
        for missing in [scratch.path + "/tire", dir + "/file"] {
            if missing.hasSuffix("file") { FileManager.default.createFile(atPath: missing, contents: Data()) }
            #expect {
                try DiskTier.environmentFault("write:0@\(missing)", dir: dir)
            } throws: {
                ($0 as? KVError)?.code == .invalidArgument
                    && ($0 as? KVError)?.message.hasPrefix("KVCACHE_OFFLOAD_FAULT=write:0@\(missing) names no directory: ") == true
            }
        }
    }

    @Test func offloadBytesBelowOneSlotIsInvalid() {
        let dir = ScratchDir()
        defer { dir.remove() }
        do {
            _ = try Engine(offloadConfig(.paged, dir: dir.path, offloadBytes: 4096))
            Issue.record("an engine was created with a tier smaller than one slot")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("smaller than one slot of 8192 bytes"))
        }
    }

    /// More slots than a tier manages was silently capped at `maxSlots` (helper-134): a server
    /// asking for 64 GiB of small slots ran with 32 GiB and was not told.
    @Test func offloadBytesAboveTheSlotLimitIsInvalidAndCreatesNothing() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        do {
            _ = try Engine(offloadConfig(.paged, dir: dir.path, offloadBytes: UInt64(DiskTier.maxSlots + 1) * 8192))
            Issue.record("an engine was created with a tier of more than \(DiskTier.maxSlots) slots")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("offload_bytes 34359746560 is more than a tier manages at this shape: at most 34359738368 bytes (4194304 slots of 8192 bytes)"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    @Test func aMissingDirectoryIsAnIOErrorNamingIt() {
        do {
            _ = try Engine(offloadConfig(.paged, dir: "/nonexistent/kvcache-tier"))
            Issue.record("an engine was created on a missing directory")
        } catch {
            #expect(error.code == .io)
            #expect(error.message.contains("/nonexistent/kvcache-tier"))
            #expect(error.message.contains("No such file or directory"))
        }
    }

    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"))
    func aReadOnlyDirectoryIsAnIOError() throws {
        let mnt = try #require(mountTmpfs(bytes: 1 << 20, options: "ro"))
        defer { unmount(mnt) }
        do {
            _ = try Engine(offloadConfig(.paged, dir: mnt.path))
            Issue.record("an engine was created on a read-only file system")
        } catch {
            #expect(error.code == .io)
            #expect(error.message.contains("Read-only file system"))
        }
    }

    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"), arguments: [Layout.paged, .contiguous])
    func aFullDiskFailsTheSwapOutAndTheSequenceStaysResident(layout: Layout) throws {
        // 8 KiB slots, 64 per extent: the first extent (512 KiB) fits a 768 KiB tmpfs, the second does not.
        let mnt = try #require(mountTmpfs(bytes: 768 << 10))
        defer { unmount(mnt) }
        let e = try Engine(offloadConfig(layout, dir: mnt.path))
        let prompt = tokens(401, seed: 5)  // 101 blocks: more than one extent
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: 401) { prompt[$0] }
        do {
            try e.swapOut(1)
            Issue.record("swap-out succeeded on a full disk")
        } catch {
            #expect(error.code == .io)
            #expect(error.message.contains("No space left on device"))
        }
        try expectServing(e, seq: 1, prompt: prompt)
        // A small sequence still fits the slots that were preallocated.
        let small = tokens(21, seed: 6)
        try e.createSequence(2, tokens: small)
        try fillKV(e, 2, count: 21) { small[$0] }
        try e.swapOut(2)
        try e.swapIn(2)
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 21) { small[$0] } == 0)
    }

    @Test(arguments: [Layout.paged, .contiguous])
    func anIOErrorFailsTheSwapOutAndTheSequenceStaysResident(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.offloadFault = OffloadFault(reads: false, writes: true)
        let e = try Engine(c)
        let prompt = tokens(41, seed: 8)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: 41) { prompt[$0] }
        do {
            try e.swapOut(1)
            Issue.record("swap-out succeeded through an I/O error")
        } catch {
            #expect(error.code == .io)
            #expect(error.message.contains("Input/output error"))
        }
        try expectServing(e, seq: 1, prompt: prompt)
        try e.free(1)
        try e.trim()  // spills fail: the blocks are dropped as without a tier, and counted
        try e.syncOffload()
        #expect(e.stats().disk.spillsFailed > 0)
        #expect(try e.createSequence(3, tokens: prompt) == 0, "nothing reached the disk")
    }

    @Test(arguments: [Layout.paged, .contiguous])
    func anIOErrorOnReadIsAMissNotGarbage(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let (e, prompt) = try failingReadsEngine(layout, dir: dir)
        #expect(try e.createSequence(2, tokens: prompt) == 40)
        var failure: KVError?
        do { try waitReady(e, 2) } catch { failure = error }
        #expect(failure?.code == .io)
        #expect(failure?.message.contains("create it again") == true)
        try e.free(2)
        #expect(try e.createSequence(2, tokens: prompt) == 0, "the unreadable blocks left the tier")
    }

    /// A swapped-out sequence whose blocks its swap-out found on disk pins those cached slots;
    /// another create's read of them that fails on the device (here every read while the fault
    /// is set) says nothing about their bytes, so the slots stay, and the sequence swaps in
    /// intact once the device is healthy. (Before, found by helper-100: the failed read gave the
    /// slots up, and the swap-in verified them against hash 0 and spoiled the sequence.) A slot
    /// only the failed read held still leaves the tier (`anIOErrorOnReadIsAMissNotGarbage`).
    @Test(arguments: [Layout.paged, .contiguous])
    func anotherCreatesFailedReadLeavesASwappedOutSequencesSlots(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        let prompt = tokens(4 * 6 + 1, seed: 5)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: prompt.count) { prompt[$0] }
        try e.free(1)
        try e.trim()
        try e.syncOffload()
        #expect(try e.createSequence(2, tokens: prompt) == 24)
        try waitReady(e, 2)
        try fillKV(e, 2, count: prompt.count) { prompt[$0] }  // the same bytes, and its last token's
        try e.swapOut(2)  // its 6 full blocks are on disk already: pinned, not written again
        try e.trim()
        #expect(e.stats().blocksCached == 0, "no memory copy left: a create must read the disk")
        let stored = e.stats().disk.storedSlots
        e.offload!.tier.setFault(OffloadFault(reads: true, writes: false, after: 0))
        #expect(try e.createSequence(3, tokens: prompt) == 24)
        #expect(thrown { () throws(KVError) in try waitReady(e, 3) }?.code == .io, "the injected read failure")
        e.offload!.tier.setFault(nil)
        try e.free(3)
        #expect(e.stats().disk.storedSlots == stored, "the failed reads gave no slot up")
        try e.swapIn(2)
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: prompt.count) { prompt[$0] } == 0)
        try e.free(2)
        #expect(try e.createSequence(4, tokens: prompt) == 24, "the blocks are still found on disk")
        try waitReady(e, 4)
        #expect(try kvDifferences(e, 4, count: 24) { prompt[$0] } == 0)
    }

    /// A sequence whose prefix read failed is freed without its K/V ever being computed, but its
    /// create indexed the blocks past the cached prefix: they must leave the index with the
    /// failed block, or a later prompt is served their garbage. Found by `tools/abi_model.c`.
    @Test(arguments: [Layout.paged, .contiguous])
    func theUncomputedBlocksOfASequenceWhoseReadFailedLeaveTheIndex(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let (e, prompt) = try failingReadsEngine(layout, dir: dir)
        let longer = prompt + tokens(40, seed: 10)
        #expect(try e.createSequence(2, tokens: longer) == 40)  // 40 tokens from disk, 41 fresh
        #expect(thrown { () throws(KVError) in try waitReady(e, 2) }?.code == .io)
        try e.free(2)  // as the server must: it never computes a failed sequence's K/V
        #expect(try e.createSequence(3, tokens: longer) == 0, "the failed blocks left the index, and with them the chain")
        try fillKV(e, 3, count: longer.count) { longer[$0] }
        let hit = try e.createSequence(4, tokens: longer)
        #expect(hit == 80)
        #expect(try kvDifferences(e, 4, count: hit) { longer[$0] } == 0, "a prefix hit reads computed bytes only")
    }

    /// A paged fork shares its parent's blocks, so it shares the verdict of a read still in
    /// flight when it forked (a contiguous fork waits for the reads, as it copies the boundary
    /// page, and is refused when one failed); and a fork into the slot of a freed failed
    /// sequence does not inherit that sequence's verdict. (Before the fix, fork left the child slot's `failed` flag as
    /// the slot's previous owner had it: a healthy child in a recycled slot reported an I/O
    /// error.)
    @Test(arguments: [Layout.paged, .contiguous])
    func aForkSharesItsParentsFailedReadAndNotAStaleOne(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let healthy = tokens(9, seed: 8)
        let (e, prompt) = try failingReadsEngine(layout, dir: dir, healthy: healthy)
        #expect(try e.createSequence(2, tokens: prompt) == 40)
        if layout == .paged {
            try e.fork(parent: 2, child: 3)  // a paged fork processes no completion: the reads are in flight
            #expect(thrown { () throws(KVError) in try waitReady(e, 2) }?.code == .io)
            #expect(thrown { () throws(KVError) in _ = try e.ready(3) }?.code == .io, "the child holds the blocks whose read failed")
            try e.free(3)
        } else {
            #expect(thrown { () throws(KVError) in try e.fork(parent: 2, child: 3) }?.code == .io, "the fork waited for the failed read")
            #expect(thrown { () throws(KVError) in _ = try e.length(3) }?.code == .notFound, "no child was made")
        }
        try e.free(2)  // its slot, next to be reused, saw a failed read
        try e.fork(parent: 10, child: 11)
        #expect(try e.ready(11), "a healthy fork is ready whatever its slot held before")
        #expect(try kvDifferences(e, 11, count: healthy.count) { healthy[$0] } == 0)
    }

    /// An append that copies a block a fork shares waits for the sequence's reads first; when
    /// the wait finds one failed, the sequence is spoiled and the append is refused with that
    /// failure, appending and indexing nothing. (Before, found by helper-78: it appended,
    /// filled the copied block and indexed it, and a later prompt was served its bytes, which
    /// nobody computed.)
    @Test func anAppendWhoseWaitFindsAFailedReadIsRefusedAndIndexesNothing() throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let (e, prompt) = try failingReadsEngine(.paged, dir: dir)
        #expect(try e.createSequence(2, tokens: prompt) == 40)
        try e.fork(parent: 2, child: 3)  // shares the partial last block: an append copies it
        let extra = tokens(3, seed: 31)  // would fill that block (tokens 40...43)
        let refused = thrown { () throws(KVError) in try e.append(2, tokens: extra) }
        #expect(refused?.code == .io && refused?.message.contains("disk read for sequence 2 failed") == true, "\(String(describing: refused))")
        #expect(try e.length(2) == 41, "nothing appended")
        try e.free(2)
        try e.free(3)
        let longer = prompt + extra + [5]  // 11 full blocks and one token
        #expect(try e.createSequence(4, tokens: longer) == 0, "the failed blocks left the index, and with them the chain")
        try fillKV(e, 4, count: longer.count) { longer[$0] }
        try e.free(4)
        let hit = try e.createSequence(5, tokens: longer)
        #expect(hit == 44)
        #expect(try kvDifferences(e, 5, count: hit) { longer[$0] } == 0, "a prefix hit reads computed bytes only")
    }

    /// Once a failed read spoiled a sequence, every call that reaches or changes its K/V is
    /// refused with the read's failure and changes nothing, so a server that missed `ready`'s
    /// verdict cannot compute on, or hand out, bytes that never arrived; `free` and the
    /// queries still work, and the other sequences serve on. (Before, the engine only reported
    /// the failure through `ready` and `swapOut`; kvcache.h told the server to free it.)
    @Test(arguments: [Layout.paged, .contiguous])
    func aSequenceAFailedReadSpoiledRefusesEveryCallOnItsKV(layout: Layout) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        let healthy = tokens(9, seed: 8)
        let (e, prompt) = try failingReadsEngine(layout, dir: dir, healthy: healthy)
        #expect(try e.createSequence(2, tokens: prompt) == 40)
        try e.append(2, tokens: [7])  // allowed while the reads are in flight (nothing failed yet)
        #expect(thrown { () throws(KVError) in try waitReady(e, 2) }?.code == .io)
        let before = e.stats()
        var table = [Int32](repeating: 0, count: 8)
        let calls: [(String, () throws(KVError) -> Void)] = [
            ("append", { () throws(KVError) in try e.append(2, tokens: [1, 2]) }),
            ("fork", { () throws(KVError) in try e.fork(parent: 2, child: 3) }),
            ("truncate", { () throws(KVError) in try e.truncate(2, to: 20) }),
            ("schedule", { () throws(KVError) in try e.schedule(2, tokens: 16) }),
            ("compact", { () throws(KVError) in _ = try e.compact(2, budgetTokens: 8) }),
            ("swapOut", { () throws(KVError) in try e.swapOut(2) }),
            ("swapOutAsync", { () throws(KVError) in try e.swapOutAsync(2) }),
            (layout == .paged ? "blockTable" : "kv", { () throws(KVError) in
                if layout == .paged {
                    _ = try table.withUnsafeMutableBufferPointer { (p) throws(KVError) in try e.blockTable(2, into: p) }
                } else {
                    _ = try e.kv(2, layer: 0)
                }
            }),
        ]
        for (name, call) in calls {
            let error = thrown(call)
            #expect(error?.code == .io, "\(name) of a spoiled sequence")
            #expect(error?.message.contains("Input/output error") == true && error?.message.contains("free it and create it again") == true,
                    "\(name): \(error?.message ?? "no error")")
            #expect(try e.length(2) == 42, "\(name) changed nothing")
        }
        #expect(e.stats() == before, "the refusals changed no counter")
        #expect(thrown { () throws(KVError) in _ = try e.ready(2) }?.code == .io, "ready keeps saying so")
        try expectServing(e, seq: 10, prompt: healthy)
        try e.free(2)
        #expect(try e.createSequence(2, tokens: prompt) == 0, "the unreadable blocks left the tier")
        try e.append(2, tokens: [7])
        #expect(try e.ready(2), "the new sequence in the slot is usable")
    }

    @Test(arguments: [Layout.paged, .contiguous])
    func aVanishedDirectoryDoesNotStopTheEngine(layout: Layout) throws {
        let dir = ScratchDir()
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        dir.remove()
        let prompt = tokens(33, seed: 10)
        try e.createSequence(1, tokens: prompt)
        try fillKV(e, 1, count: 33) { prompt[$0] }
        try e.swapOut(1)  // the open files outlive their names
        try e.swapIn(1)
        try waitReady(e, 1)
        try expectServing(e, seq: 1, prompt: prompt)
    }

    /// offload_dir removed under a running engine (rm -rf): its spills went on into the
    /// unlinked files and every sync said OK, though a restart found nothing. The sync now
    /// fails naming the cause, again after the directory is made anew (the path names another
    /// file, or none), and the engine serves on from the files it holds open.
    @Test(arguments: [Layout.paged, .contiguous])
    func aSyncAfterTheDirectoryWasRemovedFailsNamingIt(layout: Layout) throws {
        let dir = ScratchDir("removed")
        defer { dir.remove() }
        let e = try Engine(offloadConfig(layout, dir: dir.path))
        let prompt = tokens(41, seed: 43)
        try spillPrompt(e, 1, prompt)
        try FileManager.default.removeItem(atPath: dir.path)
        for remade in [false, true] {
            if remade { try FileManager.default.createDirectory(atPath: dir.path, withIntermediateDirectories: false) }
            do throws(KVError) {
                try e.syncOffload()
                Issue.record("the sync said OK (directory made anew: \(remade))")
            } catch {
                #expect(error.code == .io)
                #expect(error.message.contains("'\(dir.path)/kvcache.slab' is no longer"), "\(error.message)")
            }
        }
        #expect(try e.createSequence(2, tokens: prompt) == 40)
        try waitReady(e, 2)
        #expect(try kvDifferences(e, 2, count: 40) { prompt[$0] } == 0)
    }

    /// A relative offload_dir and a chdir after the create (a daemon's chdir("/")): the files
    /// stay where they were, so every sync succeeds and a restart by the absolute path finds
    /// the blocks. The tier names its files by the directory's absolute path; before, the
    /// sync's path check resolved the relative one against the new directory and failed
    /// ("offload_dir removed or moved"). An exit test (chdir is process-wide): exit 0 when so,
    /// 1 with the problem on stderr.
    @Test func aRelativeOffloadDirStillSyncsAfterAChdir() async {
        await #expect(processExitsWith: .exitCode(0)) {
            let dir = ScratchDir("relative")
            guard chdir("/tmp") == 0, dir.path.hasPrefix("/tmp/") else { exit(2) }
            let prompt = tokens(41, seed: 47)
            do {
                do {
                    let e = try Engine(offloadConfig(.paged, dir: String(dir.path.dropFirst("/tmp/".count))))
                    guard chdir("/") == 0 else { exit(2) }
                    try spillPrompt(e, 1, prompt)
                    try e.syncOffload()
                }
                let again = try Engine(offloadConfig(.paged, dir: dir.path))
                guard again.stats().disk.recoveredSlots == 10 else { throw KVError(.internal, "recovered \(again.stats().disk.recoveredSlots) of 10") }
            } catch {
                _ = "\(error)\n".withCString { write(2, $0, strlen($0)) }
                dir.remove()
                exit(1)
            }
            dir.remove()
            exit(0)
        }
    }

    @Test func swapWithoutATierIsUnsupported() throws {
        let e = try Engine(smallConfig(.paged))
        try e.createSequence(1, tokens: tokens(5, seed: 1))
        #expect(thrown { () throws(KVError) in try e.swapOut(1) }?.code == .unsupported)
        #expect(thrown { () throws(KVError) in try e.swapIn(1) }?.code == .unsupported)
        #expect(try e.ready(1))
    }
}
