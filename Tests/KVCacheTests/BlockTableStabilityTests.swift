import TestSupport
import Testing
@testable import KVCache

/// kvcache.h (kvc_seq_block_table): "an append changes only entries from the old last one on"
/// (the old last one only when it is partly filled and shared: copied on write), and a fork
/// changes neither side's table. Random creates sharing prompts, appends of 1-9 tokens and
/// forks, without and with a disk tier small memory makes spill to; every append's table is
/// compared with the one before it.
@Suite struct BlockTableStabilityTests {
    private static let bt = 4

    private func table(_ e: Engine, _ seq: UInt64) throws -> [Int32] {
        var t = [Int32](repeating: -1, count: 1024)
        let n = try t.withUnsafeMutableBufferPointer { try e.blockTable(seq, into: $0) }
        return Array(t[0..<n])
    }

    /// Runs 600 random steps on `e`, then frees what is live; returns how many appends copied
    /// a shared partial last block (the one entry before the old end an append may change).
    private func run(_ e: Engine, seed: UInt64) throws -> Int {
        var rng = SplitMix64(seed: seed)
        var live: [UInt64] = [], next: UInt64 = 1, copied = 0
        for _ in 0..<600 {
            let roll = rng.next() % 10
            if live.count < 3 || (roll < 2 && live.count < 12) {
                // Four prompts of 10-17 tokens: prefix hits share their full blocks.
                let p = Int(rng.next() % 4), n = 10 + p * 2 + Int(rng.next() % 2)
                let prompt = (0..<n).map { Int32(100 * p + $0 + 1) }
                _ = try e.createSequence(next, tokens: prompt)
                if e.config.offloadDir != nil { try waitReady(e, next) }
                live.append(next)
                next += 1
            } else if roll < 4 && live.count < 12 {
                let parent = live[Int(rng.next() % UInt64(live.count))], before = try table(e, parent)
                try e.fork(parent: parent, child: next)
                #expect(try table(e, parent) == before, "a fork changed its parent's table")
                #expect(try table(e, next) == before, "a fork's child holds its parent's table")
                live.append(next)
                next += 1
            } else if roll < 5 {
                try e.free(live.remove(at: Int(rng.next() % UInt64(live.count))))
            } else {
                let at = Int(rng.next() % UInt64(live.count)), seq = live[at], before = try table(e, seq)
                let length = try e.length(seq)
                if length > 48 {  // at most 12 x 15 blocks live
                    try e.free(live.remove(at: at))
                    continue
                }
                let n = 1 + Int(rng.next() % 9)
                let tokens = (0..<n).map { _ in Int32(truncatingIfNeeded: rng.next() % 50_000) }
                try e.append(seq, tokens: tokens)
                let after = try table(e, seq)
                #expect(after.count == (length + n + Self.bt - 1) / Self.bt)
                #expect(Array(after[0..<max(0, before.count - 1)]) == Array(before.dropLast()),
                        "an append changed an entry before the old last one")
                if let last = before.last, after[before.count - 1] != last {
                    #expect(length % Self.bt != 0, "an append replaced a full last block")
                    copied += 1
                }
            }
        }
        for seq in live { try e.free(seq) }
        return copied
    }

    @Test(arguments: [false, true])
    func anAppendChangesOnlyEntriesFromTheOldLastOneOn(withTier: Bool) throws {
        let dir = ScratchDir()
        defer { dir.remove() }
        // 256 blocks of memory: creates and appends evict cached blocks (spilled with a tier).
        let memory = 256 * UInt64(smallConfig(.paged).blockBytesAllTensors)
        let e = try Engine(withTier ? offloadConfig(.paged, dir: dir.path, memoryBytes: memory) : smallConfig(.paged, memoryBytes: memory))
        var copied = 0
        for seed in UInt64(1)...4 { copied += try run(e, seed: seed &* 7919 &+ (withTier ? 1 : 0)) }
        #expect(copied > 0, "some append copied a shared partial last block (the fork case)")
    }

    /// The copy-on-write case alone: after a fork inside a block, the first side to append
    /// gets a new last entry, the other keeps the shared one; entries before it stay.
    @Test func aSharedPartialLastBlockIsCopiedByTheFirstAppend() throws {
        let e = try Engine(smallConfig(.paged))
        _ = try e.createSequence(1, tokens: (1...10).map { Int32($0) })
        try e.fork(parent: 1, child: 2)
        let shared = try table(e, 1)
        try e.append(2, tokens: [77])
        let child = try table(e, 2)
        #expect(Array(child.dropLast()) == Array(shared.dropLast()))
        #expect(child.last != shared.last)
        #expect(try table(e, 1) == shared)
        try e.append(1, tokens: [78])
        #expect(try table(e, 1) == shared, "the parent, now the block's only holder, appends in place")
    }
}
