/// What an instance reports about its load (`kvc_instance_load`). The router also advances
/// these optimistically on every decision (`Router.route`), and a report overwrites them.
public struct InstanceLoad: Equatable, Sendable {
    /// Prompt tokens queued or being prefilled that were not cached (the prefill backlog).
    public var pendingPrefillTokens: UInt64 = 0
    /// KV blocks held by running sequences.
    public var runningBlocks: UInt64 = 0
    /// KV blocks free or evictable.
    public var freeBlocks: UInt64 = 0
    /// Requests in flight: queued plus running.
    public var activeRequests: UInt64 = 0
    /// Requests queued, not started (of `activeRequests`): what llm-d's queue scorer reads.
    public var waitingRequests: UInt64 = 0

    /// Creates a load report.
    public init(
        pendingPrefillTokens: UInt64 = 0, runningBlocks: UInt64 = 0, freeBlocks: UInt64 = 0, activeRequests: UInt64 = 0,
        waitingRequests: UInt64 = 0
    ) {
        self.pendingPrefillTokens = pendingPrefillTokens
        self.runningBlocks = runningBlocks
        self.freeBlocks = freeBlocks
        self.activeRequests = activeRequests
        self.waitingRequests = waitingRequests
    }
}

extension UInt64 {
    /// `self + other`, or `UInt64.max` when the sum does not fit: loads are counts a caller
    /// reports, so any value may arrive, and the router's advances must not trap on them.
    @inline(__always)
    func addingSaturated(_ other: UInt64) -> UInt64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }
}
