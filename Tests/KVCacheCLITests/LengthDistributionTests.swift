import Glibc
import KVCache
import Testing
@testable import kvcache

/// Length distributions near `Int.max` (`--prompt-mean`, `--prompt-max`, ...): validating,
/// describing and drawing never trap. `2 * mean - max` overflowed for a uniform shape with a
/// mean past `Int.max / 2`, and a lognormal draw past `Int.max` trapped in its conversion.
/// Exit tests: a trap would end the test process.
@Suite("length distributions near Int.max")
struct LengthDistributionTests {
    @Test func aUniformShapeOfHugeLengthsDrawsItsOnlyValue() async {
        await #expect(processExitsWith: .success) {
            let d = LengthDistribution(shape: .uniform, mean: 5_000_000_000_000_000_000, max: 5_000_000_000_000_000_000)
            try d.validate("--prompt")
            var random = SplitMix64(seed: 1)
            guard d.sample(&random) == 5_000_000_000_000_000_000, d.description == "uniform 5000000000000000000...5000000000000000000"
            else { exit(2) }
        }
    }

    /// A mean past `Int.max / 2` with max `Int.max`: valid (2 * mean - max is about 7.8e17),
    /// where validating it trapped. A mean of 4e18 needs lengths below 1: refused, naming the
    /// largest max that works (2 * mean - 1).
    @Test func aUniformShapePastHalfIntMaxValidatesAndDraws() async {
        await #expect(processExitsWith: .success) {
            let d = LengthDistribution(shape: .uniform, mean: 5_000_000_000_000_000_000, max: .max)
            try d.validate("--prompt")
            guard d.description == "uniform 776627963145224193...9223372036854775807" else { exit(2) }
            var random = SplitMix64(seed: 1)
            guard (0..<100).allSatisfy({ _ in d.sample(&random) >= 776_627_963_145_224_193 }) else { exit(3) }
            do {
                try LengthDistribution(shape: .uniform, mean: 4_000_000_000_000_000_000, max: .max).validate("--prompt")
                exit(4)
            } catch {
                guard "\(error)".hasSuffix("lower max to at most 7999999999999999999") else { exit(5) }
            }
        }
    }

    /// A lognormal of mean 9e18: about a third of its draws lie past `Int.max`; they are `max`.
    @Test func lognormalDrawsPastIntMaxAreTheMax() async {
        await #expect(processExitsWith: .success) {
            let d = LengthDistribution(shape: .lognormal, mean: 9_000_000_000_000_000_000, max: .max)
            var random = SplitMix64(seed: 7)
            let draws = (0..<1000).map { _ in d.sample(&random) }
            guard draws.allSatisfy({ $0 >= 1 }), draws.contains(.max), draws.contains(where: { $0 < .max }) else { exit(2) }
        }
    }

    /// `kvcache load` with such lengths runs (prompts and outputs capped by the limits) and
    /// describes its workload: its caps' check added `output.max` to the prompt's cap.
    @Test func loadRunsWithLengthsNearIntMax() async {
        await #expect(processExitsWith: .success) {
            let shape = ["--requests", "5", "--layers", "1", "--kv-heads", "1", "--head-dim", "32", "--memory", "64MiB",
                         "--max-seq-tokens", "4096", "--plots", ""]
            let report = try LoadCommand.parse(shape + ["--prompt-dist", "uniform", "--prompt-mean", "5000000000000000000",
                                                         "--prompt-max", "5000000000000000000", "--output-mean", "9000000000000000000",
                                                         "--output-max", "9223372036854775807"]).loadRunner().run()
            guard report.requests.completed == 5 else { exit(2) }
            let lognormal = try LoadCommand.parse(shape + ["--prompt-mean", "9000000000000000000",
                                                            "--prompt-max", "9223372036854775807"]).loadRunner().run()
            guard lognormal.requests.completed == 5 else { exit(3) }
        }
    }
}
