import Testing
@testable import KVCache

/// A contiguous create the OS refuses leaves no more mappings than before, also when the free
/// slot it took kept a freed sequence's pages mapped (`ContiguousMemory.close`) and the prompt's
/// shared pages alternate with pages it would have kept.
@Suite struct RefusedOpenMappingTests {
    /// Blocks of 1.5 pages from two sequences: a prompt hitting block 0 (indexed from one) and
    /// block 1 (from the other) shares pages 0 and 2, while page 1 holds bytes of both and is
    /// copied. The free slot the create takes maps a freed sequence's own pages 0...4 as one
    /// run; the create drops its pages 0 and 2 (other groups wanted there) and keeps 1, 3 and
    /// 4, then the commit of its page 5 fails. Before, the refused create left the slot mapping pages
    /// 1 and 3...4: two runs where there was one, 8 more mappings (helper-176's random
    /// runs, blocks of 0.75 page with a disk tier: a disk block's page is kept the same way).
    @Test func aRefusedCreateLeavesNoMoreMappingsInTheFreeSlotItTook() throws {
        var c = smallConfig(.contiguous)
        c.headDim = 128  // 512-byte tokens: 8 to a page
        c.blockTokens = 12  // 6144-byte blocks: 1.5 pages
        c.indexOnSchedule = true  // a create indexes nothing: the freed sequence's pages are its own
        let e = try Engine(c)
        let x = tokens(24, seed: 1), b = Array(x.prefix(12)) + tokens(12, seed: 2)
        try e.createSequence(1, tokens: x)  // slot 0
        try e.schedule(1, tokens: 24)
        #expect(try e.createSequence(2, tokens: b) == 12)  // slot 1: shares block 0 (page 0)
        try e.schedule(2, tokens: 24)  // its block 1 on its pages 1 and 2
        try e.createSequence(3, tokens: tokens(40, seed: 3))  // slot 2: 5 pages
        try e.free(3)  // slot 2 keeps them mapped
        let prompt = b + tokens(24, seed: 4)  // 6 pages: page 5 needs a fresh group
        #expect(e.cachedPrefixTokens(prompt) == 24)
        e.contiguous!.trimFree(keeping: 0)  // so that it must be committed
        let before = try EngineSnapshot(e, sequences: [1, 2], prompts: [prompt])
        let failure = InjectedFailure.commits(after: 0)
        #expect(failure.arm(e))
        let refusal = thrown { () throws(KVError) in _ = try e.createSequence(4, tokens: prompt) }
        failure.disarm(e)
        #expect(refusal?.code == .outOfMemory, "\(String(describing: refusal))")
        let diff = try EngineSnapshot(e, sequences: [1, 2], prompts: [prompt]).differences(from: before, cacheMayShrink: true)
        #expect(diff.isEmpty, "\(diff.joined(separator: "; "))")
        #expect(try e.createSequence(4, tokens: prompt) == 24)
    }
}
