#if canImport(Glibc)
import Glibc
#endif

/// The lines of a /proc file (e.g. "/proc/self/smaps", "/proc/self/numa_maps"), read whole so
/// that no line is cut however long; nil when the file cannot be opened.
public func procFileLines(_ path: String) -> [Substring]? {
    guard let f = fopen(path, "r") else { return nil }
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
