import KVCache

/// The shared tier's options (`SimulationConfig.sharedTier`; nil means no tier).
///
/// Defaults and their reasoning:
/// - 400 GB: about the cluster's own KV memory again (8 instances x 52 GB of A100 KV budget =
///   416 GB), and 40% of a DGX A100's 1 TB of host memory, what a CPU-memory or
///   local-NVMe store serving 8 GPUs can spare. With Qwen2.5-7B's 57,344 B per token that is
///   13,623 blocks of 512 tokens (it caches one fewer, `SharedTier.store`); the bundled Mooncake trace's prompts hold 182,790 distinct
///   blocks (5.4 TB), so the capacity binds.
/// - 25 GB/s load bandwidth per instance: a PCIe 4.0 x16 link moves at most 32 GB/s each way
///   (about 25 GB/s measured for pinned host-to-device copies), and a DGX A100 gives each GPU
///   one 200 Gb/s (25 GB/s) InfiniBand port: an optimistic bound for a CPU store over PCIe or
///   a remote store over RDMA. A 512-token block then loads in 1.17 ms, against about 50 ms to
///   recompute it (`CostModel`).
public struct SharedTierConfig: Sendable, Equatable {
    /// Capacity in bytes of K/V (decimal: 400 GB = 400e9 B).
    public var capacityBytes: UInt64 = 400_000_000_000
    /// Load bandwidth of each instance from the tier, GB/s (1e9 B/s).
    public var loadGigabytesPerSecond = 25.0

    /// The defaults above.
    public init() {}

    /// The slowest load bandwidth accepted, GB/s (1 kB/s): a slower one made a token's load
    /// time overflow to infinity, which the run only refused after simulating.
    public static let minLoadGigabytesPerSecond = 1e-6

    /// The largest capacity of a tier of `blockBytes`-byte blocks (all tensors): the blocks one
    /// engine indexes (`Engine.maxBlocks`), which the tier's index is. 492,581 GB for
    /// Qwen2.5-7B's 512-token blocks.
    public static func maxCapacityBytes(blockBytes: UInt64) -> UInt64 { UInt64(Engine.maxBlocks) * blockBytes }

    /// Throws `invalidArgument` unless the bandwidth is finite and at least
    /// `minLoadGigabytesPerSecond` and the capacity holds at least two blocks of `blockBytes`
    /// bytes (all tensors), one to cache, one the store's scratch (`SharedTier.store`), and
    /// at most `Engine.maxBlocks` (`maxCapacityBytes`).
    public func validate(blockBytes: UInt64) throws(KVError) {
        guard loadGigabytesPerSecond >= SharedTierConfig.minLoadGigabytesPerSecond && loadGigabytesPerSecond.isFinite else {
            throw KVError(.invalidArgument, "shared tier load bandwidth \(loadGigabytesPerSecond) GB/s must be finite and at least "
                                            + "\(SharedTierConfig.minLoadGigabytesPerSecond)")
        }
        guard capacityBytes >= 2 * blockBytes else {
            throw KVError(.invalidArgument, "shared tier capacity \(capacityBytes) B holds fewer than 2 blocks of \(blockBytes) B")
        }
        guard capacityBytes / blockBytes <= UInt64(Engine.maxBlocks) else {
            throw KVError(.invalidArgument, "shared tier capacity \(capacityBytes) B holds \(capacityBytes / blockBytes) blocks of \(blockBytes) B, "
                                            + "more than the \(Engine.maxBlocks) one engine indexes (at most \(SharedTierConfig.maxCapacityBytes(blockBytes: blockBytes)) B)")
        }
    }
}
