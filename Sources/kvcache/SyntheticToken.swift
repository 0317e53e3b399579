import KVCache

/// Token ids are drawn from `0..<vocabularySize` (a Llama-3-sized vocabulary).
let vocabularySize: UInt64 = 128_000

/// The token at `position` of a deterministic stream named `stream`: equal (stream, position)
/// give equal tokens; different streams are unrelated.
@inline(__always)
func syntheticToken(stream: UInt64, position: Int) -> Int32 {
    Int32(truncatingIfNeeded: SplitMix64.mix(stream &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(position)) % vocabularySize)
}
