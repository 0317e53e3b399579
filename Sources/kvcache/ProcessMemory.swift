#if canImport(Glibc)
import Glibc
#endif

/// The resident set of this process, from `/proc/self/status` (Linux only).
struct ProcessMemory: Sendable {
    /// `VmRSS`: resident bytes now.
    var rssBytes: UInt64
    /// `VmHWM`: the peak of `VmRSS` since the process started, or since the last `resetPeak`.
    var peakRSSBytes: UInt64

    /// Sets `VmHWM` to the current `VmRSS` (writes "5" to `/proc/self/clear_refs`, Linux 4.0+),
    /// so that a run's peak is its own, not an earlier run's in the same process. False when
    /// the file cannot be written (the peak then stays the process's). Cost: an open and a write.
    @discardableResult
    static func resetPeak() -> Bool {
        let fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return write(fd, "5", 1) == 1
    }

    /// Reads `/proc/self/status`; both fields are 0 where it does not exist (not Linux).
    /// Cost: one open/read/close, a few microseconds; not for hot paths.
    static func current() -> ProcessMemory {
        var result = ProcessMemory(rssBytes: 0, peakRSSBytes: 0)
        guard let file = fopen("/proc/self/status", "re") else { return result }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if text.hasPrefix("VmRSS:") {
                result.rssBytes = kibibytes(text)
            } else if text.hasPrefix("VmHWM:") {
                result.peakRSSBytes = kibibytes(text)
            }
        }
        return result
    }

    /// Parses `Name:   1234 kB` into bytes.
    private static func kibibytes(_ line: String) -> UInt64 {
        let digits = line.drop { !$0.isNumber }.prefix { $0.isNumber }
        return (UInt64(digits) ?? 0) * 1024
    }
}
