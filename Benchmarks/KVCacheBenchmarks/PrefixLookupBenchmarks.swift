import Benchmark
import KVCache

/// (3) Prefix lookup of a cached 2048-token prompt (128 blocks of 16): `Engine.cachedPrefixTokens`
/// against walking the same `BlockHash` chain through the baseline's Dictionary<UInt64, Int32>,
/// and against `VLLMBlockPool` (vLLM v1: hash the prompt's full blocks, then walk its
/// Dictionary<UInt64, cached blocks> until the first miss), twice: naming blocks with
/// `BlockHash` (`VLLM prefix lookup`) and with vLLM's default SHA-256 chain (`VLLM sha256
/// prefix lookup`; raw bytes hashed, the pickle/CBOR serialisation vLLM also pays left out, which
/// flatters vLLM; keyed by each digest's first 64 bits where vLLM keys by all 32 bytes).
/// All hash every token of the prompt; the difference is the hash, the index and the lock.
/// Against crafted collisions the plain `BlockHash` rows give nothing, the engine its keyed
/// fingerprint (checked on every hit), the sha256 pool SHA-256's collision resistance.
/// One operation = one whole-prompt lookup.
func registerPrefixLookupBenchmarks() {
    let tokens = prompt(2048)
    let expected = 2048 - 16  // the last block is never reported cached (one token must remain)

    Benchmark("Engine prefix lookup") { benchmark in
        let engine = makeEngine(smallEngineConfig(blockTokens: 16))
        do throws(KVError) {
            try engine.createSequence(1, tokens: tokens)
        } catch {
            benchmark.error("create failed: \(error)")
            return
        }
        measureLookup(benchmark, "engine", tokens, expected: expected) { engine.cachedPrefixTokens($0) }
    }

    Benchmark("Baseline prefix lookup") { benchmark in
        let manager = BaselineBlockManager(capacity: 1024, blockTokens: 16)
        tokens.withUnsafeBufferPointer { _ = manager.createSequence(1, tokens: $0) }
        measureLookup(benchmark, "baseline", tokens, expected: expected) { manager.cachedPrefixTokens($0) }
    }

    for (name, naming) in [("VLLM prefix lookup", VLLMBlockPool.Naming.blockHash), ("VLLM sha256 prefix lookup", .sha256)] {
        Benchmark(name) { benchmark in
            if naming == .sha256, let failure = SHA256.selfTestFailure() {
                benchmark.error(failure)
                return
            }
            let pool = VLLMBlockPool(blocks: 1024, blockTokens: 16, naming: naming)
            tokens.withUnsafeBufferPointer { _ = pool.createRequest(1, tokens: $0) }
            measureLookup(benchmark, "vLLM pool", tokens, expected: expected) { pool.cachedPrefixTokens($0) }
        }
    }
}

/// Checks that `lookup` of `tokens` (a prompt `who` holds cached) reports `expected` cached
/// tokens, then measures it, one whole-prompt lookup per iteration; a wrong count is reported
/// as the benchmark's error and nothing is measured.
private func measureLookup(_ benchmark: Benchmark, _ who: String, _ tokens: [Int32], expected: Int,
                           _ lookup: (UnsafeBufferPointer<Int32>) -> Int) {
    tokens.withUnsafeBufferPointer { buffer in
        let found = lookup(buffer)
        guard found == expected else {
            benchmark.error("\(who) reports \(found) cached tokens, expected \(expected)")
            return
        }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(lookup(buffer))
        }
        benchmark.stopMeasurement()
    }
}
