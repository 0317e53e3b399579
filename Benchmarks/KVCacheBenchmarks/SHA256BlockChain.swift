/// vLLM's default block hash (`prefix_caching_hash_algo` "sha256", `hash_block_tokens` in
/// `vllm/v1/core/kv_cache_utils.py`) for `VLLMBlockPool`'s `.sha256` naming: block i's digest is
/// SHA-256 over block i-1's digest and block i's token ids, so equal digests mean equal prefixes
/// unless SHA-256 collides (collision resistance: no crafted prompt reads another's blocks).
///
/// vLLM hashes the pickled (or CBOR-encoded) tuple `(parent digest, token ids, extra keys)`;
/// here the message is the raw bytes, the parent's 32-byte digest then each token id as a
/// little-endian 32-bit integer (32 + 4 x `blockTokens` bytes), with no extra keys. The
/// serialisation's cost is left out, which flatters vLLM. The first block's parent is 32 zero
/// bytes (vLLM's `NONE_HASH` is random per process: the same cost).
///
/// Costs: one SHA-256 of 32 + 4 x `blockTokens` bytes per full block (2 compressions at 16
/// tokens), no allocation.
enum SHA256BlockChain {
    /// Bytes of one block's message: the parent digest and the block's tokens.
    static func messageBytes(blockTokens: Int) -> Int { 32 + 4 * blockTokens }

    /// Writes the digests of the first `out.count` full blocks of `tokens` into `out`, in order,
    /// building each block's message in `message` (at least `messageBytes(blockTokens:)` bytes).
    /// Precondition: `out.count * blockTokens <= tokens.count`.
    static func chain(_ tokens: UnsafeBufferPointer<Int32>, blockTokens: Int, message: UnsafeMutableRawBufferPointer,
                      into out: UnsafeMutableBufferPointer<SHA256.Digest>) {
        precondition(out.count * blockTokens <= tokens.count && message.count >= messageBytes(blockTokens: blockTokens))
        let bytes = UnsafeRawBufferPointer(rebasing: message[0..<messageBytes(blockTokens: blockTokens)])
        var parent = SHA256.Digest(repeating: 0)
        for i in 0..<out.count {
            for j in 0..<8 { message.storeBytes(of: parent[j].bigEndian, toByteOffset: 4 * j, as: UInt32.self) }
            for j in 0..<blockTokens {
                let token = UInt32(bitPattern: tokens[i * blockTokens + j])
                message.storeBytes(of: token.littleEndian, toByteOffset: 32 + 4 * j, as: UInt32.self)
            }
            parent = SHA256.hash(bytes)
            out[i] = parent
        }
    }
}
