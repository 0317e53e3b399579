import KVCache
import KVRouter
import Testing
@testable import KVSim

/// The LMCache-style shared KV tier of the simulated cluster (`SharedTier`).
@Suite struct SharedTierTests {
    /// Bytes of one 512-token block of the default engine (Qwen2.5-7B: 57,344 B per token).
    static let blockBytes: UInt64 = 512 * 57_344

    /// A chain of block hashes for the ids `ids`, as a trace's `hash_ids` become.
    static func chain(_ ids: ClosedRange<UInt64>) -> [UInt64] {
        var h: [UInt64] = []
        for id in ids { h.append(Trace.chainedHash(parent: h.last ?? 0, id: id)) }
        return h
    }

    /// A tier of `blocks` blocks of the default engine.
    static func tier(blocks: UInt64) throws -> SharedTier {
        var c = SharedTierConfig()
        c.capacityBytes = blocks * blockBytes
        return try SharedTier(c, engine: SimulationConfig().engine)
    }

    /// Runs `trace` over `instances` round-robin instances (one request each, in order) with
    /// `tier`.
    static func run(_ trace: Trace, instances: Int, tier: SharedTierConfig?) throws -> (ClusterSimulator, ReplayResult) {
        var c = SimulationConfig()
        c.instances = instances
        c.router.policy = .roundRobin
        c.sharedTier = tier
        c.tokenBudget = 8192  // a 4,196-token prompt in one step (the default 2,048 chunks it)
        let sim = try ClusterSimulator(trace: trace, config: c)
        try sim.run()
        return (sim, sim.result(policy: "round-robin", wallSeconds: 0))
    }

    /// Milliseconds of one step prefilling `chunk` tokens after `context` cached ones.
    static func prefill(_ chunk: Int, after context: Int) -> Double {
        CostModel().stepMilliseconds(prefillTokens: chunk, attentionPairs: CostModel.attentionPairs(chunk: chunk, context: context),
                                     decodeSequences: 0, decodeContextTokens: 0)
    }

    /// Two requests for the same 4,196-token prompt (8 full blocks) go round-robin to two
    /// instances, the second after the first has finished: it finds nothing in its own engine,
    /// loads the 8 blocks the first stored (4,096 tokens x 57,344 B at 25 GB/s = 9.395 ms) and
    /// computes the other 100 tokens in the same step; its TTFT is that step plus the load.
    /// Without the tier it computes all 4,196.
    @Test func aSecondInstanceLoadsTheFirstOnesPrefixAndPaysItsLoadTime() throws {
        var trace = Trace(source: "one prompt twice", blockTokens: 512)
        let hashes = Self.chain(1...9)
        for t in [0.0, 1000] { trace.append(arrivalMilliseconds: t, input: 8 * 512 + 100, output: 1, blockHashes: hashes) }
        let (on, onResult) = try Self.run(trace, instances: 2, tier: SharedTierConfig())
        let (off, offResult) = try Self.run(trace, instances: 2, tier: nil)
        let load = 4096.0 * 57_344 / 25e9 * 1000
        #expect(abs(load - 9.39524096) < 1e-12)
        #expect(onResult.prefixHitRate == 0, "the second request went to the other instance")
        #expect(onResult.sharedTierHitTokens == 4096)
        #expect(onResult.sharedTierHitRate == 4096.0 / 8392)
        #expect(abs(on.ttft[0] - Self.prefill(4196, after: 0)) < 1e-9)
        #expect(abs(on.ttft[1] - (Self.prefill(100, after: 4096) + load)) < 1e-9)
        #expect(abs(off.ttft[1] - Self.prefill(4196, after: 0)) < 1e-9)
        #expect(offResult.sharedTierHitTokens == nil && offResult.sharedTierHitRate == nil)

        var slow = SharedTierConfig()
        slow.loadGigabytesPerSecond = 12.5
        let (halfBandwidth, _) = try Self.run(trace, instances: 2, tier: slow)
        #expect(abs(halfBandwidth.ttft[1] - (Self.prefill(100, after: 4096) + 2 * load)) < 1e-9)
    }

    /// The tier's engine evicts least recently used blocks, a chain's later blocks first: in a
    /// tier of 5 blocks (4 cached, 1 the store's scratch), storing 2 blocks of B after 4 of A
    /// leaves A's first 2; a 10-block chain keeps only its head, 4 blocks, and evicts the rest.
    @Test func theTiersCapacityBoundsWhatItHoldsLeastRecentlyUsedFirst() throws {
        let tier = try Self.tier(blocks: 5)
        #expect(tier.capacityBlocks == 5)
        let a = Self.chain(1...4), b = Self.chain(11...12), c = Self.chain(21...30)
        a.withUnsafeBufferPointer { tier.store($0) }
        #expect(a.withUnsafeBufferPointer { tier.lookup($0) } == 4)
        b.withUnsafeBufferPointer { tier.store($0) }
        #expect(b.withUnsafeBufferPointer { tier.lookup($0) } == 2)
        #expect(a.withUnsafeBufferPointer { tier.lookup($0) } == 2, "A's blocks 3 and 2 were the least recently used")
        // Storing A again refreshes its first 2 blocks and brings back 3 and 4: B goes.
        a.withUnsafeBufferPointer { tier.store($0) }
        #expect(a.withUnsafeBufferPointer { tier.lookup($0) } == 4)
        #expect(b.withUnsafeBufferPointer { tier.lookup($0) } == 0)
        c.withUnsafeBufferPointer { tier.store($0) }
        #expect(c.withUnsafeBufferPointer { tier.lookup($0) } == 4)
        #expect(a.withUnsafeBufferPointer { tier.lookup($0) } == 0)
    }

