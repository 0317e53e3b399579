import Foundation
import Testing
import TestSupport
@testable import KVCacheABI

/// `kvc_config.index_on_schedule` and `kvc_seq_schedule` through the C ABI.
@Suite struct ScheduleABITests {
    /// The small model (4-token blocks) with `index_on_schedule` set to `flag`, and the usual
    /// witness sequences.
    private func fixture(_ layout: UInt32, flag: UInt32 = 1) throws -> ABIFixture {
        var c = CConfig.small(layout)
        c.indexOnSchedule = flag
        let f = try ABIFixture(c)
        try f.addWitness(1001, tokens: f.uniqueTokens(1001, count: 3 * f.blockTokens + 2))
        return f
    }

    /// The prompt's blocks enter the index only as kvc_seq_schedule reaches them.
    @Test(arguments: bothLayouts)
    func aPromptIsHitOnlyUpToWhatWasScheduled(layout: UInt32) throws {
        let f = try fixture(layout)
        let prompt = f.uniqueTokens(1, count: 24)
        #expect(try f.create(1, tokens: prompt) == 0)
        #expect(try f.create(2, tokens: prompt) == 0, "nothing scheduled: nothing to hit")
        try f.write(1, salt: 6, from: 0, to: 9)
        #expect(kvc_seq_schedule(f.handle, 1, 9) == KVC_OK)
        #expect(kvc_seq_schedule(f.handle, 1, 4) == KVC_OK, "a smaller value changes nothing")
        #expect(try f.create(3, tokens: prompt) == 8, "blocks 0 and 1; block 2 is not wholly scheduled")
        #expect(try f.firstMismatch(3, salt: 6, to: 8) == nil)
    }

    @Test(arguments: bothLayouts)
    func badArgumentsAreRefusedAndChangeNothing(layout: UInt32) throws {
        let f = try fixture(layout)
        let prompt = f.uniqueTokens(1, count: 24)
        try f.create(1, tokens: prompt)
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_schedule", "tokens", "25"]) { kvc_seq_schedule($0, 1, 25) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_schedule", "PTRDIFF_MAX"]) { kvc_seq_schedule($0, 1, -1) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_schedule", "engine", "NULL"]) { _ in kvc_seq_schedule(nil, 1, 0) }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_schedule", "77"]) { kvc_seq_schedule($0, 77, 0) }
        #expect(try f.create(2, tokens: prompt) == 0, "the refused calls indexed nothing")
    }

    @Test func indexOnScheduleOtherThanZeroOrOneIsInvalid() {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.indexOnSchedule = 2
        var engine: OpaquePointer?
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["index_on_schedule", "2"]) { c.create(&engine) }
        #expect(engine == nil)
    }

    /// A caller whose struct ends before the field (struct_size 124) gets its default, 0: the
    /// prompt is indexed at creation, whatever lies past struct_size.
    @Test func aConfigEndingBeforeTheFieldIndexesAtCreation() throws {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.indexOnSchedule = 1
        c.structSize = 124
        let f = try ABIFixture(c)
        let prompt = f.uniqueTokens(1, count: 24)
        try f.create(1, tokens: prompt)
        #expect(try f.create(2, tokens: prompt) == 20)
    }

    /// A metadata-only engine (no memory) indexes as scheduled too: a second create hits only
    /// what was scheduled, and everything after the first sequence's append.
    @Test func aMetadataOnlyEngineIndexesAsScheduled() throws {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.metadataOnly = 1
        c.indexOnSchedule = 1
        let f = try ABIFixture(c)
        let prompt = f.uniqueTokens(1, count: 24)
        #expect(try f.create(1, tokens: prompt) == 0)
        #expect(try f.create(2, tokens: prompt) == 0, "nothing scheduled: nothing to hit")
        #expect(kvc_seq_schedule(f.handle, 1, 9) == KVC_OK)
        #expect(try f.create(3, tokens: prompt) == 8, "blocks 0 and 1")
        try f.append(1, tokens: [7])
        #expect(try f.create(4, tokens: prompt) == 20, "the append indexed the rest of the prompt (capped: one token to compute)")
    }

    /// A swap-out in the middle of a prefill keeps the schedule: after the swap-in the server
    /// resumes the prefill, and kvc_seq_schedule indexes the rest as it goes.
    @Test(arguments: bothLayouts)
    func aSwapOutInTheMiddleOfAPrefillKeepsTheSchedule(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        var c = CConfig.small(layout)
        c.indexOnSchedule = 1
        c.offloadBytes = 16 << 20
        let f = try ABIFixture(c, offloadDir: dir)
        let prompt = f.uniqueTokens(1, count: 24)
        try f.create(1, tokens: prompt)
        try f.write(1, salt: 6, from: 0, to: 8)
        #expect(kvc_seq_schedule(f.handle, 1, 8) == KVC_OK)
        #expect(kvc_seq_swap_out(f.handle, 1) == KVC_OK)
        #expect(kvc_seq_swap_in(f.handle, 1) == KVC_OK)
        #expect(waitReady(f, 1) == KVC_OK)
        #expect(try f.create(2, tokens: prompt) == 8, "only the blocks scheduled before the swap-out")
        try f.write(1, salt: 6, from: 8, to: 24)
        #expect(kvc_seq_schedule(f.handle, 1, 24) == KVC_OK)
        #expect(try f.create(3, tokens: prompt) == 20)
        #expect(waitReady(f, 3) == KVC_OK)
        #expect(try f.firstMismatch(3, salt: 6, to: 20) == nil)
    }
}
