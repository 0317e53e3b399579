/// What a sequence's eviction state must keep, beyond every slot's position and accumulated
/// attention, for its policy's choices: each policy type answers
/// (`EvictionPolicy.tracking(_:)`), and `EvictionState` stores the answer once when it is
/// created, so that observing, growing, moving and compacting test a stored bit, never the
/// policy's kind nor an existential call per token or row.
///
/// Invariant: the tracking of a state never changes. Without `lastStep`, `visibility` or
/// `episodes` the state allocates and updates no buffer for it; without `lowScores` its
/// rows record nothing and the record's slots are not allocated (its per-row bookkeeping,
/// O(rows), is).
public struct ScoreTracking: OptionSet, Sendable {
    /// The option bits.
    public let rawValue: UInt8

    /// Options from their bits.
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// The last observed step's attention per slot (`EvictionRow.last`): one float per slot,
    /// overwritten by each observation (TOVA).
    public static let lastStep = ScoreTracking(rawValue: 1 << 0)
    /// Per slot, the queries that could see its token (`EvictionRow.visible` and
    /// `visibleOffset`), for scores normalised by visibility: one float per slot, O(1) per row
    /// per decode step (H2O and episodic with `normalizedScores`).
    public static let visibility = ScoreTracking(rawValue: 1 << 1)
    /// Attention per episode and for the current turn (`EvictionRow.episode` and `turn`):
    /// `episodes + 1` floats per slot, the turn's added by each observation. Only such a
    /// policy takes segments and `focus`, and only its evictions go to a disk tier (parked,
    /// to be restored when a focus wants them back) (episodic).
    public static let episodes = ScoreTracking(rawValue: 1 << 2)
    /// A record of each row's lowest scores between decode steps (`EvictionRow.lowScores`,
    /// `LowScoreCache`), for a policy whose scores fall no further than that cache allows
    /// while only compactions move slots (H2O and episodic; `EvictionState.plan` passes it
    /// only on a row that does not park its evictions).
    public static let lowScores = ScoreTracking(rawValue: 1 << 3)
}
