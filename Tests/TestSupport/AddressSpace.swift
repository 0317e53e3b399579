#if canImport(Glibc)
import Glibc
#endif

/// The process's address space in use (VmSize of /proc/self/status), in bytes; 0 when it
/// cannot be read. For tests that set RLIMIT_AS a margin above it (in an exit test's child:
/// the limit is process-wide).
public func addressSpaceBytes() -> Int {
    guard let lines = procFileLines("/proc/self/status"),
          let line = lines.first(where: { $0.hasPrefix("VmSize:") }) else { return 0 }
    return (Int(line.dropFirst(7).filter(\.isNumber)) ?? 0) * 1024
}

/// Sets RLIMIT_AS's soft limit to `extra` bytes above the address space in use, or, nil, back
/// to the hard limit. Exit tests' children only: the limit is process-wide.
public func limitAddressSpace(extra: Int?) {
    var l = rlimit()
    getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &l)
    l.rlim_cur = extra.map { rlim_t(addressSpaceBytes() + $0) } ?? l.rlim_max
    precondition(setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &l) == 0, "setrlimit(RLIMIT_AS): \(String(cString: strerror(errno)))")
}
