#if canImport(Glibc)
import Glibc
#endif

/// SplitMix64 (Steele et al.): a tiny, fully specified, seedable generator, so a seed means the
/// same stream on every machine (Swift's `SystemRandomNumberGenerator` is not seedable). Used
/// by k-means seeding, every synthetic workload and trace generator, and the tests. Each draw
/// is O(1) and allocation-free.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// A generator starting from `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.mix(state)
    }

    /// SplitMix64's output function: a stateless hash of one word, for counter-based streams.
    @inline(__always)
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform double in (0, 1): never 0, so its logarithm is finite.
    public mutating func unit() -> Double { (Double(next() >> 11) + 0.5) / Double(1 << 53) }

    /// A standard normal variate (Box-Muller, one per two draws).
    public mutating func normal() -> Double {
        let u1 = unit(), u2 = Double(next() >> 11) / Double(1 << 53)
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// An exponential variate with mean `mean`.
    public mutating func exponential(mean: Double) -> Double { -log(unit()) * mean }
}
