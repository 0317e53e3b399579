import TestSupport
import Testing
@testable import KVCache

/// `Engine.admission`, a create's dry run (kvcache.h kvc_prefix_admit): its answer is what the
/// create right after it does, in both layouts, with and without a disk tier, and it changes
/// nothing the statistics show.
@Suite("A create's dry run answers what the create does")
struct AdmissionTests {
    /// The counters a dry run must leave as they were. With a disk tier, not the blocks used
    /// and cached: like the create, the dry run processes completions, and a freed sequence's
    /// blocks leave blocks_used when its disk reads' completions are processed (kvc_seq_free),
    /// whenever they land; nor the tier's own counters, which follow its writes.
    static func counters(_ e: Engine, disk: Bool) -> [UInt64] {
        let s = e.stats()
        return [s.committedBytes, s.sequences, s.prefixQueryTokens, s.prefixHitTokens, s.sequencesCreated, s.blocksEvicted,
                s.mappings] + (disk ? [] : [s.blocksUsed, s.blocksCached])
    }

    /// A prompt of `length` tokens: one of 4 shared 48-token prefixes cut at `shared`, then
    /// tokens of its own (`unique`), so prompts hit each other's blocks in memory and on disk.
    static func prompt(family: Int, shared: Int, length: Int, unique: Int32) -> [Int32] {
        (0..<length).map { $0 < shared ? Int32(family * 1000 + $0) : unique &* 7919 &+ Int32($0) }
    }

    @Test("random states: the dry run's answer is the create's (and the append's of the reserve)",
          arguments: [Layout.paged, .contiguous], [false, true])
    func dryRunMatchesCreate(layout: Layout, disk: Bool) throws {
        let dir = ScratchDir("admit")
        defer { dir.remove() }
        var c = smallConfig(layout, memoryBytes: layout == .paged ? 32 << 10 : 96 << 10)
        if disk {
            c.offloadDir = dir.path
            c.offloadBytes = 160 << 10
            c.modelTag = 0x7E57
        }
        let e = try Engine(c)
        var rng = SplitMix64(seed: disk ? 0xAD17 : 0xAD70)
        var live: [UInt64] = [], next: UInt64 = 1
        var refused = 0, admitted = 0, reserveRefused = 0
        for step in 0..<600 {
            let tokens = Self.prompt(family: Int(rng.next() % 4), shared: Int(rng.next() % 49),
                                     length: 1 + Int(rng.next() % 64), unique: Int32(step))
            let commit = rng.next() % 3 == 0 ? 1 + Int(rng.next() % 16) : tokens.count
            let reserve = rng.next() % 2 == 0 ? 0 : Int(rng.next() % 40)
            let before = Self.counters(e, disk: disk)
            let answer = try tokens.withUnsafeBufferPointer { (b) throws(KVError) in
                try e.admission(b, commitTokens: commit, reserveTokens: reserve)
            }
            #expect(Self.counters(e, disk: disk) == before, "step \(step): the dry run changed the statistics")
            #expect(answer.fits == (answer.shortTokens == 0) || answer.refusal?.message.contains("max_seqs") == true,
                    "step \(step): \(answer)")
            let seq = next
            next += 1
            var created: (cachedTokens: Int, heldTokens: Int)?
            var failure: KVError?
            do throws(KVError) {
                created = try tokens.withUnsafeBufferPointer { (b) throws(KVError) in
                    try e.createSequence(seq, tokens: b, commitTokens: commit)
                }
            } catch {
                failure = error
            }
            if let created {
                live.append(seq)
                #expect(created.cachedTokens == answer.cachedTokens, "step \(step): cached \(created.cachedTokens), dry run \(answer.cachedTokens)")
                var grew = true
                if reserve > 0 {
                    do throws(KVError) { try e.append(seq, tokens: [Int32](repeating: 5, count: reserve)) } catch { grew = false }
                }
                #expect(answer.fits == grew, "step \(step): dry run \(answer), create held \(created.heldTokens), reserve \(reserve) appended: \(grew)")
                if answer.fits { admitted += 1 } else { reserveRefused += 1 }
            } else {
                #expect(!answer.fits, "step \(step): dry run said it fits, the create threw \(String(describing: failure))")
                if reserve == 0 { #expect(answer.refusal == failure, "step \(step)") }
                #expect(failure?.code == .outOfMemory)
                refused += 1
            }
            // Keep memory busy but moving: free (or let go of) a random live sequence often.
            if !live.isEmpty && rng.next() % 3 != 0 {
                let victim = live.remove(at: Int(rng.next() % UInt64(live.count)))
                try e.free(victim)
            }
            if disk && step % 50 == 49 { _ = e.poll(timeoutMicroseconds: 0) }
        }
        // Both answers are frequent, so the comparison meant something.
        #expect(refused > 30 && admitted > 30, "refused \(refused), admitted \(admitted), reserve refused \(reserveRefused)")
    }

