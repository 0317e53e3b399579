/// The engine's private, keyed fingerprint of full blocks: what the prefix index checks before
/// it serves a cached block's K/V to a prompt, since the public `BlockHash` is not collision
/// resistant (its rounds are invertible: a crafted block hashes like any given one in ~2^32
/// steps, and vLLM moved to sha256 for the same reason, GHSA-rm76-4mrf-v9r8).
///
/// Chain (a block's fingerprint covers its tokens and, through its parent's, every token
/// before it and the salt):
/// ```
/// root(salt)                 = nz(SipHash-2-4_key(le64(salt)))
/// block(parent_fp, tokens)   = nz(SipHash-2-4_key(le64(parent_fp) || le32(t0) || le32(t1) ...))
/// nz(v)                      = v, or 1 when v is 0
/// ```
/// SipHash-2-4 (Aumasson and Bernstein, 2012) is a PRF of its 128-bit key: without the key, a
/// prompt whose fingerprint equals another's is found only by chance, 2^-64 per try, and the
/// fingerprints never leave the engine (events, routers and `kvc_hash_tokens` see only the
/// public hash). A root's input (8 bytes) is shorter than any block's (at least 12), so no
/// block's fingerprint stands for a root. 0 is never a fingerprint: it means "unknown" (a
/// block indexed from hashes alone, `Engine.createSequence(_:blockHashes:tokens:)`, whose
/// tokens the engine never saw), and a block chained from an unknown one is unknown too. A
/// lookup with fingerprint 0 takes the first block of the hash whatever its fingerprint, while
/// one with a fingerprint never takes a block of fingerprint 0 (`HashChains.find`).
///
/// Cost: about two SipHash rounds per two tokens; no allocation.
struct BlockFingerprint: Equatable {
    private let k0: UInt64
    private let k1: UInt64

    /// A fingerprint under the 128-bit key `k0`, `k1` (little-endian halves of the key).
    init(k0: UInt64, k1: UInt64) {
        self.k0 = k0
        self.k1 = k1
    }

    /// A fingerprint under a fresh 128-bit key from the system's secure generator
    /// (`SystemRandomNumberGenerator`: `getrandom` on Linux).
    static func random() -> BlockFingerprint {
        var generator = SystemRandomNumberGenerator()
        return BlockFingerprint(k0: generator.next(), k1: generator.next())
    }

    /// The key as 32 hexadecimal digits, `k0` first (`TierIdentity`'s `fingerprint_key`).
    var keyText: String {
        [k0, k1].map { let h = String($0, radix: 16); return String(repeating: "0", count: 16 - h.count) + h }.joined()
    }

    /// The fingerprint of a key in `keyText`'s form, or nil when `text` is not one.
    init?(keyText text: Substring) {
        guard text.count == 32, let k0 = UInt64(text.prefix(16), radix: 16), let k1 = UInt64(text.suffix(16), radix: 16) else { return nil }
        self.init(k0: k0, k1: k1)
    }

    /// The fingerprint the first block of a chain under `salt` chains from. O(1).
    func root(salt: UInt64) -> UInt64 {
        var s = SipState(k0: k0, k1: k1)
        s.compress(salt)
        return Self.nonZero(s.finish(length: 8, tail: 0))
    }

    /// The fingerprint of a full block of `tokens` whose parent's fingerprint is `parent`, or 0
    /// when `parent` is 0 (unknown). O(tokens).
    @inline(__always)
    func block(parent: UInt64, tokens: UnsafeBufferPointer<Int32>) -> UInt64 {
        guard parent != 0 else { return 0 }
        var s = SipState(k0: k0, k1: k1)
        s.compress(parent)
        let n = tokens.count
        var i = 0
        while i + 1 < n {
            s.compress(UInt64(UInt32(bitPattern: tokens[i])) | UInt64(UInt32(bitPattern: tokens[i + 1])) << 32)
            i += 2
        }
        let tail = i < n ? UInt64(UInt32(bitPattern: tokens[i])) : 0
        return Self.nonZero(s.finish(length: 8 + 4 * n, tail: tail))
    }

    /// Writes the fingerprints of the first `into.count` full blocks of `tokens` under `salt`
    /// (`BlockHash.chain`'s blocks). Precondition: `into.count * blockTokens <= tokens.count`.
    func chain(_ tokens: UnsafeBufferPointer<Int32>, blockTokens: Int, salt: UInt64, into: UnsafeMutableBufferPointer<UInt64>) {
        var parent = root(salt: salt)
        for i in 0..<into.count {
            parent = block(parent: parent, tokens: UnsafeBufferPointer(rebasing: tokens[i * blockTokens..<(i + 1) * blockTokens]))
            into[i] = parent
        }
    }

    @inline(__always) private static func nonZero(_ v: UInt64) -> UInt64 { v == 0 ? 1 : v }
}

/// SipHash's state over a message of little-endian 64-bit words (SipHash-2-4: two rounds per
/// word, four to finish), as the specification defines it.
private struct SipState {
    var v0, v1, v2, v3: UInt64

    @inline(__always) init(k0: UInt64, k1: UInt64) {
        v0 = k0 ^ 0x736f_6d65_7073_6575
        v1 = k1 ^ 0x646f_7261_6e64_6f6d
        v2 = k0 ^ 0x6c79_6765_6e65_7261
        v3 = k1 ^ 0x7465_6462_7974_6573
    }

    @inline(__always) private static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    @inline(__always) private mutating func round() {
        v0 = v0 &+ v1; v1 = Self.rotl(v1, 13); v1 ^= v0; v0 = Self.rotl(v0, 32)
        v2 = v2 &+ v3; v3 = Self.rotl(v3, 16); v3 ^= v2
        v0 = v0 &+ v3; v3 = Self.rotl(v3, 21); v3 ^= v0
        v2 = v2 &+ v1; v1 = Self.rotl(v1, 17); v1 ^= v2; v2 = Self.rotl(v2, 32)
    }

    /// Absorbs one full 8-byte word of the message.
    @inline(__always) mutating func compress(_ m: UInt64) {
        v3 ^= m
        round(); round()
        v0 ^= m
    }

    /// Absorbs the last word (the message's `length % 8` trailing bytes in `tail`, its length
    /// mod 256 in the top byte) and returns the 64-bit output.
    @inline(__always) mutating func finish(length: Int, tail: UInt64) -> UInt64 {
        compress(tail | UInt64(truncatingIfNeeded: length) << 56)
        v2 ^= 0xff
        round(); round(); round(); round()
        return v0 ^ v1 ^ v2 ^ v3
    }
}
