#if canImport(Glibc)
import Glibc
#endif

/// The process's address space in use (VmSize of /proc/self/status), in bytes; 0 when it
/// cannot be read. For tests that set RLIMIT_AS a margin above it (in an exit test's child:
/// the limit is process-wide).
public func addressSpaceBytes() -> Int { processStatusBytes("VmSize") }

/// A field of /proc/self/status counted in kB (VmSize, VmRSS, VmHWM, ...), in bytes; 0 when it
/// cannot be read.
public func processStatusBytes(_ field: String) -> Int {
    let key = field + ":"
    guard let lines = procFileLines("/proc/self/status"),
          let line = lines.first(where: { $0.hasPrefix(key) }) else { return 0 }
    return (Int(line.dropFirst(key.count).filter(\.isNumber)) ?? 0) * 1024
}

/// Sets the process's peak resident set (VmHWM) to its current one (VmRSS), by writing "5" to
/// /proc/self/clear_refs (Linux 4.0+), so that a later VmHWM is the peak of what ran since.
/// False when the file cannot be written. Exit tests' children only: the peak is process-wide.
@discardableResult
public func resetPeakResident() -> Bool {
    let fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    return write(fd, "5", 1) == 1
}

/// Sets RLIMIT_AS's soft limit to `extra` bytes above the address space in use, or, nil, back
/// to the hard limit. Exit tests' children only: the limit is process-wide.
public func limitAddressSpace(extra: Int?) {
    var l = rlimit()
    getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &l)
    l.rlim_cur = extra.map { rlim_t(addressSpaceBytes() + $0) } ?? l.rlim_max
    precondition(setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &l) == 0, "setrlimit(RLIMIT_AS): \(String(cString: strerror(errno)))")
}
