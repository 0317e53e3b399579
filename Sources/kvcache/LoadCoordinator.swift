import KVCache
import Synchronization

/// What the workers of one load run share: the clock origin, the next unclaimed request, the
/// admission deadline, and a stop flag. Workers claim requests with one relaxed atomic add
/// each; nothing else is shared on the hot path.
final class LoadCoordinator: Sendable {
    /// Monotonic time the run started; request arrival times count from here.
    let startNanoseconds: UInt64
    /// No request is claimed at or after this offset from the start, nor one arriving then
    /// (`--duration`).
    let admitUntilNanoseconds: UInt64
    /// Requests in the workload.
    let requestCount: Int
    private let nextRequest = Atomic<Int>(0)
    private let offered = Atomic<Int>(0)
    private let stopped = Atomic<Bool>(false)
    private let failureMessage = Mutex<String?>(nil)

    init(startNanoseconds: UInt64, admitUntilNanoseconds: UInt64, requestCount: Int) {
        self.startNanoseconds = startNanoseconds
        self.admitUntilNanoseconds = admitUntilNanoseconds
        self.requestCount = requestCount
    }

    /// Nanoseconds since the start of the run.
    @inline(__always)
    func elapsedNanoseconds() -> UInt64 { monotonicNanoseconds() &- startNanoseconds }

    /// The next request of `workload`, or nil when the workload is exhausted, the deadline has
    /// passed, the request arrives after it (arrivals ascend with the index: so do all later
    /// ones; it was once claimed and waited for, so `--duration 1` ran until an arrival 38 s
    /// in) or the run was stopped.
    func claim(from workload: any Workload) -> LoadRequest? {
        guard !stopped.load(ordering: .relaxed), elapsedNanoseconds() < admitUntilNanoseconds else { return nil }
        let index = nextRequest.wrappingAdd(1, ordering: .relaxed).oldValue
        guard index < requestCount else { return nil }
        let request = workload.request(index)
        guard request.arrivalNanoseconds < admitUntilNanoseconds else { return nil }
        offered.add(1, ordering: .relaxed)
        return request
    }

    /// Requests claimed so far: those `claim` returned, less those given back by `unclaim`.
    var claimed: Int { offered.load(ordering: .relaxed) }

    /// Gives back `count` claimed requests that had not arrived when the run stopped (a worker
    /// claims its next request ahead of the arrival and sleeps until it): a request is offered
    /// when it arrives, as `--duration` never claims one arriving after its deadline. One
    /// relaxed atomic subtract.
    func unclaim(_ count: Int) { offered.subtract(count, ordering: .relaxed) }

    /// Stops the run because of an error no request can work around; the first message wins.
    func fail(_ message: String) {
        failureMessage.withLock { if $0 == nil { $0 = message } }
        stopped.store(true, ordering: .relaxed)
    }

    /// Stops the run without an error (a signal, `InterruptCleanup`): workers free what they
    /// hold and return what they did; nothing more is claimed.
    func interrupt() {
        stopped.store(true, ordering: .relaxed)
    }

    /// Whether a worker called `fail`, or the run was interrupted.
    var isStopped: Bool { stopped.load(ordering: .relaxed) }

    /// The message of the first `fail`, if any.
    var failure: String? { failureMessage.withLock { $0 } }
}

/// Counters one worker publishes for the progress line, with relaxed stores of its own
/// totals (never read-modify-write), once per request and once per decode step.
final class WorkerProgress: Sendable {
    let completed = Atomic<Int>(0)
    let rejected = Atomic<Int>(0)
    let decodedTokens = Atomic<Int>(0)
    /// Prompt tokens of first admissions, and of those found cached (the report's hit rate).
    let promptTokens = Atomic<Int>(0)
    let hitTokens = Atomic<Int>(0)
    let finished = Atomic<Bool>(false)
}
