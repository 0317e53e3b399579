import Benchmark
import Foundation
import KVCache

/// The index dump a KV-event consumer applies after it lost events (`Engine.indexEvents`,
/// `kvc_engine_index_events`), which holds the engine's lock for its whole walk. One operation
/// is one dump of an engine whose memory index holds `memoryBlocks` cached blocks and whose own
/// disk tier holds `diskBlocks` stored ones (a tiny model shape: 512-byte blocks, 8 KiB disk
/// slots, so the disk tier's setup writes 128 MiB once). The baseline lists the same number of
/// (hash, parent) pairs as events from a Swift `Dictionary`, as a prefix index kept in one
/// (`BaselineBlockManager`'s) would. Judged by nothing: `tools/bench_ratio.sh` reports the
/// engine/baseline ratio (INFO) and the engine's time is the lock hold.
func registerIndexDumpBenchmarks() {
    let memoryBlocks = 65_536, diskBlocks = 16_384, blockTokens = 16
    let configuration = oneOperationPerMeasurement

    Benchmark("Engine index-dump", configuration: configuration, closure: { benchmark in
        guard let engine = IndexDumpFixture.current?.engine else { return benchmark.error("no index-dump engine") }
        for _ in benchmark.scaledIterations {
            let events = engine.indexEvents()
            blackHole(events.count)
            if events.count != memoryBlocks + diskBlocks + 2 {
                benchmark.error("the dump listed \(events.count) events, not \(memoryBlocks + diskBlocks + 2)")
            }
        }
    }, setup: {
        IndexDumpFixture.current = IndexDumpFixture(memoryBlocks: memoryBlocks, diskBlocks: diskBlocks, blockTokens: blockTokens)
    }, teardown: {
        guard let dir = IndexDumpFixture.current?.dir else { return }
        IndexDumpFixture.current = nil  // the engine closes its tier first
        try? FileManager.default.removeItem(atPath: dir)
    })

    Benchmark("Baseline index-dump", configuration: configuration) { benchmark in
        var index: [UInt64: UInt64] = [:]
        index.reserveCapacity(memoryBlocks + diskBlocks)
        var parent: UInt64 = 0
        for i in 0..<(memoryBlocks + diskBlocks) {
            let hash = BlockHash.finalize(UInt64(i) &+ 1)
            index[hash] = i % 64 == 0 ? 0 : parent
            parent = hash
        }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            var events: [KVEvent] = [KVEvent(kind: .allCleared, tier: KVEvent.memoryTier, blockHash: 0, parentHash: 0)]
            events.reserveCapacity(index.count + 2)
            for (hash, parent) in index { events.append(KVEvent(kind: .blockStored, blockHash: hash, parentHash: parent)) }
            blackHole(events.count)
        }
        benchmark.stopMeasurement()
    }
}

/// The engine of `Engine index-dump`, built by its setup and dropped (its directory removed) by
/// its teardown: `diskBlocks` blocks spilled to its disk tier (created, freed, trimmed out of
/// memory, written), then `memoryBlocks` other blocks cached in memory, in sequences of 64 blocks.
private final class IndexDumpFixture: @unchecked Sendable {
    nonisolated(unsafe) static var current: IndexDumpFixture?
    let engine: Engine
    let dir: String

    init(memoryBlocks: Int, diskBlocks: Int, blockTokens: Int) {
        dir = NSTemporaryDirectory() + "kvcache-index-dump-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var config = smallEngineConfig(blockTokens: blockTokens)
        config.numLayers = 1
        config.headDim = 8  // 16-byte tokens: 512-byte blocks, one 8 KiB disk slot each
        config.memoryBytes = UInt64(memoryBlocks + 1024) * UInt64(2 * blockTokens * 16)
        config.offloadDir = dir
        config.offloadBytes = UInt64(diskBlocks + 64) * 8192
        engine = makeEngine(config)
        let perSequence = 64, tokens = perSequence * blockTokens
        do throws(KVError) {
            var seed: Int32 = 1
            func cache(_ blocks: Int) throws(KVError) {
                for _ in 0..<(blocks / perSequence) {
                    try engine.createSequence(1, tokens: prompt(tokens + 1, seed: seed))
                    try engine.free(1)
                    seed += 1
                }
            }
            try cache(diskBlocks)
            try engine.trim()
            try engine.syncOffload()
            try cache(memoryBlocks)
        } catch {
            fatalError("cannot build the index-dump engine: \(error)")
        }
        let s = engine.stats()
        guard s.blocksCached == UInt64(memoryBlocks), s.disk.storedSlots == UInt64(diskBlocks) else {
            fatalError("index-dump engine: \(s.blocksCached) cached, \(s.disk.storedSlots) on disk")
        }
    }
}
