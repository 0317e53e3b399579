/// Baseline: round-robin over the live instances in slot order, ignoring cache and load
/// (the default of most HTTP load balancers, e.g. Kubernetes services). No parameters.
/// Cost: O(1) bit scans.
public final class RoundRobinRouter: RoutingPolicy {
    /// `RoutingPolicy.kind`.
    public var kind: PolicyKind { .roundRobin }
    private var last = -1

    /// A round-robin policy starting at the lowest slot.
    public init() {}

    /// `RoutingPolicy.choose`: the next live instance after the last one chosen, wrapping. O(1).
    public func choose(_ request: RouteRequest, router: Router) -> Int {
        let live = router.liveMask
        let after = last + 1 >= 64 ? 0 : live & ~((UInt64(1) << UInt64(last + 1)) &- 1)
        let s = after != 0 ? after.trailingZeroBitCount : live.trailingZeroBitCount
        last = s
        return s
    }
}
