import Testing
@testable import KVCache
@testable import KVSim

/// What a decoding request holds and produces, step by step, against vLLM v1's scheduler
/// (`vllm/v1/core/sched/scheduler.py`): `update_from_output` appends the token a step sampled
/// to the request (`num_tokens` grows by 1) and checks stop; the next `schedule` asks
/// `allocate_slots(request, num_new_tokens=1)` for slots covering `num_computed_tokens + 1 ==
/// num_tokens` tokens, preempting the youngest running request (`_preempt_request`, possibly
/// the request itself) when they do not fit. A preempted request keeps every token it sampled
/// (`num_computed_tokens = 0`, its `num_tokens` unchanged) and recomputes prompt and output.
@Suite struct DecodeStepTests {
    /// During its k-th decode step a request of P prompt tokens holds P + k slots (vLLM:
    /// `num_computed_tokens` = P + k - 1, plus the slot of the token the step computes, the
    /// k-th output token, sampled by the step before), so its blocks grow at the step that
    /// first needs them. A 1,022-token prompt with 5 output tokens decodes 4 steps holding
    /// 1,023, 1,024, 1,025 and 1,026 tokens: 2, 2, 3 and 3 blocks of 512, each step's KV read
    /// covering them. The engine held one token fewer (1,022 to 1,025: its 3rd block a step
    /// late), the slot of each token being appended at the end of the step that computed it.
    @Test func aDecodeStepHoldsTheSlotOfTheTokenItComputes() throws {
        var trace = Trace(source: "one request decoding", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 1022, output: 5, blockHashes: SharedTierTests.chain(1...2))
        let c = SimulatorTests.oneInstance()
        let sim = try ClusterSimulator(trace: trace, config: c)
        let inst = sim.instances[0]
        #expect(try sim.advance() == .arrival(0))
        #expect(try sim.advance() == .stepEnd(0))  // composes the prefill step
        #expect(Array(inst.stepChunks) == [1022])
        var held: [Int] = [], blocks: [UInt64] = [], stepTimes: [Double] = []
        while try sim.advance() != nil, inst.stepEnd.isFinite {
            #expect(Array(inst.stepRequests) == [0] && Array(inst.stepChunks) == [0], "a decode step")
            held.append(try inst.engine.length(0))
            blocks.append(inst.engine.blocksUsed)
            stepTimes.append(inst.stepMilliseconds)
        }
        #expect(held == [1023, 1024, 1025, 1026])
        #expect(blocks == [2, 2, 3, 3])
        #expect(stepTimes == held.map { SimulatorTests.step(c, prefill: [], decodes: 1, decodeContext: $0) })
        #expect(sim.finish[0] == SimulatorTests.step(c, prefill: [(1022, 0)]) + stepTimes.reduce(0, +))
    }

    /// A decode append that preempts its own request keeps the token the step produced, as
    /// vLLM does (the token is appended in `update_from_output` before the next `schedule`
    /// preempts). One instance of 4 blocks: A (500 prompt tokens, 100 output) and B (1,000,
    /// 30 output) prefill together; B's 25th output token needs a 3rd block (1,025 slots) for
    /// the 25th decode step, and A's 2 and B's 2 fill the instance: B, the youngest, preempts
    /// itself after 24 decode steps, keeping its 25 tokens. It waits for A (its 1,025 tokens
    /// need 3 blocks beside A's 2), is re-admitted with its prompt block cached, recomputes
    /// the other 513 tokens in one step, which yields its 26th token, and decodes its last 4:
    /// 28 decode steps for 30 tokens, every one yielding a token. Before, the append came
    /// before the token was taken: B's 25th decode step ran, preempted B, and its token was
    /// thrown away (29 decode steps, B done a step later).
    @Test func aDecodeAppendThatPreemptsItsOwnRequestKeepsTheToken() throws {
        var trace = Trace(source: "a decode outgrowing the instance", blockTokens: 512)
        trace.append(arrivalMilliseconds: 0, input: 500, output: 100, blockHashes: SharedTierTests.chain(1...1))
        trace.append(arrivalMilliseconds: 0, input: 1000, output: 30, blockHashes: SharedTierTests.chain(11...12))
        let c = SimulatorTests.oneInstance(blocks: 4)
        let sim = try ClusterSimulator(trace: trace, config: c)
        let inst = sim.instances[0]
        var decodes = [0, 0], preemptedAfter = -1
        while let event = try sim.advance() {
            guard case .stepEnd = event else { continue }
            if preemptedAfter < 0 && sim.preemptions == 1 { preemptedAfter = decodes[1] }
            for (r, chunk) in zip(inst.stepRequests, inst.stepChunks) where chunk == 0 { decodes[Int(r)] += 1 }
        }
        let r = sim.result(policy: "round-robin", wallSeconds: 0)
        #expect(r.preemptions == 1 && r.served == 2 && r.rejected == 0)
        #expect(preemptedAfter == 24, "B preempted itself at the end of its 24th decode step")
        #expect(decodes == [99, 28], "every decode step yields a token: 100 - 1 for A, 30 - 2 for B")
        #expect(sim.instances[0].engine.stats().prefixHitTokens == 512, "B's re-admission hits its prompt block")

        let prefill = SimulatorTests.step(c, prefill: [(500, 0), (1000, 0)])
        var t = prefill
        for d in 1...24 { t += SimulatorTests.step(c, prefill: [], decodes: 2, decodeContext: 1500 + 2 * d) }
        for d in 25...99 { t += SimulatorTests.step(c, prefill: [], decodes: 1, decodeContext: 500 + d) }
        #expect(sim.ttft == [prefill, prefill])
        #expect(abs(sim.finish[0] - t) < 1e-6, "A: \(sim.finish[0]) vs \(t)")
        t += SimulatorTests.step(c, prefill: [(513, 512)])
        for j in 0..<4 { t += SimulatorTests.step(c, prefill: [], decodes: 1, decodeContext: 1026 + j) }
        #expect(abs(sim.finish[1] - t) < 1e-6, "B: \(sim.finish[1]) vs \(t)")
    }
}
