import Testing
@testable import KVCache

/// `BlockFingerprint` is SipHash-2-4 over the documented message: checked against the
/// reference vectors for key 00 01 ... 0f and messages 00 01 ... (what `openssl mac -macopt
/// hexkey:000102030405060708090a0b0c0d0e0f -macopt size:8 SIPHASH` prints, as output bytes in
/// order: the 64-bit values below read them little-endian).
@Suite struct BlockFingerprintTests {
    private let key = BlockFingerprint(k0: 0x0706_0504_0302_0100, k1: 0x0F0E_0D0C_0B0A_0908)

    @Test func rootsAndBlocksAreSipHash24OfTheirMessages() {
        #expect(key.root(salt: 0x0706_0504_0302_0100) == 0x93F5_F579_9A93_2462, "8 bytes 00..07")
        let twelve: [Int32] = [0x0B0A_0908]
        #expect(twelve.withUnsafeBufferPointer { key.block(parent: 0x0706_0504_0302_0100, tokens: $0) } == 0x751E_8FBC_860E_E5FB,
                "12 bytes 00..0b")
        let sixteen: [Int32] = [0x0B0A_0908, 0x0F0E_0D0C]
        #expect(sixteen.withUnsafeBufferPointer { key.block(parent: 0x0706_0504_0302_0100, tokens: $0) } == 0x3F2A_CC7F_57C2_9BDB,
                "16 bytes 00..0f")
    }

    @Test func anUnknownParentGivesAnUnknownBlockAndKeysDiffer() {
        let tokens: [Int32] = Array(1...16)
        #expect(tokens.withUnsafeBufferPointer { key.block(parent: 0, tokens: $0) } == 0)
        let other = BlockFingerprint(k0: 1, k1: 2)
        #expect(key.root(salt: 0) != 0 && key.root(salt: 0) != other.root(salt: 0))
        #expect(key.root(salt: 1) != key.root(salt: 0))
    }

    @Test func theKeyTextRoundTrips() {
        #expect(key.keyText == "07060504030201000f0e0d0c0b0a0908")
        #expect(BlockFingerprint(keyText: Substring(key.keyText)) == key)
        #expect(BlockFingerprint(keyText: "0706") == nil)
    }
}