    /// Through the simulator: A on instance 0, then B on instance 1, then A again on instance
    /// 2. A tier of 9 blocks (8 cached) loses A to B's store, so the third request loads
    /// nothing; one of 17 blocks holds both, and it loads A's 8 blocks.
    @Test func aTierTooSmallForTwoPromptsServesOnlyTheLastOne() throws {
        var trace = Trace(source: "A, B, A", blockTokens: 512)
        let a = Self.chain(1...9), b = Self.chain(11...19)
        for (t, h) in [(0.0, a), (1000, b), (2000, a)] { trace.append(arrivalMilliseconds: t, input: 8 * 512 + 100, output: 1, blockHashes: h) }
        var small = SharedTierConfig(), large = SharedTierConfig()
        small.capacityBytes = 9 * Self.blockBytes
        large.capacityBytes = 17 * Self.blockBytes
        let (_, smallResult) = try Self.run(trace, instances: 3, tier: small)
        let (largeSim, largeResult) = try Self.run(trace, instances: 3, tier: large)
        #expect(smallResult.prefixHitRate == 0 && largeResult.prefixHitRate == 0, "three instances, one request each")
        #expect(smallResult.sharedTierHitTokens == 0)
        #expect(largeResult.sharedTierHitTokens == 4096)
        #expect(abs(largeSim.ttft[2] - (Self.prefill(100, after: 4096) + 4096.0 * 57_344 / 25e9 * 1000)) < 1e-9)
    }

    /// The tier holds what a request preempted mid-prefill computed, no more and no less: the
    /// scenario of `aRequestPreemptedInPrefillLeavesOnlyItsComputedBlocksCached` on instance 0
    /// (A, then B, which preempts itself when its 5th chunk finds no block, with 2,048 tokens
    /// computed, stored into the tier at the end of steps 2 to 5) and D then C (B's prompt, 600 ms in, while B
    /// waits) on instance 1. C loads B's blocks 0 to 3 from the tier, and not block 4, which
    /// nobody computed.
    @Test func aPreemptedPrefillsComputedBlocksAreInTheTier() throws {
        var trace = Trace(source: "a prefill preempted", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 511, output: 100, blockHashes: Self.chain(1...1))
        trace.append(arrivalMilliseconds: 0.5, input: 100, output: 1, blockHashes: Self.chain(21...21))
        trace.append(arrivalMilliseconds: 1, input: 5 * 512 + 100, output: 2, blockHashes: Self.chain(11...16))
        trace.append(arrivalMilliseconds: 600, input: 5 * 512 + 100, output: 2, blockHashes: Self.chain(11...16))
        var c = SimulationConfig()
        c.instances = 2
        c.router.policy = .roundRobin
        c.tokenBudget = 513
        c.maxBatch = 2
        c.engine.memoryBytes = 6 * 512 * UInt64(c.engine.tokenBytes * c.engine.tensors)
        c.sharedTier = SharedTierConfig()
        let sim = try ClusterSimulator(trace: trace, config: c)
        try sim.run()
        let result = sim.result(policy: "round-robin", wallSeconds: 0)
        #expect(sim.preemptions == 1 && result.served == 4)
        #expect(sim.ttft[3] >= 0 && sim.ttft[3] + 600 < sim.finish[0], "C is served while B waits for A")
        #expect(result.sharedTierHitTokens == 2048, "C loads B's 4 computed blocks")
    }

