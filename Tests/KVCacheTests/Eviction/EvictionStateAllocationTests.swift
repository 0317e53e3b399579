import Glibc
import Testing
import TestSupport
@testable import KVCache

/// A sequence's token-eviction state lives outside memory_bytes and a valid config can make it
/// larger than the process may map: creating it (the first observe), growing it (an append past
/// its capacity) and copying it (a fork) return `outOfMemory` and change nothing, where Swift's
/// `allocate` ended the process. RLIMIT_AS is process-wide, so each test runs in a child (an
/// exit test) that writes what went wrong to stderr ("eviction state: " lines) and exits 0;
/// an abort fails the expectation.
@Suite("Token-eviction state: allocation failure is a status")
struct EvictionStateAllocationTests {
    static let prefix = "eviction state: "

    /// Contiguous, 8 layers x 64 KV heads per head, episodic with 64 episodes: the state of a
    /// sequence of up to 1024 tokens is 512 rows x 1024 slots x 68 words (~143 MB), about
    /// twice that past 1024 tokens; K/V are 1 KiB per token and layer.
    static func engine() -> Engine {
        var c = EngineConfig()
        c.layout = .contiguous
        c.numLayers = 8
        c.numKVHeads = 64
        c.headDim = 8
        c.dtypeBytes = 2
        c.blockTokens = 16
        c.maxSeqs = 4
        c.maxSeqTokens = 4096
        c.memoryBytes = 128 << 20
        c.eviction = EvictionConfig(.episodic)
        c.eviction.perHead = true
        c.eviction.episodes = 64
        return try! Engine(c)
    }

    static func report(_ problems: [String]) -> Never { ExitReport.exit(prefix, problems) }

    /// Sequence `seq` of `n` tokens whose K/V bytes, every layer, hold `seq`'s pattern.
    static func filled(_ e: Engine, _ seq: UInt64, tokens n: Int) {
        _ = try! e.createSequence(seq, tokens: [Int32](repeating: Int32(seq), count: n))
        for layer in 0..<8 {
            let (k, v) = try! e.kv(seq, layer: layer)
            memset(k, Int32(seq), n * 1024)
            memset(v, Int32(seq) + 1, n * 1024)
        }
    }

    /// What differs from `filled`'s pattern in `seq`'s first `n` tokens.
    static func patternProblems(_ e: Engine, _ seq: UInt64, tokens n: Int) -> [String] {
        var problems: [String] = []
        for layer in 0..<8 {
            let (k, v) = try! e.kv(seq, layer: layer)
            for i in 0..<(n * 1024) where k.load(fromByteOffset: i, as: UInt8.self) != UInt8(seq)
                || v.load(fromByteOffset: i, as: UInt8.self) != UInt8(seq) + 1 {
                problems.append("sequence \(seq) layer \(layer): K/V byte \(i) changed")
                break
            }
        }
        return problems
    }

    /// Observes uniform scores for every layer of `seq` (`n` tokens, 64 heads).
    static func observe(_ e: Engine, _ seq: UInt64, tokens n: Int) throws(KVError) {
        let scores = [Float](repeating: 1 / Float(n), count: 64 * n)
        for layer in 0..<8 { try e.observe(seq, layer: layer, scores: scores, nHeads: 64, nTokens: n) }
    }

    static func status(_ body: () throws(KVError) -> Void) -> String {
        do { try body(); return "ok" } catch { return "\(error.code): \(error.message)" }
    }

