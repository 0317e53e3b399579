import Glibc
import Testing
import TestSupport
@testable import KVCacheABI

/// kvcache.h: kvc_seq_observe, kvc_seq_append and kvc_seq_fork return KVC_ERR_OUT_OF_MEMORY,
/// changing nothing, when the token-eviction state they create, grow or copy (outside
/// memory_bytes) cannot be allocated; before, the library ended the process. RLIMIT_AS is
/// process-wide: the test runs in a child (an exit test) that writes what differs to stderr
/// ("eviction state ABI: " lines) and exits 0.
@Suite struct EvictionStateAllocationABITests {
    static let prefix = "eviction state ABI: "

    @Test func pagedStateAllocationFailuresAreOutOfMemory() async {
        ExitReport.expectNothingReported(Self.prefix, await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            Self.run(KVC_LAYOUT_PAGED)
        })
    }

    @Test func contiguousStateAllocationFailuresAreOutOfMemory() async {
        ExitReport.expectNothingReported(Self.prefix, await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            Self.run(KVC_LAYOUT_CONTIGUOUS)
        })
    }

    /// In the child: the refusals, then the same calls without the limit; reports what differs.
    static func run(_ layout: UInt32) -> Never {
        // 8 layers x 64 KV heads per head, episodic with 64 episodes: a state of up to 1024
        // tokens is 512 rows x 1024 slots x 68 words (~143 MB), twice that past 1024.
        var c = CConfig.small(layout, memoryBytes: 128 << 20)
        c.numLayers = 8
        c.numKVHeads = 64
        c.maxSeqTokens = 4096
        c.set32(ConfigLayout.evictionPolicy, 4)  // KVC_EVICTION_EPISODIC
        c.set32(ConfigLayout.evictionPerHead, 1)
        c.set32(ConfigLayout.episodes, 64)
        var handle: OpaquePointer?
        guard c.create(&handle) == KVC_OK, let e = handle else { Self.report(["create: \(String(cString: kvc_last_error()))"]) }
        var problems: [String] = []
        func name(_ rc: kvc_status) -> String { "\(String(cString: kvc_status_name(rc))) \(rc == KVC_OK ? "" : String(cString: kvc_last_error()))" }
        func expectOutOfMemory(_ what: String, _ rc: kvc_status) {
            let message = String(cString: kvc_last_error())
            if rc != KVC_ERR_OUT_OF_MEMORY || !message.contains("bytes") { problems.append("\(what): \(name(rc))") }
        }
        func length(_ seq: UInt64) -> Int {
            var n = -1
            return kvc_seq_length(e, seq, &n) == KVC_OK ? n : -1
        }
        func observe(_ seq: UInt64, tokens n: Int) -> kvc_status {
            let scores = [Float](repeating: 1 / Float(n), count: 64 * n)
            for layer in 0..<8 {
                let rc = kvc_seq_observe(e, seq, UInt32(layer), scores, 64, n)
                if rc != KVC_OK { return rc }
            }
            return KVC_OK
        }
        var cached = 0
        let long = [Int32](repeating: 1, count: 1024), short = [Int32](repeating: 2, count: 100)
        guard kvc_seq_create(e, 1, short, short.count, &cached) == KVC_OK,
              kvc_seq_create(e, 2, long, long.count, &cached) == KVC_OK else { Self.report(["seq_create: \(String(cString: kvc_last_error()))"]) }
        let observed = observe(2, tokens: 1024)
        if observed != KVC_OK { problems.append("observe without a limit: \(name(observed))") }

        limitAddressSpace(extra: 64 << 20)
        expectOutOfMemory("first kvc_seq_observe under the limit", observe(1, tokens: 100))
        expectOutOfMemory("kvc_seq_append past the state's capacity under the limit", kvc_seq_append(e, 2, [7], 1))
        expectOutOfMemory("kvc_seq_fork under the limit", kvc_seq_fork(e, 2, 3))
        limitAddressSpace(extra: nil)

        if length(1) != 100 || length(2) != 1024 || length(3) != -1 {
            problems.append("lengths after the refusals: \(length(1)), \(length(2)), child \(length(3))")
        }
        let after = [observe(1, tokens: 100), kvc_seq_append(e, 2, [7], 1), kvc_seq_fork(e, 2, 3)]
        if after != [KVC_OK, KVC_OK, KVC_OK] || length(2) != 1025 || length(3) != 1025 {
            problems.append("observe, append and fork without the limit: \(after.map(name)), lengths \(length(2)), \(length(3))")
        }
        kvc_engine_destroy(e)
        Self.report(problems)
    }

    static func report(_ problems: [String]) -> Never { ExitReport.exit(prefix, problems) }
}
