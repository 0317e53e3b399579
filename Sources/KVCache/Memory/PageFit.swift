import CKVMemory
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How fully the paged layout's blocks fill its page groups. A group holds
/// max(1, page_bytes / block bytes) blocks per tensor, rounded up to whole pages
/// (`kvm_arena_group_bytes`), so where block and page sizes do not divide evenly the rest of
/// every group, and so that share of memory_bytes, holds no tokens (block_tokens 24 of 2 KiB
/// per layer at 64 KiB pages: a quarter). The contiguous layout maps tokens densely and loses
/// nothing this way.
enum PageFit {
    /// The most of memory_bytes a shape may leave empty before a create says so: 5 %.
    static let tolerated = 0.05

    /// The share of each page group, so of memory_bytes, that holds no tokens. O(1).
    static func emptyShare(blockBytes: Int, pageBytes: UInt64) -> Double {
        let group = kvm_arena_group_bytes(UInt64(blockBytes), pageBytes)
        let blocks = kvm_arena_blocks_per_group(UInt64(blockBytes), pageBytes)
        return Double(group - blocks * UInt64(blockBytes)) / Double(group)
    }

    /// The line a create logs when `config`'s paged shape leaves more than `tolerated` of
    /// memory_bytes empty, naming the power-of-two block_tokens nearest config's by ratio
    /// (ties: the larger; servers' kernels take such sizes, and by difference 16 tokens of
    /// 2.5 KiB would be sent to 1, not 128) and the largest page_bytes below config's that
    /// leave no more; nil when the shape fits. Cost: at most 13 + 10 `emptyShare`
    /// evaluations, only when the shape does not fit.
    static func advice(_ config: EngineConfig) -> String? {
        let tokenBytes = config.tokenBytes, empty = emptyShare(blockBytes: config.blockBytes, pageBytes: config.pageBytes)
        guard empty > tolerated else { return nil }
        let fits = { (tokens: Int, page: UInt64) in emptyShare(blockBytes: tokens * tokenBytes, pageBytes: page) <= tolerated }
        let ratio = { (tokens: Int) in abs(log2(Double(tokens) / Double(config.blockTokens))) }
        let tokens = (0...12).map { 1 << $0 }.filter { fits($0, config.pageBytes) }
            .min { (ratio($0), -$0) < (ratio($1), -$1) }
        let page = sequence(first: config.pageBytes / 2) { $0 / 2 }.prefix { $0 >= 4096 }.first { fits(config.blockTokens, $0) }
        let options = [tokens.map { "block_tokens \($0)" }, page.map { "page_bytes \($0)" }].compactMap { $0 }
        return "block_tokens \(config.blockTokens) (\(config.blockBytes) bytes per layer's K or V) in page groups of "
            + "\(kvm_arena_group_bytes(UInt64(config.blockBytes), config.pageBytes)) bytes leaves \(Int((empty * 100).rounded())) % "
            + "of memory_bytes holding no tokens"
            + (options.isEmpty ? "" : ": \(options.joined(separator: " or ")) would leave at most 5 %")
    }

    /// Logs `advice(config)` on stderr, once per process: called by a paged engine's create
    /// once it succeeded (a refused create leaves the line to the next). Cost: as `advice`,
    /// then one atomic.
    static func logAdvice(_ config: EngineConfig) {
        guard let line = advice(config), !logged.exchange(true, ordering: .relaxed) else { return }
        kvm_log(line)
    }

    private static let logged = Atomic<Bool>(false)
}
