/// What /proc/self/smaps says about this process's mappings that overlap an address range:
/// what the kernel did with a region (resident bytes, huge pages, THP eligibility), for tests
/// that must not take the code's own word for it.
public struct SmapsFields {
    /// The fields of the overlapping mappings, keyed by name without the colon: kB fields
    /// ("Rss", "ShmemPmdMapped", ...) summed over the mappings, in bytes; other numeric fields,
    /// flags such as "THPeligible", the largest of the mappings' values.
    public let fields: [String: UInt64]
    /// How many mappings overlap the range (0: nothing is mapped there).
    public let mappings: Int

    /// The mappings of this process that overlap `[start, start + bytes)`; nil when
    /// /proc/self/smaps cannot be read.
    public init?(start: UInt, bytes: UInt) {
        guard let lines = procFileLines("/proc/self/smaps") else { return nil }
        var fields: [String: UInt64] = [:]
        var mappings = 0
        var inside = false
        for line in lines {
            if let range = Self.addressRange(line) {
                inside = range.lowerBound < start + bytes && range.upperBound > start
                if inside { mappings += 1 }
            } else if inside, let colon = line.firstIndex(of: ":") {
                let words = line[line.index(after: colon)...].split(separator: " ")
                guard let value = words.first.flatMap({ UInt64($0) }) else { continue }
                let name = String(line[..<colon])
                if words.count > 1 && words[1] == "kB" { fields[name, default: 0] += value * 1024 }
                else { fields[name] = max(fields[name] ?? 0, value) }
            }
        }
        self.fields = fields
        self.mappings = mappings
    }

    /// The mapping of this process that holds `address`; nil when smaps cannot be read.
    public init?(containing address: UInt) { self.init(start: address, bytes: 1) }

    /// The `lo-hi` address range that starts a mapping's header line; nil for a field line.
    private static func addressRange(_ line: Substring) -> Range<UInt>? {
        guard let dash = line.firstIndex(of: "-"), let space = line.firstIndex(of: " "), dash < space,
              let lo = UInt(line[..<dash], radix: 16), let hi = UInt(line[line.index(after: dash)..<space], radix: 16)
        else { return nil }
        return lo..<hi
    }
}

/// The kB field `field` (e.g. "Rss", "ShmemPmdMapped") of this process's mappings that overlap
/// `[start, start + bytes)`, summed, in bytes (0 when no mapping has it); `UInt64.max` when
/// /proc/self/smaps cannot be read.
public func smapsBytes(_ field: String, start: UInt, bytes: UInt) -> UInt64 {
    guard let smaps = SmapsFields(start: start, bytes: bytes) else { return UInt64.max }
    return smaps.fields[field] ?? 0
}

/// Resident bytes of this process's mappings that overlap `[start, start + bytes)`: the physical
/// memory an engine's K/V region holds, unaffected by whatever else the test process allocates
/// meanwhile. `UInt64.max` when /proc/self/smaps cannot be read.
public func residentBytes(start: UInt, bytes: UInt) -> UInt64 { smapsBytes("Rss", start: start, bytes: bytes) }
