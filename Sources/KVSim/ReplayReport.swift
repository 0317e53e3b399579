import KVReport
import KVRouter

/// Renders replay outcomes as a plain-text table and as JSON (stable keys, below).
///
/// JSON: `{"trace", "requests", "skipped_lines" (malformed trace lines a lenient read
/// skipped), "arrivals" (`Trace.arrivals`: "spread" or "recorded"), "instances", "rate_scale", "ttft_slo_ms",
/// "warmup_s" (`SimulationConfig.warmupSeconds`), "token_budget", "max_batch", "index_on_schedule"
/// (the engines' `indexOnSchedule`), "rebalance" (the router's `rebalance`: DualMap moves queued
/// requests), "policies": [{"policy", "warmup_requests" (arrivals in the warm-up, not measured),
/// "view" ("exact" or "approximate"; null for a policy that reads no cache: round-robin,
/// least-loaded, consistent-hash, "-" in the table), "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "slo_attainment", "prefix_hit_rate",
/// "load_imbalance" (max/mean busy time), "prefill_skew" (max/mean prompt tokens computed), "preemptions", "rejected", "aborted", "length_capped", "events_dropped", "view_resyncs", "slo_switches", "rebalance_moves",
/// "makespan_s", "wall_s", "effective_capacity" (null without search), "capacity_probes":
/// [{"rate_scale", "attainment"}]}]}`. TTFT percentiles are of the requests served (a
/// rejected request has no TTFT; an aborted one, served its first token and dropped after a
/// preemption, has one and is in them): null in the JSON and "-" in the table when none was. With a shared tier (`SimulationConfig.sharedTier`),
/// and only then, the object also has `"shared_tier": {"capacity_bytes", "load_gbps"}` and
/// each policy `"shared_tier_hit_tokens"` and `"shared_tier_hit_rate"` (prompt tokens loaded
/// from the tier at first admission, and their share of prompt tokens); the table gains a
/// "tier hit" column. `events_dropped` counts KV events an instance's engine dropped before
/// the router saw them and `view_resyncs` the exact views rebuilt from an engine's index for
/// it (`ClusterSimulator`); when any run dropped events, the table gains a "dropped ev."
/// column (events / resyncs). When any run rejected requests (no instance could hold them),
/// aborted some (`ReplayResult.aborted`) or finished some at the engines' `maxSeqTokens`
/// before their output length, it gains a "rejected / aborted / capped" column.
public enum ReplayReport {
    /// The table: one row per policy.
    public static func table(_ outcomes: [Replay.Outcome]) -> String {
        let tier = outcomes.contains { $0.result.sharedTierHitRate != nil }
        let drops = outcomes.contains { $0.result.eventsDropped > 0 }
        let refusals = outcomes.contains { $0.result.rejected > 0 || $0.result.aborted > 0 || $0.result.lengthCapped > 0 }
        let header = ["policy", "view", "TTFT p50 s", "p90 s", "p99 s", "SLO att.", "prefix hit"] + (tier ? ["tier hit"] : [])
            + ["imbalance", "prefill skew", "capacity"] + (drops ? ["dropped ev."] : []) + (refusals ? ["rejected / aborted / capped"] : [])
        var rows: [[String]] = []
        for o in outcomes {
            let r = o.result
            rows.append([
                r.policy, viewName(r, approximate: "approx") ?? "-",
                seconds(r.ttftQuantile(0.5)), seconds(r.ttftQuantile(0.9)), seconds(r.ttftQuantile(0.99)),
                fixed(r.sloAttainment * 100, 1) + "%", fixed(r.prefixHitRate * 100, 1) + "%",
            ] + (tier ? [fixed((r.sharedTierHitRate ?? 0) * 100, 1) + "%"] : []) + [
                fixed(r.loadImbalance, 2), fixed(r.prefillSkew, 2), o.capacity.map { "x" + fixed($0, 2) } ?? "-",
            ] + (drops ? ["\(r.eventsDropped) / \(r.viewResyncs)"] : [])
              + (refusals ? ["\(r.rejected) / \(r.aborted) / \(r.lengthCapped)"] : []))
        }
        var widths = header.map(\.count)
        for row in rows { for (i, c) in row.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                let pad = String(repeating: " ", count: widths[i] - c.count)
                return i < 2 ? c + pad : pad + c
            }.joined(separator: "  ")
        }
        var out = line(header) + "\n"
        out += widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ") + "\n"
        for row in rows { out += line(row) + "\n" }
        return out
    }

    /// The JSON document described above.
    public static func json(_ outcomes: [Replay.Outcome], trace: Trace, config: SimulationConfig) -> String {
        var s = "{\"trace\":\(jsonString(trace.source)),\"requests\":\(trace.count),\"skipped_lines\":\(trace.skippedLines),"
        s += "\"arrivals\":\(jsonString(trace.arrivals.rawValue)),"
        s += "\"instances\":\(config.instances),"
        s += "\"rate_scale\":\(config.rateScale),\"ttft_slo_ms\":\(config.ttftSLOMilliseconds),"
        s += "\"warmup_s\":\(config.warmupSeconds),\"token_budget\":\(config.tokenBudget),\"max_batch\":\(config.maxBatch),"
        s += "\"index_on_schedule\":\(config.engine.indexOnSchedule),"
        s += "\"rebalance\":\(config.router.rebalance),"
        if let tier = config.sharedTier {
            s += "\"shared_tier\":{\"capacity_bytes\":\(tier.capacityBytes),\"load_gbps\":\(number(tier.loadGigabytesPerSecond))},"
        }
        s += "\"policies\":["
        s += outcomes.map { o -> String in
            let r = o.result
            var p = "{\"policy\":\(jsonString(r.policy)),\"warmup_requests\":\(r.warmupRequests),\"view\":\(viewName(r, approximate: "approximate").map(jsonString) ?? "null"),"
            p += "\"ttft_p50_ms\":\(number(r.ttftQuantile(0.5))),\"ttft_p90_ms\":\(number(r.ttftQuantile(0.9))),"
            p += "\"ttft_p99_ms\":\(number(r.ttftQuantile(0.99))),\"slo_attainment\":\(number(r.sloAttainment)),"
            p += "\"prefix_hit_rate\":\(number(r.prefixHitRate)),\"load_imbalance\":\(number(r.loadImbalance)),"
            p += "\"prefill_skew\":\(number(r.prefillSkew)),"
            if let tokens = r.sharedTierHitTokens, let rate = r.sharedTierHitRate {
                p += "\"shared_tier_hit_tokens\":\(tokens),\"shared_tier_hit_rate\":\(number(rate)),"
            }
            p += "\"preemptions\":\(r.preemptions),\"rejected\":\(r.rejected),\"aborted\":\(r.aborted),\"length_capped\":\(r.lengthCapped),"
            p += "\"events_dropped\":\(r.eventsDropped),\"view_resyncs\":\(r.viewResyncs),\"slo_switches\":\(r.sloSwitches),"
            p += "\"rebalance_moves\":\(r.rebalanceMoves),\"makespan_s\":\(number(r.makespanSeconds)),\"wall_s\":\(number(r.wallSeconds)),"
            p += "\"effective_capacity\":\(number(o.capacity)),\"capacity_probes\":["
            p += o.probes.map { "{\"rate_scale\":\(number($0.rateScale)),\"attainment\":\(number($0.attainment))}" }.joined(separator: ",")
            return p + "]}"
        }.joined(separator: ",")
        return s + "]}"
    }

    /// The cache view `r`'s policy routed with ("exact" or `approximate`); nil for a policy
    /// that reads no cache (round-robin, least-loaded, consistent-hash: the router keeps a view
    /// mode for them, but never reads it).
    static func viewName(_ r: ReplayResult, approximate: String) -> String? {
        guard PolicyKind(name: r.policy)?.readsCache ?? true else { return nil }
        return r.view == .exact ? "exact" : approximate
    }

    /// `x` as a JSON number; null for nil or a non-finite value.
    static func number(_ x: Double?) -> String { x.map { $0.isFinite ? String($0) : "null" } ?? "null" }

    /// A TTFT in ms as seconds with 2 decimals for the table; "-" for none.
    static func seconds(_ ms: Double?) -> String { ms.map { fixed($0 / 1000, 2) } ?? "-" }
}
