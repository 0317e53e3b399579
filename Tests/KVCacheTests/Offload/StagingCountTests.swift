import TestSupport
import Testing
@testable import KVCache

/// A disk tier's staging buffers (one slot each, resident outside memory_bytes): at least
/// offload_queue_depth, more while slots are small (up to 1024 or 32 MiB of them), and never
/// more than the tier has slots, since no more writes than slots can be in flight (reads wait
/// for a buffer). Before, a 1 MiB tier of 12 KiB slots (85 slots) took 1,024 buffers, 12 MiB
/// resident, 12x the tier (revmulti's rssdisk.c; 64 engines of 8 MiB tiers: 864 MB).
@Suite struct StagingCountTests {
    /// `smallConfig`'s shape (slots of ~4 KiB payload plus the header) with a tier of `slots`.
    static func tier(slots: UInt64, _ body: (DiskTier) -> Void) throws {
        let dir = ScratchDir("stagingcount")
        var c = offloadConfig(.paged, dir: dir.path)
        c.offloadBytes = slots * tierSlotBytes(c)
        let e = try Engine(c)
        body(e.offload!.tier!)
    }

    @Test func aTierOfFewSlotsHasOneBufferPerSlot() throws {
        try Self.tier(slots: 85) { tier in
            #expect(tier.capacity == 85)
            #expect(tier.stages == 85)
            #expect(tier.reservedStages == 10)
        }
        try Self.tier(slots: 5) { #expect($0.stages == 5) }
    }

    @Test func aLargeTierOfSmallSlotsHas1024() throws {
        try Self.tier(slots: 4096) { tier in
            #expect(tier.stages == 1024)
            #expect(tier.reservedStages == 128)
        }
    }
}
