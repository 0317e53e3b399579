import Histogram

/// The engine operations a load test times, and with a modelled prefill
/// (`--prefill-tokens-per-s`) a request's time to first token.
enum TimedOperation: Int, CaseIterable, Sendable {
    case create, append, truncate, free, ttft

    var name: String {
        switch self {
        case .create: "create"
        case .append: "append"
        case .truncate: "truncate"
        case .free: "free"
        case .ttft: "ttft"
        }
    }
}

/// Latency histograms of one thread, one per `TimedOperation`, in nanoseconds.
///
/// Each worker thread owns one recorder and records without locks or atomics; the run merges
/// them once the threads have stopped. HdrHistogram with 3 significant digits: recording is a
/// few arithmetic operations on a preallocated counts array (no allocation), values up to
/// `highestNanoseconds`; longer values are clamped to it.
struct LatencyRecorder: Sendable {
    /// Longest latency tracked exactly: 60 s.
    static let highestNanoseconds: UInt64 = 60_000_000_000

    private(set) var create = Self.makeHistogram()
    private(set) var append = Self.makeHistogram()
    private(set) var truncate = Self.makeHistogram()
    private(set) var free = Self.makeHistogram()
    private(set) var ttft = Self.makeHistogram()

    private static func makeHistogram() -> Histogram<UInt64> {
        Histogram(lowestDiscernibleValue: 1, highestTrackableValue: highestNanoseconds, numberOfSignificantValueDigits: .three)
    }

    /// Records one `operation` that took `nanoseconds`.
    @inline(__always)
    mutating func record(_ operation: TimedOperation, nanoseconds: UInt64) {
        let value = min(nanoseconds, Self.highestNanoseconds)
        switch operation {
        case .create: create.record(value)
        case .append: append.record(value)
        case .truncate: truncate.record(value)
        case .free: free.record(value)
        case .ttft: ttft.record(value)
        }
    }

    /// Adds every value `other` recorded.
    mutating func merge(_ other: LatencyRecorder) {
        create.add(other.create)
        append.add(other.append)
        truncate.add(other.truncate)
        free.add(other.free)
        ttft.add(other.ttft)
    }

    /// The histogram of `operation`.
    func histogram(_ operation: TimedOperation) -> Histogram<UInt64> {
        switch operation {
        case .create: create
        case .append: append
        case .truncate: truncate
        case .free: free
        case .ttft: ttft
        }
    }
}
