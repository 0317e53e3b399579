#if canImport(Glibc)
import Glibc
#endif

/// SplitMix64: a small, fast, seeded generator, so a workload is the same on every run and
/// machine for the same seed (Swift's `SystemRandomNumberGenerator` is not seedable).
struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.mix(state)
    }

    /// SplitMix64's output function: a stateless hash of one word, used to derive tokens.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform double in (0, 1): never 0, so its logarithm is finite.
    mutating func unitInterval() -> Double {
        (Double(next() >> 11) + 0.5) / Double(1 << 53)
    }

    /// A standard normal variate (Box-Muller).
    mutating func normal() -> Double {
        let u1 = unitInterval()
        let u2 = unitInterval()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// An exponential variate with the given mean.
    mutating func exponential(mean: Double) -> Double {
        -log(unitInterval()) * mean
    }
}

/// Token ids are drawn from `0..<vocabularySize` (a Llama-3-sized vocabulary).
let vocabularySize: UInt64 = 128_000

/// The token at `position` of a deterministic stream named `stream`: equal (stream, position)
/// give equal tokens; different streams are unrelated.
@inline(__always)
func syntheticToken(stream: UInt64, position: Int) -> Int32 {
    Int32(truncatingIfNeeded: SeededRandom.mix(stream &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(position)) % vocabularySize)
}
