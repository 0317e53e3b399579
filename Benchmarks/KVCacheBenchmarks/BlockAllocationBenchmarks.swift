import Benchmark
import KVCache

/// (1) One block allocate + free pair on one thread: the paged engine's `BlockPool` over real
/// memory (page-aware arena in a memfd pool, 4096 blocks of the default model shape) against
/// the baseline's Array free list + Dictionary reference counts, and against `VLLMBlockPool`
/// (vLLM v1: pop the free queue's head, evict it if cached, push it back on free). Target: at
/// least 10 M pairs/s (100 ns/pair).
func registerBlockAllocationBenchmarks() {
    let capacity = 4096

    Benchmark("Engine allocate+free") { benchmark in
        var config = EngineConfig()  // 32 layers x 8 heads x 128, fp16, 16-token blocks: 2 MiB a block
        config.memoryBytes = UInt64(capacity) * UInt64(config.blockBytesAllTensors)
        let pool: BlockPool
        do {
            pool = try BlockPool(pagedMemory: config)
            pool.release(try pool.allocate())  // commit the first page group outside the measurement
        } catch {
            benchmark.error("creating the pool failed: \(error)")
            return
        }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            do {
                let block = try pool.allocate()
                pool.release(block)
                blackHole(block)
            } catch {
                benchmark.error("allocate failed: \(error)")
                return
            }
        }
        benchmark.stopMeasurement()
    }

    Benchmark("Baseline allocate+free") { benchmark in
        let manager = BaselineBlockManager(capacity: capacity, blockTokens: 16)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            guard let block = manager.allocate() else {
                benchmark.error("baseline allocate failed")
                return
            }
            manager.release(block)
            blackHole(block)
        }
        benchmark.stopMeasurement()
    }

    Benchmark("VLLM allocate+free") { benchmark in
        let pool = VLLMBlockPool(blocks: capacity, blockTokens: 16)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            guard let block = pool.allocateBlock() else {
                benchmark.error("vLLM pool allocate failed")
                return
            }
            pool.releaseBlock(block)
            blackHole(block)
        }
        benchmark.stopMeasurement()
    }
}
