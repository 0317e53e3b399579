import Foundation
import TestSupport
import Testing
@testable import KVCache

#if canImport(Glibc)
import Glibc
#endif

/// Randomized stress of the engine's lock-release paths: paged pre-faulting with the lock
/// released, `poll` and `swapOut` waiting for the disk without it, `swapOutAsync` settled by
/// later calls (and allocations waiting for it when out of memory), `reserve` in steps. Four
/// threads drive one engine (small budget and disk tier, so creates evict, trims spill and
/// swaps contend) with creates on shared and own prefixes, appends, forks, frees, trims,
/// reserves, polls, swaps, `ready` and some bad input; each thread writes content-derived K/V
/// (`kvByte`: a function of token and position, so a prefix hit must read exactly the bytes
/// its first writer wrote) and after every operation checks every byte and length of its own
/// live sequences. At the end: the budget held throughout, and with everything freed and
/// trimmed, nothing committed and no pinned or orphaned disk slot. Seeds are fixed per
/// thread; interleavings are not, so CI runs it a few times and `tools/` loops may run it more.
@Suite("Lock-release stress", .serialized)
struct LockReleaseStressTests {
    @Test(arguments: [Layout.paged, .contiguous])
    func threadsKeepTheirBytesThroughSwapsTrimsReservesAndPolls(layout: Layout) throws {
        let seedBase = UInt64(ProcessInfo.processInfo.environment["KVC_STRESS_SEED"] ?? "") ?? 0x5EED
        let rounds = Int(ProcessInfo.processInfo.environment["KVC_STRESS_ROUNDS"] ?? "") ?? 2
        for round in 0..<rounds {
            try stress(layout: layout, seed: seedBase &+ UInt64(round) &* 7919)
        }
    }

    private func stress(layout: Layout, seed: UInt64) throws {
        let dir = ScratchDir("stress")
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path, memoryBytes: layout == .paged ? 384 << 10 : 1 << 20, offloadBytes: 16 << 20)
        c.maxSeqs = 24
        c.maxSeqTokens = 512
        let e = try Engine(c)
        // Shared system prompts, written once and held for the whole run, so that a hit on them
        // never lands on blocks whose K/V a thread has not written yet (the engine indexes a
        // prompt's blocks at creation, before the server writes them).
        let shared = [tokens(24, seed: 7), tokens(33, seed: 8)]
        for (i, p) in shared.enumerated() {
            try e.createSequence(UInt64(90 + i), tokens: p)
            try fillKV(e, UInt64(90 + i), count: p.count) { p[$0] }
        }
        let threads = 4
        let report = StressReport(threads: threads)
        let deadline = monotonicNanoseconds() + 6_000_000_000  // a bound on CI time, not an assertion
        DispatchLike.concurrentPerform(iterations: threads) { t in
            var worker = StressWorker(engine: e, thread: t, seed: seed &+ UInt64(t) &* 0x9E37_79B9, shared: shared)
            for step in 0..<250 where report.failures[t].isEmpty {
                if step % 16 == 0 && monotonicNanoseconds() > deadline { break }
                do {
                    try worker.step()
                    report.steps[t] += 1
                } catch {
                    report.failures[t].append("thread \(t) step \(step) (\(worker.lastOp)): \(error)")
                }
            }
            do { try worker.freeAll() } catch { report.failures[t].append("thread \(t) freeing: \(error)") }
            report.ops[t] = worker.ops
        }
        let failures = report.failures.flatMap { $0 }
        #expect(failures.isEmpty, "\(layout) seed \(seed): \(failures.prefix(5))")
        for (i, p) in shared.enumerated() {
            #expect(try kvDifferences(e, UInt64(90 + i), count: p.count) { p[$0] } == 0)
            try e.free(UInt64(90 + i))
        }
        try e.trim()
        let s = e.stats()
        #expect(s.sequences == 0)
        #expect(s.blocksUsed == 0)
        #expect(s.committedBytes == 0, "\(layout): \(s.committedBytes) bytes still committed after freeing everything and trimming")
        #expect(s.disk.tokenRecords == 0)
        let audit = e.offloadSlotAudit
        #expect(audit.pinned == 0 && audit.unhashed == 0, "disk slots left: \(audit)")
        // The run did exercise the paths under review (not a timing assertion: counts of work done).
        let ops = report.ops.reduce(into: [String: Int]()) { for (k, v) in $1 { $0[k, default: 0] += v } }
        if ProcessInfo.processInfo.environment["KVC_STRESS_VERBOSE"] != nil {
            print("stress \(layout) seed \(seed): steps \(report.steps) ops \(ops.sorted { $0.key < $1.key }) swapOuts \(s.disk.swapOuts) swapIns \(s.disk.swapIns) spilled \(s.disk.blocksSpilled) loaded \(s.disk.blocksLoaded) disk hits \(s.disk.prefixHitTokens) evicted \(s.blocksEvicted) hits \(s.prefixHitTokens)/\(s.prefixQueryTokens)")
        }
        #expect(s.disk.swapOuts > 0 && s.disk.swapIns > 0, "\(ops)")
        #expect(s.disk.blocksSpilled > 0)
        #expect((ops["create"] ?? 0) > 0 && (ops["fork"] ?? 0) > 0 && (ops["reserve"] ?? 0) > 0 && (ops["swapOutAsync"] ?? 0) > 0)
    }
}

