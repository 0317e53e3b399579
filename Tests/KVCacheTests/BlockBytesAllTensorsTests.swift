import Testing
@testable import KVCache

/// `EngineConfig.blockBytesAllTensors` is the one place a block's bytes over every tensor are
/// computed: the engine's block budget and the disk tier's slot payload both use it.
@Suite("One block over every tensor")
struct BlockBytesAllTensorsTests {
    @Test func theBudgetAndTheSlotPayloadAreBlocksOverEveryTensor() throws {
        var c = smallConfig(.paged)
        c.metadataOnly = true  // the budget in blocks exactly, no page rounding
        #expect(c.blockBytesAllTensors == 2 * c.numLayers * c.blockTokens * c.numKVHeads * c.headDim * c.dtypeBytes)
        c.memoryBytes = 7 * UInt64(c.blockBytesAllTensors)
        #expect(try Engine(c).stats().blocksTotal == 7)
        #expect(DiskTier.slotBytes(payloadBytes: c.blockBytesAllTensors) % 4096 == 0)
    }
}
