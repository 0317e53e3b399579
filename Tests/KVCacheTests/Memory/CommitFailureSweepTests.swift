#if canImport(Glibc)
import Glibc
#endif
import TestSupport
import Testing
@testable import KVCache

/// The k-th commit of a call failing, for every k (`failureSweep`, committed bytes included):
/// the pool commits page groups in batches, so a call that needs several batches may fail
/// after committing some. Such a call changes nothing, and gives back what it committed:
/// the groups committed before the failure used to stay committed, unused until a trim
/// (found by helper-119).
@Suite(.serialized) struct CommitFailureSweepTests {
    static let layouts: [Layout] = [.paged, .contiguous]

    /// Sequence 2 forks 1 (130 tokens: a partly filled last block, copied on write) and appends
    /// 3000 tokens.
    @Test(arguments: layouts)
    func anAppendGivesBackWhatItCommittedWhenALaterCommitFails(layout: Layout) throws {
        let p = tokens(130, seed: 1)
        let problems = try failureSweep("append \(layout)", setup: {
            let e = try Engine(smallConfig(layout, memoryBytes: 4 << 20))
            try e.createSequence(1, tokens: p)
            try writeKV(e, 1, tokens: p, from: 0)
            try e.fork(parent: 1, child: 2)
            return SweepSetup(engine: e, sequences: [1, 2], prompts: [p])
        }, op: { e in try e.append(2, tokens: tokens(3000, seed: 2)) })
        #expect(problems.isEmpty, "\(problems)")
    }

    /// A create whose prompt hits 1000 cached tokens and needs 3000 more.
    @Test(arguments: layouts)
    func aCreateGivesBackWhatItCommittedWhenALaterCommitFails(layout: Layout) throws {
        let p = tokens(1000, seed: 1), q = tokens(50, seed: 3)
        let problems = try failureSweep("create \(layout)", setup: {
            let e = try Engine(smallConfig(layout, memoryBytes: 4 << 20))
            try e.createSequence(9, tokens: p)
            try writeKV(e, 9, tokens: p, from: 0)
            try e.free(9)
            try e.createSequence(1, tokens: q)
            try writeKV(e, 1, tokens: q, from: 0)
            return SweepSetup(engine: e, sequences: [1], prompts: [p, q])
        }, op: { e in _ = try e.createSequence(2, tokens: p + tokens(3000, seed: 2)) })
        #expect(problems.isEmpty, "\(problems)")
    }

    /// A swap-in of 1500 tokens from the disk tier.
    @Test(arguments: layouts)
    func aSwapInGivesBackWhatItCommittedWhenALaterCommitFails(layout: Layout) throws {
        let p = tokens(1500, seed: 1)
        let dir = ScratchDir("commit-sweep")
        defer { dir.remove() }
        var round = 0
        let problems = try failureSweep("swapIn \(layout)", setup: {
            round += 1
            let path = dir.path + "/\(round)"
            _ = mkdir(path, 0o755)
            var c = offloadConfig(layout, dir: path, memoryBytes: 4 << 20)
            c.offloadForceThreads = true
            let e = try Engine(c)
            try e.createSequence(1, tokens: p)
            try writeKV(e, 1, tokens: p, from: 0)
            try e.createSequence(2, tokens: tokens(100, seed: 4))
            try e.swapOut(1)
            return SweepSetup(engine: e, sequences: [2], prompts: [p])
        }, op: { e in try e.swapIn(1) })
        #expect(problems.isEmpty, "\(problems)")
    }

    /// Contiguous: the k-th mapping of a fork fails; once its boundary page was committed, the
    /// page used to stay committed.
    @Test func aForkGivesBackWhatItCommittedWhenAMappingFails() throws {
        let p = tokens(1001, seed: 1)
        let problems = try failureSweep("fork mmap", mmaps: true, setup: {
            let e = try Engine(smallConfig(.contiguous, memoryBytes: 4 << 20))
            try e.createSequence(1, tokens: p)
            try writeKV(e, 1, tokens: p, from: 0)
            return SweepSetup(engine: e, sequences: [1], prompts: [p])
        }, op: { e in try e.fork(parent: 1, child: 2) })
        #expect(problems.isEmpty, "\(problems)")
    }

    /// A truncation into a block and a page a fork shares (their copies must be taken), with
    /// every commit or (contiguous) mapping failing in turn: refused, it changes nothing.
    @Test(arguments: [(Layout.paged, false), (.contiguous, false), (.contiguous, true)])
    func aTruncateChangesNothingWhenACommitOrMappingFails(layout: Layout, mmaps: Bool) throws {
        let p = tokens(300, seed: 1)
        let problems = try failureSweep("truncate \(layout)\(mmaps ? " mmap" : "")", mmaps: mmaps, setup: {
            let e = try Engine(smallConfig(layout, memoryBytes: 1 << 20))
            try e.createSequence(1, tokens: p)
            try writeKV(e, 1, tokens: p, from: 0)
            try e.fork(parent: 1, child: 2)
            return SweepSetup(engine: e, sequences: [1, 2], prompts: [p])
        }, op: { e in try e.truncate(2, to: 201) })
        #expect(problems.isEmpty, "\(problems)")
    }
}
