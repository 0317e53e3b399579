#if canImport(Glibc)
import Glibc
#endif
import TestSupport
import Testing
@testable import KVCache

/// Episodic offload's open-record buffers (`OpenRecords`) are mapped only by an engine whose
/// sequences can use them: at create when the engine's policy is episodic, else at the first
/// `setEviction` that makes a sequence episodic. Before, every engine with a disk tier mapped
/// them at create, min(max_seqs, offload_queue_depth) slot payloads counted by RLIMIT_AS and
/// overcommit mode 2: an RLIMIT_AS the staging buffers fit refused a create that could never
/// use them, and the message blamed the staging buffers.
/// Here the buffers are as large as the staging buffers (32 slots of 4 MiB each), so that a
/// limit the staging buffers fit with half of them to spare fits no open-record buffers.
/// Process limits are process-wide: each test runs in a child (an exit test) that prints what
/// went wrong to stderr ("open records: " lines) and exits 0.
@Suite struct OpenRecordReservationTests {
    static let reportPrefix = "open records: "

    /// 4 layers x 8 KV heads x head_dim 128 in 256-token blocks: a slot payload of 4 MiB;
    /// 32 staging buffers and 32 open-record buffers (min(max_seqs, offload_queue_depth)).
    static func config(_ dir: String, _ policy: EvictionPolicyKind) -> EngineConfig {
        var c = offloadConfig(.paged, dir: dir, memoryBytes: 32 << 20, offloadBytes: 64 << 20)
        c.numLayers = 4
        c.numKVHeads = 8
        c.headDim = 128
        c.blockTokens = 256
        c.maxSeqs = 32
        c.maxSeqTokens = 2048
        c.eviction = episodic(policy)
        return c
    }

    /// `policy` with episodic's parameters of `EpisodicOffloadTests` (2 episodes, a 2-token
    /// recent window).
    static func episodic(_ policy: EvictionPolicyKind) -> EvictionConfig {
        var e = EvictionConfig(policy)
        e.episodes = 2
        e.recentTokens = 2
        return e
    }

    /// Bytes of the staging buffers (`DiskTier`: at least the queue depth, 32 MiB of small
    /// slots) and of the open-record buffers at `c`'s shape.
    static func stagingBytes(_ c: EngineConfig) -> Int {
        let slot = Int(tierSlotBytes(c))
        return DiskTier.stagingBuffers(queueDepth: c.offloadQueueDepth, slotBytes: slot, slots: Int(c.offloadBytes) / slot) * slot
    }
    static func openRecordBytes(_ c: EngineConfig) -> Int { min(c.maxSeqs, c.offloadQueueDepth) * c.tensors * c.blockBytes }

    /// Room above the address space in use for `c`'s K/V memory, its staging buffers and half
    /// its open-record buffers (for the rest the create maps).
    static func stagingRoom(_ c: EngineConfig) -> Int { Int(c.memoryBytes) + stagingBytes(c) + openRecordBytes(c) / 2 }

    static func status(_ body: () throws -> Void) -> String {
        do {
            try body()
            return "ok"
        } catch {
            return "\(error)"
        }
    }

    static func report(_ problems: [String]) -> Never { ExitReport.exit(reportPrefix, problems) }

    /// Without eviction, an engine with a disk tier maps no open-record buffers: its create
    /// grows VmSize by less than its memory, staging and open-record buffers, and succeeds
    /// under an RLIMIT_AS that leaves room for the first two only. A sequence made episodic
    /// under that limit (`setEviction`) is refused, naming the open-record buffers, and keeps
    /// its configuration; without the limit the same call maps them and the sequence's first
    /// compaction fills an open record.
    @Test func aDiskTierWithoutEpisodicEvictionMapsThemOnlyWhenASequenceBecomesEpisodic() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            var problems: [String] = []
            let dir = ScratchDir("openrecordreserve")
            let c = Self.config(dir.path, .none)
            let (memory, staging, open) = (Int(c.memoryBytes), Self.stagingBytes(c), Self.openRecordBytes(c))
            let before = addressSpaceBytes()
            do {
                let probe = try Engine(c)
                let grew = withExtendedLifetime(probe) { addressSpaceBytes() - before }
                if grew >= memory + staging + open {
                    problems.append("the create grew VmSize by \(grew) bytes: memory \(memory) + staging \(staging) + open records \(open) or more")
                }
            } catch {
                Self.report(["create without a limit: \(error)"])
            }
            limitAddressSpace(extra: Self.stagingRoom(c))
            let e: Engine
            do { e = try Engine(c) } catch { Self.report(problems + ["create under a limit the memory and staging buffers fit: \(error)"]) }
            let toks = tokens(16, seed: 1), slot = { e.sequences.slot(of: 1) }
            let setUp = Self.status {
                try e.createSequence(1, tokens: toks)
                try writeKV(e, 1, tokens: toks, from: 0)
            }
            if setUp != "ok" { Self.report(problems + ["set-up: \(setUp)"]) }
            let refused = Self.status { try e.setEviction(1, Self.episodic(.episodic)) }
            if !(refused.hasPrefix("outOfMemory") && refused.contains("open-record buffers")) {
                problems.append("making sequence 1 episodic under the limit: \(refused), expected outOfMemory naming the open-record buffers")
            }
            if let policy = e.evictionStates[slot()]?.config.policy, policy != .none { problems.append("the refused call set policy \(policy.name)") }
            limitAddressSpace(extra: nil)
            let after = Self.status {
                try e.setEviction(1, Self.episodic(.episodic))
                try observeAll(e, 1, scores(e, n: 16, heavy: [1, 9]), n: 16)
                _ = try e.compact(1, budgetTokens: 15)
            }
            if after != "ok" { problems.append("episodic without the limit: \(after)") }
            let s = e.stats().disk
            if s.tokensInOpenRecords != UInt64(c.numLayers) { problems.append("tokens in open records: \(s.tokensInOpenRecords), expected one per layer") }
            Self.report(problems)
        }
        ExitReport.expectNothingReported(Self.reportPrefix, result)
    }

    /// An engine whose policy is episodic maps them at create: under the limit that leaves
    /// room for its memory and staging buffers only, the create is `outOfMemory` naming the
    /// open-record buffers, not the staging buffers (before, it mapped them first and the
    /// staging buffers found no room), and leaves the directory free: the same create succeeds
    /// once the limit is lifted.
    @Test func anEpisodicEngineWhoseOpenRecordBuffersDoNotFitIsRefusedNamingThem() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            var problems: [String] = []
            let dir = ScratchDir("openrecordreserve")
            let c = Self.config(dir.path, .episodic)
            limitAddressSpace(extra: Self.stagingRoom(c))
            let refused = Self.status { _ = try Engine(c) }
            limitAddressSpace(extra: nil)
            if !(refused.hasPrefix("outOfMemory") && refused.contains("open-record buffers") && !refused.contains("staging buffers")) {
                problems.append("an episodic create under the limit: \(refused), expected outOfMemory naming the open-record buffers only")
            }
            let after = Self.status { _ = try Engine(c) }
            if after != "ok" { problems.append("the same create without the limit: \(after)") }
            Self.report(problems)
        }
        ExitReport.expectNothingReported(Self.reportPrefix, result)
    }
}