/// Per-thread results; each thread writes only its own entries.
final class StressReport: @unchecked Sendable {
    var failures: [[String]]
    var steps: [Int]
    var ops: [[String: Int]]
    init(threads: Int) {
        failures = Array(repeating: [], count: threads)
        steps = Array(repeating: 0, count: threads)
        ops = Array(repeating: [:], count: threads)
    }
}

/// One thread's driver and its model of its own sequences.
struct StressWorker {
    struct Live {
        var tokens: [Int32]
        var swapped = false
    }

    let e: Engine
    let thread: Int
    let shared: [[Int32]]
    var rng: SplitMix64
    var live: [UInt64: Live] = [:]
    var history: [[Int32]] = []
    var nextToken: Int32
    var nextId: UInt64
    var ops: [String: Int] = [:]
    var lastOp = ""
    let maxTokens = 200

    init(engine: Engine, thread: Int, seed: UInt64, shared: [[Int32]]) {
        e = engine
        self.thread = thread
        self.shared = shared
        rng = SplitMix64(seed: seed)
        nextToken = Int32(thread + 1) * 10_000_000
        nextId = UInt64(thread + 1) * 1_000_000
    }

    mutating func fresh(_ n: Int) -> [Int32] {
        defer { nextToken += Int32(n) }
        return (0..<n).map { nextToken + Int32($0) }
    }

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }

    mutating func pick(resident: Bool? = nil) -> UInt64? {
        let ids = live.keys.sorted().filter { resident == nil || live[$0]!.swapped != resident! }
        return ids.isEmpty ? nil : ids[int(0...ids.count - 1)]
    }

    /// Runs `body`, treating the listed error codes as an allowed refusal (returns false).
    func allowing(_ codes: [KVError.Code], _ body: () throws(KVError) -> Void) throws(KVError) -> Bool {
        do { try body() } catch {
            if codes.contains(error.code) { return false }
            throw error
        }
        return true
    }

    mutating func step() throws {
        let r = int(0...99)
        switch r {
        case 0..<20: try create()
        case 20..<36: try append()
        case 36..<44: try fork()
        case 44..<54: try free()
        case 54..<59: lastOp = "trim"; try e.trim()
        case 59..<63:
            lastOp = "reserve"
            _ = try e.reserve(bytes: UInt64(int(0...Int(e.config.memoryBytes))))
        case 63..<71:
            lastOp = "poll"
            e.poll(timeoutMicroseconds: UInt32(int(0...2000)))
        case 71..<81: try swapOut()
        case 81..<90: try swapIn()
        case 90..<95: try readyCheck()
        default: try badInput()
        }
        ops[lastOp.components(separatedBy: " ").first!, default: 0] += 1
        try verify()
    }

    mutating func create() throws {
        guard live.count < 4 else { return try free() }
        let id = nextId
        nextId += 1
        var prompt: [Int32]
        switch int(0...2) {
        case 0: prompt = shared[int(0...1)] + fresh(int(1...20))
        case 1 where !history.isEmpty:
            let h = history[int(0...history.count - 1)]
            prompt = Array(h.prefix(int(1...h.count))) + fresh(int(0...12))
        default: prompt = fresh(int(1...40))
        }
        lastOp = "create \(id) of \(prompt.count)"
        var cached = 0
        guard try allowing([.outOfMemory], { () throws(KVError) in cached = try e.createSequence(id, tokens: prompt) }) else { return }
        guard cached % e.config.blockTokens == 0 && cached < prompt.count else {
            throw KVError(.internal, "create \(id) reported \(cached) cached tokens of \(prompt.count)")
        }
        // Write before the disk hits land (other blocks than theirs), as a server may.
        try writeRange(id, prompt, from: cached)
        live[id] = Live(tokens: prompt)
        history.append(prompt)
        if history.count > 6 { history.removeFirst() }
    }

    mutating func append() throws {
        guard let id = pick(resident: true) else { return try create() }
        let n = int(1...9)
        guard live[id]!.tokens.count + n <= maxTokens else { return try free(id) }
        let add = fresh(n)
        lastOp = "append \(n) to \(id)"
        guard try allowing([.outOfMemory], { () throws(KVError) in try e.append(id, tokens: add) }) else { return }
        try writeRange(id, live[id]!.tokens + add, from: live[id]!.tokens.count)
        live[id]!.tokens += add
    }

    mutating func fork() throws {
        guard live.count < 4, let parent = pick(resident: true) else { return }
        let child = nextId
        nextId += 1
        lastOp = "fork \(parent) -> \(child)"
        guard try allowing([.outOfMemory], { () throws(KVError) in try e.fork(parent: parent, child: child) }) else { return }
        live[child] = Live(tokens: live[parent]!.tokens)
    }

    mutating func free(_ chosen: UInt64? = nil) throws {
        guard let id = chosen ?? pick() else { return }
        lastOp = "free \(id)"
        try e.free(id)
        live[id] = nil
    }

    mutating func swapOut() throws {
        guard let id = pick(resident: true) else { return }
        // Half of them asynchronous: settled by later calls, cancelled by a swap-in or free.
        let async = int(0...1) == 0
        lastOp = (async ? "swapOutAsync " : "swapOut ") + "\(id)"
        // io: the tier is full of pinned slots; the sequence then stays resident and unchanged.
        if try allowing([.io], { () throws(KVError) in if async { try e.swapOutAsync(id) } else { try e.swapOut(id) } }) {
            live[id]!.swapped = true
            if try e.ready(id) { throw KVError(.internal, "swapped-out \(id) reports ready") }
        }
    }

    mutating func swapIn() throws {
        guard let id = pick(resident: false) else { return try swapOut() }
        lastOp = "swapIn \(id)"
        if try allowing([.outOfMemory], { () throws(KVError) in try e.swapIn(id) }) { live[id]!.swapped = false }
    }

    mutating func readyCheck() throws {
        guard let id = pick() else { return }
        lastOp = "ready \(id)"
        let ready = try e.ready(id)
        if live[id]!.swapped && ready { throw KVError(.internal, "swapped-out \(id) reports ready") }
    }

    /// Bad input gets its status and changes nothing (`verify` checks the bytes afterwards).
    mutating func badInput() throws {
        func expect(_ code: KVError.Code, _ what: String, _ body: () throws(KVError) -> Void) throws {
            do { try body() } catch {
                if error.code == code { return }
                throw KVError(.internal, "\(what): \(error.code) instead of \(code)")
            }
            throw KVError(.internal, "\(what) succeeded")
        }
        lastOp = "bad input"
        let unknown = UInt64(thread + 1) * 1_000_000 + 999_999
        try expect(.notFound, "free of an unknown sequence") { () throws(KVError) in try e.free(unknown) }
        try expect(.notFound, "swapIn of an unknown sequence") { () throws(KVError) in try e.swapIn(unknown) }
        if let id = pick(resident: false) {
            try expect(.invalidArgument, "append to swapped-out \(id)") { () throws(KVError) in try e.append(id, tokens: [1]) }
            try expect(.invalidArgument, "swapOut of swapped-out \(id)") { () throws(KVError) in try e.swapOut(id) }
        }
        if let id = pick(resident: true) {
            try expect(.invalidArgument, "swapIn of resident \(id)") { () throws(KVError) in try e.swapIn(id) }
            try expect(.exists, "create over \(id)") { () throws(KVError) in try e.createSequence(id, tokens: [1, 2, 3]) }
            if let other = pick(), other != id {
                try expect(.exists, "fork \(id) onto \(other)") { () throws(KVError) in try e.fork(parent: id, child: other) }
            }
            let n = live[id]!.tokens.count
            try expect(.invalidArgument, "append past max_seq_tokens to \(id)") { () throws(KVError) in
                try e.append(id, tokens: [Int32](repeating: 5, count: e.config.maxSeqTokens - n + 1))
            }
        }
    }

    /// Every live sequence of this thread: its length, and once ready every K/V byte.
    func verify() throws {
        for id in live.keys.sorted() {
            let l = live[id]!
            let length = try e.length(id)
            guard length == l.tokens.count else { throw KVError(.internal, "\(id): length \(length), expected \(l.tokens.count)") }
            if l.swapped { continue }
            try waitReady(e, id)
            let bad = try mismatches(id, l.tokens)
            if bad > 0 { throw KVError(.internal, "\(id) (\(l.tokens.count) tokens): \(bad) K/V bytes differ") }
        }
        let s = e.stats()
        if s.committedBytes > s.budgetBytes { throw KVError(.internal, "committed \(s.committedBytes) > budget \(s.budgetBytes)") }
    }

    mutating func freeAll() throws {
        for id in live.keys.sorted() { try free(id) }
    }

    // MARK: K/V access resolving each block or range once (`tokenAddress` fetches the table per token)

    /// Calls `body(position, K address, V address)` for positions `from..<count` of every layer.
    func eachToken(_ id: UInt64, count: Int, from: Int, _ body: (Int, Int, UnsafeMutableRawPointer, UnsafeMutableRawPointer) -> Void) throws {
        let tb = e.config.tokenBytes, bt = e.config.blockTokens
        guard from < count else { return }
        if e.config.layout == .contiguous {
            for layer in 0..<e.config.numLayers {
                let (k, v) = try e.kv(id, layer: layer)
                for p in from..<count { body(layer, p, k + p * tb, v + p * tb) }
            }
            return
        }
        var table = [Int32](repeating: -1, count: (count + bt - 1) / bt)
        let n = try table.withUnsafeMutableBufferPointer { (b) throws(KVError) in try e.blockTable(id, into: b) }
        guard n == table.count else { throw KVError(.internal, "\(id): \(n) blocks for \(count) tokens") }
        for layer in 0..<e.config.numLayers {
            var p = from
            while p < count {
                let (k, v) = try e.blockKV(table[p / bt], layer: layer)
                let end = min(count, (p / bt + 1) * bt)
                for q in p..<end { body(layer, q, k + (q % bt) * tb, v + (q % bt) * tb) }
                p = end
            }
        }
    }

    func writeRange(_ id: UInt64, _ toks: [Int32], from: Int) throws {
        let tb = e.config.tokenBytes
        try eachToken(id, count: toks.count, from: from) { layer, p, k, v in
            for i in 0..<tb {
                k.storeBytes(of: kvByte(layer: layer, kv: 0, position: p, token: toks[p], i: i), toByteOffset: i, as: UInt8.self)
                v.storeBytes(of: kvByte(layer: layer, kv: 1, position: p, token: toks[p], i: i), toByteOffset: i, as: UInt8.self)
            }
        }
    }

    func mismatches(_ id: UInt64, _ toks: [Int32]) throws -> Int {
        let tb = e.config.tokenBytes
        var bad = 0
        try eachToken(id, count: toks.count, from: 0) { layer, p, k, v in
            for i in 0..<tb {
                if k.load(fromByteOffset: i, as: UInt8.self) != kvByte(layer: layer, kv: 0, position: p, token: toks[p], i: i) { bad += 1 }
                if v.load(fromByteOffset: i, as: UInt8.self) != kvByte(layer: layer, kv: 1, position: p, token: toks[p], i: i) { bad += 1 }
            }
        }
        return bad
    }
}
