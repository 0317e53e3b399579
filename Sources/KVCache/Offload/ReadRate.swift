/// How fast the disk tier's block reads drain, as a prompt's reads would see it: bytes read
/// over the time block reads were in flight, with the device's other traffic (spill writes,
/// swap-outs, peers' reads) in it. Feeds the read-or-recompute choice of a create
/// (`DiskTier.readIsFaster`, with `EngineConfig.prefillTokensPerSecond`).
///
/// Busy time runs from the submission that finds no block read in flight to the completion
/// that leaves none, and is folded in at that completion or, under continuous reads, at the
/// first completion at least `windowNanoseconds` after the last fold. Each fold keeps 7/8 of the sums
/// before it, so the rate follows the device's load within a few windows. Completions are
/// seen when a call processes them, so an idle server reads a little slow: an estimate errs
/// towards recomputing. Cost: O(1) per read and a clock read per submission from idle and per
/// completion.
struct ReadRate {
    /// Time folded in at least once under continuous reads: 10 ms.
    static let windowNanoseconds: UInt64 = 10_000_000

    /// Block reads submitted and not yet completed.
    private(set) var inFlight = 0
    /// Start of the current busy span (0: no read in flight), and bytes completed in it.
    private var busySince: UInt64 = 0
    private var spanBytes: UInt64 = 0
    /// Decayed sums of the folded spans.
    private var bytes: Double = 0
    private var nanoseconds: Double = 0
    /// When the last busy span ended (0: never), for `idleNanoseconds`.
    private var lastEnd: UInt64 = 0

    /// Bytes per second block reads drained at lately; nil before the first span ended.
    var bytesPerSecond: Double? { nanoseconds > 0 ? bytes / nanoseconds * 1e9 : nil }

    /// Time since block reads last ran (0 while one is in flight; nil: none ever ran).
    func idleNanoseconds(now: UInt64) -> UInt64? {
        if inFlight > 0 { return 0 }
        return lastEnd == 0 ? nil : now &- lastEnd
    }

    /// A block read was submitted.
    mutating func submitted(now: @autoclosure () -> UInt64) {
        if inFlight == 0 { busySince = now() }
        inFlight += 1
    }

    /// A block read of `readBytes` completed (failed ones too: the device spent the time).
    mutating func completed(_ readBytes: Int, now: UInt64) {
        inFlight -= 1
        spanBytes += UInt64(readBytes)
        let span = now &- busySince
        guard inFlight == 0 || span >= ReadRate.windowNanoseconds else { return }
        bytes = bytes * 0.875 + Double(spanBytes)
        nanoseconds = nanoseconds * 0.875 + Double(max(span, 1))
        spanBytes = 0
        if inFlight == 0 {
            lastEnd = now
        } else {
            busySince = now
        }
    }
}