    /// The reviewer's admit_paged.c: two states kvc_stats and kvc_prefix_lookup cannot tell
    /// apart (64 blocks, 40 used, 10 cached; the prompt's 10-block prefix P hit in memory);
    /// in A, P is cached only (the create takes it out of the free pool: 14 left for 20 new
    /// blocks), in B a live request holds P (24 left). The dry run tells them apart.
    @Test("the reviewer's two look-alike states: A refused 6 blocks short, B admitted")
    func reviewerLookAlikeStates() throws {
        func engine() throws -> Engine {
            var c = EngineConfig()
            (c.numLayers, c.numKVHeads, c.headDim, c.dtypeBytes, c.blockTokens) = (2, 1, 32, 2, 16)
            (c.memoryBytes, c.pageBytes, c.maxSeqTokens) = (64 * 4096, 4096, 4096)
            return try Engine(c)
        }
        func run(_ n: Int, from base: Int32) -> [Int32] { (0..<Int32(n)).map { base + $0 } }
        let p = run(160, from: 1000), q = p + run(320, from: 200_000)
        let a = try engine()
        try a.createSequence(1, tokens: p)
        try a.free(1)
        try a.createSequence(2, tokens: run(640, from: 50_000))
        let b = try engine()
        try b.createSequence(1, tokens: run(160, from: 90_000))
        try b.free(1)
        try b.createSequence(3, tokens: p)
        try b.createSequence(2, tokens: run(480, from: 50_000))
        for e in [a, b] {  // what the reviewer's scheduler saw
            #expect((e.stats().blocksTotal, e.stats().blocksUsed, e.stats().blocksCached) == (64, 40, 10))
            #expect(e.cachedPrefixTokens(q) == 160)
        }
        let answerA = try q.withUnsafeBufferPointer { (t) throws(KVError) in try a.admission(t, commitTokens: q.count) }
        let answerB = try q.withUnsafeBufferPointer { (t) throws(KVError) in try b.admission(t, commitTokens: q.count) }
        #expect(answerA == Admission(cachedTokens: 160, shortTokens: 6 * 16,
                                     refusal: .outOfMemory("prompt needs 20 blocks, 14 are available")))
        #expect(answerB == Admission(cachedTokens: 160, shortTokens: 0, refusal: nil))
        #expect(throws: KVError.outOfMemory("prompt needs 20 blocks, 14 are available")) { try a.createSequence(9, tokens: q) }
        #expect(try b.createSequence(9, tokens: q) == 160)
    }

    /// Contiguous, the reviewer's admit_contig.c: memory full (committed == budget) while
    /// blocks_total - blocks_used reads blocks free; the dry run of a one-token prompt says
    /// how short it is.
    @Test("contiguous memory full: refused, a page short, though blocks read free")
    func contiguousFull() throws {
        var c = smallConfig(.contiguous, memoryBytes: 256 << 10)
        c.maxSeqs = 9  // a slot free: the refusal is memory's
        let e = try Engine(c)
        for s in 1...8 { try e.createSequence(UInt64(s), tokens: [Int32(s * 1000)]) }
        // Lockstep decode until an append fails.
        loop: while true {
            for s in 1...8 {
                do throws(KVError) { try e.append(UInt64(s), tokens: [5]) } catch { break loop }
            }
        }
        let s = e.stats()
        #expect(s.committedBytes == s.budgetBytes && s.blocksTotal > s.blocksUsed)
        let answer = try [Int32(9)].withUnsafeBufferPointer { (t) throws(KVError) in try e.admission(t, commitTokens: 1) }
        #expect(!answer.fits)
        #expect(answer.shortTokens == 4096 / c.tokenBytes)  // one page group, 128 tokens of 32 bytes
        #expect(throws: KVError.self) { try e.createSequence(9, tokens: [9]) }
    }

    @Test("bad input: a status and message, nothing changed; an unknown salt is a plain miss",
          arguments: [Layout.paged, .contiguous])
    func badInput(layout: Layout) throws {
        var c = smallConfig(layout)
        c.maxSeqTokens = 64
        let e = try Engine(c)
        try e.createSequence(1, tokens: Array(0..<Int32(20)))
        let before = e.stats()
        func ask(_ tokens: [Int32], commit: Int = 1, reserve: Int = 0, salt: UInt64 = 0) throws(KVError) -> Admission {
            try tokens.withUnsafeBufferPointer { (t) throws(KVError) in
                try e.admission(t, salt: salt, commitTokens: commit, reserveTokens: reserve)
            }
        }
        #expect(throws: KVError.invalid("a sequence needs at least one prompt token")) { try ask([]) }
        #expect(throws: KVError.invalid("prompt of 65 tokens exceeds max_seq_tokens 64")) { try ask(Array(0..<Int32(65))) }
        #expect(throws: KVError.invalid("commit_tokens is 0; a sequence holds at least one token past its cached prefix")) {
            try ask([1], commit: 0)
        }
        #expect(throws: KVError.invalid("reserve_tokens is -1; at most max_seq_tokens 64")) { try ask([1], reserve: -1) }
        #expect(throws: KVError.invalid("20 held tokens and reserve_tokens 45 exceed max_seq_tokens 64")) {
            try ask(Array(0..<Int32(20)), commit: 20, reserve: 45)
        }
        #expect(try ask(Array(0..<Int32(20)), commit: 20, reserve: 44).fits)
        #expect(try ask(Array(0..<Int32(21))) == Admission(cachedTokens: 20, shortTokens: 0, refusal: nil))
        #expect(try ask(Array(0..<Int32(21)), salt: 0xBAD5A17) == Admission(cachedTokens: 0, shortTokens: 0, refusal: nil))
        #expect(e.stats() == before)
    }
}
