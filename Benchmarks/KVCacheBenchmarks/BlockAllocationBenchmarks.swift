import Benchmark
import KVCache

/// (1) One block allocate + free pair on one thread: `BlockPool` against the baseline's
/// Array free list + Dictionary reference counts. Target: at least 10 M pairs/s (100 ns/pair).
func registerBlockAllocationBenchmarks() {
    let capacity = 4096

    Benchmark("Engine allocate+free") { benchmark in
        let pool = BlockPool(capacity: capacity)
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
}