    @Test func aFirstObserveThatCannotAllocateTheStateIsOutOfMemory() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let e = Self.engine()
            Self.filled(e, 1, tokens: 100)
            Self.filled(e, 2, tokens: 100)
            var problems: [String] = []
            limitAddressSpace(extra: 64 << 20)
            let refused = Self.status { () throws(KVError) in try Self.observe(e, 1, tokens: 100) }
            if !(refused.hasPrefix("outOfMemory") && refused.contains("bytes")) { problems.append("first observe under the limit: \(refused)") }
            limitAddressSpace(extra: nil)
            if (try? e.length(1)) != 100 { problems.append("sequence 1's length is \(String(describing: try? e.length(1)))") }
            problems += Self.patternProblems(e, 1, tokens: 100) + Self.patternProblems(e, 2, tokens: 100)
            let after = Self.status { () throws(KVError) in try Self.observe(e, 1, tokens: 100); _ = try e.compact(1, budgetTokens: 50) }
            if after != "ok" || (try? e.layerLength(1, layer: 0)) != 50 { problems.append("observe and compact afterwards: \(after)") }
            Self.report(problems)
        }
        ExitReport.expectNothingReported(Self.prefix, result)
    }

    @Test func anAppendOrForkThatCannotAllocateTheStateIsRefusedWhole() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let e = Self.engine()
            Self.filled(e, 1, tokens: 1024)
            Self.filled(e, 2, tokens: 100)
            var problems: [String] = []
            do { try Self.observe(e, 1, tokens: 1024) } catch { Self.report(["observe without a limit: \(error)"]) }
            let positions = { () -> [Int32] in
                var p = [Int32](repeating: -1, count: 64 * 1024)
                _ = p.withUnsafeMutableBufferPointer { try! e.positions(1, layer: 3, into: $0) }
                return p
            }
            let before = positions()
            limitAddressSpace(extra: 64 << 20)  // the state's growth to 2048 slots needs ~285 MB
            let append = Self.status { () throws(KVError) in try e.append(1, tokens: [7]) }
            let fork = Self.status { () throws(KVError) in try e.fork(parent: 1, child: 3) }
            limitAddressSpace(extra: nil)
            if !(append.hasPrefix("outOfMemory") && append.contains("bytes")) { problems.append("append under the limit: \(append)") }
            if !(fork.hasPrefix("outOfMemory") && fork.contains("bytes")) { problems.append("fork under the limit: \(fork)") }
            if (try? e.length(1)) != 1024 { problems.append("sequence 1's length is \(String(describing: try? e.length(1)))") }
            if (try? e.length(3)) != nil { problems.append("the refused fork's child exists") }
            if positions() != before { problems.append("sequence 1's positions changed") }
            problems += Self.patternProblems(e, 1, tokens: 1024) + Self.patternProblems(e, 2, tokens: 100)
            let after = Self.status { () throws(KVError) in
                try e.append(1, tokens: [7])
                try e.fork(parent: 1, child: 3)
                _ = try e.compact(3, budgetTokens: 512)
            }
            if after != "ok" || (try? e.length(1)) != 1025 || (try? e.layerLength(3, layer: 0)) != 512 {
                problems.append("append, fork and compact afterwards: \(after)")
            }
            Self.report(problems)
        }
        ExitReport.expectNothingReported(Self.prefix, result)
    }

    /// A focus that re-clusters (a segment added since the last focus, an episode observed)
    /// copies every episode's scores while it remaps them (64 x 2 MiB here): under the limit
    /// it is `outOfMemory` and changes nothing (the new segment stays unclustered, the focus
    /// stands); without the limit the same focus succeeds. Swift's `allocate` ended the process.
    @Test func aReclusteringFocusThatCannotCopyTheScoresIsOutOfMemory() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let e = Self.engine()
            Self.filled(e, 1, tokens: 100)
            var problems: [String] = []
            let a: [Float] = [1, 0, 0, 0], b: [Float] = [0, 1, 0, 0]
            var first = -1
            let setUp = Self.status { () throws(KVError) in
                try a.withUnsafeBufferPointer { (p) throws(KVError) in try e.addSegment(1, start: 0, end: 50, embedding: p) }
                try Self.observe(e, 1, tokens: 100)
                first = try a.withUnsafeBufferPointer { (p) throws(KVError) in try e.focus(1, query: p) }  // credits the turn: an episode observed
                try b.withUnsafeBufferPointer { (p) throws(KVError) in try e.addSegment(1, start: 50, end: 100, embedding: p) }
            }
            if setUp != "ok" { Self.report(["set-up: \(setUp)"]) }
            let state = e.evictionStates[e.sequences.slot(of: 1)]!
            limitAddressSpace(extra: 64 << 20)
            let refused = Self.status { () throws(KVError) in _ = try b.withUnsafeBufferPointer { (p) throws(KVError) in try e.focus(1, query: p) } }
            limitAddressSpace(extra: nil)
            if !(refused.hasPrefix("outOfMemory") && refused.contains("bytes")) { problems.append("re-clustering focus under the limit: \(refused)") }
            if state.segmentEpisodes.last != -1 { problems.append("the refused focus clustered the new segment: \(state.segmentEpisodes)") }
            if state.focusedEpisode != first { problems.append("the focus moved from \(first) to \(state.focusedEpisode)") }
            problems += Self.patternProblems(e, 1, tokens: 100)
            let after = Self.status { () throws(KVError) in _ = try b.withUnsafeBufferPointer { (p) throws(KVError) in try e.focus(1, query: p) } }
            if after != "ok" || state.segmentEpisodes.contains(-1) { problems.append("the focus afterwards: \(after), \(state.segmentEpisodes)") }
            Self.report(problems)
        }
        ExitReport.expectNothingReported(Self.prefix, result)
    }

    /// The public initializer's precondition comes before the capacity search: a length past
    /// `maxCapacity` traps at once. The search ran first and never ended (capped at
    /// `maxCapacity`, below the length); an alarm turns a hang into SIGALRM here.
    @Test func aStateLongerThanItsMostTrapsAtOnce() async {
        await #expect(processExitsWith: .signal(SIGILL)) {
            alarm(10)
            _ = try? EvictionState(layers: 1, heads: 1, config: EvictionConfig(.heavyHitter), length: 2048, maxCapacity: 1024)
            exit(0)
        }
    }
}
