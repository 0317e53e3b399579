/// Quantiles of a sample by nearest rank: the q-quantile of n sorted values is the
/// ceil(q * n)-th smallest (1-based; the smallest for q = 0), so it is always one of the
/// values, never an interpolation. The one definition the reports use (replay's TTFT
/// quantiles, io-bench's latency percentiles); `kvcache load` reads its from HdrHistogram.
public enum Quantile {
    /// The `q`-quantile of `sorted` by nearest rank; nil when empty. Preconditions: q in
    /// 0...1 (checked), `sorted` ascending (not checked, so the call stays O(1)).
    public static func nearestRank<C: RandomAccessCollection>(_ sorted: C, _ q: Double) -> C.Element? {
        precondition(q >= 0 && q <= 1, "a quantile lies in 0...1")
        guard !sorted.isEmpty else { return nil }
        let rank = Int((q * Double(sorted.count)).rounded(.up))
        let i = min(sorted.count - 1, max(0, rank - 1))
        return sorted[sorted.index(sorted.startIndex, offsetBy: i)]
    }
}
