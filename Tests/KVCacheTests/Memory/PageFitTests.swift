#if canImport(Glibc)
import Glibc
#endif
import TestSupport
import Testing
@testable import KVCache

/// A paged shape whose blocks do not fill their page groups says so at create: how much of
/// memory_bytes holds no tokens and which block_tokens or page_bytes would leave at most 5 %.
@Suite("Page fit")
struct PageFitTests {
    /// 8 KV heads x 128 x fp16: 2 KiB per token and layer's K or V.
    static func config(blockTokens: Int, pageBytes: UInt64) -> EngineConfig {
        var c = smallConfig(.paged, memoryBytes: 16 << 20, pageBytes: pageBytes, blockTokens: blockTokens)
        c.numKVHeads = 8
        c.headDim = 128
        return c
    }

    /// block_tokens 24 is a 48 KiB block in a 64 KiB group: a quarter empty, as the engine's
    /// own block count shows (64 blocks per 4 MiB of a tensor instead of 85); 32 tokens (64 KiB:
    /// the nearer powers of two are 16 and 32, ties to the larger) or 16 KiB pages (three per
    /// block) leave at most 5 %. Shapes that divide evenly: no line.
    @Test func aShapeLeavingAQuarterEmptyIsNamedWithBetterSettings() throws {
        let c = Self.config(blockTokens: 24, pageBytes: 64 << 10)
        #expect(PageFit.emptyShare(blockBytes: c.blockBytes, pageBytes: c.pageBytes) == 0.25)
        #expect(try Engine(c).stats().blocksTotal == (16 << 20) / 4 / (64 << 10))
        let line = try #require(PageFit.advice(c))
        #expect(line.contains("25 %") && line.contains("block_tokens 32") && line.contains("page_bytes 16384"), "\(line)")
        for (tokens, page) in [(16, UInt64(64 << 10)), (32, 64 << 10), (64, 64 << 10), (24, 4096), (31, 64 << 10)] {
            #expect(PageFit.advice(Self.config(blockTokens: tokens, pageBytes: page)) == nil, "\(tokens) tokens, \(page) B pages")
        }
    }

    /// Phi-3-medium's 10 KV heads x 128 x fp16 (2.5 KiB per token) at the defaults (16 tokens,
    /// 64 KiB pages) leaves 37.5 % empty; the advice is 128 tokens (five pages, nothing empty),
    /// the nearest fitting power of two by ratio, not 1, the nearest by difference (helper-178:
    /// one-token blocks are no advice a server can take).
    @Test func theAdviceIsTheNearestBlockSizeByRatio() throws {
        var c = Self.config(blockTokens: 16, pageBytes: 64 << 10)
        c.numKVHeads = 10
        #expect(PageFit.emptyShare(blockBytes: c.blockBytes, pageBytes: c.pageBytes) == 0.375)
        let line = try #require(PageFit.advice(c))
        #expect(line.contains("38 %") && line.contains("block_tokens 128 or"), "\(line)")
    }

    /// The create logs the line once per process on stderr; the contiguous layout, which maps
    /// tokens densely, and an even shape log nothing. Before, nothing was said. Exit 0 when
    /// both creates succeeded.
    @Test func aCreateLogsTheEmptyShareOnce() async {
        let result = await #expect(processExitsWith: .exitCode(0), observing: [\.standardErrorContent]) {
            var contiguous = Self.config(blockTokens: 24, pageBytes: 64 << 10)
            contiguous.layout = .contiguous
            guard (try? Engine(contiguous)) != nil, (try? Engine(Self.config(blockTokens: 16, pageBytes: 64 << 10))) != nil,
                  (try? Engine(Self.config(blockTokens: 24, pageBytes: 64 << 10))) != nil,
                  (try? Engine(Self.config(blockTokens: 24, pageBytes: 64 << 10))) != nil else { exit(1) }
            exit(0)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.components(separatedBy: "holding no tokens").count == 2, "one line: \(stderr)")
    }

    /// Only a create that succeeds logs the line: one refused after its memory was made (its
    /// disk tier's offload_dir is a file) left the once-per-process line used up and the
    /// engine created next, with the same shape, said nothing. The child marks stderr between
    /// the two creates; the line must come after the mark. Exit 0 when the first create was
    /// refused and the second succeeded.
    @Test func aRefusedCreateLeavesTheLineToTheNextCreate() async {
        let result = await #expect(processExitsWith: .exitCode(0), observing: [\.standardErrorContent]) {
            var refused = Self.config(blockTokens: 24, pageBytes: 64 << 10)
            refused.offloadDir = "/dev/null"
            refused.offloadBytes = 64 << 20
            guard (try? Engine(refused)) == nil else { exit(1) }
            _ = write(2, "-- mark --\n", 11)
            guard (try? Engine(Self.config(blockTokens: 24, pageBytes: 64 << 10))) != nil else { exit(2) }
            exit(0)
        }
        let log = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        let afterMark = log.components(separatedBy: "-- mark --").last ?? ""
        #expect(log.components(separatedBy: "holding no tokens").count == 2, "one line: \(log)")
        #expect(afterMark.contains("holding no tokens"), "the line came before the successful create: \(log)")
    }
}
