#if canImport(Glibc)
import Glibc
#endif

/// The /proc/self/smaps fields of this process's mappings that overlap `[start, start + bytes)`:
/// kB fields ("Rss", "ShmemPmdMapped", ...) summed, in bytes; flags ("THPeligible") the largest
/// of the mappings'. Empty when smaps cannot be read. What the kernel did with an engine's K/V
/// region, for tests that must not take the engine's word for it.
func regionSmaps(start: UInt, bytes: UInt) -> [String: UInt64] {
    guard let f = fopen("/proc/self/smaps", "r") else { return [:] }
    defer { fclose(f) }
    var fields: [String: UInt64] = [:]
    var inside = false
    var line = [CChar](repeating: 0, count: 4096)
    while fgets(&line, Int32(line.count), f) != nil {
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if let dash = text.firstIndex(of: "-"), let space = text.firstIndex(of: " "), dash < space,
           let lo = UInt(text[..<dash], radix: 16), let hi = UInt(text[text.index(after: dash)..<space], radix: 16) {
            inside = lo < start + bytes && hi > start
        } else if inside, let colon = text.firstIndex(of: ":") {
            let words = text[text.index(after: colon)...].split(whereSeparator: { $0 == " " || $0 == "\n" })
            guard let value = words.first.flatMap({ UInt64($0) }) else { continue }
            let name = String(text[..<colon])
            if words.count > 1 && words[1] == "kB" { fields[name, default: 0] += value * 1024 }
            else { fields[name] = max(fields[name] ?? 0, value) }
        }
    }
    return fields
}
