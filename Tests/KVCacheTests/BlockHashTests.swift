import Testing
@testable import KVCache

@Suite("Block hash")
struct BlockHashTests {
    /// Version 1 of the algorithm, pinned: these values must never change, or instances and
    /// routers of different versions stop agreeing.
    @Test func knownVectorsAreStable() {
        let hashes = BlockHash.chain(Array(0..<8), blockTokens: 4)
        #expect(hashes.count == 2)
        #expect(hashes[0] == BlockHash.block(parent: 0, tokens: [0, 1, 2, 3]))
        #expect(hashes[1] == BlockHash.block(parent: hashes[0], tokens: [4, 5, 6, 7]))
        #expect(hashes == [0xd5b2_500a_0690_345d, 0x231d_f6cc_616b_b2e6])  // from tools/block_hash.py
    }

    @Test func onlyFullBlocksAreHashed() {
        #expect(BlockHash.chain(Array(0..<11), blockTokens: 4).count == 2)
        #expect(BlockHash.chain([1, 2, 3], blockTokens: 4).isEmpty)
    }

    @Test func theSameBlockUnderAnotherParentHashesDifferently() {
        let a = BlockHash.chain([1, 2, 3, 4, 9, 9, 9, 9], blockTokens: 4)
        let b = BlockHash.chain([5, 6, 7, 8, 9, 9, 9, 9], blockTokens: 4)
        #expect(a[1] != b[1])
    }

    @Test func negativeTokensHashByTheirBitPattern() {
        #expect(BlockHash.block(parent: 0, tokens: [-1]) == BlockHash.block(parent: 0, tokens: [Int32(bitPattern: 0xffff_ffff)]))
        #expect(BlockHash.block(parent: 0, tokens: [-1]) != BlockHash.block(parent: 0, tokens: [1]))
    }

    @Test func chainWritesOnlyWhatFitsAndReportsTheFullCount() {
        let tokens: [Int32] = Array(0..<40)
        var out = [UInt64](repeating: 0, count: 3)
        let n = tokens.withUnsafeBufferPointer { t in out.withUnsafeMutableBufferPointer { BlockHash.chain(t, blockTokens: 4, into: $0) } }
        #expect(n == 10)
        #expect(out == Array(BlockHash.chain(tokens, blockTokens: 4).prefix(3)))
    }
}

extension BlockHash {
    static func block(parent: UInt64, tokens: [Int32]) -> UInt64 {
        tokens.withUnsafeBufferPointer { block(parent: parent, tokens: $0) }
    }
}
