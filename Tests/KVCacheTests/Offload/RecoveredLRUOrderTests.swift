import TestSupport
import Testing
@testable import KVCache

/// A restarted disk tier drops its oldest blocks first, as the engine before the restart
/// would have: the replay orders the recovered slots' LRU by their records' generations (the
/// order they were written). Before, it was slot order, and once slots had been reused the
/// lowest, often the newest blocks, went first (a review's lru_restart.c: prompts 55..40
/// dropped where an engine without the restart dropped 32..47).
@Suite("Disk tier: LRU order after a restart")
struct RecoveredLRUOrderTests {
    /// One-block prompts (5 tokens: one full block) spilled one by one into a tier of 40
    /// slots, so that it wraps; then 20 more, with or without a restart before them. The
    /// prompts the tier still holds must be the same.
    @Test(arguments: [Layout.paged, .contiguous])
    func aRestartedTierDropsWhatTheEngineWouldHaveDropped(layout: Layout) throws {
        let probe = ScratchDir()
        let slotBytes = try Engine(offloadConfig(layout, dir: probe.path)).stats().disk.slotBytes
        probe.remove()
        func held(restart: Bool) throws -> [Int] {
            let dir = ScratchDir()
            defer { dir.remove() }
            let config = offloadConfig(layout, dir: dir.path, offloadBytes: 40 * slotBytes)
            func spill(_ e: Engine, _ range: Range<Int>) throws {
                for i in range {
                    let prompt = tokens(5, seed: Int32(100 + i))
                    try e.createSequence(1, tokens: prompt)
                    try fillKV(e, 1, count: 5) { prompt[$0] }
                    try e.free(1)
                    try e.trim()
                    try e.syncOffload()  // each write done before the next spill: the same drops each run
                }
            }
            func heldPrompts(_ e: Engine) -> [Int] {
                (0..<90).filter { e.cachedPrefixTokens(tokens(5, seed: Int32(100 + $0))) == 4 }
            }
            let first = try Engine(config)
            try spill(first, 0..<70)
            if !restart {
                try spill(first, 70..<90)
                return heldPrompts(first)
            }
            _ = consume first
            let again = try Engine(config)
            #expect(again.stats().disk.recoveredSlots > 16, "the tier came back")
            try spill(again, 70..<90)
            return heldPrompts(again)
        }
        let kept = try held(restart: false)
        #expect(kept.count > 16 && kept.contains(89), "the newest are held")
        #expect(try held(restart: true) == kept)
    }
}
