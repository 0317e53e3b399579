import Glibc
import Synchronization

/// Epochs of engines' event streams (`Engine.eventEpoch`): the engine's creation time in
/// nanoseconds since 1970 (`CLOCK_REALTIME`), made strictly greater than every epoch this
/// process drew before. So an instance's restarted engine has a greater epoch than the engine
/// it replaces (across processes and hosts, as long as their clocks agree to better than the
/// time a restart takes), and a consumer judges any smaller epoch a dead engine's: its
/// batches are late (`Router.observe(_:epoch:firstSequence:events:)`). Never 0. Cost: one
/// clock read and one compare-exchange.
public enum EventEpoch {
    private static let last = Atomic<UInt64>(0)

    /// The next epoch.
    public static func next() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let clock = UInt64(max(0, now.tv_sec)) &* 1_000_000_000 &+ UInt64(max(0, now.tv_nsec))
        var seen = last.load(ordering: .relaxed)
        while true {
            let epoch = max(clock, seen &+ 1, 1)
            let (exchanged, original) = last.compareExchange(expected: seen, desired: epoch, ordering: .relaxed)
            if exchanged { return epoch }
            seen = original
        }
    }
}
