import KVCache

/// Speculative decoding as `kvcache load --draft-tokens` drives it: each decode step of a
/// sequence appends the token the last step sampled plus `draftTokens` draft tokens (the
/// target model's verification pass needs K/V slots for all of them, as vLLM's scheduler
/// allocates `1 + num_speculative_tokens` slots), then truncates away the drafts the target
/// model rejected (`Engine.truncate`).
///
/// Each draft is accepted with probability `acceptance` until the first rejection, the usual
/// model of draft acceptance (the Leviathan et al. analysis); a step keeps
/// `1 + accepted` tokens. Draws are counter-based (a hash of the sequence id, its length and the
/// draft's index), so a run is reproducible and threads share no generator. O(draftTokens) per
/// step, no allocation.
struct SpeculativeDecoding: Sendable {
    /// Draft tokens per step (`1...`).
    var draftTokens: Int
    /// Probability that a draft is accepted, given that the drafts before it were (`0...1`).
    var acceptance: Double

    /// Tokens a step of sequence `stream` at `length` tokens keeps, `1...draftTokens + 1`:
    /// the sampled token plus the drafts accepted before the first rejection.
    func keptTokens(stream: UInt64, length: Int) -> Int {
        var kept = 1
        let base = SplitMix64.mix(stream &* 0xD1B5_4A32_D192_ED03 &+ UInt64(length))
        while kept <= draftTokens {
            let bits = SplitMix64.mix(base &+ UInt64(kept))
            // The top 53 bits as a uniform double in [0, 1).
            guard Double(bits >> 11) * 0x1p-53 < acceptance else { break }
            kept += 1
        }
        return kept
    }

    /// A rejected draft's token at `position` of sequence `stream`: from a stream unrelated to
    /// the sequence's own tokens (a wrong guess), so blocks that drafts fill hash apart from
    /// the blocks the accepted tokens later fill.
    static func rejectedToken(stream: UInt64, position: Int) -> Int32 {
        syntheticToken(stream: ~stream, position: position)
    }
}
