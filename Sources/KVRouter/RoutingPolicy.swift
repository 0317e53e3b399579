/// One request as a policy sees it: its chained block hashes (at least one), its prompt length
/// and its key (the hash of its first `keyBlocks` blocks).
public struct RouteRequest {
    /// Chained block hashes of the prompt, in order; never empty.
    public var hashes: UnsafeBufferPointer<UInt64>
    /// Prompt tokens.
    public var tokens: Int
    /// `hashes[min(keyBlocks, hashes.count) - 1]`: chained, so it names the whole key prefix.
    public var key: UInt64
}

/// A routing policy: picks one live instance slot for a request from the router's state.
///
/// A new policy is one new file: a class conforming to this protocol, plus a `PolicyKind`
/// case. Policies read the router's load table, cache-view matches (filled before `choose`
/// for the slots of `slotsToMatch`) and rings; they must not allocate in `choose`.
public protocol RoutingPolicy: AnyObject {
    /// Which policy this is.
    var kind: PolicyKind { get }
    /// The slots whose cached prefix of `request` `choose` reads (`router.matched`); the
    /// router fills `matched` for exactly these first. The default: every live slot for
    /// policies that read the cache, none for the others.
    func slotsToMatch(_ request: RouteRequest, router: Router) -> UInt64
    /// The slot (a bit of `router.liveMask`) to send `request` to. Called only when at least
    /// one instance is live.
    func choose(_ request: RouteRequest, router: Router) -> Int
    /// Moves queued requests off overloaded instances, if the policy does that; returns how
    /// many moved. The default does nothing.
    func rebalance(router: Router, queues: any RequestQueues) -> Int
}

extension RoutingPolicy {
    /// Every live slot when the policy reads the cache, else none.
    public func slotsToMatch(_ request: RouteRequest, router: Router) -> UInt64 {
        kind.readsCache ? router.liveMask : 0
    }

    /// Policies without rebalancing move nothing.
    public func rebalance(router: Router, queues: any RequestQueues) -> Int { 0 }
}

/// The queues of requests routed to instances but not started yet, as the cluster (or a
/// simulator) holds them, so that a policy can move them between instances.
public protocol RequestQueues: AnyObject {
    /// Requests queued at `slot`, not started.
    func queuedCount(slot: Int) -> Int
    /// The `index`-th queued request at `slot`: an id stable until it moves or starts, its
    /// block hashes and its prompt tokens. The buffer stays valid until the next `move`.
    func queuedRequest(slot: Int, index: Int) -> (id: Int, hashes: UnsafeBufferPointer<UInt64>, tokens: Int)
    /// Moves request `id` from `slot`'s queue to the end of `target`'s.
    func move(id: Int, from slot: Int, to target: Int)
}
