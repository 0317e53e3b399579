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
