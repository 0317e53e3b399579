import Foundation
import TestSupport
import Testing
@testable import KVCacheABI
@testable import KVCache

/// A fixture of `config` with a disk tier in `dir` whose engine is made from the config as
/// `kvc_engine_create` decodes it, then changed by `adjust`, for what the C ABI has no field
/// for: the thread backend (`offloadForceThreads`, whose I/O a test can hold in flight through
/// `Engine.pauseOffloadIO`) or failing disk requests (`offloadFault`: the engine's own, where
/// `KVCACHE_OFFLOAD_FAULT` is the whole process's, inherited by every process the parallel
/// tests start meanwhile). The handle is made as that call makes it.
func adjustedFixture(_ config: CConfig, dir: String, _ adjust: (inout EngineConfig) -> Void) throws -> (ABIFixture, Engine) {
    var raw = config.bytes
    var decoded = try dir.withCString { d in
        try raw.withUnsafeMutableBytes { buffer in
            buffer.storeBytes(of: UInt64(UInt(bitPattern: d)), toByteOffset: 64, as: UInt64.self)
            return try EngineConfig(cStruct: buffer.baseAddress!)
        }
    }
    adjust(&decoded)
    let engine = try Engine(decoded)
    return (ABIFixture(config, handle: OpaquePointer(Unmanaged.passRetained(engine).toOpaque())), engine)
}

/// The names in the directory at path `dir` (bytes, not necessarily UTF-8) but "." and "..",
/// or nil when it cannot be opened.
func directoryEntries(_ dir: [UInt8]) -> [String]? {
    guard let d = (dir + [0]).withUnsafeBufferPointer({ opendir(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self)) }) else {
        return nil
    }
    defer { closedir(d) }
    var names: [String] = []
    while let entry = readdir(d) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// A fresh directory for one test's disk tier (`ScratchDir`: removed at the latest when the
/// process exits).
func scratchDir() -> String { ScratchDir("abi-tier").path }

/// The small-model fixture with a disk tier in `dir` and its two witnesses; `fault`: its disk
/// requests fail so (`adjustedFixture`).
private func offloadFixture(_ layout: UInt32, dir: String, offloadBytes: UInt64 = 16 << 20,
                            fault: OffloadFault? = nil) throws -> ABIFixture {
    var c = CConfig.small(layout)
    c.offloadBytes = offloadBytes
    let f = try fault.map { fault in try adjustedFixture(c, dir: dir) { $0.offloadFault = fault }.0 } ?? ABIFixture(c, offloadDir: dir)
    try f.addWitness(1001, tokens: f.uniqueTokens(1001, count: 3 * f.blockTokens + 2))
    try f.addWitness(1002, tokens: f.uniqueTokens(1002, count: f.blockTokens - 1))
    return f
}

/// `offloadFixture` whose tier fails every write on the device, with sequence 9 (30 tokens)
/// created and written with salt 9.
private func failingWritesFixture(_ layout: UInt32, dir: String) throws -> ABIFixture {
    let f = try offloadFixture(layout, dir: dir, fault: OffloadFault(reads: false, writes: true))
    try f.create(9, tokens: f.uniqueTokens(9, count: 30))
    try f.write(9, salt: 9, from: 0, to: 30)
    return f
}

/// Calls kvc_seq_ready (and kvc_engine_poll) until it says 1; returns the last status.
func waitReady(_ f: ABIFixture, _ seq: UInt64) -> kvc_status {
    for _ in 0..<100_000 {
        var ready: Int32 = -1
        let rc = kvc_seq_ready(f.handle, seq, &ready)
        if rc != KVC_OK || ready == 1 { return rc }
        _ = kvc_engine_poll(f.handle, 100)
    }
    return KVC_ERR_INTERNAL
}

/// How a test asks for the granularity of kept sets through the C ABI: per layer (the
/// default), per head by `kvc_config.eviction_per_head`, or per head by `kvc_seq_set_eviction`.
enum Granularity: CaseIterable, Sendable { case perLayer, perHeadConfig, perHeadOverride }

/// Sequence 5 of an episodic engine with a disk tier, through the C ABI: 64 tokens written
/// with salt 5, two topics (A: segment 0..<32, B: 32..<64) whose turns attended to their own
/// heavy hitters (per head, head 1's are head 0's shifted by one: the heads keep different
/// sets), focused on A.
private struct EpisodicSequence {
    let f: ABIFixture
    /// Rows per layer (1, or 2 KV heads), and how far head 1's heavy hitters lie from head 0's.
    let rows: Int, shift: Int
    static let heavyA = [3, 9, 15, 21], heavyB = [35, 41, 47, 53]

    init(_ layout: UInt32, dir: String, granularity: Granularity, fault: OffloadFault? = nil) throws {
        var c = CConfig.small(layout)
        c.offloadBytes = 16 << 20
        c.set32(ConfigLayout.evictionPolicy, 4)  // KVC_EVICTION_EPISODIC
        c.set32(ConfigLayout.episodes, 2)
        c.set32(ConfigLayout.recentTokens, 2)
        c.set32(ConfigLayout.evictionPerHead, granularity == .perHeadConfig ? 1 : 0)
        f = try fault.map { fault in try adjustedFixture(c, dir: dir) { $0.offloadFault = fault }.0 } ?? ABIFixture(c, offloadDir: dir)
        rows = granularity == .perLayer ? 1 : 2
        shift = rows - 1
        try f.create(5, tokens: f.uniqueTokens(5, count: 64))
        try f.write(5, salt: 5, from: 0, to: 64)
        if granularity == .perHeadOverride { #expect(kvc_seq_set_eviction(f.handle, 5, 4, 1) == KVC_OK) }
        try turn((0, 32), [1, 0], heavy: Self.heavyA)
        #expect(focus([1, 0]) == KVC_OK)
        try turn((32, 64), [0, 1], heavy: Self.heavyB)
        #expect(focus([1, 0]) == KVC_OK)
    }

    private func turn(_ segment: (Int, Int), _ embedding: [Float], heavy: [Int]) throws {
        #expect(embedding.withUnsafeBufferPointer { kvc_seq_add_segment(f.handle, 5, segment.0, segment.1, $0.baseAddress, 2) } == KVC_OK)
        var s = [Float](repeating: 0.01, count: 128)
        for t in heavy { s[t] = 1; s[64 + t + shift] = 1 }
        try f.observe(5, s, tokens: 64)
    }

    func focus(_ query: [Float]) -> kvc_status {
        var e: UInt32 = 9
        return query.withUnsafeBufferPointer { kvc_seq_focus(f.handle, 5, $0.baseAddress, 2, &e) }
    }

    /// Each row of each layer holds `heavy` (row h's shifted by h * shift) and the recent
    /// window, with the bytes written.
    func expectHolds(_ heavy: [Int], sourceLocation: SourceLocation = #_sourceLocation) throws {
        for layer in 0..<2 {
            let pos = try f.positions(5, layer: layer)
            #expect(pos.count == rows * 6, sourceLocation: sourceLocation)
            for row in 0..<rows {
                #expect(pos[(row * 6)..<(row * 6 + 6)].sorted() == (heavy.map { $0 + row * shift } + [62, 63]).map(Int32.init),
                        sourceLocation: sourceLocation)
            }
        }
        #expect(try f.firstSlotMismatch(5, salt: 5) == nil, "the held tokens' bytes", sourceLocation: sourceLocation)
    }
}

