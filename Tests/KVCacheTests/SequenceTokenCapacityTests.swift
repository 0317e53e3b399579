import Testing
@testable import KVCache

/// `Engine.sequenceTokenCapacity`: the longest sequence an engine holding nothing else can
/// create (`kvcache load` rejects longer prompts as unfittable).
@Suite struct SequenceTokenCapacityTests {
    /// An engine holding nothing creates a prompt of exactly `sequenceTokenCapacity` tokens and
    /// runs out of memory for one more, in both layouts, also where neither blocks nor tokens
    /// divide pages evenly (96-byte tokens, 1.5 KiB blocks).
    @Test(arguments: ["paged", "contiguous"], [(32, 4096 as UInt64), (48, 4096), (32, 64 << 10), (48, 64 << 10)])
    func theCapacityIsTheLongestPromptOfAnEmptyEngine(layout: String, shape: (headDim: Int, pageBytes: UInt64)) throws {
        var config = EngineConfig()
        config.layout = layout == "paged" ? .paged : .contiguous
        (config.numLayers, config.numKVHeads, config.headDim, config.dtypeBytes) = (1, 1, shape.headDim, 2)
        (config.pageBytes, config.memoryBytes, config.maxSeqs, config.maxSeqTokens) = (shape.pageBytes, 1 << 20, 4, 16384)
        let engine = try Engine(config)
        let capacity = engine.sequenceTokenCapacity
        try #require(capacity > 0 && capacity < config.maxSeqTokens, "\(capacity)")
        let tokens = (0..<capacity + 1).map { Int32($0) }
        let error = #expect(throws: KVError.self) { _ = try engine.createSequence(1, tokens: tokens) }
        #expect(error?.code == .outOfMemory, "\(String(describing: error))")
        #expect(try engine.createSequence(2, tokens: Array(tokens.prefix(capacity))) == 0, "\(capacity) tokens fit")
    }
}
