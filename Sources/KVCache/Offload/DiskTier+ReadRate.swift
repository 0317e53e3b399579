import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The disk tier's read-rate estimate (`ReadRate`): whether reading a prefix's disk blocks
/// beats computing them.
extension DiskTier {
    /// A create reads its prefix's disk blocks regardless of the estimate when no block read
    /// ran for this long, so that an estimate from a busy moment is measured again: 1 s.
    static let readProbeNanoseconds: UInt64 = 1_000_000_000

    /// Whether reading `blocks` more blocks of `tokensPerBlock` tokens is expected to make
    /// them resident sooner than a prefill of `prefillTokensPerSecond` (> 0) computes them:
    /// (block reads queued or in flight + `blocks`) slots at the recent read rate
    /// (`ReadRate`), against the tokens at the prefill's rate. True while no rate is known
    /// and when no block read ran for `readProbeNanoseconds` (a probe). O(1).
    func readIsFaster(blocks: Int, tokensPerBlock: Int, prefillTokensPerSecond: Double) -> Bool {
        guard let rate = readRate.bytesPerSecond,
              let idle = readRate.idleNanoseconds(now: monotonicNanoseconds()),
              idle < DiskTier.readProbeNanoseconds else { return true }
        let readSeconds = Double((readRate.inFlight + pendingReads.count + blocks) * slotBytes) / rate
        return readSeconds <= Double(blocks * tokensPerBlock) / prefillTokensPerSecond
    }
}