@Suite("C ABI: disk tier", .serialized)
struct OffloadABITests {
    /// A mistyped fault-injection or backend variable is refused by kvc_engine_create, naming
    /// it, before the directory is touched (a malformed KVCACHE_OFFLOAD_FAULT once ran with no
    /// faults, silently). In a child process: the environment is the whole process's.
    @Test func aMistypedOffloadVariableIsRefusedAtCreate() async {
        await #expect(processExitsWith: .success) {
            let dir = scratchDir()
            for (name, value) in [("KVCACHE_OFFLOAD_FAULT", "writes:3"), ("KVCACHE_OFFLOAD_FAULT", "write:3@"),
                                  ("KVCACHE_OFFLOAD_FAULT", "all:x@/elsewhere"), ("KVCACHE_OFFLOAD_BACKEND", "thread"),
                                  // A DIR that does not exist (mistyped) once meant "another engine's".
                                  ("KVCACHE_OFFLOAD_FAULT", "read:0@\(dir)-missing")] {
                setenv(name, value, 1)
                var c = CConfig.small(KVC_LAYOUT_PAGED)
                c.offloadBytes = 16 << 20
                var e: OpaquePointer?
                let rc = c.create(&e, offloadDir: dir)
                let message = String(cString: kvc_last_error())
                let left = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? ["?"]
                guard rc == KVC_ERR_INVALID_ARGUMENT, e == nil, message.contains("\(name)=\(value)"), left.isEmpty else {
                    FileHandle.standardError.write(Data("\(name)=\(value): status \(rc), message \(message), files \(left)\n".utf8))
                    exit(1)
                }
                unsetenv(name)
            }
            // Well-formed values still create the engine: another directory's fault, threads.
            setenv("KVCACHE_OFFLOAD_FAULT", "read:0@\(scratchDir())", 1)
            setenv("KVCACHE_OFFLOAD_BACKEND", "threads", 1)
            var c = CConfig.small(KVC_LAYOUT_PAGED)
            c.offloadBytes = 16 << 20
            var e: OpaquePointer?
            guard c.create(&e, offloadDir: dir) == KVC_OK, let e else { exit(2) }
            kvc_engine_destroy(e)
            exit(0)
        }
    }

    /// Shapes whose slot one disk-tier read or write cannot move (more than 2^31 - 64 KiB
    /// bytes) are KVC_ERR_INVALID_ARGUMENT naming the slot's size and the limit, with nothing
    /// created in offload_dir: a slot of 2^43 + 4096 bytes trapped in kvc_engine_create (an
    /// overflow), one of 2^32 + 4096 created the tier's files and then failed to map its
    /// staging buffers. In a child process: the old code trapped.
    @Test func aSlotLargerThanOneIORequestIsRefusedAtCreate() async {
        await #expect(processExitsWith: .success) {
            // (layers, heads, head_dim, dtype, block_tokens, memory_bytes, offload_bytes, slot bytes)
            let shapes: [(UInt32, UInt32, UInt32, UInt32, UInt32, UInt64, UInt64, UInt64)] = [
                (1024, 1024, 4096, 1, 1024, 1 << 43, 1 << 44, (1 << 43) + 4096),
                (1, 1, 4096, 8, 65536, 1 << 32, 3 << 32, (1 << 32) + 4096),
            ]
            for (layers, heads, dim, dtype, blockTokens, memory, offload, slot) in shapes {
                let dir = scratchDir()
                var c = CConfig.small(KVC_LAYOUT_PAGED)
                (c.numLayers, c.numKVHeads, c.headDim, c.dtypeBytes, c.blockTokens) = (layers, heads, dim, dtype, blockTokens)
                (c.maxSeqs, c.maxSeqTokens, c.memoryBytes, c.pageBytes, c.offloadBytes) = (1, blockTokens, memory, 65536, offload)
                var e: OpaquePointer?
                let rc = c.create(&e, offloadDir: dir)
                let message = String(cString: kvc_last_error())
                let left = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? ["?"]
                try? FileManager.default.removeItem(atPath: dir)
                guard rc == KVC_ERR_INVALID_ARGUMENT, e == nil, left.isEmpty,
                      message.contains("a slot of \(slot) bytes"), message.contains("more than the 2147418112 bytes") else {
                    FileHandle.standardError.write(Data("slot \(slot): status \(rc), message \(message), files \(left)\n".utf8))
                    exit(1)
                }
            }
            exit(0)
        }
    }

    @Test(arguments: bothLayouts)
    func aTrimmedPrefixIsReadBackFromDiskByteIdentical(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        let f = try offloadFixture(layout, dir: dir)
        let prompt = f.uniqueTokens(5, count: 41)
        try f.create(5, tokens: prompt)
        try f.write(5, salt: 5, from: 0, to: 41)
        #expect(kvc_seq_free(f.handle, 5) == KVC_OK)
        // kvc_event: uint32 kind, uint32 tier, uint64 block_hash, uint64 parent_hash (24 bytes).
        var events = [UInt8](repeating: 0, count: 256 * 24)
        var n = 0
        _ = events.withUnsafeMutableBytes { kvc_drain_events(f.handle, $0.baseAddress, 256, &n) }
        #expect(kvc_engine_trim(f.handle) == KVC_OK)
        #expect(try f.stats().blocksSpilled == 10)
        _ = events.withUnsafeMutableBytes { kvc_drain_events(f.handle, $0.baseAddress, 256, &n) }
        let drained = (0..<n).map { i in
            events.withUnsafeBytes { ($0.load(fromByteOffset: 24 * i, as: UInt32.self), $0.load(fromByteOffset: 24 * i + 4, as: UInt32.self)) }
        }
        #expect(drained.filter { $0.0 == 1 && $0.1 == 1 }.count == 10, "stored in tier 1")
        #expect(drained.contains { ($0.0 == 2 || $0.0 == 3) && $0.1 == 0 }, "removed from tier 0")

        #expect(try f.create(6, tokens: prompt) == 40)
        #expect(waitReady(f, 6) == KVC_OK)
        #expect(try f.firstMismatch(6, salt: 5, to: 40) == nil)
        let s = try f.stats()
        #expect(s.diskHitTokens == 40)
        #expect(s.prefixHitTokens == 40)
        #expect(s.blocksLoaded == 10)
        #expect(s.diskBytesRead <= 10 * 8192, "blocks still being written are served from their staging buffers")
        #expect(s.diskCapacityBytes == 2048 * 8192)
        try f.expectWitnessesIntact()
    }

    /// kvc_engine_sync once offload_dir was removed under the engine: KVC_ERR_IO naming the
    /// slab (it said KVC_OK while a restart would find nothing); the engine serves on.
    @Test(arguments: bothLayouts)
    func aSyncAfterTheOffloadDirWasRemovedFailsThroughTheABI(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        let f = try offloadFixture(layout, dir: dir)
        let prompt = f.uniqueTokens(5, count: 41)
        try f.create(5, tokens: prompt)
        try f.write(5, salt: 5, from: 0, to: 41)
        #expect(kvc_seq_free(f.handle, 5) == KVC_OK)
        #expect(kvc_engine_trim(f.handle) == KVC_OK)
        #expect(kvc_engine_sync(f.handle) == KVC_OK)
        try FileManager.default.removeItem(atPath: dir)
        #expect(kvc_engine_sync(f.handle) == KVC_ERR_IO)
        let message = String(cString: kvc_last_error())
        #expect(message.contains("'\(dir)/kvcache.slab' is no longer"), "\(message)")
        #expect(try f.create(6, tokens: prompt) == 40)
        #expect(waitReady(f, 6) == KVC_OK)
        #expect(try f.firstMismatch(6, salt: 5, to: 40) == nil)
        try f.expectWitnessesIntact()
    }

    @Test(arguments: bothLayouts)
    func swapOutAndInRoundTripsThroughTheABI(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        let f = try offloadFixture(layout, dir: dir)
        try f.create(7, tokens: f.uniqueTokens(7, count: 30))
        try f.write(7, salt: 7, from: 0, to: 30)
        #expect(kvc_seq_swap_out(f.handle, 7) == KVC_OK)
        var ready: Int32 = -1
        #expect(kvc_seq_ready(f.handle, 7, &ready) == KVC_OK)
        #expect(ready == 0, "a swapped-out sequence is not ready")
        var k: UnsafeMutableRawPointer?, v: UnsafeMutableRawPointer?
        var count = 0
        let access = layout == KVC_LAYOUT_PAGED ? kvc_seq_block_table(f.handle, 7, nil, 0, &count) : kvc_seq_kv(f.handle, 7, 0, &k, &v)
        expectStatus(access, KVC_ERR_INVALID_ARGUMENT, mentioning: ["swapped out"])
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_swap_out", "swapped out"]) { kvc_seq_swap_out(f.handle, 7) }
        #expect(kvc_seq_swap_in(f.handle, 7) == KVC_OK)
        #expect(waitReady(f, 7) == KVC_OK)
        #expect(try f.firstMismatch(7, salt: 7, to: 30) == nil)
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_swap_in", "not swapped out"]) { kvc_seq_swap_in(f.handle, 7) }
        let s = try f.stats()
        #expect(s.swapOuts == 1 && s.swapIns == 1)
        try f.expectWitnessesIntact()
    }

    /// kvcache.h (kvc_seq_swap_out): a request preempted after kvc_seq_append gave it a token
    /// and before the pass that writes it is not swapped out (its uncomputed block would go to
    /// disk under its hash) but aborted at its computed length and created again: it then hits
    /// only its computed blocks, and what a later prompt reads back from disk is computed K/V.
    @Test(arguments: bothLayouts)
    func aRequestPreemptedBeforeItsPassIsAbortedAndCreatedAgain(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        let f = try offloadFixture(layout, dir: dir)
        let b = f.blockTokens
        let tokens = f.uniqueTokens(11, count: 4 * b + 1)
        try f.create(11, tokens: Array(tokens[0..<(4 * b - 1)]))
        try f.write(11, salt: 11, from: 0, to: 4 * b - 1)
        try f.append(11, tokens: [tokens[4 * b - 1]])  // fills block 3; preempted before its pass
        #expect(kvc_seq_abort(f.handle, 11, 4 * b - 1) == KVC_OK)
        #expect(try f.create(12, tokens: Array(tokens[0..<(4 * b)])) == 3 * b, "only computed blocks are hit")
        #expect(waitReady(f, 12) == KVC_OK)
        try f.write(12, salt: 11, from: 3 * b, to: 4 * b)
        #expect(kvc_seq_free(f.handle, 12) == KVC_OK)
        #expect(kvc_engine_trim(f.handle) == KVC_OK)
        #expect(try f.create(13, tokens: tokens) == 4 * b)
        #expect(waitReady(f, 13) == KVC_OK)
        #expect(try f.stats().diskHitTokens == UInt64(4 * b), "every block read back from disk")
        #expect(try f.firstMismatch(13, salt: 11, to: 4 * b) == nil)
        try f.expectWitnessesIntact()
    }

    @Test(arguments: bothLayouts)
    func anAsynchronousSwapOutIsSettledByLaterCallsThroughTheABI(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        let f = try offloadFixture(layout, dir: dir)
        try f.create(7, tokens: f.uniqueTokens(7, count: 30))
        try f.write(7, salt: 7, from: 0, to: 30)
        #expect(kvc_seq_swap_out_async(f.handle, 7) == KVC_OK)
        var ready: Int32 = -1
        #expect(kvc_seq_ready(f.handle, 7, &ready) == KVC_OK)
        #expect(ready == 0, "swapped out from the call's return")
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_swap_out_async", "swapped out"]) { kvc_seq_swap_out_async(f.handle, 7) }
        var polls = 0
        while try f.stats().swapOuts == 0 && polls < 100_000 {  // a guard against a hang, not a timing assertion
            #expect(kvc_engine_poll(f.handle, 100) == KVC_OK)
            polls += 1
        }
        #expect(try f.stats().swapOuts == 1, "settled by kvc_engine_poll")
        #expect(kvc_seq_swap_in(f.handle, 7) == KVC_OK)
        #expect(waitReady(f, 7) == KVC_OK)
        #expect(try f.firstMismatch(7, salt: 7, to: 30) == nil)
        // Freed right after the call: nothing of it stays but its cached full blocks.
        #expect(kvc_seq_swap_out_async(f.handle, 7) == KVC_OK)
        #expect(kvc_seq_free(f.handle, 7) == KVC_OK)
        #expect(kvc_engine_sync(f.handle) == KVC_OK)
        let s = try f.stats()
        #expect(s.sequences == 2, "the witnesses")
        #expect(s.diskStoredBytes == 7 * 8192, "the 7 full blocks of 30 tokens stay as cached prefix blocks, no own slot")
        try f.expectWitnessesIntact()
    }

    @Test(arguments: bothLayouts)
    func aWriteFailingAfterAnAsynchronousSwapOutReturnedIsReportedByReady(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        let f = try failingWritesFixture(layout, dir: dir)
        #expect(kvc_seq_swap_out_async(f.handle, 9) == KVC_OK, "the writes fail only once they complete")
        #expect(kvc_engine_sync(f.handle) == KVC_OK, "waits for the writes; their failure is the sequence's to report")
        var ready: Int32 = -1
        LastError.clear()
        expectStatus(kvc_seq_ready(f.handle, 9, &ready), KVC_ERR_IO, mentioning: ["kvc_seq_ready", "Input/output error", "stayed in memory"])
        #expect(kvc_seq_ready(f.handle, 9, &ready) == KVC_OK && ready == 1, "reported once; resident")
        #expect(try swapOutCounts(f) == [1, 0, 0, 1, 0], "started and failed")
        #expect(try f.stats().diskErrors == 8, "each of its 8 blocks' writes failed")
        #expect(try f.firstMismatch(9, salt: 9, to: 30) == nil, "nothing lost")
        try f.append(9, tokens: [1])
        try f.expectWitnessesIntact()
    }

    /// swap_outs_started, swap_outs, swap_outs_cancelled, swap_outs_failed, swap_outs_pending.
    private func swapOutCounts(_ f: ABIFixture) throws -> [UInt64] {
        let s = try f.stats()
        return [s.swapOutsStarted, s.swapOuts, s.swapOutsCancelled, s.swapOutsFailed, s.swapOutsPending]
    }

    /// Sequences of 1100 full blocks and a partial one, each of fresh tokens (none of its blocks
    /// is on disk yet): more than the 1024 staging buffers of these 8 KiB slots, so an
    /// asynchronous swap-out of one is still pending when the next call comes, whatever the
    /// device does (its last blocks are not even submitted yet).
    @Test(arguments: bothLayouts)
    func everySwapOutStartedEndsOnceCompletedCancelledOrFailedThroughTheABI(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        var c = CConfig.small(layout)
        c.offloadBytes = 32 << 20  // 4096 slots: sequence 7's 1101 stay pinned while swapped out
        c.maxSeqTokens = 8192
        let f = try ABIFixture(c, offloadDir: dir)
        try f.addWitness(1001, tokens: f.uniqueTokens(1001, count: 3 * f.blockTokens + 2))
        let n = 4 * 1100 + 2
        for seq: UInt64 in [7, 8, 9] {
            try f.create(seq, tokens: f.uniqueTokens(seq, count: n))
            try f.write(seq, salt: Int(seq), from: 0, to: n)
        }
        #expect(try swapOutCounts(f) == [0, 0, 0, 0, 0])
        #expect(kvc_seq_swap_out(f.handle, 7) == KVC_OK)
        #expect(try swapOutCounts(f) == [1, 1, 0, 0, 0], "the synchronous swap-out completed")
        #expect(kvc_seq_swap_out_async(f.handle, 8) == KVC_OK)
        #expect(try swapOutCounts(f) == [2, 1, 0, 0, 1], "pending")
        #expect(kvc_seq_swap_in(f.handle, 8) == KVC_OK, "cancels it")
        var ready: Int32 = 0
        #expect(kvc_seq_ready(f.handle, 8, &ready) == KVC_OK && ready == 1, "resident at once")
        #expect(try swapOutCounts(f) == [2, 1, 1, 0, 0])
        #expect(try f.stats().swapIns == 0, "a cancel is not a swap-in")
        #expect(try f.firstMismatch(8, salt: 8, to: n) == nil)
        #expect(kvc_seq_swap_out_async(f.handle, 9) == KVC_OK)
        #expect(kvc_seq_free(f.handle, 9) == KVC_OK, "cancels it too")
        #expect(try swapOutCounts(f) == [3, 1, 2, 0, 0])
        // Bad input starts nothing and changes no counter (expectFailure compares every stat).
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_swap_out_async", "9"]) { kvc_seq_swap_out_async($0, 9) }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_swap_out", "9"]) { kvc_seq_swap_out($0, 9) }
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_swap_out_async", "NULL"]) { kvc_seq_swap_out_async(nil, 1001) }
        #expect(try swapOutCounts(f) == [3, 1, 2, 0, 0])
        #expect(kvc_engine_sync(f.handle) == KVC_OK)
        try f.expectWitnessesIntact()
    }

    /// spills_skipped: an append that evicts cached blocks while an asynchronous swap-out's
    /// writes, held in flight, take every staging buffer beyond the reserve drops them without
    /// writing them (no completed write to take either), and kvc_stats says so: every eviction
    /// counted there, none spilled, none an error. Before, the spills took the reserve and then
    /// waited for the device under the engine's lock: here, with the I/O held, for ever
    /// (`AllocationSpillTests` asserts the no-wait with a guard; this test is about the ABI).
    @Test(arguments: bothLayouts)
    func anAppendsSpillsSkippedForWantOfStagingBuffersAreCountedThroughTheABI(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        // 512 KiB: 2048 blocks of 256 bytes (contiguous: 32 page groups of 256 tokens).
        var c = CConfig.small(layout, memoryBytes: 512 << 10)
        c.offloadBytes = 32 << 20
        c.maxSeqTokens = 8192
        let (f, engine) = try adjustedFixture(c, dir: dir) { $0.offloadForceThreads = true }
        let large = 4 * 1100 + 2, cached = 3000
        try f.create(7, tokens: f.uniqueTokens(7, count: large))
        try f.write(7, salt: 7, from: 0, to: large)
        try f.create(8, tokens: f.uniqueTokens(8, count: cached))
        try f.write(8, salt: 8, from: 0, to: cached)
        #expect(kvc_seq_free(f.handle, 8) == KVC_OK)  // 750 blocks stay cached
        try f.create(9, tokens: f.uniqueTokens(9, count: 1))
        #expect(engine.pauseOffloadIO(true))
        #expect(kvc_seq_swap_out_async(f.handle, 7) == KVC_OK)  // 896 writes held: no buffer left beyond the reserve
        let before = try f.stats()
        try f.append(9, tokens: f.uniqueTokens(10, count: 1200))  // returns: it waits for nothing
        let after = try f.stats()
        #expect(engine.pauseOffloadIO(false))
        let evicted = after.blocksEvicted - before.blocksEvicted
        #expect(evicted > 0, "the append evicted cached blocks")
        #expect(after.spillsSkipped - before.spillsSkipped == evicted, "every one skipped")
        #expect(after.blocksSpilled == before.blocksSpilled && after.diskErrors == 0)
        var done = false
        for _ in 0..<100_000 where !done {
            #expect(kvc_engine_poll(f.handle, 100) == KVC_OK)
            done = try f.stats().swapOuts == 1
        }
        #expect(done)
        #expect(kvc_seq_swap_in(f.handle, 7) == KVC_OK)
        #expect(waitReady(f, 7) == KVC_OK)
        #expect(try f.firstMismatch(7, salt: 7, to: large) == nil)
    }

    /// Per layer, and per head asked for by the engine's config or by the sequence's override:
    /// compaction offloads every evicted row token, a focus restores the other episode's per
    /// row, byte for byte (per head: each head's own tokens, in its slice of the slots), and a
    /// fork keeps the records past the parent's free.
    @Test(arguments: bothLayouts, Granularity.allCases)
    func episodicOffloadRestoresTheFocusedEpisodeThroughTheABI(layout: UInt32, granularity: Granularity) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        let q = try EpisodicSequence(layout, dir: dir, granularity: granularity)
        let f = q.f, rows = q.rows
        #expect(kvc_seq_compact(f.handle, 5, 6) == KVC_OK)
        try q.expectHolds(EpisodicSequence.heavyA)
        #expect(kvc_engine_sync(f.handle) == KVC_OK)
        let compacted = try f.stats(), offloaded = UInt64(rows) * 116
        #expect(compacted.diskStoredBytes > 0 && compacted.diskBytesWritten > 0, "58 evicted tokens per row went to disk")
        // A 256-byte record holds 8 layer tokens (32 bytes) or 16 head tokens: 14 records written, the rest open.
        #expect(compacted.tokensOffloaded == offloaded && compacted.tokensOnDisk == UInt64(rows) * 112 && compacted.tokenRecords == 14)
        #expect(compacted.tokensInOpenRecords == UInt64(rows) * 4)
        #expect(q.focus([0, 1]) == KVC_OK)
        #expect(waitReady(f, 5) == KVC_OK)
        let focused = try f.stats()
        #expect(focused.tokensRestored == UInt64(rows * 2 * EpisodicSequence.heavyB.count), "B's heavy tokens came back in every row")
        #expect(focused.tokensOffloaded == offloaded + focused.tokensRestored, "the tokens they displaced went out")
        #expect(focused.tokensOnDisk == UInt64(rows) * 120 && focused.tokenRecords == 15 && focused.tokensInOpenRecords == UInt64(rows) * 4,
                "the displaced A tokens filled one more record; the restored B tokens' bytes stay in theirs")
        #expect(focused.tokensLost == 0)
        try q.expectHolds(EpisodicSequence.heavyB)
        #expect(try f.stats().diskBytesRead > compacted.diskBytesRead)
        #expect(kvc_engine_sync(f.handle) == KVC_OK)
        let written = try f.stats().diskBytesWritten
        #expect(kvc_seq_fork(f.handle, 5, 6) == KVC_OK)
        #expect(kvc_engine_sync(f.handle) == KVC_OK)
        let forked = try f.stats()
        #expect(forked.tokenRecords == 15 && forked.tokensOnDisk == UInt64(rows) * 120 && forked.diskBytesWritten == written,
                "the fork wrote nothing; records held by both count once")
        #expect(forked.tokensInOpenRecords == UInt64(rows) * 8, "the child copied the parent's open record (4 tokens)")
        #expect(kvc_seq_free(f.handle, 5) == KVC_OK)
        let orphan = try f.stats()
        #expect(orphan.tokenRecords == 15 && orphan.tokensOnDisk == UInt64(rows) * 120 && orphan.tokensInOpenRecords == UInt64(rows) * 4,
                "the fork holds the parent's records and its copy of the open record past the parent's free")
        #expect(kvc_seq_free(f.handle, 6) == KVC_OK)
        #expect(kvc_engine_sync(f.handle) == KVC_OK)
        #expect(try f.stats().diskStoredBytes == 0, "freeing both sequences released their records")
        #expect(try f.stats().tokenRecords == 0 && (try f.stats()).tokensOnDisk == 0)
    }

    /// A record write that fails on the device loses its tokens when the failure is
    /// processed (here by kvc_engine_sync): tokens_lost counts them at once, kvc_seq_ready
    /// reports them once, and a focus reads nothing back (until 2026-11-21 they were counted
    /// only when a focus read the record back).
    @Test(arguments: bothLayouts, Granularity.allCases)
    func aFailedRecordWriteLosesItsTokensAtOnceThroughTheABI(layout: UInt32, granularity: Granularity) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        let q = try EpisodicSequence(layout, dir: dir, granularity: granularity, fault: OffloadFault(reads: false, writes: true))
        let f = q.f, rows = UInt64(q.rows)
        #expect(kvc_seq_compact(f.handle, 5, 6) == KVC_OK)
        #expect(kvc_engine_sync(f.handle) == KVC_OK, "waits for the writes; their failure is the sequence's to report")
        let s = try f.stats()
        // A 256-byte record holds 8 layer tokens or 16 head tokens: 14 records failed, 4 tokens wait in the open one.
        #expect(s.diskErrors == 14 && s.tokensOffloaded == rows * 116)
        #expect(s.tokensLost == rows * 112, "counted when the failures were processed")
        #expect(s.tokenRecords == 0 && s.tokensOnDisk == 0 && s.tokensInOpenRecords == rows * 4 && s.diskStoredBytes == 0)
        var ready: Int32 = -1
        LastError.clear()
        expectStatus(kvc_seq_ready(f.handle, 5, &ready), KVC_ERR_IO, mentioning: ["kvc_seq_ready", "\(rows * 112) offloaded tokens", "stays usable"])
        #expect(kvc_seq_ready(f.handle, 5, &ready) == KVC_OK && ready == 1, "reported once")
        #expect(q.focus([0, 1]) == KVC_OK)
        #expect(waitReady(f, 5) == KVC_OK, "nothing more lost")
        let focused = try f.stats()
        #expect(focused.tokensLost == s.tokensLost && focused.diskBytesRead == 0, "no record read back")
        for layer in 0..<2 { #expect(try f.positions(5, layer: layer).count == q.rows * 6) }
        #expect(try f.firstSlotMismatch(5, salt: 5) == nil, "the held tokens' bytes")
        #expect(kvc_seq_free(f.handle, 5) == KVC_OK)
        #expect(kvc_engine_sync(f.handle) == KVC_OK)
        #expect(try f.stats().diskStoredBytes == 0 && (try f.stats()).tokensInOpenRecords == 0)
    }

    @Test func offloadBytesBelowOneSlotIsInvalid() {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.offloadBytes = 8191
        var e: OpaquePointer?
        LastError.clear()
        let rc = c.create(&e, offloadDir: dir)
        expectStatus(rc, KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_engine_create", "offload_bytes 8191", "one slot of 8192"])
        #expect(e == nil)
    }

    /// One engine per offload_dir: a second create on a directory an engine holds fails with
    /// KVC_ERR_IO and touches nothing of the first engine's (its spilled prefix, its witnesses);
    /// once the first is destroyed the directory opens again and its blocks are found.
    @Test(arguments: bothLayouts)
    func aSecondEngineOnAHeldDirectoryIsRefusedAndTheFirstKeepsServing(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        var f: ABIFixture? = try offloadFixture(layout, dir: dir)
        let prompt = f!.uniqueTokens(5, count: 41)
        try f!.create(5, tokens: prompt)
        try f!.write(5, salt: 5, from: 0, to: 41)
        #expect(kvc_seq_free(f!.handle, 5) == KVC_OK)
        #expect(kvc_engine_trim(f!.handle) == KVC_OK)
        #expect(kvc_engine_sync(f!.handle) == KVC_OK)

        var c = CConfig.small(layout)
        c.offloadBytes = 16 << 20
        var second: OpaquePointer?
        LastError.clear()
        let rc = c.create(&second, offloadDir: dir)
        expectStatus(rc, KVC_ERR_IO, mentioning: ["kvc_engine_create", dir, "in use by another engine"])
        #expect(second == nil)

        #expect(try f!.create(6, tokens: prompt) == 40, "the first engine still finds its spilled prefix")
        #expect(waitReady(f!, 6) == KVC_OK)
        #expect(try f!.firstMismatch(6, salt: 5, to: 40) == nil)
        try f!.expectWitnessesIntact()

        f = nil  // destroys the engine, which lets go of the directory
        let reopened = try ABIFixture(c, offloadDir: dir)
        #expect(try reopened.stats().diskHitTokens == 0)
        #expect(try reopened.create(7, tokens: prompt) == 40, "the journal was left whole by the refused create")
        #expect(waitReady(reopened, 7) == KVC_OK)
        #expect(try reopened.firstMismatch(7, salt: 5, to: 40) == nil)
    }

    @Test func aMissingDirectoryIsAnIOError() {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.offloadBytes = 1 << 20
        var e: OpaquePointer?
        LastError.clear()
        let rc = c.create(&e, offloadDir: "/nonexistent/abi-tier")
        expectStatus(rc, KVC_ERR_IO, mentioning: ["offload_dir", "/nonexistent/abi-tier", "No such file"])
        #expect(e == nil)
    }

    /// A directory whose tier files' paths would pass PATH_MAX is refused with its length (its
    /// names cut short used to open other files: `kvcache.journa`), and one whose every file
    /// fits (4074 bytes: `/kvcache.identity.tmp` ends at byte 4095) serves.
    @Test func anOffloadDirTooLongForItsFilesIsRefused() throws {
        let root = scratchDir()
        defer { try? FileManager.default.removeItem(atPath: root) }
        var dir = root
        while dir.utf8.count < 4074 - 201 { dir += "/" + String(repeating: "d", count: 200) }
        dir += "/" + String(repeating: "e", count: 4074 - dir.utf8.count - 1)
        #expect(dir.utf8.count == 4074)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let tooLong = dir + "/f234567"  // 4082 bytes
        try FileManager.default.createDirectory(atPath: tooLong, withIntermediateDirectories: false)
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.offloadBytes = 1 << 20
        var e: OpaquePointer?
        LastError.clear()
        expectStatus(c.create(&e, offloadDir: tooLong), KVC_ERR_INVALID_ARGUMENT,
                     mentioning: ["offload_dir of 4082 bytes is too long", "PATH_MAX", "at most 4074 bytes"])
        #expect(e == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: tooLong).isEmpty)
        #expect(c.create(&e, offloadDir: dir) == KVC_OK)
        #expect(e != nil)
        kvc_engine_destroy(e)
    }

    /// A directory named by bytes that are not UTF-8 (Latin-1 "tier\u{E9}", a legal Linux name)
    /// is refused, as offload_dir and as a peer, naming the field, and nothing is created: its
    /// path was once repaired to "tier\u{FFFD}", so the engine created, locked and filled that
    /// other directory (or called a peer missing that exists).
    @Test func aDirectoryWhosePathIsNotUTF8IsRefusedAndNothingIsCreated() throws {
        let root = scratchDir()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let latin1 = Array((root + "/tier").utf8) + [0xE9], repaired = Array((root + "/tier\u{FFFD}").utf8)
        let own = root + "/own"
        for dir in [latin1, repaired, Array(own.utf8)] {
            try #require((dir + [0]).withUnsafeBufferPointer { mkdir(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), 0o700) } == 0)
        }
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.offloadBytes = 1 << 20
        c.modelTag = 0xA1
        var e: OpaquePointer?
        LastError.clear()
        expectStatus(c.create(&e, offloadDirBytes: latin1), KVC_ERR_INVALID_ARGUMENT, mentioning: ["offload_dir is not valid UTF-8"])
        #expect(e == nil)
        LastError.clear()
        expectStatus(c.create(&e, offloadDirBytes: Array(own.utf8), peerBytes: latin1), KVC_ERR_INVALID_ARGUMENT,
                     mentioning: ["peer_offload_dirs is not valid UTF-8"])
        #expect(e == nil)
        for dir in [latin1, repaired, Array(own.utf8)] {
            #expect(directoryEntries(dir) == [], "\(String(decoding: dir, as: UTF8.self))")
        }
    }

    /// Half a disk tier is refused, not run without one: a directory without a size, and a
    /// size without a directory (the directory is not even looked at: it need not exist).
    @Test func halfADiskTierIsRefused() {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        var e: OpaquePointer?
        LastError.clear()
        expectStatus(c.create(&e, offloadDir: "/nonexistent/abi-tier"), KVC_ERR_INVALID_ARGUMENT,
                     mentioning: ["offload_dir '/nonexistent/abi-tier' is set but offload_bytes is 0"])
        #expect(e == nil)
        c.offloadBytes = 1 << 20
        expectStatus(c.create(&e), KVC_ERR_INVALID_ARGUMENT, mentioning: ["offload_bytes 1048576 is set but offload_dir is not"])
        #expect(e == nil)
        // An empty directory is no directory (kvcache.h: NULL or ""): with a size, half a tier.
        expectStatus(c.create(&e, offloadDir: ""), KVC_ERR_INVALID_ARGUMENT, mentioning: ["offload_bytes 1048576 is set but offload_dir is not"])
        #expect(e == nil)
        c.offloadBytes = 0
        #expect(c.create(&e, offloadDir: "") == KVC_OK, "\(String(cString: kvc_last_error()))")
        let prompt: [Int32] = Array(1...40)
        var cached = 0
        #expect(kvc_seq_create(e, 1, prompt, prompt.count, &cached) == KVC_OK)
        #expect(kvc_seq_swap_out(e, 1) == KVC_ERR_UNSUPPORTED, "no disk tier to swap to")
        kvc_engine_destroy(e)
    }

    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"), arguments: bothLayouts)
    func aFullDiskFailsTheSwapOutAndChangesNothingElse(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        try #require(mount("tmpfs", dir, "tmpfs", 0, "size=64k") == 0, "mount: \(String(cString: strerror(errno)))")
        defer { umount2(dir, Int32(MNT_DETACH)) }
        let f = try offloadFixture(layout, dir: dir)
        try f.create(8, tokens: f.uniqueTokens(8, count: 30))
        try f.write(8, salt: 8, from: 0, to: 30)
        LastError.clear()
        expectStatus(kvc_seq_swap_out(f.handle, 8), KVC_ERR_IO, mentioning: ["kvc_seq_swap_out", "No space left on device"])
        #expect(try f.firstMismatch(8, salt: 8, to: 30) == nil, "the sequence stays resident")
        try f.append(8, tokens: [1])
        try f.expectWitnessesIntact()
    }

    /// Spills whose writes fail on the device: blocks_spilled counts the 7 submitted (a freed
    /// 30-token sequence's full blocks, by a trim), disk_spills_failed the 7 that failed, and
    /// disk_errors them too; nothing is stored. (blocks_spilled alone read as 7 blocks on disk.)
    @Test(arguments: bothLayouts)
    func failedSpillWritesCountInBlocksSpilledAndDiskSpillsFailed(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        let f = try failingWritesFixture(layout, dir: dir)
        #expect(kvc_seq_free(f.handle, 9) == KVC_OK)
        #expect(kvc_engine_trim(f.handle) == KVC_OK, "a spill fails quietly")
        #expect(kvc_engine_sync(f.handle) == KVC_OK, "waits for the writes")
        let s = try f.stats()
        #expect(s.blocksSpilled == 7 && s.diskSpillsFailed == 7 && s.diskErrors == 7 && s.diskStoredBytes == 0,
                "\(s.blocksSpilled) spilled, \(s.diskSpillsFailed) failed, \(s.diskErrors) errors, \(s.diskStoredBytes) bytes stored")
        try f.expectWitnessesIntact()
    }

    @Test(arguments: bothLayouts)
    func anIOErrorFailsTheSwapOutAndChangesNothingElse(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        let f = try failingWritesFixture(layout, dir: dir)
        LastError.clear()
        expectStatus(kvc_seq_swap_out(f.handle, 9), KVC_ERR_IO, mentioning: ["kvc_seq_swap_out", "Input/output error"])
        #expect(try f.firstMismatch(9, salt: 9, to: 30) == nil, "the sequence stays resident")
        try f.append(9, tokens: [1])
        try f.expectWitnessesIntact()
    }

    /// A prefix read that fails spoils the sequence: kvc_seq_ready says so, and every call
    /// that reaches or changes its K/V is refused with the read's failure and changes nothing
    /// (stats, witnesses, its length); kvc_seq_free works, and the prompt created again hits
    /// nothing of the unreadable blocks.
    @Test(arguments: bothLayouts)
    func aSequenceAFailedReadSpoiledIsRefusedThroughTheABI(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        let f = try offloadFixture(layout, dir: dir, fault: OffloadFault(reads: true, writes: false))
        let prompt = f.uniqueTokens(5, count: 41)
        try f.spill(5, prompt: prompt, salt: 5)
        #expect(try f.create(6, tokens: prompt) == 40)
        LastError.clear()
        expectStatus(waitReady(f, 6), KVC_ERR_IO, mentioning: ["kvc_seq_ready", "Input/output error", "create it again"])
        let words = ["Input/output error", "free it and create it again"]
        var k: UnsafeMutableRawPointer?, v: UnsafeMutableRawPointer?, count = 0, episode: UInt32 = 0
        var table = [Int32](repeating: 0, count: 8)
        let token: [Int32] = [3], query: [Float] = [1, 0, 0]
        try f.expectFailure(KVC_ERR_IO, mentioning: ["kvc_seq_append"] + words) { h in
            token.withUnsafeBufferPointer { kvc_seq_append(h, 6, $0.baseAddress, 1) }
        }
        try f.expectFailure(KVC_ERR_IO, mentioning: ["kvc_seq_fork"] + words) { h in kvc_seq_fork(h, 6, 7) }
        try f.expectFailure(KVC_ERR_IO, mentioning: ["kvc_seq_truncate"] + words) { h in kvc_seq_truncate(h, 6, 20) }
        try f.expectFailure(KVC_ERR_IO, mentioning: ["kvc_seq_schedule"] + words) { h in kvc_seq_schedule(h, 6, 16) }
        try f.expectFailure(KVC_ERR_IO, mentioning: ["kvc_seq_compact"] + words) { h in kvc_seq_compact(h, 6, 8) }
        try f.expectFailure(KVC_ERR_IO, mentioning: ["kvc_seq_swap_out"] + words) { h in kvc_seq_swap_out(h, 6) }
        try f.expectFailure(KVC_ERR_IO, mentioning: ["kvc_seq_swap_out_async"] + words) { h in kvc_seq_swap_out_async(h, 6) }
        if layout == KVC_LAYOUT_PAGED {
            try f.expectFailure(KVC_ERR_IO, mentioning: ["kvc_seq_block_table"] + words) { h in
                table.withUnsafeMutableBufferPointer { kvc_seq_block_table(h, 6, $0.baseAddress, 8, &count) }
            }
        } else {
            try f.expectFailure(KVC_ERR_IO, mentioning: ["kvc_seq_kv"] + words) { h in kvc_seq_kv(h, 6, 0, &k, &v) }
        }
        try f.expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["kvc_seq_focus", "episodic"]) { h in
            query.withUnsafeBufferPointer { kvc_seq_focus(h, 6, $0.baseAddress, 3, &episode) }
        }
        #expect(try f.length(6) == 41, "no refusal changed the sequence")
        #expect(kvc_seq_free(f.handle, 6) == KVC_OK)
        #expect(try f.create(6, tokens: prompt) == 0, "the unreadable blocks left the tier")
        try f.write(6, salt: 5, from: 0, to: 41)
        try f.append(6, tokens: [3])
        #expect(waitReady(f, 6) == KVC_OK)
        try f.expectWitnessesIntact()
    }

    /// A restart reports through kvc_stats what it found in the journal and what it could not
    /// use: a record corrupted in the middle drops itself only.
    @Test(arguments: bothLayouts)
    func aRestartCountsRecoveredBlocksAndDroppedJournalRecordsThroughTheABI(layout: UInt32) throws {
        let scratch = ScratchDir("abi-tier"), dir = scratch.path
        defer { scratch.remove() }
        let prompt: [Int32]
        do {
            let f = try offloadFixture(layout, dir: dir)
            prompt = f.uniqueTokens(5, count: 41)
            try f.spill(5, prompt: prompt, salt: 5)
            let s = try f.stats()
            #expect(s.diskRecoveredBlocks == 0 && s.diskJournalDropped == 0, "a new directory")
        }
        let journal = URL(fileURLWithPath: dir + "/kvcache.journal")
        var bytes = try Data(contentsOf: journal)
        let records = bytes.count / 64
        try #require(records >= 10, "the spilled blocks are journaled (\(records) records)")
        bytes[(records - 3) * 64 + 16] ^= 0xFF  // the third record from the end
        try bytes.write(to: journal)
        let f = try offloadFixture(layout, dir: dir)
        let s = try f.stats()
        #expect(s.diskJournalDropped == 1, "the corrupt record only: the replay goes on past it")
        #expect(s.diskRecoveredBlocks == UInt64(records - 1))
        let cached = try f.create(6, tokens: prompt)
        #expect(waitReady(f, 6) == KVC_OK)
        #expect(try f.firstMismatch(6, salt: 5, to: cached) == nil, "what was recovered is served exactly")
    }

    @Test func badArgumentsAndAnEngineWithoutATier() throws {
        let f = try ABIFixture(layout: KVC_LAYOUT_PAGED)
        var ready: Int32 = 0
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_ready", "engine", "NULL"]) { kvc_seq_ready(nil, 1, &ready) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_ready", "ready", "NULL"]) { kvc_seq_ready($0, 1001, nil) }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_ready", "77"]) { kvc_seq_ready($0, 77, &ready) }
        try f.expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["kvc_seq_swap_out", "offload_dir"]) { kvc_seq_swap_out($0, 1001) }
        try f.expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["kvc_seq_swap_in", "offload_dir"]) { kvc_seq_swap_in($0, 1001) }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_swap_out", "77"]) { kvc_seq_swap_out($0, 77) }
        try f.expectFailure(KVC_ERR_UNSUPPORTED, mentioning: ["kvc_seq_swap_out_async", "offload_dir"]) { kvc_seq_swap_out_async($0, 1001) }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_swap_out_async", "77"]) { kvc_seq_swap_out_async($0, 77) }
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_swap_out_async", "NULL"]) { kvc_seq_swap_out_async(nil, 1001) }
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_engine_poll", "NULL"]) { kvc_engine_poll(nil, 0) }
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_engine_sync", "NULL"]) { kvc_engine_sync(nil) }
        #expect(kvc_seq_ready(f.handle, 1001, &ready) == KVC_OK && ready == 1, "without a tier every sequence is ready")
        #expect(kvc_engine_poll(f.handle, 1000) == KVC_OK)
        #expect(kvc_engine_sync(f.handle) == KVC_OK)
    }
}
