import CKVMemory
import Testing
@testable import KVCache

@Suite("Block K/V addresses")
struct BlockKVTests {
    /// `Engine.blockKV` gives every live block's K and V in every layer at the arena's
    /// addresses of tensors 2l and 2l + 1 (`kvm_arena_block`), in block geometries that fill
    /// their page exactly (128 and 4,096 bytes), span pages (8,192) and leave padding in their
    /// group (1,280: three per page; 6,144: one per two pages): V is computed from K with the
    /// arena's tensor distance, which these pin.
    @Test(arguments: [4, 128, 256, 40, 192])
    func blockKVIsTheArenasAddressOfTheLayersTensors(blockTokens: Int) throws {
        let c = smallConfig(.paged, memoryBytes: 4 << 20, blockTokens: blockTokens)  // 32-byte tokens
        let e = try Engine(c)
        _ = try e.createSequence(1, tokens: tokens(3 * blockTokens + 1, seed: 5))
        _ = try e.createSequence(2, tokens: tokens(2 * blockTokens, seed: 6))
        let arena = try #require(e.pagedArena)
        func table(_ seq: UInt64) throws -> [Int32] {
            var t = [Int32](repeating: -1, count: 8)
            let n = try t.withUnsafeMutableBufferPointer { try e.blockTable(seq, into: $0) }
            return Array(t.prefix(n))
        }
        let blocks = try table(1) + table(2)
        #expect(blocks.count == 6)
        for b in blocks {
            for layer in 0..<c.numLayers {
                let (k, v) = try e.blockKV(b, layer: layer)
                #expect(k == UnsafeMutableRawPointer(kvm_arena_block(arena, UInt32(2 * layer), UInt32(b))), "block \(b) layer \(layer)")
                #expect(v == UnsafeMutableRawPointer(kvm_arena_block(arena, UInt32(2 * layer + 1), UInt32(b))), "block \(b) layer \(layer)")
            }
        }
    }
}
