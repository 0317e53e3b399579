import ArgumentParser
import KVReport

/// A byte count given on the command line: a plain integer, or one with a binary suffix
/// (`K`, `KiB`, `M`, `MiB`, `G`, `GiB`, `T`, `TiB`; case-insensitive, all powers of 1024).
struct ByteCount: ExpressibleByArgument, CustomStringConvertible, Sendable {
    var bytes: UInt64

    init(bytes: UInt64) { self.bytes = bytes }

    init?(argument: String) {
        let text = argument.trimmingCharacters(in: " ")
        let digits = text.prefix { $0.isNumber }
        guard !digits.isEmpty, let value = UInt64(digits) else { return nil }
        let suffix = text.dropFirst(digits.count).lowercased()
        let shift: UInt64
        switch suffix {
        case "", "b": shift = 0
        case "k", "kb", "kib": shift = 10
        case "m", "mb", "mib": shift = 20
        case "g", "gb", "gib": shift = 30
        case "t", "tb", "tib": shift = 40
        default: return nil
        }
        guard value <= UInt64.max >> shift else { return nil }
        bytes = value << shift
    }

    var description: String { Self.format(bytes) }

    /// How a byte-size option is written, for its help: every such option names it.
    static let syntax = "bytes, or a whole number with K, M, G or T (KiB...TiB, powers of 1024), e.g. 512MiB, 2GiB"

    /// `bytes` in the largest binary unit that keeps the value at least 1, e.g. `1.50 GiB`.
    static func format(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(bytes) B" }
        if value == value.rounded() { return "\(Int(value)) \(units[unit])" }
        return fixed(value, 2) + " " + units[unit]
    }

    /// The default as the help shows it, in the form the parser takes (`1GiB`; bytes when no
    /// unit holds it whole): `description`'s `1 GiB` was refused when typed back.
    var defaultValueDescription: String {
        for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] where bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return "\(bytes >> shift)\(unit)"
        }
        return "\(bytes)"
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: Character) -> Substring {
        var s = Substring(self)
        while s.first == set { s.removeFirst() }
        while s.last == set { s.removeLast() }
        return s
    }
}
