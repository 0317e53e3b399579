import CKVMemory
import Testing
@testable import KVCache

/// `Engine.layerKVLayout` (kvc_layer_kv_layout): a layer's K and V blocks as two arrays of one
/// stride, checked against the arena's address (`kvm_arena_block`, `blockKV`'s) of every block
/// id of every layer, in the geometries whose blocks are evenly spaced (filling their page
/// exactly: 128 and 4,096 bytes; spanning pages: 8,192; one per two pages, padded: 6,144), and
/// refused where they are not (1,280: three per page, padded within it) or in the contiguous
/// layout.
@Suite struct LayerKVLayoutTests {
    @Test(arguments: [(4, 128), (128, 4096), (256, 8192), (192, 8192)])
    func everyBlockIsAtTheBasePlusItsIdTimesTheStride(blockTokens: Int, stride: Int) throws {
        let c = smallConfig(.paged, memoryBytes: 4 << 20, blockTokens: blockTokens)  // 32-byte tokens
        let e = try Engine(c)
        let arena = try #require(e.pagedArena)
        let blocks = Int(kvm_arena_blocks(arena))
        #expect(blocks > 1)
        var wrong = 0
        for layer in 0..<c.numLayers {
            let (k, v, s) = try e.layerKVLayout(layer: layer)
            #expect(s == stride)
            for b in 0..<blocks {
                wrong += k + b * s == UnsafeMutableRawPointer(kvm_arena_block(arena, UInt32(2 * layer), UInt32(b))) ? 0 : 1
                wrong += v + b * s == UnsafeMutableRawPointer(kvm_arena_block(arena, UInt32(2 * layer + 1), UInt32(b))) ? 0 : 1
            }
        }
        #expect(wrong == 0, "\(wrong) of \(2 * blocks * c.numLayers) addresses differ")
    }

    /// The error `layerKVLayout` throws for `layer` of `e`, or nil.
    private func layoutRefusal(_ e: Engine, layer: Int) -> KVError? {
        do throws(KVError) {
            _ = try e.layerKVLayout(layer: layer)
            return nil
        } catch {
            return error
        }
    }

    @Test func blocksPaddedWithinTheirPageHaveNoStride() throws {
        let refused = layoutRefusal(try Engine(smallConfig(.paged, memoryBytes: 4 << 20, blockTokens: 40)), layer: 0)
        #expect(refused?.code == .unsupported && refused?.message.contains("padded") == true)
    }

    @Test func theContiguousLayoutHasNoBlockArrays() throws {
        #expect(layoutRefusal(try Engine(smallConfig(.contiguous)), layer: 0)?.code == .unsupported)
        #expect(layoutRefusal(try Engine(smallConfig(.paged)), layer: 2)?.code == .invalidArgument)
    }
}
