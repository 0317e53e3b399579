import Testing
@testable import KVCache

/// Prefix hits, forks and appends keep bytes exact whatever the relation of page, block and
/// token sizes: pages holding many blocks, blocks spanning many pages, tokens straddling page
/// boundaries, huge pages.
@Suite("Shapes and page sizes")
struct ShapeTests {
    struct Shape: CustomTestStringConvertible, Sendable {
        var heads: Int, headDim: Int, blockTokens: Int, pageBytes: UInt64
        var testDescription: String { "\(heads)x\(headDim) heads, \(blockTokens)-token blocks, \(pageBytes >> 10) KiB pages" }
    }

    static let shapes = [
        Shape(heads: 2, headDim: 8, blockTokens: 4, pageBytes: 4096),        // 32 B tokens: 32 blocks per page
        Shape(heads: 4, headDim: 128, blockTokens: 16, pageBytes: 4096),     // 1 KiB tokens: a block spans 4 pages
        Shape(heads: 5, headDim: 128, blockTokens: 16, pageBytes: 4096),     // 1280 B tokens straddle pages
        Shape(heads: 5, headDim: 128, blockTokens: 16, pageBytes: 64 << 10), // blocks straddle pages
        Shape(heads: 8, headDim: 128, blockTokens: 16, pageBytes: 2 << 20),  // huge pages
    ]

    static func engine(_ layout: Layout, _ shape: Shape) throws -> Engine {
        var c = EngineConfig()
        c.layout = layout
        c.numLayers = 2
        c.numKVHeads = shape.heads
        c.headDim = shape.headDim
        c.blockTokens = shape.blockTokens
        c.pageBytes = shape.pageBytes
        c.maxSeqs = 8
        c.maxSeqTokens = 2048
        c.memoryBytes = 256 << 20
        return try Engine(c)
    }

    @Test(arguments: [Layout.paged, .contiguous], shapes)
    func hitForkAndAppendStayExact(layout: Layout, shape: Shape) throws {
        let e = try Self.engine(layout, shape)
        let prompt = tokens(700, seed: 40)
        try e.createSequence(1, tokens: prompt)
        try writeKV(e, 1, tokens: prompt, from: 0)
        let more = tokens(90, seed: 41)
        try e.append(1, tokens: more)
        try writeKV(e, 1, tokens: more, from: 700)
        try e.free(1)

        let turn = prompt + more + tokens(33, seed: 42)
        let cached = try e.createSequence(2, tokens: turn)
        #expect(cached == 790 / shape.blockTokens * shape.blockTokens)
        #expect(try kvMismatches(e, 2, tokens: Array((prompt + more).prefix(cached)), from: 0) == 0)
        try writeKV(e, 2, tokens: Array(turn[cached...]), from: cached, salt: 5)

        try e.fork(parent: 2, child: 3)
        try e.append(3, tokens: [9, 9, 9])
        try writeKV(e, 3, tokens: [9, 9, 9], from: turn.count, salt: 6)
        try e.append(2, tokens: [8, 8])
        try writeKV(e, 2, tokens: [8, 8], from: turn.count, salt: 7)
        #expect(try kvMismatches(e, 3, tokens: Array(turn[cached...]), from: cached, salt: 5) == 0)
        #expect(try kvMismatches(e, 3, tokens: [9, 9, 9], from: turn.count, salt: 6) == 0)
        #expect(try kvMismatches(e, 2, tokens: [8, 8], from: turn.count, salt: 7) == 0)
        #expect(try kvMismatches(e, 2, tokens: Array(prompt.prefix(cached)), from: 0) == 0)
    }
}
