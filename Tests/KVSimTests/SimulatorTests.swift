import Foundation
import KVReport
import KVRouter
import Testing
@testable import KVCache
@testable import KVSim

/// The first `n` requests of the bundled Mooncake trace (tests use small slices: CI time).
func mooncakeSlice(_ n: Int) throws -> Trace {
    let path = #filePath.replacingOccurrences(of: "Tests/KVSimTests/SimulatorTests.swift", with: "traces/mooncake_conversation_trace.jsonl")
    return try MooncakeTraceReader.read(path: path, maxRequests: n)
}

/// A simulator of the first `requests` requests of the bundled trace over 4 instances of the
/// default configuration, routed by `policy`.
func fourInstances(_ requests: Int, _ policy: PolicyKind) throws -> ClusterSimulator {
    var c = SimulationConfig()
    c.instances = 4
    c.router.policy = policy
    return try ClusterSimulator(trace: try mooncakeSlice(requests), config: c)
}

@Suite struct SimulatorTests {
    @Test func theCostModelMatchesItsDocumentedRoofline() {
        let c = CostModel()
        let cold8k = c.stepMilliseconds(prefillTokens: 8192, attentionPairs: CostModel.attentionPairs(chunk: 8192, context: 0),
                                        decodeSequences: 0, decodeContextTokens: 0)
        #expect(abs(cold8k - 886.4) < 1)
        let decode = c.stepMilliseconds(prefillTokens: 0, attentionPairs: 0, decodeSequences: 32, decodeContextTokens: 32 * 12_000)
        #expect(abs(decode - 19.26) < 0.1)
        #expect(c.stepMilliseconds(prefillTokens: 0, attentionPairs: 0, decodeSequences: 1, decodeContextTokens: 0) == 1 + 7.47)
    }

    @Test func everyRequestIsServedAndTTFTCoversItsPrefill() throws {
        let sim = try fourInstances(300, .dualMap)
        let c = sim.config
        try sim.run()
        let r = sim.result(policy: "dualmap", wallSeconds: 0)
        #expect(r.served == 300 && r.rejected == 0)
        #expect(sim.finish.allSatisfy { $0 > 0 })
        // No TTFT is below one step of its prompt's cached-free part: at least the weight read.
        #expect(r.ttftSorted.first! >= c.cost.stepOverheadMilliseconds + c.cost.weightReadMilliseconds)
        #expect(r.prefixHitRate > 0 && r.prefixHitRate < 1)
        #expect(r.loadImbalance >= 1)
    }

    /// Overlap cost counts a routed request's blocks at its instance until the request ends,
    /// served, rejected or aborted (`Router.finish`): after a run none is left, and the
    /// preconditions of `finish` held for every request.
    @Test func theRouterHearsOfEveryRequestsEnd() throws {
        let sim = try fourInstances(300, .overlapCost)
        try sim.run()
        #expect(sim.result(policy: "overlap-cost", wallSeconds: 0).served == 300)
        let active = try #require(sim.router.active)
        #expect((0..<4).map { active.unique(slot: $0) } == [0, 0, 0, 0])

        var trace = Trace(source: "an aborted and a rejected request", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 1000, output: 3000, blockHashes: SharedTierTests.chain(1...2))
        trace.append(arrivalMilliseconds: 1, input: 2600, output: 1, blockHashes: SharedTierTests.chain(3...8))
        var c = Self.oneInstance(blocks: 4)
        c.router.policy = .overlapCost
        let small = try ClusterSimulator(trace: trace, config: c)
        try small.run()
        let r = small.result(policy: "overlap-cost", wallSeconds: 0)
        #expect(r.aborted == 1 && r.rejected == 1)
        #expect(small.router.active?.unique(slot: 0) == 0)
    }

    /// The engines hold sequences of up to 131,072 tokens (Qwen2.5-7B's context). A request
    /// whose output reaches that finishes there, counted in `lengthCapped`: it once counted as
    /// out of memory, preempted the youngest other request (recomputed for nothing), then
    /// itself, and was rejected on readmission. A prompt past it is rejected; a run where
    /// nothing finished has a makespan of 0 (it was -0.001, from the -1 placeholder).
    @Test func anOutputReachingTheContextLengthFinishesThereAndPreemptsNobody() throws {
        var trace = Trace(source: "a long output beside a short request", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 130_000, output: 3000, blockHashes: (1...254).map(UInt64.init))
        trace.append(arrivalMilliseconds: 1, input: 1000, output: 2500, blockHashes: [900, 901])
        var c = SimulationConfig()
        c.instances = 1
        c.router.policy = .roundRobin
        let sim = try ClusterSimulator(trace: trace, config: c)
        try sim.run()
        let r = sim.result(policy: "round-robin", wallSeconds: 0)
        #expect(r.preemptions == 0 && r.rejected == 0 && r.lengthCapped == 1 && r.served == 2)
        #expect(sim.finish.allSatisfy { $0 > 0 } && r.makespanSeconds > 0)
        let table = ReplayReport.table([Replay.Outcome(result: r, capacity: nil, probes: [])])
        #expect(table.contains("rejected / aborted / capped") && table.contains("0 / 0 / 1"), "\(table)")

        var tooLong = Trace(source: "a prompt past the context length", blockTokens: 512)
        tooLong.append(arrivalMilliseconds: 0, input: 200_000, output: 10, blockHashes: (1...391).map(UInt64.init))
        let refused = try ClusterSimulator(trace: tooLong, config: c)
        try refused.run()
        let rr = refused.result(policy: "round-robin", wallSeconds: 0)
        #expect(rr.rejected == 1 && rr.served == 0 && rr.makespanSeconds == 0 && rr.lengthCapped == 0)
    }

