/// Milliseconds of prefill per uncached token, calibrated from observed prefills: an
/// exponentially decayed ratio of summed milliseconds to summed tokens, so long prompts weigh
/// by their size and the estimate follows drift. Starts at the configured prior.
///
/// Cost: O(1). Invariant: `millisecondsPerToken` is positive and finite.
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

    /// Records a prefill of `tokens` uncached tokens that took `milliseconds` and returns
    /// true; returns false and changes nothing for an empty or non-finite observation, or one
    /// after which the summed milliseconds would overflow to infinity or their ratio to the
    /// summed tokens underflow to 0 (each is a positive number, yet the estimate would stay
    /// broken for a long time: the sums only decay by `decay` per observation).
    @discardableResult
    public mutating func observe(tokens t: Int, milliseconds ms: Double) -> Bool {
        guard t > 0, ms > 0, ms.isFinite else { return false }
        let m = milliseconds * Self.decay + ms, n = tokens * Self.decay + Double(t)
        guard m.isFinite, m / n > 0 else { return false }
        milliseconds = m
        tokens = n
        return true
    }
}
