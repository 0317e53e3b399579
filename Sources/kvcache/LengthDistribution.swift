import ArgumentParser
import KVCache
#if canImport(Glibc)
import Glibc
#endif

/// The shape of a length distribution (`--prompt-dist`, `--output-dist`).
enum LengthShape: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// Lognormal with sigma 1 whose mean (before clamping to `1...max`) is `mean`: a long
    /// tail like real prompt and output lengths. A draw at or past `max` is `max`, however
    /// large (even past `Int.max`).
    case lognormal
    /// Uniform on `(2 * mean - max)...max`, so its mean is `mean`; needs `2 * mean - max >= 1`
    /// (computed without overflow: `LengthDistribution.uniformLow`).
    case uniform
    /// Always `mean`.
    case fixed
}

/// Token lengths drawn from a shape with a given mean and maximum.
struct LengthDistribution: Sendable, CustomStringConvertible {
    var shape: LengthShape
    var mean: Int
    var max: Int

    /// Lognormal sigma; 1.0 gives p99 near 10x the median, the order seen in serving traces.
    static let lognormalSigma = 1.0

    /// Throws a validation error naming `option` when the parameters cannot work together.
    func validate(_ option: String) throws {
        guard mean >= 1, max >= mean else {
            throw ValidationError("\(option): need 1 <= mean (\(mean)) <= max (\(max))")
        }
        if shape == .uniform, uniformLow < 1 {
            // 2 * mean - 1 < max <= Int.max here: the bound cannot overflow.
            throw ValidationError("\(option): a uniform distribution with mean \(mean) and max \(max) would need lengths below 1; lower max to at most \(2 * mean - 1)")
        }
    }

    /// The uniform shape's lowest length, `2 * mean - max`, computed without overflow for any
    /// `1 <= mean <= max` (validated), so that lengths near `Int.max` do not trap.
    var uniformLow: Int { mean - (max - mean) }

    /// One length in `1...max`.
    func sample(_ random: inout SplitMix64) -> Int {
        switch shape {
        case .fixed:
            return mean
        case .uniform:
            return Int.random(in: uniformLow...max, using: &random)
        case .lognormal:
            let sigma = Self.lognormalSigma
            let mu = log(Double(mean)) - sigma * sigma / 2
            let value = exp(mu + sigma * random.normal())
            // Compared as a Double first: a draw past Int.max would trap in the conversion.
            return value >= Double(max) ? max : Swift.min(max, Swift.max(1, Int(value.rounded())))
        }
    }

    var description: String {
        switch shape {
        case .fixed: "fixed \(mean)"
        case .uniform: "uniform \(uniformLow)...\(max)"
        case .lognormal: "lognormal mean \(mean) max \(max)"
        }
    }
}
