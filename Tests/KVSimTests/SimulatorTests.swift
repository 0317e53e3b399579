import Foundation
import KVRouter
import Testing
@testable import KVSim

/// The first `n` requests of the bundled Mooncake trace (tests use small slices: CI time).
func mooncakeSlice(_ n: Int) throws -> Trace {
    let path = #filePath.replacingOccurrences(of: "Tests/KVSimTests/SimulatorTests.swift", with: "traces/mooncake_conversation_trace.jsonl")
    return try MooncakeTraceReader.read(path: path, maxRequests: n)
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
        let trace = try mooncakeSlice(300)
        var c = SimulationConfig()
        c.instances = 4
        c.router.policy = .dualMap
        let sim = try ClusterSimulator(trace: trace, config: c)
        try sim.run()
        let r = sim.result(policy: "dualmap", wallSeconds: 0)
        #expect(r.served == 300 && r.rejected == 0)
        #expect(sim.finish.allSatisfy { $0 > 0 })
        // No TTFT is below one step of its prompt's cached-free part: at least the weight read.
        #expect(r.ttftSorted.first! >= c.cost.stepOverheadMilliseconds + c.cost.weightReadMilliseconds)
        #expect(r.prefixHitRate > 0 && r.prefixHitRate < 1)
        #expect(r.loadImbalance >= 1)
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
        #expect(fast.ttftQuantile(0.9) >= slow.ttftQuantile(0.9))
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
        #expect(policies?.first?["effective_capacity"] is Double)
        let svg = SVGPlot.attainment(outcomes, target: 0.9)
        #expect(svg.hasPrefix("<svg") && svg.components(separatedBy: "<polyline").count == 3)
        #expect(SVGPlot.ttftCDF(outcomes, maxSeconds: 20).contains("TTFT CDF"))
    }
}
