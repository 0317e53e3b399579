#if canImport(Glibc)
import Glibc
#endif

/// prctl(2) with integer arguments: the C function is variadic (not imported), so it is called
/// through a fixed-argument pointer, which the x86-64 and AArch64 calling conventions pass the
/// same way for integer arguments. Process-global: only in an exit test's child. Returns what
/// prctl returns (-1 with errno set on failure).
public func prctl(_ option: Int32, _ arg2: UInt, _ arg3: UInt = 0) -> Int32 {
    typealias Prctl = @convention(c) (Int32, UInt, UInt, UInt, UInt) -> Int32
    guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "prctl") else { errno = ENOSYS; return -1 }
    return unsafeBitCast(symbol, to: Prctl.self)(option, arg2, arg3, 0, 0)
}
