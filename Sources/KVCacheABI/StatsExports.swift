#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import KVCache

/// Byte offsets of `kvc_stats` (include/kvcache.h): a `uint32_t struct_size`, 4 bytes of
/// padding, then `uint64_t` counters.
enum StatsLayout {
    static let budgetBytes = 8
    static let committedBytes = 16
    static let blocksTotal = 24
    static let blocksUsed = 32
    static let blocksCached = 40
    static let sequences = 48
    static let prefixQueryTokens = 56
    static let prefixHitTokens = 64
    static let sequencesCreated = 72
    static let blocksEvicted = 80
    static let mappings = 88
    static let eventsDropped = 96
    /// `sizeof(kvc_stats)` of this version.
    static let size = 104
    /// `KVC_STATS_MIN_SIZE`: through `prefix_hit_tokens`.
    static let minimumSize = 72
}

/// `kvc_engine_stats`: writes the fields of one `Engine.stats()` snapshot that fit in
/// `out->struct_size` and zeroes any bytes past the fields this version knows.
@c public func kvc_engine_stats(_ e: OpaquePointer?, _ out: UnsafeMutableRawPointer?) -> kvc_status {
    status("kvc_engine_stats") { () throws(KVError) in
        let engine = try engine(e)
        let out = try required(out, "out")
        let size = try structSize(UnsafeRawPointer(out), minimum: StatsLayout.minimumSize, "kvc_stats")
        let s = engine.stats()
        func put(_ value: UInt64, _ offset: Int) {
            if offset + 8 <= size { out.storeBytes(of: value, toByteOffset: offset, as: UInt64.self) }
        }
        put(s.budgetBytes, StatsLayout.budgetBytes)
        put(s.committedBytes, StatsLayout.committedBytes)
        put(s.blocksTotal, StatsLayout.blocksTotal)
        put(s.blocksUsed, StatsLayout.blocksUsed)
        put(s.blocksCached, StatsLayout.blocksCached)
        put(s.sequences, StatsLayout.sequences)
        put(s.prefixQueryTokens, StatsLayout.prefixQueryTokens)
        put(s.prefixHitTokens, StatsLayout.prefixHitTokens)
        put(s.sequencesCreated, StatsLayout.sequencesCreated)
        put(s.blocksEvicted, StatsLayout.blocksEvicted)
        put(s.mappings, StatsLayout.mappings)
        put(s.eventsDropped, StatsLayout.eventsDropped)
        if size > StatsLayout.size {
            memset(out + StatsLayout.size, 0, size - StatsLayout.size)
        }
    }
}
