import Foundation
import KVCache
import Testing
@testable import kvcache

/// The synthetic side of `kvcache load`: length distributions, token limits and the shared-prefix
/// workload.
@Suite("Synthetic workload")
struct WorkloadTests {
    static func samples(_ d: LengthDistribution, _ n: Int = 20_000, seed: UInt64 = 1) -> [Int] {
        var random = SplitMix64(seed: seed)
        return (0..<n).map { _ in d.sample(&random) }
    }

    static func mean(_ values: [Int]) -> Double { Double(values.reduce(0, +)) / Double(values.count) }

    /// Bounds and means follow from each shape's definition; 20,000 samples put the sample mean
    /// within a few tenths (uniform) or about one token (lognormal, sigma 1) of the true mean,
    /// so the tolerances are several standard errors wide (and the seed is fixed).
    @Test func samplesStayInRangeWithTheRequestedMean() {
        #expect(Self.samples(LengthDistribution(shape: .fixed, mean: 77, max: 100)).allSatisfy { $0 == 77 })

        let uniform = Self.samples(LengthDistribution(shape: .uniform, mean: 100, max: 150))
        #expect(uniform.min() == 50 && uniform.max() == 150, "uniform on 2 x 100 - 150 ... 150")
        #expect(abs(Self.mean(uniform) - 100) < 2)

        let wide = Self.samples(LengthDistribution(shape: .lognormal, mean: 100, max: 1 << 30))
        #expect(wide.allSatisfy { $0 >= 1 })
        #expect(abs(Self.mean(wide) - 100) < 5, "\(Self.mean(wide))")
        // The median of a lognormal is exp(mu) = mean x exp(-sigma^2 / 2), about 60.7 here.
        #expect(abs(Double(wide.sorted()[wide.count / 2]) - 100 * exp(-0.5)) < 3)

        let clamped = Self.samples(LengthDistribution(shape: .lognormal, mean: 100, max: 150))
        #expect(clamped.allSatisfy { (1...150).contains($0) })
        #expect(clamped.contains(150), "about 18% of draws exceed 150 and are clamped to it")
    }

