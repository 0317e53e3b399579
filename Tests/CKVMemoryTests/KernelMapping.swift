#if canImport(Glibc)
import Glibc
#endif

/// What the kernel says about the mapping of this process that holds an address: its
/// /proc/self/smaps fields and its /proc/self/numa_maps line. Tests read this to check what
/// the kernel did (page sizes, page placement), not the settings the code itself reads.
struct KernelMapping {
    /// The smaps fields of the mapping: kB fields ("Rss", "ShmemPmdMapped", ...) in bytes,
    /// flags ("THPeligible") as their number.
    let smaps: [String: UInt64]
    /// The mapping's NUMA policy as numa_maps prints it ("default", "bind:0", ...).
    let policy: String
    /// The mapping's resident pages on each NUMA node (numa_maps' `N<node>=<pages>`).
    let pagesByNode: [Int: UInt64]

    /// The mapping holding `address`; nil when it is not mapped or /proc cannot be read.
    init?(containing address: UnsafeRawPointer) {
        let at = UInt(bitPattern: address)
        var smaps: [String: UInt64] = [:]
        var inside = false
        var found = false
        for line in Self.lines("/proc/self/smaps") {
            if let range = Self.addressRange(line) {
                inside = range.contains(at)
                found = found || inside
            } else if inside, let colon = line.firstIndex(of: ":") {
                let words = line[line.index(after: colon)...].split(separator: " ")
                guard let value = words.first.flatMap({ UInt64($0) }) else { continue }
                smaps[String(line[..<colon])] = words.count > 1 && words[1] == "kB" ? value * 1024 : value
            }
        }
        // numa_maps starts each line with the mapping's start address alone.
        var numa: [Substring]?
        for line in Self.lines("/proc/self/numa_maps") {
            let words = line.split(separator: " ")
            if let start = words.first.flatMap({ UInt($0, radix: 16) }), start <= at { numa = words }
            else if let start = words.first.flatMap({ UInt($0, radix: 16) }), start > at { break }
        }
        guard found, let numa, numa.count > 1 else { return nil }
        self.smaps = smaps
        policy = String(numa[1])
        var pages: [Int: UInt64] = [:]
        for word in numa where word.hasPrefix("N") {
            let parts = word.dropFirst().split(separator: "=")
            if parts.count == 2, let node = Int(parts[0]), let n = UInt64(parts[1]) { pages[node] = n }
        }
        pagesByNode = pages
    }

    /// The `lo-hi` address range that starts a smaps mapping header line, or nil for a field line.
    private static func addressRange(_ line: Substring) -> Range<UInt>? {
        guard let dash = line.firstIndex(of: "-"), let space = line.firstIndex(of: " "), dash < space,
              let lo = UInt(line[..<dash], radix: 16), let hi = UInt(line[line.index(after: dash)..<space], radix: 16)
        else { return nil }
        return lo..<hi
    }

    /// The lines of a /proc file (empty when it cannot be read).
    private static func lines(_ path: String) -> [Substring] {
        guard let f = fopen(path, "r") else { return [] }
        defer { fclose(f) }
        var text: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, f)
            if n <= 0 { break }
            text += chunk[..<n]
        }
        return String(decoding: text, as: UTF8.self).split(separator: "\n")
    }
}
