/// The routing policies a `Router` can run; raw values are the C ABI's `KVC_ROUTER_*` constants.
public enum PolicyKind: UInt32, Sendable, CaseIterable {
    /// DualMap (2026): two hash rings, cache affinity unless the SLO is at risk, rebalancing.
    case dualMap = 0
    /// Round-robin over the live instances.
    case roundRobin = 1
    /// Fewest pending prefill tokens.
    case leastLoaded = 2
    /// One consistent-hash ring over the prompt's key; no load awareness.
    case consistentHash = 3
    /// SGLang router's cache-aware policy: longest prefix match with load-imbalance thresholds.
    case prefixTree = 4
    /// Dynamo KV router's cost: overlap-weighted prefill blocks plus active blocks.
    case overlapCost = 5
    /// llm-d's precise prefix-cache profile: weighted prefix, KV-utilisation and queue scores.
    case llmD = 6

    /// The short name used by the CLI and reports.
    public var name: String {
        switch self {
        case .dualMap: "dualmap"
        case .roundRobin: "round-robin"
        case .leastLoaded: "least-loaded"
        case .consistentHash: "consistent-hash"
        case .prefixTree: "prefix-tree"
        case .overlapCost: "overlap-cost"
        case .llmD: "llm-d"
        }
    }

    /// The policy named `name` (as `name` spells it), or nil.
    public init?(name: String) {
        guard let kind = PolicyKind.allCases.first(where: { $0.name == name }) else { return nil }
        self = kind
    }

    /// Whether the policy routes by the request key (`RouterConfig.keyBlocks` matters to it).
    public var usesRequestKey: Bool { self == .dualMap || self == .consistentHash }

    /// Whether the policy reads the cache view (and so needs a prefix match per request).
    public var readsCache: Bool { self == .dualMap || self == .prefixTree || self == .overlapCost || self == .llmD }

    /// Whether the router keeps the routed, unfinished requests' blocks per instance for the
    /// policy (`Router.active`, fed by `route` and `finish`): overlap cost only, as Dynamo does.
    public var countsActiveBlocks: Bool { self == .overlapCost }

    /// The view each policy's source uses: Dynamo, llm-d's precise prefix-cache scorer and
    /// DualMap consume KV events (exact); SGLang's router keeps an approximate radix tree built
    /// from its own routing decisions.
    public var defaultView: CacheViewMode { self == .prefixTree ? .approximate : .exact }
}

/// Makes the policy object of `kind`.
func makePolicy(_ kind: PolicyKind) -> any RoutingPolicy {
    switch kind {
    case .dualMap: DualMapRouter()
    case .roundRobin: RoundRobinRouter()
    case .leastLoaded: LeastLoadedRouter()
    case .consistentHash: ConsistentHashRouter()
    case .prefixTree: PrefixTreeRouter()
    case .overlapCost: OverlapCostRouter()
    case .llmD: LLMDRouter()
    }
}
