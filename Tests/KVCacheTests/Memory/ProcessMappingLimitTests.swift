import CKVMemory
import Glibc
import Testing
@testable import KVCache

/// Two contiguous engines in one process (a target model's and a draft model's) share the
/// kernel's vm.max_map_count, so they share one mapping limit: each used to keep its own
/// count under vm.max_map_count less what the process held when it was created, and the
/// second's creates met the kernel's bare ENOMEM ("mapping 1 pages failed: Cannot allocate
/// memory") at a third of its own limit. The count is process-wide, so this runs in a child
/// process of its own (an exit test): other tests' engines would share it.
@Suite("Contiguous layout: one mapping limit for the process's engines")
struct ProcessMappingLimitTests {
    @Test func twoEnginesShareTheMappingLimit() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            Self.report(Self.twoEnginesShareTheLimit())
        }
        guard let result else { return }
        let report = String(decoding: result.standardErrorContent, as: UTF8.self)
            .split(separator: "\n").filter { $0.hasPrefix(Self.prefix) }.joined(separator: "\n")
        #expect(report.isEmpty, Comment(rawValue: report))
    }

    static let prefix = "PROCESS-MAPPING-LIMIT: "

    /// Writes each problem to stderr, for the parent to read, and exits.
    static func report(_ problems: [String]) -> Never {
        let text = problems.map { "\(prefix)\($0)\n" }.joined()
        _ = text.withCString { write(2, $0, strlen($0)) }
        exit(0)
    }

    /// One-page sequences (a page per token, one token each: 4 counted mappings, about as
    /// many real ones), so that 16,384 slots reach the limit in a few seconds.
    static func config() -> EngineConfig {
        var c = EngineConfig()
        c.layout = .contiguous
        c.numLayers = 1
        c.numKVHeads = 1
        c.headDim = 2048
        c.dtypeBytes = 2
        c.blockTokens = 16
        c.maxSeqs = 16384
        c.maxSeqTokens = 16
        c.memoryBytes = 256 << 20
        c.pageBytes = 4096
        return c
    }

    /// Engine a fills two thirds of the limit, b creates until refused: b must be refused by
    /// the shared limit (naming vm.max_map_count), not by the kernel, with the two counts
    /// within it; once a frees its sequences, b creates again.
    static func twoEnginesShareTheLimit() -> [String] {
        var problems: [String] = []
        let a: Engine, b: Engine
        do { (a, b) = (try Engine(config()), try Engine(config())) } catch { return ["creating the engines: \(error)"] }
        let limit = kvm_ranges_mapping_limit(a.contiguous!.ranges)
        var aSeqs: UInt64 = 0
        do {
            while a.stats().mappings + 4 < limit * 2 / 3 {
                _ = try a.createSequence(aSeqs + 1, tokens: [1])
                aSeqs += 1
            }
        } catch { return ["a refused at \(a.stats().mappings) of \(limit) mappings: \(error)"] }
        var bSeqs: UInt64 = 0
        var refusal: KVError?
        do {
            while bSeqs < 16384 {
                _ = try b.createSequence(bSeqs + 1, tokens: [1])
                bSeqs += 1
            }
        } catch { refusal = error }
        let held = a.stats().mappings + b.stats().mappings
        guard let refusal else { return ["b was never refused: \(bSeqs) sequences, \(held) mappings of \(limit)"] }
        let message = "\(refusal)"
        if !message.contains("vm.max_map_count") || !message.contains("this process's engines hold \(held) mappings") {
            problems.append("b's refusal at \(b.stats().mappings) of its \(kvm_ranges_mapping_limit(b.contiguous!.ranges)) mappings "
                            + "(\(held) with a's) does not name vm.max_map_count and the engines' count: \(message)")
        }
        if held > limit { problems.append("the engines hold \(held) mappings, past the process's \(limit)") }
        if b.stats().sequences != bSeqs { problems.append("the refused create left \(b.stats().sequences) sequences, not \(bSeqs)") }
        do {
            for id in 1...aSeqs { try a.free(id) }
            for id in 1...64 { _ = try b.createSequence(bSeqs + UInt64(id), tokens: [1]) }
        } catch { problems.append("after a freed its \(aSeqs) sequences b was refused: \(error)") }
        let after = a.stats().mappings + b.stats().mappings
        if after > limit { problems.append("after a's frees the engines hold \(after) mappings, past \(limit)") }
        return problems
    }
}
