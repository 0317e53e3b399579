/// The stable, seeded 64-bit block hash shared by the engine, the router and KV events.
///
/// Algorithm (version 1, fixed forever; any change needs a new name):
/// ```
/// SEED = 0x6b76636163686531            ("kvcache1")
/// P1 = 0x9E3779B185EBCA87, P2 = 0xC2B2AE3D27D4EB4F
/// block_hash(parent, tokens[0..<n]):
///   h = parent ^ SEED ^ (n * P1)
///   for t in tokens:                    t read as its 32-bit two's-complement pattern
///     h = rotl64(h ^ (t * P2), 31) * P1
///   v = fmix64(h)                       MurmurHash3's 64-bit finalizer
///   return v != 0 ? v : SEED            never 0 (0 is salt 0's root, and "no hash")
/// chain: parent of the first block is root(salt); parent of block i is the hash of block i - 1.
/// root(salt) = fmix64(salt * P1): 0 without a salt (salt 0), never 0 with one.
/// ```
/// All arithmetic wraps modulo 2^64. Only full blocks are hashed, so a chain of `k` hashes
/// covers the first `k * block_tokens` tokens. The result does not depend on the process,
/// the machine or its byte order, so instances and routers agree on it.
///
/// A salt keeps chains apart whose tokens are equal but whose K/V are not (another LoRA
/// adapter, another tenant's `cache_salt`): every block of a salted chain hashes differently
/// from the unsalted chain and from every other salt's, so no block is shared between them,
/// and the chain stays shared within one salt. Salt 0 is the unsalted chain.
///
/// A chained value is never 0: a block whose `fmix64` came out 0 (a 2^-64 chance for honest
/// tokens, ~2^32 work for crafted ones) would otherwise be the unsalted root, and the block
/// after it would hash like an unsalted prompt's first block (revinterop finding 2).
///
/// The hash is not collision resistant: every round is a bijection of `h` and `fmix64` is
/// invertible, so a block hashing like any given one is found in ~2^32 steps. The engine
/// never serves K/V by it alone: a hit must also match the private keyed
/// `BlockFingerprint`; a router may misroute a crafted prompt, nothing more.
///
/// Cost: about one multiply-rotate-multiply per token.
public enum BlockHash {
    /// The fixed seed of version 1.
    public static let seed: UInt64 = 0x6b76_6361_6368_6531
    @usableFromInline static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    @usableFromInline static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F

    /// The hash of one block of `tokens` whose parent block hashed to `parent` (0 for the first).
    @inlinable
    public static func block(parent: UInt64, tokens: UnsafeBufferPointer<Int32>) -> UInt64 {
        var h = parent ^ seed ^ (UInt64(tokens.count) &* p1)
        for t in tokens {
            let x = h ^ (UInt64(UInt32(bitPattern: t)) &* p2)
            h = ((x << 31) | (x >> 33)) &* p1
        }
        let v = finalize(h)
        return v != 0 ? v : seed
    }

    /// The parent of a chain's first block under `salt`: 0 for salt 0, and for any other salt
    /// a distinct non-zero value (`fmix64` and the multiplication by the odd `P1` are both
    /// bijections that keep 0 at 0). O(1).
    @inlinable
    public static func root(salt: UInt64) -> UInt64 { finalize(salt &* p1) }

    /// MurmurHash3's fmix64: spreads every input bit over the whole word.
    @inlinable
    public static func finalize(_ value: UInt64) -> UInt64 {
        var h = value
        h ^= h >> 33
        h = h &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 33
        h = h &* 0xC4CE_B9FE_1A85_EC53
        h ^= h >> 33
        return h
    }

    /// Writes the chained hashes of every full block of `tokens` under `salt` (0: none) into
    /// `into` and returns how many full blocks there are (`tokens.count / blockTokens`), which
    /// may exceed `into.count`: then only the first `into.count` are written.
    /// Precondition: `blockTokens > 0`.
    @discardableResult
    public static func chain(
        _ tokens: UnsafeBufferPointer<Int32>, blockTokens: Int, salt: UInt64 = 0, into: UnsafeMutableBufferPointer<UInt64>
    ) -> Int {
        precondition(blockTokens > 0)
        let full = tokens.count / blockTokens
        var parent = root(salt: salt)
        for i in 0..<min(full, into.count) {
            let slice = UnsafeBufferPointer(rebasing: tokens[i * blockTokens..<(i + 1) * blockTokens])
            parent = block(parent: parent, tokens: slice)
            into[i] = parent
        }
        return full
    }

    /// The chained hashes of every full block of `tokens` under `salt`, as an array
    /// (allocates; not for hot paths).
    public static func chain(_ tokens: [Int32], blockTokens: Int, salt: UInt64 = 0) -> [UInt64] {
        let full = tokens.count / blockTokens
        return [UInt64](unsafeUninitializedCapacity: full) { out, count in
            tokens.withUnsafeBufferPointer { count = chain($0, blockTokens: blockTokens, salt: salt, into: out) }
        }
    }
}
