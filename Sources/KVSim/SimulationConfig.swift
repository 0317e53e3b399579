import KVCache
import KVRouter

/// Everything a cluster simulation run needs besides the trace.
public struct SimulationConfig: Sendable {
    /// Serving instances, 1...`RouterConfig.maxInstances`.
    public var instances = 8
    /// The router (policy, view, key blocks, SLO threshold). `blockTokens` and the approximate
    /// view's per-instance capacity are set from the trace and the engine by the simulator.
    public var router = RouterConfig()
    /// Step time model.
    public var cost = CostModel()
    /// Each instance's engine: metadata-only, shaped like the cost model's model. With its
    /// `indexOnSchedule` set, the simulator calls `schedule` for every prefill chunk as the
    /// step is composed (ClusterSimulator), so prompts are indexed as they are computed;
    /// without it the engine indexes a prompt's full blocks as the simulator allocates them,
    /// chunk by chunk as it schedules them, which is no earlier.
    public var engine = SimulationConfig.qwen7BEngine(blockTokens: 512)
    /// Tokens one step may process (decode tokens plus prefill chunks; chunked prefill as in
    /// vLLM v1 and Sarathi-Serve): vLLM's `max_num_batched_tokens` default for the modelled
    /// GPU served through its OpenAI server. vLLM's `EngineArgs` (vllm/engine/arg_utils.py,
    /// the defaults by usage context; pinned by tests/engine/test_arg_utils.py's
    /// `test_defaults_with_usage_context`) gives 8192 tokens and 1024 sequences only to GPUs
    /// of 70 GiB or more whose name does not contain "a100" (H100, H200, MI300x); an A100,
    /// the 80 GB one included, gets 2048 and 256. (It was 8192 here, unsourced, beside the
    /// A100's 256: the replay's 2048 / 8192 sensitivity is in docs/routing.md.)
    /// In 1...`maxTokenBudget` (`ClusterSimulator` refuses others).
    public var tokenBudget = 2048
    /// The largest `tokenBudget`: Int32.max, past any GPU's step, so that a step's token sums
    /// (a prompt's cached, loaded and budgeted tokens) stay far from Int's overflow (a budget
    /// near Int.max trapped in the admission).
    public static let maxTokenBudget = Int(Int32.max)
    /// Sequences running at once per instance: vLLM's `max_num_seqs` default for the A100
    /// (above). At most `engine.maxSeqs` (`ClusterSimulator` refuses more).
    public var maxBatch = 256
    /// Arrival times are divided by this (2 = twice the trace's request rate).
    public var rateScale = 1.0
    /// TTFT service-level objective, milliseconds.
    public var ttftSLOMilliseconds = 10_000.0
    /// Requests arriving in the trace's first `warmupSeconds` (its own times, counted from
    /// its first arrival, before `rateScale`: the same requests at every rate) are simulated
    /// like every other but left out of the TTFT percentiles, the SLO attainment and the
    /// prefix hit rate (`ReplayResult.warmupRequests` counts them): a cluster starts with
    /// empty caches and queues, and a policy's first minutes there (llm-d sends a whole cold
    /// start to one instance, docs/routing.md) are not its steady state. Busy time and
    /// prefill skew cover the whole run. Finite, >= 0, and short of the trace's last arrival
    /// (`ClusterSimulator` refuses a window holding every request). 0, the default here:
    /// every request measured; `kvcache replay` defaults to 300.
    public var warmupSeconds = 0.0
    /// A KV store shared by all instances (LMCache-style, `SharedTier`); nil: none, and the
    /// simulation is exactly the one without the option.
    public var sharedTier: SharedTierConfig? = nil

    /// The defaults listed above.
    public init() {}

    /// A metadata-only engine shaped like Qwen2.5-7B (28 layers, 4 KV heads of 128, bf16:
    /// 57,344 B of K/V per token) with the KV budget of an A100-80GB serving it: 80 GB x 0.9
    /// (vLLM's `gpu_memory_utilization`) minus 15.2 GB of weights and ~4.8 GB of activations
    /// = 52 GB, that is 1,771 blocks of 512 tokens (907k tokens).
    public static func qwen7BEngine(blockTokens: Int) -> EngineConfig {
        var c = EngineConfig()
        c.numLayers = 28
        c.numKVHeads = 4
        c.headDim = 128
        c.dtypeBytes = 2
        c.blockTokens = blockTokens
        c.maxSeqs = 256
        c.maxSeqTokens = 131_072
        c.memoryBytes = 52_000_000_000
        c.metadataOnly = true
        return c
    }
}
