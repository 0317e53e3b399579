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

/// A new condition variable whose timed waits (`timedWait`) read the monotonic clock; the
/// caller destroys (`pthread_cond_destroy`) and deallocates it.
func monotonicCondition() -> UnsafeMutablePointer<pthread_cond_t> {
    let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    var attributes = pthread_condattr_t()
    pthread_condattr_init(&attributes)
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
    pthread_cond_init(condition, &attributes)
    pthread_condattr_destroy(&attributes)
    return condition
}

/// Waits on `condition` (from `monotonicCondition`), releasing `mutex`, until it is signalled
/// or `deadlineNanoseconds` (`monotonicNanoseconds`) passes; may return early for nothing.
func timedWait(_ condition: UnsafeMutablePointer<pthread_cond_t>, _ mutex: UnsafeMutablePointer<pthread_mutex_t>,
               until deadlineNanoseconds: UInt64) {
    var ts = timespec(tv_sec: Int(deadlineNanoseconds / 1_000_000_000), tv_nsec: Int(deadlineNanoseconds % 1_000_000_000))
    pthread_cond_timedwait(condition, mutex, &ts)
}
