import KVCache

/// How a router knows what each instance caches (`KVC_ROUTER_VIEW_*`).
public enum CacheViewMode: UInt32, Sendable {
    /// From the instances' KV events (`observe`): exactly what their prefix indexes hold.
    case exact = 0
    /// From the router's own routing history: every block routed to an instance is assumed
    /// cached there until `approximateBlocksPerInstance` other blocks have been routed there
    /// more recently (least recently routed out first; a block routed again is refreshed).
    case approximate = 1
}

/// A router's parameters (`kvc_router_config`). Every field has a working default.
public struct RouterConfig: Equatable, Sendable {
    /// Instances a router can hold at most: the cache view keeps one bit per instance per block.
    public static let maxInstances = 64
    /// Positions one hash ring may hold: the live instances' `virtualNodes x weight` (each
    /// rounded, at least 1) summed, 524,288 = the most instances (64) at the largest weight (64)
    /// with the default 128 virtual nodes. A membership change holds the router's lock while
    /// it merges the instance's positions into both rings or compacts them out (O(P), 12
    /// bytes per position kept, and relinking it): at this limit about 1.6 ms per ring to
    /// add, 1.0 ms to remove (release, 2026-11-23, docs/routing.md); 64 instances of weight 64 with 4,096 virtual nodes would be
    /// 16.8M positions, 200 MB per ring. `Router.addInstance` refuses an instance that would
    /// pass it.
    public static let maxRingPositions = 1 << 19

    /// The policy.
    public var policy: PolicyKind = .dualMap
    /// How the cache view is fed; `nil` takes the policy's `defaultView`.
    public var view: CacheViewMode? = nil
    /// DualMap and consistent hash: the request key is the chained hash of the first
    /// `keyBlocks` blocks (all of them when the prompt has fewer). 1...64; default 2. It should
    /// reach past the longest prefix many conversations share (a system prompt: else they all
    /// get the same candidates) and not past a conversation's first prompt (else its later
    /// turns get another key); docs/routing.md, "The key".
    public var keyBlocks: Int = 2
    /// Xored into both rings' fixed seeds (DualMap, consistent hash): another value places
    /// every instance's virtual nodes elsewhere, to measure how much a result owes to one
    /// placement. Default 0, the fixed seeds. Not in the C ABI's `kvc_router_config`.
    public var ringSeed: UInt64 = 0
    /// Ring positions per instance of weight 1, per ring. 1...4096; default 128. The positions
    /// of all live instances are bounded by `maxRingPositions`.
    public var virtualNodes: Int = 128
    /// The TTFT service-level objective in milliseconds (> 0); default 5000.
    public var ttftSLOMilliseconds: Double = 5000
    /// DualMap leaves the affinity candidate when its estimated TTFT exceeds
    /// `sloFraction * ttftSLOMilliseconds`. (0, 1]; default 0.5 (the "half the SLO").
    public var sloFraction: Double = 0.5
    /// Starting estimate of prefill milliseconds per uncached token (> 0); refined by
    /// `Router.observePrefill`. Default 0.1 (see KVSim's CostModel for the derivation).
    public var prefillMillisecondsPerToken: Double = 0.1
    /// Tokens per block of the hashes the router is given (converts matched blocks to tokens).
    public var blockTokens: Int = 16
    /// Distinct block hashes the cache view can track in all instances together (its table
    /// grows and shrinks with them, 32-128 bytes each, up to this bound; `BlockMaskTable`). Default and largest 2^26.
    public var trackedBlocks: Int = 1 << 26
    /// Approximate view: blocks assumed cached per instance (its prefix-cache capacity). Each
    /// instance's recency list takes 16 bytes per entry of the smallest power of two (at least
    /// 16) not below twice this, on the first route to it: 512 KiB at the default.
    public var approximateBlocksPerInstance: Int = 1 << 14
    /// DualMap: move queued requests off instances whose estimated queue time exceeds the
    /// SLO threshold (hotspot rebalancing). Default true.
    public var rebalance: Bool = true
    /// SGLang `cache_threshold`: a prefix match ratio above it routes for affinity. Default 0.5.
    /// The three SGLang defaults are its Rust `CacheAwareConfig::default()`; the router as
    /// launched (`sglang_router.launch_router`, router_args.py) uses 0.3, 64 and 1.5 with a
    /// 2^26-character tree, which the replay measured at the same x1.24 capacity and, with that
    /// tree, x1.14 (2026-11-24, docs/routing.md): these are the stronger baseline.
    public var cacheThreshold: Double = 0.5
    /// SGLang `balance_abs_threshold`: in-flight request gap that counts as imbalance. Default
    /// 32 (launched router: 64; see `cacheThreshold`).
    public var balanceAbsThreshold: Int = 32
    /// SGLang `balance_rel_threshold`: in-flight request ratio that counts as imbalance.
    /// Default 1.1 (launched router: 1.5; see `cacheThreshold`).
    public var balanceRelThreshold: Double = 1.1
    /// Dynamo `overlap_score_weight`: weight of prefill blocks against active blocks. Default 1.0.
    public var overlapScoreWeight: Double = 1.0

    /// The defaults listed above.
    public init() {}

    /// A config of `policy` with the other defaults.
    public init(policy: PolicyKind) { self.policy = policy }

    /// The view in effect: `view`, or the policy's default.
    public var effectiveView: CacheViewMode { view ?? policy.defaultView }

    /// Milliseconds of estimated TTFT above which DualMap leaves the affinity candidate.
    public var sloThresholdMilliseconds: Double { sloFraction * ttftSLOMilliseconds }

    /// Checks every field; throws `invalidArgument` naming the first bad one.
    public func validate() throws(KVError) {
        func check(_ ok: Bool, _ message: @autoclosure () -> String) throws(KVError) {
            if !ok { throw KVError(.invalidArgument, message()) }
        }
        try check((1...64).contains(keyBlocks), "key_blocks \(keyBlocks) is outside 1...64")
        try check((1...4096).contains(virtualNodes), "virtual_nodes \(virtualNodes) is outside 1...4096")
        try check(ttftSLOMilliseconds > 0 && ttftSLOMilliseconds.isFinite, "ttft_slo_ms \(ttftSLOMilliseconds) is not a positive number")
        try check(sloFraction > 0 && sloFraction <= 1, "slo_fraction \(sloFraction) is outside (0, 1]")
        try check(prefillMillisecondsPerToken > 0 && prefillMillisecondsPerToken.isFinite,
                  "prefill_ms_per_token \(prefillMillisecondsPerToken) is not a positive number")
        try check((1...65536).contains(blockTokens), "block_tokens \(blockTokens) is outside 1...65536")
        try check((1...(1 << 26)).contains(trackedBlocks), "tracked_blocks \(trackedBlocks) is outside 1...67108864")
        try check((1...(1 << 24)).contains(approximateBlocksPerInstance),
                  "approximate_blocks_per_instance \(approximateBlocksPerInstance) is outside 1...16777216")
        try check(cacheThreshold >= 0 && cacheThreshold <= 1, "cache_threshold \(cacheThreshold) is outside [0, 1]")
        try check(balanceAbsThreshold >= 0, "balance_abs_threshold \(balanceAbsThreshold) is negative")
        try check(balanceRelThreshold >= 1, "balance_rel_threshold \(balanceRelThreshold) is below 1")
        try check(overlapScoreWeight >= 0 && overlapScoreWeight.isFinite, "overlap_score_weight \(overlapScoreWeight) is not >= 0")
    }
}
