/// The answer of a create's dry run (`Engine.admission`, kvcache.h kvc_prefix_admit): what
/// `createSequence(_:tokens:salt:commitTokens:)` would do now.
///
/// Invariants: `refusal` is nil exactly when the create would succeed (and the reserved
/// tokens fit after it); then `shortTokens` is 0. A refusal is the create's own
/// `outOfMemory` error (same message); `shortTokens` is the memory missing, in tokens of
/// K/V (whole blocks, or page groups, of them), or 0 when the refusal is for a sequence slot
/// (`maxSeqs`), in which case the lookup was not made and `cachedTokens` is 0.
public struct Admission: Equatable, Sendable {
    /// The cached tokens the create would report (its lookup: a multiple of `blockTokens`, at
    /// most the prompt's length - 1).
    public let cachedTokens: Int
    /// Memory missing for the create and the reserve, in tokens; 0 when it fits.
    public let shortTokens: Int
    /// The create's `outOfMemory` error, or nil when it fits.
    public let refusal: KVError?

    /// True when the create would succeed now.
    public var fits: Bool { refusal == nil }
}