    @Test func validateNamesTheOptionAndTheFix() {
        func message(_ d: LengthDistribution) -> String? {
            do { try d.validate("--x") } catch { return "\(error)" }
            return nil
        }
        #expect(message(LengthDistribution(shape: .lognormal, mean: 0, max: 10)) == "--x: need 1 <= mean (0) <= max (10)")
        #expect(message(LengthDistribution(shape: .fixed, mean: 20, max: 10)) == "--x: need 1 <= mean (20) <= max (10)")
        #expect(message(LengthDistribution(shape: .uniform, mean: 100, max: 200))
            == "--x: a uniform distribution with mean 100 and max 200 would need lengths below 1; lower max to at most 199")
        #expect(message(LengthDistribution(shape: .uniform, mean: 100, max: 199)) == nil, "the fix it names works")
        #expect(message(LengthDistribution(shape: .lognormal, mean: 100, max: 100)) == nil)
    }

    @Test func descriptionsSayTheShape() {
        #expect(LengthDistribution(shape: .fixed, mean: 7, max: 9).description == "fixed 7")
        #expect(LengthDistribution(shape: .uniform, mean: 100, max: 150).description == "uniform 50...150")
        #expect(LengthDistribution(shape: .lognormal, mean: 512, max: 2048).description == "lognormal mean 512 max 2048")
    }

    @Test func tokenLimitsKeepEveryRequestInsideMaxSeqTokens() {
        let limits = TokenLimits(maxPromptTokens: 4000, maxSeqTokens: 4100)
        #expect(limits.cap(prompt: 5000, output: 500) == (4000, 100))
        #expect(limits.cap(prompt: 300, output: 500) == (300, 500))
        #expect(limits.cap(prompt: 0, output: -3) == (1, 0), "a prompt has at least one token, an output none")
        let tight = TokenLimits(maxPromptTokens: 9000, maxSeqTokens: 4096)
        #expect(tight.cap(prompt: 8000, output: 10) == (4096, 0), "maxSeqTokens caps the prompt too")
    }

    static func workload(requests: Int = 64, rate: Double = 0, ratio: Double, sharedPrompts: Int, seed: UInt64 = 9) -> SyntheticWorkload {
        SyntheticWorkload(requestCount: requests, ratePerSecond: rate,
                          prompt: LengthDistribution(shape: .fixed, mean: 64, max: 64),
                          output: LengthDistribution(shape: .uniform, mean: 10, max: 15),
                          sharedPrefixRatio: ratio, sharedPrompts: sharedPrompts, seed: seed,
                          limits: TokenLimits(maxPromptTokens: 1024, maxSeqTokens: 2048))
    }

    static func prompt(_ w: SyntheticWorkload, _ index: Int) -> [Int32] {
        let request = w.request(index)
        return [Int32](unsafeUninitializedCapacity: request.promptTokens) { buffer, count in
            w.fillPrompt(request, into: buffer)
            count = request.promptTokens
        }
    }

    /// round(ratio x 64) leading tokens come from a shared prompt, the rest are the request's own.
    @Test func promptsShareExactlyTheirSharedPart() {
        let one = Self.workload(ratio: 0.25, sharedPrompts: 1)
        let prompts = (0..<64).map { Self.prompt(one, $0) }
        #expect(Set(prompts.map { Array($0[0..<16]) }).count == 1, "one shared prompt: every prompt starts with its 16 tokens")
        #expect(Set(prompts.map { Array($0[16..<32]) }).count == 64, "the rest is unique")

        let many = Self.workload(ratio: 0.5, sharedPrompts: 4)
        let starts = Set((0..<64).map { Array(Self.prompt(many, $0)[0..<32]) })
        #expect((2...4).contains(starts.count), "64 requests over 4 Zipf-weighted shared prompts: \(starts.count)")

        let none = Self.workload(ratio: 0, sharedPrompts: 4)
        #expect(Set((0..<64).map { Array(Self.prompt(none, $0)[0..<16]) }).count == 64, "ratio 0 shares nothing")

        #expect(Self.prompt(many, 5) == Self.prompt(Self.workload(ratio: 0.5, sharedPrompts: 4), 5), "deterministic")
        #expect(Self.prompt(many, 5) != Self.prompt(Self.workload(ratio: 0.5, sharedPrompts: 4, seed: 10), 5), "seeded")
    }

    @Test func arrivalsArePoissonAtTheRateOrAllAtOnce() {
        let closed = Self.workload(ratio: 0.5, sharedPrompts: 4)
        #expect((0..<64).allSatisfy { closed.request($0).arrivalNanoseconds == 0 })
        #expect((0..<64).allSatisfy { (5...15).contains(closed.request($0).outputTokens) && closed.request($0).promptTokens == 64 })

        // 10,000 exponential gaps of mean 1 ms: their mean is within 3% of it (3 standard errors).
        let poisson = Self.workload(requests: 10_000, rate: 1000, ratio: 0.5, sharedPrompts: 4)
        let arrivals = (0..<10_000).map { poisson.request($0).arrivalNanoseconds }
        #expect(zip(arrivals, arrivals.dropFirst()).allSatisfy { $0 <= $1 })
        #expect(abs(Double(arrivals.last!) / 10_000 - 1e6) < 3e4, "\(arrivals.last!)")
        #expect(poisson.summary.hasPrefix("synthetic, 10000 requests, Poisson 1000.0 req/s, prompt fixed 64, output uniform 5...15, shared"))
        // A rate below 1 keeps its digits (0.05 read "Poisson 0.1 req/s").
        #expect(Self.workload(requests: 10, rate: 0.05, ratio: 0.5, sharedPrompts: 4).summary.contains("Poisson 0.050 req/s"))
    }

    /// A run whose limits cut the distributions says so in its summary (it used to describe
    /// prompts of up to 2048 tokens while every one was capped at 50).
    @Test func theSummaryNamesTheCapsThatCutTheLengths() {
        func summary(maxPrompt: Int, maxSeq: Int) -> String {
            SyntheticWorkload(requestCount: 8, ratePerSecond: 0,
                              prompt: LengthDistribution(shape: .lognormal, mean: 512, max: 2048),
                              output: LengthDistribution(shape: .lognormal, mean: 64, max: 256),
                              sharedPrefixRatio: 0.5, sharedPrompts: 8, seed: 42,
                              limits: TokenLimits(maxPromptTokens: maxPrompt, maxSeqTokens: maxSeq)).summary
        }
        #expect(!summary(maxPrompt: 16384, maxSeq: 32768).contains("capped"), "the defaults cut nothing")
        #expect(summary(maxPrompt: 50, maxSeq: 100).contains(
            "output lognormal mean 64 max 256, prompts capped at 50 tokens, prompt + output capped at 100 tokens (max_seq_tokens), shared"))
        #expect(summary(maxPrompt: 1024, maxSeq: 32768).contains("max 256, prompts capped at 1024 tokens, shared"))
        #expect(summary(maxPrompt: 2048, maxSeq: 2100).contains("max 256, prompt + output capped at 2100 tokens (max_seq_tokens), shared"))
    }
}