    /// Without a tier a run is the one before the tier existed: the first 300 Mooncake requests
    /// over 4 instances gave, to the last bit, the TTFTs and hit rates the simulator gave then
    /// (`kvcache replay --requests 300 --instances 4 --policies round-robin,dualmap --no-search
    /// --json` at the parent of that change); with the default tier they change. Changes to the
    /// scheduling since have moved them, the tier taking no part in those: the values below
    /// are those after blocks began to be allocated chunk by chunk as a step schedules them
    /// (which took the preemptions from 2 and 0 to 20 and 15 and moved round-robin's p90 and
    /// p99, DualMap's p99 and both makespans by less than 0.5 s; hit rates and p50s held), and
    /// after a decoding request began to hold the slot of the token its step computes, with
    /// a step's tokens taken before the next step's slots are allocated (round-robin's
    /// preemptions 20 to 21, its p99 and makespan 11 and 61 ms lower; DualMap's values within
    /// 0.4 ms; hit rates held), and DualMap's after the router's prefill estimate began to be
    /// fed each step's prefill time rather than the whole step's (`PrefillObservationTests`:
    /// its p50 19.09 to 20.68 s, p90 42.66 to 43.51 s, p99 51.97 to 51.14 s, hit rate 6.02%
    /// to 5.55%, preemptions 15 to 9, makespan 179.0 to 190.4 s; round-robin reads no estimate).
    @Test func withoutATierNothingChanges() throws {
        let trace = try mooncakeSlice(300)
        var c = SimulationConfig()
        c.instances = 4
        c.tokenBudget = 8192  // the values below were measured at the budget the defaults had until 2026-11-25
        let replay = Replay(config: c, policies: [], search: nil, threads: 1)
        let rr = try replay.simulate(trace, policy: .roundRobin, rateScale: 1)
        #expect(rr.ttftQuantile(0.5) == 17758.473577633995 && rr.ttftQuantile(0.9) == 72247.12391046446)
        #expect(rr.ttftQuantile(0.99) == 91012.78074471111 && rr.prefixHitRate == 0.05815496170817085)
        #expect(rr.preemptions == 21 && rr.makespanSeconds == 213.43966510324609)
        let dm = try replay.simulate(trace, policy: .dualMap, rateScale: 1)
        #expect(dm.ttftQuantile(0.5) == 20683.311176048446 && dm.ttftQuantile(0.9) == 43510.04822489296)
        #expect(dm.ttftQuantile(0.99) == 51142.05965145255 && dm.prefixHitRate == 0.0555170046822332)
        #expect(dm.preemptions == 9 && dm.makespanSeconds == 190.41291717677504)

        var withTier = replay
        withTier.config.sharedTier = SharedTierConfig()
        let rrTier = try withTier.simulate(trace, policy: .roundRobin, rateScale: 1)
        #expect(rrTier.sharedTierHitTokens! > 0)
        #expect(rrTier.ttftQuantile(0.5) != rr.ttftQuantile(0.5))
    }

    /// The table gains a "tier hit" column and the JSON the tier and each policy's tier hits,
    /// only with a tier: without one both read as before.
    @Test func theReportShowsTierHitsOnlyWithATier() throws {
        var trace = Trace(source: "one prompt twice", blockTokens: 512)
        for t in [0.0, 1000] { trace.append(arrivalMilliseconds: t, input: 8 * 512 + 100, output: 1, blockHashes: Self.chain(1...9)) }
        var c = SimulationConfig()
        c.instances = 2
        let off = try Replay(config: c, policies: [.roundRobin], search: nil, threads: 1).run(trace)
        c.sharedTier = SharedTierConfig()
        let on = try Replay(config: c, policies: [.roundRobin], search: nil, threads: 1).run(trace)
        #expect(ReplayReport.table(on).contains("prefix hit  tier hit  imbalance"))
        #expect(ReplayReport.table(on).contains("  0.0%     48.8%"))
        #expect(!ReplayReport.table(off).contains("tier"))
        let json = ReplayReport.json(on, trace: trace, config: c)
        #expect(json.contains("\"shared_tier\":{\"capacity_bytes\":400000000000,\"load_gbps\":25.0},\"policies\""))
        #expect(json.contains("\"shared_tier_hit_tokens\":4096,\"shared_tier_hit_rate\":\(4096.0 / 8392),"))
        c.sharedTier = nil
        #expect(!ReplayReport.json(off, trace: trace, config: c).contains("shared_tier"))
    }

    @Test(arguments: [
        (0.0, 400_000_000_000, "shared tier load bandwidth 0.0 GB/s must be finite and at least 1e-06"),
        (-5, 400_000_000_000, "shared tier load bandwidth -5.0 GB/s must be finite and at least 1e-06"),
        (.infinity, 400_000_000_000, "shared tier load bandwidth inf GB/s must be finite and at least 1e-06"),
        (1e-310, 400_000_000_000, "shared tier load bandwidth 1e-310 GB/s must be finite and at least 1e-06"),
        (25, 512 * 57_344, "shared tier capacity 29360128 B holds fewer than 2 blocks of 29360128 B"),
        // Past what one engine indexes: the engine's reason, under the option that set it.
        (25, 999_999_999_000_000_000, "shared tier capacity 999999999000000000 B holds 34059796980 blocks of 29360128 B, "
         + "more than the 16777216 one engine indexes (at most 492581209243648 B)"),
    ] as [(Double, UInt64, String)])
    func aBadTierIsRefusedWithItsReason(gbps: Double, bytes: UInt64, message: String) throws {
        var c = SimulationConfig()
        c.sharedTier = SharedTierConfig()
        c.sharedTier?.loadGigabytesPerSecond = gbps
        c.sharedTier?.capacityBytes = bytes
        var trace = Trace(source: "one request", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 600, output: 1, blockHashes: Self.chain(1...2))
        #expect { try ClusterSimulator(trace: trace, config: c) } throws: { error in
            (error as? KVError)?.code == .invalidArgument && (error as? KVError)?.message == message
        }
    }
}
