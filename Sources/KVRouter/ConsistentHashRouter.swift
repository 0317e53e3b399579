/// Baseline: a single consistent-hash ring over the request key (the first `keyBlocks` blocks),
/// as in Ray Serve's and KubeAI's prefix-hash routing without bounded loads: perfect affinity,
/// no load awareness. Same ring, key and virtual nodes as DualMap's first ring.
/// Cost: one ring lookup, O(log P).
public final class ConsistentHashRouter: RoutingPolicy {
    /// `RoutingPolicy.kind`.
    public var kind: PolicyKind { .consistentHash }

    /// A consistent-hash policy.
    public init() {}

    /// `RoutingPolicy.choose`: the live instance owning `request.key` on the ring. O(log ring
    /// points).
    public func choose(_ request: RouteRequest, router: Router) -> Int {
        router.ring1.lookup(request.key)
    }
}
