#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Nanoseconds on the monotonic clock (`CLOCK_MONOTONIC`): never jumps with the wall clock,
/// starts at an arbitrary point, so only differences mean anything. The one clock the engine's
/// timeouts, the CLI's latencies and the simulator's run times read. Cost: about 20 ns (vDSO on
/// Linux: no system call, no lock); inlinable, so callers in other modules inline it as before.
@inlinable @inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}
