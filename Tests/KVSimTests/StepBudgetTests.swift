import Testing
@testable import KVSim

/// The simulated instances' scheduler limits are vLLM's defaults for the modelled GPU.
@Suite struct StepBudgetTests {
    /// vLLM's engine arguments give an A100 served through its OpenAI server (UsageContext
    /// OPENAI_API_SERVER) max_num_batched_tokens 2048 and max_num_seqs 256; 8192 / 1024 are
    /// for GPUs of 70 GiB or more other than the A100 (vLLM's test_defaults_with_usage_context:
    /// `device_memory >= 70 * GiB_bytes and "a100" not in device_name`). The defaults were
    /// 8192 / 256, an H100 budget beside an A100 batch.
    @Test func theDefaultsAreVLLMsForAnA100Server() {
        let c = SimulationConfig()
        #expect(c.tokenBudget == 2048)
        #expect(c.maxBatch == 256)
    }
}