    /// A request that was served its first token and later outgrows its instance is aborted,
    /// not rejected: rejected means never served (no TTFT). One instance of 4 blocks: A (1,000
    /// prompt tokens, 3,000 output) prefills in one step (its TTFT) and decodes until the slot
    /// of its 1,049th token would be its 2,049th, a 5th block; alone, it preempts itself, and
    /// its prompt and output so far (2,049 tokens) no longer fit the instance, so it is
    /// dropped (vLLM finishes such a request aborted). Its TTFT stays served: in the
    /// percentiles and, within the SLO, in the attainment. It counted as rejected, while the
    /// same result reported it served with a TTFT.
    @Test func aServedRequestThatOutgrowsItsInstanceIsAbortedNotRejected() throws {
        var trace = Trace(source: "an output outgrowing its instance", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 1000, output: 3000, blockHashes: SharedTierTests.chain(1...2))
        let c = Self.oneInstance(blocks: 4)
        let sim = try ClusterSimulator(trace: trace, config: c)
        try sim.run()
        let r = sim.result(policy: "round-robin", wallSeconds: 0)
        #expect(sim.ttft == [Self.step(c, prefill: [(1000, 0)])])
        #expect(r.preemptions == 1 && r.rejected == 0 && r.lengthCapped == 0)
        #expect(r.served == 1 && r.ttftSorted == sim.ttft && r.sloAttainment == 1)
        #expect(sim.finish == [-1], "an aborted request never completes")
        let outcome = Replay.Outcome(result: r, capacity: nil, probes: [])
        let json = ReplayReport.json([outcome], trace: trace, config: c)
        let policy = ((try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])?["policies"] as? [[String: Any]])?.first
        #expect(policy?["rejected"] as? Int == 0 && policy?["aborted"] as? Int == 1, "\(json)")
        let table = ReplayReport.table([outcome])
        #expect(table.contains("rejected / aborted / capped") && table.contains("0 / 1 / 0"), "\(table)")
    }

    /// Output blocks are never indexed: the trace gives no output tokens, so the simulator
    /// cannot hash them as an engine would, and a block-aligned prompt is no exception. One
    /// instance, a 1,024-token step budget: A (1,024 tokens, its whole prompt in one chunk)
    /// and B (1,536 tokens, in chunks of 1,023 and 513) each end their prompt on a block
    /// boundary and then decode 2 and 1 full blocks. The engine indexes their 5 prompt blocks
    /// under the trace's hashes and nothing else. Their output blocks were indexed under
    /// hashes of zero tokens (the simulator appended each decode token as a 0 to a sequence
    /// whose every block hash was known): 3 blocks no request could ever hit, announced to the
    /// router and kept cached by LRU beside real prompt blocks.
    @Test func outputBlocksOfBlockAlignedPromptsAreNotIndexed() throws {
        var trace = Trace(source: "block-aligned prompts decoding", blockTokens: 512)
        let a = SharedTierTests.chain(1...2), b = SharedTierTests.chain(11...13)
        trace.append(arrivalMilliseconds: 0, input: 1024, output: 1100, blockHashes: a)
        trace.append(arrivalMilliseconds: 0, input: 1536, output: 600, blockHashes: b)
        for indexOnSchedule in [false, true] {
            var c = Self.oneInstance(budget: 1024)
            c.engine.indexOnSchedule = indexOnSchedule
            let sim = try ClusterSimulator(trace: trace, config: c)
            try sim.run()
            let r = sim.result(policy: "round-robin", wallSeconds: 0)
            #expect(r.served == 2 && r.preemptions == 0)
            let stored = sim.instances[0].engine.indexEvents().filter { $0.kind == .blockStored }.map(\.blockHash)
            #expect(stored.sorted() == (a + b).sorted(), "indexOnSchedule \(indexOnSchedule): \(stored.count) blocks indexed")
        }
    }

    /// A trace output of 0 tokens replays as one of 1: the simulator's first token ends the
    /// prefill (its TTFT) whatever the trace says, as when the reader stored 0 as 1.
    @Test func anOutputOfZeroReplaysAsAnOutputOfOne() throws {
        let slice = try mooncakeSlice(40)
        func replay(outputOf zeroed: Int32) throws -> ReplayResult {
            var trace = slice
            for r in stride(from: 0, to: trace.count, by: 3) { trace.outputTokens[r] = zeroed }
            var c = SimulationConfig()
            c.instances = 2
            c.router.policy = .roundRobin
            let sim = try ClusterSimulator(trace: trace, config: c)
            try sim.run()
            #expect(sim.finish.allSatisfy { $0 > 0 })
            return sim.result(policy: "round-robin", wallSeconds: 0)
        }
        let zero = try replay(outputOf: 0), one = try replay(outputOf: 1)
        #expect(zero.served == 40 && zero.served == one.served)
        #expect(zero.ttftSorted == one.ttftSorted && zero.makespanSeconds == one.makespanSeconds)
        #expect(zero.prefixHitRate == one.prefixHitRate && zero.preemptions == one.preemptions)
    }

    /// A rate scale of 0 would put every arrival at infinity; it and the other non-positive or
    /// non-finite scales are refused with their value named.
    @Test func aRateScaleThatIsNotAPositiveNumberIsRefused() throws {
        let trace = try mooncakeSlice(10)
        for bad in [0, -1, Double.infinity, Double.nan] {
            var c = SimulationConfig()
            c.rateScale = bad
            #expect {
                _ = try ClusterSimulator(trace: trace, config: c)
            } throws: { error in
                (error as? KVError)?.code == .invalidArgument && "\(error)".contains("rate_scale \(bad) is not a positive number")
            }
        }
    }

    /// A token budget or batch size of 0 admits nothing: the run could never end (it trapped
    /// on an instance left with work). Refused at init, naming both.
    @Test(arguments: [(0, 256), (8192, 0), (-1, 256)])
    func aBudgetOrBatchThatAdmitsNothingIsRefused(tokenBudget: Int, maxBatch: Int) throws {
        let trace = try mooncakeSlice(10)
        var c = SimulationConfig()
        c.tokenBudget = tokenBudget
        c.maxBatch = maxBatch
        #expect {
            _ = try ClusterSimulator(trace: trace, config: c)
        } throws: { error in
            (error as? KVError)?.code == .invalidArgument
                && "\(error)".contains("token_budget \(tokenBudget) and max_batch \(maxBatch) must be positive")
        }
    }

    /// After every arrival an instance's load is reported, so between two arrivals the router
    /// holds, for each instance, exactly its engine's blocks: running = used, free = total -
    /// used (checked at every 1,000th arrival of 3,000, with llm-d, which reads both).
    @Test func theReportedLoadIsTheEnginesBlocks() throws {
        let sim = try fourInstances(3000, .llmD)
        var checked = 0, busy = 0
        try sim.run { _ in
            for (s, inst) in sim.instances.enumerated() {
                let stats = inst.engine.stats(), load = sim.router.loads[s]
                #expect(load.runningBlocks == stats.blocksUsed && load.freeBlocks == stats.blocksTotal - stats.blocksUsed)
                checked += 1
                if stats.blocksUsed > 0 { busy += 1 }
            }
        }
        #expect(checked == 12 && busy > 0, "every instance at 3 points, some holding blocks")
    }

    @Test func cacheAffinityRaisesTheHitRateOverRoundRobin() throws {
        let trace = try mooncakeSlice(600)
        var rates: [PolicyKind: Double] = [:]
        for p in [PolicyKind.roundRobin, .consistentHash, .dualMap] {
            var c = SimulationConfig()
            c.instances = 8
            c.router.policy = p
            let sim = try ClusterSimulator(trace: trace, config: c)
            try sim.run()
            rates[p] = sim.result(policy: p.name, wallSeconds: 0).prefixHitRate
        }
        #expect(rates[.consistentHash]! > rates[.roundRobin]!)
        #expect(rates[.dualMap]! > rates[.roundRobin]!)
    }

    @Test func aHigherRateNeverImprovesAttainmentMuch() throws {
        let trace = try mooncakeSlice(400)
        let replay = Replay(config: SimulationConfig(), policies: [.leastLoaded], search: nil, threads: 1)
        let slow = try replay.simulate(trace, policy: .leastLoaded, rateScale: 1)
        let fast = try replay.simulate(trace, policy: .leastLoaded, rateScale: 16)
        #expect(fast.sloAttainment <= slow.sloAttainment + 0.01)
        #expect(try #require(fast.ttftQuantile(0.9)) >= (try #require(slow.ttftQuantile(0.9))))
    }

    @Test func theCapacitySearchFindsTheLastPassingScale() {
        // Attainment falls linearly from 1 at scale 0 to 0 at scale 10: 90% at scale 1.
        let (capacity, probes) = CapacitySearch().run { 1 - $0 / 10 }
        #expect(capacity <= 1 && capacity > 0.95)
        #expect(probes.first?.rateScale == 1)
        let (high, _) = CapacitySearch().run { $0 <= 5 ? 1 : 0 }
        #expect(high <= 5 && high > 4.5)
    }

    @Test func reportsRenderTableJSONAndPlots() throws {
        let trace = try mooncakeSlice(120)
        var c = SimulationConfig()
        c.instances = 2
        var search = CapacitySearch()
        search.refinements = 1
        let outcomes = try Replay(config: c, policies: [.dualMap, .roundRobin], search: search, threads: 2).run(trace)
        let table = ReplayReport.table(outcomes)
        #expect(table.contains("dualmap") && table.contains("round-robin") && table.contains("capacity"))
        let json = ReplayReport.json(outcomes, trace: trace, config: c)
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        let policies = object?["policies"] as? [[String: Any]]
        #expect(policies?.count == 2)
        #expect(object?["index_on_schedule"] as? Bool == false && object?["rebalance"] as? Bool == true)
        var fixed = c
        fixed.router.rebalance = false
        #expect(ReplayReport.json(outcomes, trace: trace, config: fixed).contains("\"rebalance\":false,"))
        #expect(object?["arrivals"] as? String == "recorded" && ReplayReport.json(outcomes, trace: trace.withArrivals(.spread), config: c).contains("\"arrivals\":\"spread\""))
        #expect(policies?.first?["effective_capacity"] is Double)
        // The warm-up, the step limits and the prefill skew are reported (table and JSON).
        #expect(object?["warmup_s"] as? Double == 0 && object?["token_budget"] as? Int == 2048 && object?["max_batch"] as? Int == 256)
        #expect(policies?.first?["warmup_requests"] as? Int == 0 && policies?.first?["prefill_skew"] is Double)
        #expect(table.contains("prefill skew"))
        // round-robin reads no cache: no view ("-", null), where dualmap's is exact.
        #expect(policies?.first?["view"] as? String == "exact" && policies?.last?["view"] is NSNull, "\(json)")
        let rows = table.split(separator: "\n").map { $0.split(separator: " ") }
        #expect(rows[2][0] == "dualmap" && rows[2][1] == "exact" && rows[3][0] == "round-robin" && rows[3][1] == "-", "\(table)")
        let svg = SVGPlot.attainment(outcomes, target: 0.9)
        #expect(svg.hasPrefix("<svg") && svg.components(separatedBy: "<polyline").count == 3)
        #expect(SVGPlot.ttftCDF(outcomes, maxSeconds: 20).contains("TTFT CDF"))
    }

    /// The router sees a prompt's blocks as its chunks are scheduled, with or without the
    /// engines' `indexOnSchedule`: a chunk's blocks are allocated, and its full prompt blocks
    /// indexed, only when it is scheduled. X (a 4,196-token prompt: 8 full blocks) goes to
    /// instance 0 of 2, whose first step schedules 1,024 of its tokens (a 1,024-token budget);
    /// Y, the same prompt, arrives during that step. Prefix-tree over exact views sends a
    /// request where more than half its prompt is cached: the view shows 2 of Y's blocks on
    /// instance 0 (1,024 of 4,196 tokens), so Y goes to the emptier instance 1 and computes its
    /// prompt there, in either mode. While a prompt's blocks were all allocated at admission,
    /// without the mode the view showed all 8 from X's admission on: Y waited there and hit
    /// them once X's last chunk was scheduled (48.8% of the trace's prompt tokens).
    @Test func theRouterSeesOnlyTheBlocksOfScheduledChunks() throws {
        var trace = Trace(source: "two identical prompts", blockTokens: 512)
        for t in [0.0, 1] { trace.append(arrivalMilliseconds: t, input: 8 * 512 + 100, output: 4, blockHashes: SharedTierTests.chain(1...9)) }
        func run(indexOnSchedule: Bool) throws -> (ClusterSimulator, ReplayResult) {
            var c = SimulationConfig()
            c.instances = 2
            c.router.policy = .prefixTree
            c.router.view = .exact
            c.tokenBudget = 1024
            c.engine.indexOnSchedule = indexOnSchedule
            let sim = try ClusterSimulator(trace: trace, config: c)
            try sim.run()
            return (sim, sim.result(policy: "prefix-tree", wallSeconds: 0))
        }
        for indexOnSchedule in [false, true] {
            let (sim, result) = try run(indexOnSchedule: indexOnSchedule)
            #expect(result.served == 2)
            #expect(result.prefixHitRate == 0, "Y computes its prompt on instance 1 (indexOnSchedule \(indexOnSchedule))")
            #expect(sim.instances[1].busyMilliseconds > 0)
            #expect(abs(sim.ttft[1] - sim.ttft[0]) < 1e-9, "alone on instance 1, Y takes the steps X takes on 0")
        }
    }

    /// KV blocks are allocated for the tokens a step schedules, as vLLM's `allocate_slots` takes
    /// a step's `num_new_tokens`: a 20,000-token prompt (39 full blocks, 40 in all) under the
    /// default 8,192-token budget holds 16 blocks once its first step is composed, 32 after its
    /// second and 40 after its third (3,616 tokens), and the prefix index, the router's exact
    /// view and the load the router is told (running blocks) follow the same steps: 16, 32, 39
    /// indexed blocks. Indexing on schedule or not, the same. While a prompt's blocks were all
    /// allocated at admission, it held 40 from its first step on (and, without the mode, the
    /// index and the view had all 39 full blocks).
    @Test func aLongPromptHoldsOnlyTheBlocksOfItsScheduledChunks() throws {
        var trace = Trace(source: "one long prompt", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 20_000, output: 2, blockHashes: SharedTierTests.chain(1...40))
        let prompt = Array(trace.hashes[0..<39])
        for indexOnSchedule in [false, true] {
            var c = Self.oneInstance()
            c.engine.indexOnSchedule = indexOnSchedule
            let sim = try ClusterSimulator(trace: trace, config: c)
            let engine = sim.instances[0].engine
            #expect(try sim.advance() == .arrival(0))
            var held: [UInt64] = [], indexed: [Int] = [], viewed: [Int] = [], reported: [UInt64] = []
            for _ in 0..<3 {
                #expect(try sim.advance() == .stepEnd(0))
                held.append(engine.blocksUsed)
                prompt.withUnsafeBufferPointer { p in
                    indexed.append(engine.cachedPrefixBlocks(p))
                    viewed.append(sim.router.view.matchedBlocks(p, slot: 0))
                }
                reported.append(sim.router.loads[0].runningBlocks)
            }
            #expect(held == [16, 32, 40], "indexOnSchedule \(indexOnSchedule)")
            #expect(indexed == [16, 32, 39] && viewed == indexed && reported == held, "indexOnSchedule \(indexOnSchedule)")
            #expect(sim.instances[0].stepChunks.first == 3616)
            while try sim.advance() != nil {}
            #expect(sim.finish[0] > 0)
        }
    }

    /// A step in whose scheduling a request was preempted admits no waiting request, as vLLM's
    /// scheduler skips its waiting queue in such a step (`if not preempted_reqs`). One
    /// instance of 8 blocks, a 512-token budget: A and B (512-token prompts, 3,000 output
    /// tokens each) decode until A's decode append needs a 5th block (for its 1,537th output
    /// token, its 2,049th token), 13.2 s in, and preempts
    /// B, the youngest, which held 4 (its prompt block stays cached). The step that append
    /// schedules gives A its token and nothing else, though B's cached block and a 511-token
    /// chunk would fit; B is re-admitted in the next step, with that chunk. Throughout the run
    /// (B is preempted again whenever its recomputation outgrows the room A leaves) every
    /// step whose scheduling preempted leaves the waiting queue longer by its victims: it
    /// admitted nobody. Before, B was re-admitted in the step that preempted it.
    @Test func aStepThatPreemptsAdmitsNothing() throws {
        var trace = Trace(source: "two growing decodes", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 512, output: 3000, blockHashes: SharedTierTests.chain(1...1))
        trace.append(arrivalMilliseconds: 0, input: 512, output: 3000, blockHashes: SharedTierTests.chain(11...11))
        var c = Self.oneInstance(blocks: 8, budget: 512)
        c.maxBatch = 2
        let sim = try ClusterSimulator(trace: trace, config: c)
        let inst = sim.instances[0]
        var first: (step: [Int32], waiting: Int, next: [Int32], nextChunks: [Int32])? = nil
        var preemptingSteps = 0, waitingAfterFirst = -1
        while true {
            let preempted = sim.preemptions, waiting = inst.waitingCount
            guard let event = try sim.advance() else { break }
            if waitingAfterFirst >= 0, first?.next.isEmpty == true, case .stepEnd = event {
                first?.next = Array(inst.stepRequests)
                first?.nextChunks = Array(inst.stepChunks)
            }
            guard sim.preemptions > preempted else { continue }
            #expect(event == .stepEnd(0))
            #expect(inst.waitingCount == waiting + sim.preemptions - preempted, "a step that preempted admitted a request")
            preemptingSteps += 1
            if first == nil {
                first = (Array(inst.stepRequests), inst.waitingCount, [], [])
                waitingAfterFirst = inst.waitingCount
                #expect(abs(inst.stepEnd - 13_223.0) < 1, "\(inst.stepEnd)")
            }
        }
        #expect(first?.step == [0] && first?.waiting == 1, "the preempting step: A's decode token only, B waiting")
        #expect(first?.next == [0, 1] && first?.nextChunks == [0, 511], "the next step re-admits B with a 511-token chunk")
        #expect(preemptingSteps == sim.preemptions && sim.preemptions > 1)
        #expect(sim.result(policy: "round-robin", wallSeconds: 0).served == 2)
    }

    /// A recompute-preempted request whose prompt blocks were evicted meanwhile recomputes them,
    /// and they are hit again once recomputed: one instance with 8 blocks of 512 tokens, a
    /// 512-token budget and at most 2 running requests; A and B (1,124 prompt tokens each,
    /// distinct) decode until A's 5th block preempts B (8.1 s in); C (B's prompt) waits behind
    /// B. From then on the instance has room for 3 of B's blocks only: B, re-admitted a step
    /// later (a step that preempts admits nothing) with its 2 cached prompt blocks and a
    /// 511-token chunk of its output, finds no block for its next chunk and preempts itself,
    /// recomputing the same chunk every other step (257 preemptions in all; 513 while it was
    /// re-admitted in the step that preempted it, at every step) until A holds 6 blocks
    /// (23.8 s) and B waits for A to finish, its cached prompt blocks evicted by A's. Once A
    /// is done B is re-admitted, and C is admitted in the step that schedules B's last chunk
    /// (the first with budget left after it), hitting both of B's recomputed prompt blocks
    /// (1,024 tokens).
    /// Indexing on schedule or not, the run is the same.
    @Test func aReadmittedRequestsPromptIsHitOnceRecomputed() throws {
        var trace = Trace(source: "a preempted prompt", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 1124, output: 2600, blockHashes: SharedTierTests.chain(1...3))
        trace.append(arrivalMilliseconds: 0, input: 1124, output: 1100, blockHashes: SharedTierTests.chain(11...13))
        trace.append(arrivalMilliseconds: 0, input: 1124, output: 10, blockHashes: SharedTierTests.chain(11...13))
        func run(indexOnSchedule: Bool) throws -> (ClusterSimulator, ReplayResult) {
            var c = SimulationConfig()
            c.instances = 1
            c.tokenBudget = 512
            c.maxBatch = 2
            c.engine.memoryBytes = 8 * 512 * UInt64(c.engine.tokenBytes * c.engine.tensors)
            c.engine.indexOnSchedule = indexOnSchedule
            let sim = try ClusterSimulator(trace: trace, config: c)
            try sim.run()
            return (sim, sim.result(policy: "one instance", wallSeconds: 0))
        }
        let (on, onResult) = try run(indexOnSchedule: true)
        let (off, offResult) = try run(indexOnSchedule: false)
        #expect(on.preemptions == 257 && off.preemptions == 257, "B, at every other step from 8.1 s to 23.8 s")
        #expect(onResult.served == 3 && offResult.served == 3)
        #expect(onResult.prefixHitRate == 1024.0 / 3372 && offResult.prefixHitRate == 1024.0 / 3372, "C hits both of B's recomputed prompt blocks")
        #expect(on.ttft == off.ttft && on.finish == off.finish)
        #expect(on.ttft[2] > on.finish[0], "C is served after A is done")
    }

    /// A request preempted mid-prefill keeps in the prefix index only the blocks it computed.
    /// One instance of 6 blocks, a 513-token step budget, at most 2 running: A (511 prompt
    /// tokens, 100 output) prefills alone in step 1; B (2,660 tokens: 5 full blocks, 6 in all;
    /// distinct) arrives meanwhile and is admitted in step 2 with its first 512-token chunk, and
    /// steps 2 to 5 compute 2,048 of its tokens, one block each (A's second decode token takes
    /// A's second block). Step 6's chunk needs B's 5th block, and A's 2 and B's 4 fill the
    /// instance: B preempts itself, holding exactly its 2,048 computed tokens, whose 4 blocks
    /// stay cached. B waits until A is done, and its re-admission hits those 2,048 tokens and
    /// not block 4, which nobody computed. Before chunks were allocated as they are scheduled,
    /// B held all 6 blocks from its admission and A's token preempted it at the end of step 3
    /// (`free(_:computedTokens:)` then took its never-computed blocks out of the index).
    /// Indexing on schedule or not, the same.
    @Test func aRequestPreemptedInPrefillLeavesOnlyItsComputedBlocksCached() throws {
        var trace = Trace(source: "a prefill preempted", blockTokens: 512)
        func chain(_ ids: ClosedRange<UInt64>) -> [UInt64] {
            var h: [UInt64] = []
            for id in ids { h.append(Trace.chainedHash(parent: h.last ?? 0, id: id)) }
            return h
        }
        trace.append(arrivalMilliseconds: 0, input: 511, output: 100, blockHashes: chain(1...1))
        trace.append(arrivalMilliseconds: 1, input: 5 * 512 + 100, output: 2, blockHashes: chain(11...16))
        for indexOnSchedule in [false, true] {
            var c = SimulationConfig()
            c.instances = 1
            c.tokenBudget = 513
            c.maxBatch = 2
            c.engine.memoryBytes = 6 * 512 * UInt64(c.engine.tokenBytes * c.engine.tensors)
            c.engine.indexOnSchedule = indexOnSchedule
            let sim = try ClusterSimulator(trace: trace, config: c)
            try sim.run()
            let result = sim.result(policy: "one instance", wallSeconds: 0)
            #expect(sim.preemptions == 1 && result.served == 2, "B, once")
            #expect(result.prefixHitRate == 0, "neither hits at its first admission")
            #expect(sim.instances[0].engine.stats().prefixHitTokens == 2048,
                    "B's re-admission hits its 4 computed blocks only (indexOnSchedule \(indexOnSchedule))")
            #expect(sim.finish[1] > sim.finish[0], "B is re-admitted after A is done")
        }
    }

    /// An instance's engine whose KV-event queue overflows between drains (16 events here,
    /// `EngineConfig.eventCapacity`; 65,536 in a real engine) loses its oldest events: the
    /// simulator sees `eventsDropped` grow, counts the drops and rebuilds the router's exact
    /// view of that instance from the engine's index (`Engine.indexEvents`), so after the
    /// run the view matches every instance on every request's prefix, as with no drops
    /// (without the rebuild it missed blocks stored and kept blocks removed in the gaps). The
    /// counts reach the result, the JSON and the table (a "dropped ev." column, only when
    /// something was dropped); with the default queue nothing is dropped or rebuilt.
    @Test func droppedEventsAreCountedAndTheInstancesViewRebuilt() throws {
        let trace = try mooncakeSlice(300)
        func run(eventCapacity: Int?) throws -> (ClusterSimulator, ReplayResult) {
            var c = SimulationConfig()
            c.instances = 2
            c.router.policy = .dualMap
            c.engine.memoryBytes = 200 * 512 * UInt64(c.engine.tokenBytes * c.engine.tensors)  // 200 blocks: evictions
            c.tokenBudget = 8192  // a step storing up to 16 blocks overflows the 16-event queue between drains
            if let eventCapacity { c.engine.eventCapacity = eventCapacity }
            let sim = try ClusterSimulator(trace: trace, config: c)
            try sim.run()
            return (sim, sim.result(policy: "dualmap", wallSeconds: 0))
        }
        /// Request prefixes (per instance) whose leading cached blocks the view gets wrong, and
        /// the blocks it credits in all.
        func mismatches(_ sim: ClusterSimulator) -> (wrong: Int, credited: Int) {
            var wrong = 0, credited = 0
            for i in 0..<trace.count {
                let start = Int(trace.hashStart[i])
                trace.hashes[start..<start + trace.fullBlocks(i)].withUnsafeBufferPointer { p in
                    for s in 0..<sim.instances.count {
                        let v = sim.router.view.matchedBlocks(p, slot: s)
                        if v != sim.instances[s].engine.cachedPrefixBlocks(p) { wrong += 1 }
                        credited += v
                    }
                }
            }
            return (wrong, credited)
        }
        let (sim, r) = try run(eventCapacity: 16)
        let dropped = sim.instances.reduce(UInt64(0)) { $0 + $1.engine.stats().eventsDropped }
        #expect(dropped > 0 && r.eventsDropped == Int(dropped))
        #expect(r.viewResyncs > 0 && r.viewResyncs <= r.eventsDropped)
        let lossy = mismatches(sim)
        #expect(lossy.wrong == 0, "the view disagrees with an instance after dropped events")
        #expect(lossy.credited > 0)
        let outcome = Replay.Outcome(result: r, capacity: nil, probes: [])
        let table = ReplayReport.table([outcome])
        #expect(table.contains("dropped ev.") && table.contains("\(r.eventsDropped) / \(r.viewResyncs)"))
        let json = ReplayReport.json([outcome], trace: trace, config: SimulationConfig())
        let policies = (try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])?["policies"] as? [[String: Any]]
        #expect(policies?.first?["events_dropped"] as? Int == r.eventsDropped && policies?.first?["view_resyncs"] as? Int == r.viewResyncs)
        let (clean, cleanResult) = try run(eventCapacity: nil)
        #expect(cleanResult.eventsDropped == 0 && cleanResult.viewResyncs == 0)
        #expect(mismatches(clean).wrong == 0)
        #expect(!ReplayReport.table([Replay.Outcome(result: cleanResult, capacity: nil, probes: [])]).contains("dropped"))
    }

    /// One instance of the default shape with `blocks` blocks, a `budget`-token step budget,
    /// routed round-robin.
    static func oneInstance(blocks: UInt64? = nil, budget: Int = 8192) -> SimulationConfig {
        var c = SimulationConfig()
        c.instances = 1
        c.router.policy = .roundRobin
        c.tokenBudget = budget
        if let blocks { c.engine.memoryBytes = blocks * 512 * UInt64(c.engine.tokenBytes * c.engine.tensors) }
        return c
    }

    /// A step of `prefill` tokens (each a chunk of `chunk` after `context` tokens) beside
    /// `decodes` decoding sequences of `decodeContext` tokens in all, as `CostModel` times it.
    static func step(_ c: SimulationConfig, prefill chunks: [(chunk: Int, context: Int)], decodes: Int = 0, decodeContext: Int = 0) -> Double {
        var pairs = 0.0
        for p in chunks { pairs += CostModel.attentionPairs(chunk: p.chunk, context: p.context) }
        return c.cost.stepMilliseconds(prefillTokens: chunks.reduce(0) { $0 + $1.chunk }, attentionPairs: pairs,
                                       decodeSequences: decodes, decodeContextTokens: decodeContext)
    }

    /// A step's output is recorded before its decode appends can preempt. One instance of 4
    /// blocks: A (1,023 tokens, 100 output tokens) prefills in step 1 and then holds 1,024
    /// (its first output token's slot: 2 blocks); R (1,024 tokens, 1 output token) arrives
    /// meanwhile and is computed in step 2 beside A's first decode, filling the 4 blocks. At
    /// the end of step 2 A's second token needs a 3rd block (its 1,025th slot, for step 3);
    /// R's first token is its last, so R is done and freed first and A takes a block it left:
    /// no preemption, R's TTFT is the end of step 2. Appending first, A preempted R, the
    /// youngest, throwing its token away: R recomputed its prompt, 1 preemption, its TTFT a
    /// step later. (A held 1,024 prompt tokens here until a decoding request began to hold
    /// the slot of the token its step computes: its first slot now takes a 3rd block.)
    @Test func aStepsFirstTokensAndCompletionsComeBeforeItsDecodeAppends() throws {
        var trace = Trace(source: "a prefill ending beside a growing decode", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 1023, output: 100, blockHashes: SharedTierTests.chain(1...2))
        trace.append(arrivalMilliseconds: 1, input: 1024, output: 1, blockHashes: SharedTierTests.chain(11...12))
        let c = Self.oneInstance(blocks: 4, budget: 2048)
        let sim = try ClusterSimulator(trace: trace, config: c)
        try sim.run()
        let r = sim.result(policy: "round-robin", wallSeconds: 0)
        #expect(r.preemptions == 0 && r.served == 2 && r.lengthCapped == 0)
        let step1 = Self.step(c, prefill: [(1023, 0)])
        let step2 = Self.step(c, prefill: [(1024, 0)], decodes: 1, decodeContext: 1024)
        #expect(sim.ttft[0] == step1)
        #expect(sim.ttft[1] == step1 + step2 - 1 && sim.finish[1] == step1 + step2)
    }

    /// Waiting requests are admitted only while the step has token budget left (vLLM's
    /// "while self.waiting and token_budget > 0"). One instance of 6 blocks, a 1,024-token
    /// budget: A (1,024 tokens, 100 output) prefills in step 1 (and then holds 3 blocks: its
    /// first output token's slot is its 1,025th); B and C (1,024 tokens, 1 output each) arrive
    /// meanwhile. Step 2 gives A a decode token and B the other 1,023
    /// tokens; C waits (before 2026-11-23 it was admitted too, with blocks but no tokens,
    /// filling the 6 blocks, so A's next token preempted it). Step 3 ends B's prefill (1 token) but has no room for
    /// C beside A's 3 blocks and B's 2; B is done by then, and steps 4 and 5 compute C (1,023
    /// tokens beside A's decode, then 1).
    @Test func aWaitingRequestIsAdmittedOnlyWhileTheStepHasBudgetLeft() throws {
        var trace = Trace(source: "two requests behind a full step", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 1024, output: 100, blockHashes: SharedTierTests.chain(1...2))
        trace.append(arrivalMilliseconds: 1, input: 1024, output: 1, blockHashes: SharedTierTests.chain(11...12))
        trace.append(arrivalMilliseconds: 1, input: 1024, output: 1, blockHashes: SharedTierTests.chain(21...22))
        let c = Self.oneInstance(blocks: 6, budget: 1024)
        let sim = try ClusterSimulator(trace: trace, config: c)
        try sim.run()
        let r = sim.result(policy: "round-robin", wallSeconds: 0)
        #expect(r.preemptions == 0 && r.served == 3)
        let step1 = Self.step(c, prefill: [(1024, 0)])
        let step2 = Self.step(c, prefill: [(1023, 0)], decodes: 1, decodeContext: 1025)
        let step3 = Self.step(c, prefill: [(1, 1023)], decodes: 1, decodeContext: 1026)
        let step4 = Self.step(c, prefill: [(1023, 0)], decodes: 1, decodeContext: 1027)
        let step5 = Self.step(c, prefill: [(1, 1023)], decodes: 1, decodeContext: 1028)
        #expect(sim.ttft[1] == step1 + step2 + step3 - 1)
        #expect(sim.ttft[2] == step1 + step2 + step3 + step4 + step5 - 1)
    }

    /// Requests arriving at the same instant at an idle instance share its first step: two
    /// 512-token prompts at time 0 are computed together, both first tokens at the end of one
    /// 1,024-token step (the first started a step alone, the second waited for it).
    @Test func requestsArrivingTogetherShareAStep() throws {
        var trace = Trace(source: "two requests at once", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 512, output: 3, blockHashes: SharedTierTests.chain(1...1))
        trace.append(arrivalMilliseconds: 0, input: 512, output: 1, blockHashes: SharedTierTests.chain(2...2))
        let c = Self.oneInstance()
        let sim = try ClusterSimulator(trace: trace, config: c)
        try sim.run()
        let both = Self.step(c, prefill: [(512, 0), (512, 0)])
        #expect(sim.ttft == [both, both])
        #expect(sim.finish[1] == both)
    }

    /// A server with a context of N tokens stops a sequence at N tokens of prompt and output
    /// (vLLM: `num_tokens >= max_model_len`). A 131,070-token prompt (of 131,072) gets 2 tokens:
    /// its first, and one decode step's; a 131,072-token prompt gets its first token only and
    /// finishes with it. Both are `lengthCapped`. The cap was reached a token late (the first
    /// got 3), and then a decode step that produced nothing was charged before it finished.
    @Test func anOutputStopsWhenPromptAndOutputReachTheContextLength() throws {
        let c = Self.oneInstance()
        #expect(c.engine.maxSeqTokens == 131_072)
        for (input, decodeSteps) in [(131_070, 1), (131_072, 0)] {
            var trace = Trace(source: "a prompt near the context length", blockTokens: 512)
            trace.append(arrivalMilliseconds: 0, input: input, output: 10, blockHashes: SharedTierTests.chain(1...256))
            let sim = try ClusterSimulator(trace: trace, config: c)
            try sim.run()
            let r = sim.result(policy: "round-robin", wallSeconds: 0)
            #expect(r.lengthCapped == 1 && r.served == 1 && r.preemptions == 0)
            let decode = Self.step(c, prefill: [], decodes: 1, decodeContext: input + 1)  // prompt and its first token
            #expect(sim.finish[0] == sim.ttft[0] + Double(decodeSteps) * decode, "prompt \(input)")
            #expect(sim.instances[0].busyMilliseconds == sim.finish[0], "no step past the last token")
        }
    }

    /// TTFT percentiles are of the requests served; with none served they are "-" in the
    /// table and null in the JSON (they read 0.00 s, the best TTFT possible).
    @Test func ttftPercentilesOfNothingServedAreNone() throws {
        var trace = Trace(source: "a prompt past the context length", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 200_000, output: 10, blockHashes: (1...391).map(UInt64.init))
        let sim = try ClusterSimulator(trace: trace, config: Self.oneInstance())
        try sim.run()
        let outcome = Replay.Outcome(result: sim.result(policy: "round-robin", wallSeconds: 0), capacity: nil, probes: [])
        let row = ReplayReport.table([outcome]).split(separator: "\n")[2].split(separator: " ")
        #expect(row[0] == "round-robin" && Array(row[2...5]) == ["-", "-", "-", "0.0%"], "\(row)")
        let json = ReplayReport.json([outcome], trace: trace, config: Self.oneInstance())
        let policy = ((try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])?["policies"] as? [[String: Any]])?.first
        for key in ["ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms"] { #expect(policy?[key] is NSNull, "\(key): \(policy?[key] ?? "missing")") }
        #expect(policy?["rejected"] as? Int == 1 && policy?["slo_attainment"] as? Double == 0)
    }

    /// The JSON counts the malformed lines a lenient read skipped (`skipped_lines`), as the
    /// table's heading does; 0 for a clean trace.
    @Test func theJSONCountsSkippedLines() throws {
        let text = "{\"timestamp\": 0, \"input_length\": 512, \"output_length\": 1, \"hash_ids\": [0]}\ngarbage\n"
            + "{\"timestamp\": 5, \"input_length\": 512, \"output_length\": 1, \"hash_ids\": [0, 1]}\n"
        for (lenient, skipped) in [(true, 2), (false, 0)] {
            let trace = try MooncakeTraceReader.parse(Data((lenient ? text : "").utf8) + Data(#"{"timestamp": 7, "input_length": 512, "output_length": 1, "hash_ids": [0]}"#.utf8),
                                                      path: "l.jsonl", lenient: lenient)
            let outcomes = try Replay(config: Self.oneInstance(), policies: [.roundRobin], search: nil, threads: 1).run(trace)
            let object = try JSONSerialization.jsonObject(with: Data(ReplayReport.json(outcomes, trace: trace, config: Self.oneInstance()).utf8)) as? [String: Any]
            #expect(object?["skipped_lines"] as? Int == skipped && object?["requests"] as? Int == trace.count)
        }
    }
}
