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

    /// A salt changes the first block's parent (`root`), so every block of the chain; salt 0
    /// is the unsalted chain. Pinned against tools/block_hash.py (`chain(range(8), 4, 7)`).
    @Test func aSaltedChainDiffersInEveryBlockAndSaltZeroIsTheUnsaltedChain() {
        let plain = BlockHash.chain(Array(0..<8), blockTokens: 4)
        #expect(BlockHash.chain(Array(0..<8), blockTokens: 4, salt: 0) == plain)
        let salted = BlockHash.chain(Array(0..<8), blockTokens: 4, salt: 7)
        #expect(salted == [0x2f1e_604d_f226_0e00, 0xaaa7_ac03_3d2b_e9e7])
        #expect(salted[0] == BlockHash.block(parent: BlockHash.root(salt: 7), tokens: [0, 1, 2, 3]))
        #expect(salted[1] == BlockHash.block(parent: salted[0], tokens: [4, 5, 6, 7]))
        #expect(BlockHash.root(salt: 0) == 0 && BlockHash.root(salt: 7) == 0x21df_1b58_8187_8b7c)
        let roots = Set((1...1000).map { BlockHash.root(salt: UInt64($0)) } + [BlockHash.root(salt: .max)])
        #expect(roots.count == 1001 && !roots.contains(0), "every salt a distinct, non-zero root")
        #expect(BlockHash.chain(Array(0..<8), blockTokens: 4, salt: 8) != salted)
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
