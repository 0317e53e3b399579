#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import KVCache
import KVRouter

/// Byte offsets of `kvc_router_stats` (include/kvcache.h): a `uint32_t struct_size`, 4 bytes
/// of padding, then `uint64_t` counters.
enum RouterStatsLayout {
    static let decisions = 8
    static let sloSwitches = 16
    static let rebalanceMoves = 24
    static let duplicateEvents = 32
    static let staleEvents = 40
    static let refusedGaps = 48
    static let refusedFullBatches = 56
    static let refusedInserts = 64
    static let liveInstances = 72
    static let trackedBlocks = 80
    static let trackedBlocksLimit = 88
    /// `sizeof(kvc_router_stats)` of this version.
    static let size = 96
    /// `KVC_ROUTER_STATS_MIN_SIZE`: every field of the first version (a field added later is
    /// written only when `struct_size` covers it, as `kvc_engine_stats` does).
    static let minimumSize = 96
}

/// `kvc_router_get_stats`: under the router's mutex, writes its counters and its view's fill, then
/// zeroes the padding after `struct_size` and any bytes past the fields this version knows up
/// to `struct_size`. Reads only: no counter, drain step or view entry changes. O(1).
@c public func kvc_router_get_stats(_ r: OpaquePointer?, _ out: UnsafeMutableRawPointer?) -> kvc_status {
    status("kvc_router_get_stats") { () throws(KVError) in
        try withRouterHandle(r) { (handle) throws(KVError) in
            let out = try required(out, "out")
            let size = try structSize(UnsafeRawPointer(out), minimum: RouterStatsLayout.minimumSize, "kvc_router_stats")
            try handle.locked { router in
                func put(_ value: UInt64, _ offset: Int) { out.storeBytes(of: value, toByteOffset: offset, as: UInt64.self) }
                put(router.decisions, RouterStatsLayout.decisions)
                put(router.sloSwitches, RouterStatsLayout.sloSwitches)
                put(router.rebalanceMoves, RouterStatsLayout.rebalanceMoves)
                put(router.duplicateEvents, RouterStatsLayout.duplicateEvents)
                put(router.staleEvents, RouterStatsLayout.staleEvents)
                put(router.refusedGaps, RouterStatsLayout.refusedGaps)
                put(router.refusedFullBatches, RouterStatsLayout.refusedFullBatches)
                put(router.view.table.refused, RouterStatsLayout.refusedInserts)
                put(UInt64(router.instanceCount), RouterStatsLayout.liveInstances)
                put(UInt64(router.view.table.count), RouterStatsLayout.trackedBlocks)
                put(UInt64(router.view.table.limit), RouterStatsLayout.trackedBlocksLimit)
            }
            memset(out + 4, 0, 4)  // the padding after struct_size: no garbage left in the caller's struct
            if size > RouterStatsLayout.size {
                memset(out + RouterStatsLayout.size, 0, size - RouterStatsLayout.size)
            }
        }
    }
}
