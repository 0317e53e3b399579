#if canImport(Glibc)
import Glibc
#endif

/// Resident bytes of this process's mappings that overlap `[start, start + bytes)`, summed from
/// /proc/self/smaps: the physical memory an engine's K/V region holds, unaffected by whatever
/// else the test process allocates meanwhile.
func residentBytes(start: UInt, bytes: UInt) -> UInt64 { smapsBytes("Rss:", start: start, bytes: bytes) }

/// The kB field `field` (e.g. "Rss:", "ShmemPmdMapped:") of this process's mappings that overlap
/// `[start, start + bytes)`, summed from /proc/self/smaps, in bytes; `UInt64.max` when smaps
/// cannot be read.
func smapsBytes(_ field: String, start: UInt, bytes: UInt) -> UInt64 {
    guard let f = fopen("/proc/self/smaps", "r") else { return UInt64.max }
    defer { fclose(f) }
    var total: UInt64 = 0
    var inside = false
    var line = [CChar](repeating: 0, count: 4096)
    while fgets(&line, Int32(line.count), f) != nil {
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if let dash = text.firstIndex(of: "-"), let space = text.firstIndex(of: " "), dash < space,
           let lo = UInt(text[..<dash], radix: 16), let hi = UInt(text[text.index(after: dash)..<space], radix: 16) {
            inside = lo < start + bytes && hi > start
        } else if inside && text.hasPrefix(field) {
            let kb = text.dropFirst(field.count).split(separator: " ").first.flatMap { UInt64($0) } ?? 0
            total += kb * 1024
        }
    }
    return total
}
