@testable import KVCache

/// Everything observable about an engine's sequences, to compare before and after a call that
/// threw: the stats (committed bytes and mappings included) and the reservation, per sequence
/// its length and layer lengths, block table and the tables' reference counts (paged), and K/V
/// bytes, and the cached prefix of each prompt. The sequences must be resident and ready.
struct EngineSnapshot: Equatable {
    var stats: EngineStats
    var reserved: UInt64
    var lengths: [UInt64: [Int]] = [:]
    var tables: [UInt64: [Int32]] = [:]
    var references: [UInt64: [UInt32]] = [:]
    var bytes: [UInt64: [UInt8]] = [:]
    var cached: [Int] = []

    init(_ e: Engine, sequences: [UInt64], prompts: [[Int32]]) throws {
        stats = e.stats()
        reserved = e.reservedBytes
        for q in sequences {
            var ls = [try e.length(q)]
            for l in 0..<e.config.numLayers { ls.append(try e.layerLength(q, layer: l)) }
            lengths[q] = ls
            if e.config.layout == .paged {
                var table = [Int32](repeating: -1, count: 4096)
                let n = try table.withUnsafeMutableBufferPointer { try e.blockTable(q, into: $0) }
                tables[q] = Array(table.prefix(n))
                references[q] = table.prefix(n).map { e.blocks.references($0) }
            }
            var b: [UInt8] = []
            for l in 0..<e.config.numLayers {
                for p in 0..<ls[1 + l] {
                    let (k, v) = try tokenAddress(e, q, layer: l, position: p)
                    b.append(contentsOf: UnsafeRawBufferPointer(start: k, count: e.config.tokenBytes))
                    b.append(contentsOf: UnsafeRawBufferPointer(start: v, count: e.config.tokenBytes))
                }
            }
            bytes[q] = b
        }
        cached = prompts.map { e.cachedPrefixTokens($0) }
    }

    /// What changed since `before`, one phrase per part; empty when nothing did. With
    /// `cacheMayShrink` (a refused call that may have evicted cached blocks, spilling them to a
    /// disk tier, and given its commits back, `Engine.giveBackCommitted`) the cache's and the
    /// disk tier's counts, the mappings (an upper bound: a slot's ranges left mapped by a freed
    /// sequence may go, and a refused mmap next to pages a failed one kept raises the slack
    /// counted for them, `bounded_slack` in virtual_ranges.c), and the cached prefixes as long as they did not grow, are not changes,
    /// nor committed bytes between the reservation (or what was committed, if less) and what
    /// was committed before; with swap-outs pending before (which a call may settle, or wait
    /// for when short of memory, `lockedAllocating`) fewer blocks used and other reference
    /// counts neither. O(bytes compared).
    func differences(from before: EngineSnapshot, cacheMayShrink: Bool = false) -> [String] {
        var diff: [String] = []
        var stats = self.stats, cached = self.cached, references = self.references
        if cacheMayShrink {
            let committed = stats.committedBytes
            if committed > before.stats.committedBytes || committed < min(before.stats.committedBytes, before.reserved) {
                diff.append("committed \(before.stats.committedBytes) -> \(committed) (reserved \(before.reserved))")
            }
            stats.committedBytes = before.stats.committedBytes
            stats.blocksCached = before.stats.blocksCached
            stats.blocksEvicted = before.stats.blocksEvicted
            stats.eventsDropped = before.stats.eventsDropped
            stats.mappings = before.stats.mappings
            if before.stats.disk.swapOutsPending > 0 {
                if stats.blocksUsed <= before.stats.blocksUsed { stats.blocksUsed = before.stats.blocksUsed }
                references = before.references
            }
            stats.disk = before.stats.disk
            if zip(cached, before.cached).allSatisfy({ $0 <= $1 }) { cached = before.cached }
        }
        if stats != before.stats { diff.append("stats \(before.stats) -> \(self.stats)") }
        if reserved != before.reserved { diff.append("reserved \(before.reserved) -> \(reserved)") }
        if lengths != before.lengths { diff.append("lengths \(before.lengths) -> \(lengths)") }
        if tables != before.tables { diff.append("tables changed") }
        if references != before.references { diff.append("reference counts changed") }
        if bytes != before.bytes { diff.append("bytes changed") }
        if cached != before.cached { diff.append("cached \(before.cached) -> \(self.cached)") }
        return diff
    }
}

/// The engine a sweep step starts from: its live sequences and the prompts whose cached
/// prefixes are compared.
struct SweepSetup {
    var engine: Engine
    var sequences: [UInt64]
    var prompts: [[Int32]]
}

/// Makes the k-th next commit fail (`kvm_pool_fail_commits`) or, with `mmaps`, the k-th next
/// contiguous mapping (`kvm_ranges_fail_mmaps`), for k = 0, 1, ... on a fresh `setup` whose
/// free memory was given back (so every page taken must be committed), and runs `op`, until it
/// no longer throws. Each k where it threw must change nothing (`EngineSnapshot`) and send no
/// event, and after it every sequence frees leaving no block used. Returns one line per
/// violation, and one when `op` still throws at k = `maxK`.
func failureSweep(_ name: String, maxK: Int = 40, mmaps: Bool = false,
                  setup: () throws -> SweepSetup, op: (Engine) throws -> Void) throws -> [String] {
    var problems: [String] = []
    for k in 0..<maxK {
        let s = try setup()
        let e = s.engine
        e.paged?.trim()
        e.contiguous?.unmapAllUnpinned()
        e.contiguous?.trimFree(keeping: 0)
        _ = drain(e)
        let before = try EngineSnapshot(e, sequences: s.sequences, prompts: s.prompts)
        let failure: InjectedFailure = mmaps ? .mmap(after: k) : .commits(after: k)
        guard failure.arm(e) else { return ["\(name): cannot inject \(failure)"] }
        let error = caught { try op(e) }
        failure.disarm(e)
        guard let error else { return problems }
        let diff = try EngineSnapshot(e, sequences: s.sequences, prompts: s.prompts).differences(from: before)
        if !diff.isEmpty { problems.append("\(name) k=\(k) \(error.code): " + diff.joined(separator: "; ")) }
        let events = drain(e)
        if !events.isEmpty { problems.append("\(name) k=\(k): \(events.count) events sent") }
        for q in s.sequences { try e.free(q) }
        if e.stats().blocksUsed != 0 { problems.append("\(name) k=\(k): \(e.stats().blocksUsed) blocks used after freeing all") }
    }
    problems.append("\(name): still throwing at k=\(maxK)")
    return problems
}
