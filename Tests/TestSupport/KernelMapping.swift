/// What the kernel says about the mapping of this process that holds an address: its
/// /proc/self/smaps fields and its /proc/self/numa_maps line. Tests read this to check what
/// the kernel did (page sizes, page placement), not the settings the code itself reads.
public struct KernelMapping {
    /// The smaps fields of the mapping: kB fields ("Rss", "ShmemPmdMapped", ...) in bytes,
    /// flags ("THPeligible") as their number.
    public let smaps: [String: UInt64]
    /// The mapping's NUMA policy as numa_maps prints it ("default", "bind:0", ...).
    public let policy: String
    /// The mapping's resident pages on each NUMA node (numa_maps' `N<node>=<pages>`).
    public let pagesByNode: [Int: UInt64]

    /// The mapping holding `address`; nil when it is not mapped or /proc cannot be read.
    public init?(containing address: UnsafeRawPointer) {
        let at = UInt(bitPattern: address)
        guard let smaps = SmapsFields(containing: at), smaps.mappings > 0 else { return nil }
        // numa_maps starts each line with the mapping's start address alone.
        var numa: [Substring]?
        for line in procFileLines("/proc/self/numa_maps") ?? [] {
            let words = line.split(separator: " ")
            if let start = words.first.flatMap({ UInt($0, radix: 16) }), start <= at { numa = words }
            else if let start = words.first.flatMap({ UInt($0, radix: 16) }), start > at { break }
        }
        guard let numa, numa.count > 1 else { return nil }
        self.smaps = smaps.fields
        policy = String(numa[1])
        var pages: [Int: UInt64] = [:]
        for word in numa where word.hasPrefix("N") {
            let parts = word.dropFirst().split(separator: "=")
            if parts.count == 2, let node = Int(parts[0]), let n = UInt64(parts[1]) { pages[node] = n }
        }
        pagesByNode = pages
    }
}
