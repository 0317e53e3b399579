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
    static let diskCapacityBytes = 104
    static let diskStoredBytes = 112
    static let diskBytesWritten = 120
    static let diskBytesRead = 128
    static let diskHitTokens = 136
    static let blocksSpilled = 144
    static let blocksLoaded = 152
    static let diskErrors = 160
    static let swapOuts = 168
    static let swapIns = 176
    static let tokenRecords = 184
    static let tokensOnDisk = 192
    static let tokensOffloaded = 200
    static let tokensRestored = 208
    static let tokensLost = 216
    static let swapOutsStarted = 224
    static let swapOutsCancelled = 232
    static let swapOutsFailed = 240
    static let swapOutsPending = 248
    static let tokensInOpenRecords = 256
    static let hugePages = 264
    static let spillsSkipped = 272
    /// Peer tiers (`peer_offload_dirs`): blocks read from peers and served, peer reads refused.
    static let peerHits = 280
    static let peerStale = 288
    /// Prompt tokens of the served peer blocks (`DiskTierStats.peerHitTokens`).
    static let peerHitTokens = 296
    /// Restart (`DiskTierStats.recoveredSlots`, `journalRecordsDropped`).
    static let diskRecoveredBlocks = 304
    static let diskJournalDropped = 312
    /// Prompt tokens found only on disk and left to the prefill (`DiskTierStats.declinedHitTokens`).
    static let diskDeclinedHitTokens = 320
    /// Blocks the writeback thread wrote ahead of eviction (`DiskTierStats.blocksWrittenAhead`).
    static let diskBlocksWrittenAhead = 328
    /// Of the spills submitted, writes that failed (`DiskTierStats.spillWritesFailed`).
    static let diskSpillsFailed = 336
    /// The disk tier's I/O path (`DiskTierStats.ioMode`).
    static let diskIOMode = 344
    /// `sizeof(kvc_stats)` of this version.
    static let size = 352
    /// `KVC_STATS_MIN_SIZE`: through `prefix_hit_tokens`.
    static let minimumSize = 72
}

/// `kvc_engine_stats`: writes the fields of one `Engine.stats()` snapshot that fit in
/// `out->struct_size` and zeroes any bytes past the fields this version knows.
@c public func kvc_engine_stats(_ e: OpaquePointer?, _ out: UnsafeMutableRawPointer?) -> kvc_status {
    status("kvc_engine_stats") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let out = try required(out, "out")
            let size = try structSize(UnsafeRawPointer(out), minimum: StatsLayout.minimumSize, "kvc_stats")
            let s = engine.stats()
            memset(out + 4, 0, 4)  // the padding after struct_size: no garbage left in the caller's struct
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
            put(s.disk.capacitySlots * s.disk.slotBytes, StatsLayout.diskCapacityBytes)
            put(s.disk.storedSlots * s.disk.slotBytes, StatsLayout.diskStoredBytes)
            put(s.disk.bytesWritten, StatsLayout.diskBytesWritten)
            put(s.disk.bytesRead, StatsLayout.diskBytesRead)
            put(s.disk.prefixHitTokens, StatsLayout.diskHitTokens)
            put(s.disk.blocksSpilled, StatsLayout.blocksSpilled)
            put(s.disk.blocksLoaded, StatsLayout.blocksLoaded)
            put(s.disk.spillsFailed + s.disk.writesFailed + s.disk.loadsFailed + s.disk.journalAppendsFailed, StatsLayout.diskErrors)
            put(s.disk.swapOuts, StatsLayout.swapOuts)
            put(s.disk.swapIns, StatsLayout.swapIns)
            put(s.disk.tokenRecords, StatsLayout.tokenRecords)
            put(s.disk.tokensOnDisk, StatsLayout.tokensOnDisk)
            put(s.disk.tokensOffloaded, StatsLayout.tokensOffloaded)
            put(s.disk.tokensRestored, StatsLayout.tokensRestored)
            put(s.disk.tokensLost, StatsLayout.tokensLost)
            put(s.disk.swapOutsStarted, StatsLayout.swapOutsStarted)
            put(s.disk.swapOutsCancelled, StatsLayout.swapOutsCancelled)
            put(s.disk.swapOutsFailed, StatsLayout.swapOutsFailed)
            put(s.disk.swapOutsPending, StatsLayout.swapOutsPending)
            put(s.disk.tokensInOpenRecords, StatsLayout.tokensInOpenRecords)
            put(s.hugePages ? 1 : 0, StatsLayout.hugePages)
            put(s.disk.spillsSkipped, StatsLayout.spillsSkipped)
            put(s.disk.peerHits, StatsLayout.peerHits)
            put(s.disk.peerStale, StatsLayout.peerStale)
            put(s.disk.peerHitTokens, StatsLayout.peerHitTokens)
            put(s.disk.recoveredSlots, StatsLayout.diskRecoveredBlocks)
            put(s.disk.journalRecordsDropped, StatsLayout.diskJournalDropped)
            put(s.disk.declinedHitTokens, StatsLayout.diskDeclinedHitTokens)
            put(s.disk.blocksWrittenAhead, StatsLayout.diskBlocksWrittenAhead)
            put(s.disk.spillWritesFailed, StatsLayout.diskSpillsFailed)
            put(s.disk.ioMode, StatsLayout.diskIOMode)
            if size > StatsLayout.size {
                memset(out + StatsLayout.size, 0, size - StatsLayout.size)
            }
        }
    }
}
