/// Milliseconds of prefill per uncached token, calibrated from observed prefills: an
/// exponentially decayed ratio of summed milliseconds to summed tokens, so long prompts weigh
/// by their size and the estimate follows drift. Starts at the configured prior.
///
/// Cost: O(1). Invariant: `millisecondsPerToken > 0`.
public struct PrefillEstimator: Sendable {
    /// Weight kept by past observations at each new one.
    public static let decay = 0.98
    private var milliseconds = 0.0
    private var tokens = 0.0
    private let prior: Double

    /// An estimator answering `prior` until it observes something.
    public init(prior: Double) {
        precondition(prior > 0)
        self.prior = prior
    }

    /// The current estimate.
    public var millisecondsPerToken: Double { tokens > 0 ? milliseconds / tokens : prior }

    /// Records a prefill of `tokens` uncached tokens that took `milliseconds`; ignores
    /// empty or non-finite observations.
    public mutating func observe(tokens t: Int, milliseconds ms: Double) {
        guard t > 0, ms > 0, ms.isFinite else { return }
        milliseconds = milliseconds * Self.decay + ms
        tokens = tokens * Self.decay + Double(t)
    }
}
