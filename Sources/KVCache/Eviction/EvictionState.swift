#if canImport(Glibc)
import Glibc
#endif

/// One sequence's eviction state: per row (a layer, or a layer's KV head in per-head mode)
/// and slot, the token's original position and the attention it has received, in flat
/// row-major buffers of `capacity` slots per row; plus the layer lengths, the registered
/// segments and episodes. The engine keeps one per sequence that evicts; `kvcache
/// evict-eval` drives one directly (no K/V memory).
///
/// Invariants: every row `r` of layer `l` (`r = l * rowsPerLayer + h`) holds `lengths[l]`
/// resident slots `0..<lengths[l]` and `parked[r]` parked slots `capacity - parked[r] ..<
/// capacity` (tokens whose K/V the engine offloaded to its disk tier, episodic offload; always
/// 0 otherwise; rows of one layer may park different counts, since a row's offloaded token
/// can be lost alone), `lengths[l] + parked[r] <= capacity`; slot `i` of a row holds the
/// token at `positions[i]` (distinct over the row's resident and parked slots, all below
/// `nextPosition`); scores are finite and >= 0. Parked slots keep every score (they take part
/// in re-clustering and episode crediting) but are never observed and never moved by `plan`.
/// Growth doubles `capacity` (amortised, never on a step that does not add tokens past it);
/// observing and compacting allocate nothing. Creating and growing the state allocate its
/// `EvictionStateBuffers` (outside `memory_bytes`), failably: a refusal is `outOfMemory` and
/// changes nothing.
///
/// Release builds of this module skip runtime exclusivity checks (Package.swift): a read of a
/// class's `var` is otherwise a `swift_beginAccess` call, which took ~40% of an evicting
/// sequence's `Engine.append` and ~30% of its `truncate` (perf, docs/benchmarks.md
/// "Speculative decoding"). No access here overlaps another (none is passed `inout` to a call
/// that touches the same property, and the engine's lock serialises callers: the class is not
/// thread-safe); debug builds, the tests', still check that.
public final class EvictionState {
    /// Layers.
    public let layers: Int
    /// KV heads per layer.
    public let heads: Int
    /// Rows per layer: `heads` in per-head mode, else 1.
    public let rowsPerLayer: Int
    /// The policy's parameters.
    public let config: EvictionConfig
    /// The policy.
    public let policy: any EvictionPolicy
    /// What this state keeps for the policy (`config.tracking`, asked once at creation):
    /// `last` holds `rows * capacity` floats only with `.lastStep`, `visible` only with
    /// `.visibility`, `episodeScores` blocks only with `.episodes`; `plan` lets rows record
    /// into `lowScores` only with `.lowScores`.
    public let tracking: ScoreTracking
    /// Most slots a row may ever need (the engine's `maxSeqTokens`).
    public let maxCapacity: Int
    /// Slots per row allocated.
    public private(set) var capacity: Int
    /// One past the newest position held.
    public private(set) var nextPosition: Int
    /// Every position from `tailFrom` on is held, in every row, by the row's last
    /// `nextPosition - tailFrom` resident slots, in position order: the tokens appended since
    /// the last compaction or restore (0 before any: slot i holds position i). No parked token
    /// lies there. A truncation at or past it drops the last slots without a scan.
    var tailFrom = 0
    /// Per layer: slots held.
    let lengths: UnsafeMutablePointer<Int>
    /// Per row: parked slots (at the top of the row).
    let parked: UnsafeMutablePointer<Int>
    /// Whether `applyPlan` parks the evicted slots instead of dropping them (the engine sets
    /// it for a sequence whose evicted K/V go to its disk tier).
    var parksEvictions = false
    /// The buffers sized by `capacity`; the per-slot ones read through the accessors below.
    private var buffers: EvictionStateBuffers
    var positions: UnsafeMutablePointer<Int32> { buffers.positions }
    var accumulated: UnsafeMutablePointer<Float> { buffers.accumulated }
    var last: UnsafeMutablePointer<Float> { buffers.last }
    /// Queries that could see each slot's token (normalised scores), stored so that a decode
    /// step need not touch every slot: a resident slot of layer `l` holds the count minus
    /// `visibleQueries[l]` (every resident token sees each new query, so `observe` raises the
    /// layer's total instead and corrects only the tokens that saw fewer: the last of a
    /// multi-query step, and those past its scores); a parked slot holds its count itself
    /// (parked tokens are not observed), converted whenever a token enters or leaves the
    /// parked slots. The layer's total restarts from 0 before it would pass `rebaseQueries`
    /// (`rebaseVisibility`), so that it and a new token's relative count stay small: a count
    /// is exact below 2^24 queries, and a token seen by more is within a relative 2^-24 (as
    /// its accumulated score is). A `Float` total that only grew stopped counting at 2^24
    /// queries of a layer: a new token then counted 0 and older counts froze.
    var visible: UnsafeMutablePointer<Float> { buffers.visible }
    /// Per layer: the queries observed since the layer's last rebase (a step's count is its
    /// first head's row sum, rounded); below `rebaseQueries` plus one step's queries.
    let visibleQueries: UnsafeMutablePointer<Float>
    /// `config.episodes + 1` blocks of `rows * capacity` (episodic only, else empty): per
    /// episode the attention credited to it, and last the *turn* block, the attention
    /// observed since the previous focus, credited at the next focus to the episode of the
    /// segment added in between (the turn those queries belonged to).
    var episodeScores: UnsafeMutablePointer<Float> { buffers.episodeScores }
    /// Per episode: whether it has observed anything.
    var episodeObserved: [Bool]
    /// Scratch: the keep mask of one row, selection values, a layer's summed scores.
    var keepMask: UnsafeMutablePointer<UInt8> { buffers.keepMask }
    var values: UnsafeMutablePointer<Float> { buffers.values }
    var slotScratch: UnsafeMutablePointer<Int32> { buffers.slotScratch }
    /// A layer's summed scores go here, at `summedScratch(for:)`: `heads x capacity` floats
    /// plus a 4 KiB page of room to place them.
    var summedBuffer: UnsafeMutablePointer<Float> { buffers.summedBuffer }
    /// The compaction plan: per row its moves (destination, source slot pairs) in `moves`.
    private var moves: UnsafeMutablePointer<Int32> { buffers.moves }
    let moveStart: UnsafeMutablePointer<Int>
    let moveCount: UnsafeMutablePointer<Int>
    /// Per layer: slots after the planned compaction.
    let plannedLengths: UnsafeMutablePointer<Int>
    /// Per row: the lowest scores recorded between decode steps (H2O, episodic).
    let lowScores: LowScoreCache
    /// Per layer: the sum of normalised attention entropies observed, and how many rows.
    private var entropySum: [Double]
    private var entropyRows: [Double]
    /// Per layer: the sensitivity the server supplied, or empty.
    public private(set) var sensitivity: [Float] = []
    /// Segments: `[start, end)` positions, and their embeddings (`dim` floats each).
    var segmentBounds: [Int] = []
    var embeddings: [Float] = []
    /// Embedding dimension (0 until fixed).
    public internal(set) var embeddingDim: Int
    var clustering: KMeans?
    var clusteredSegments = 0
    /// Compaction scratch of the engine: which blocks and pages a compaction writes.
    var writtenBlocks: [Bool] = []
    var writtenPages: [Bool] = []
    /// Compactions applied so far.
    public private(set) var compactions = 0
    /// The focused episode, or -1. Every assignment (each focus sets it, the same episode or
    /// not, after crediting the turn and any re-clustering) forgets every row's `lowScores`:
    /// the rows' episodic scores may have fallen.
    public internal(set) var focusedEpisode = -1 {
        didSet { lowScores.invalidateAll() }
    }

    /// Most segments a sequence may register.
    public static let maxSegments = 4096

    /// Rows: `layers * rowsPerLayer`; row `r` is row `r % rowsPerLayer` of layer `r / rowsPerLayer`.
    var rows: Int { layers * rowsPerLayer }

    /// State for a sequence of `length` tokens (positions 0..<length, nothing observed).
    /// Throws `outOfMemory` naming the bytes when the buffers cannot be allocated
    /// (`EvictionStateBuffers`; then nothing is kept). Cost: allocates
    /// `EvictionStateBuffers.bytes` at a capacity of max(length, 1024) rounded up to 1024 x a
    /// power of 2 (at most `maxCapacity`): O(rows * capacity) 4-byte words, plus the
    /// low-score records' 1280 bytes per row (`LowScoreCache`) and O(rows) bookkeeping.
    public convenience init(layers: Int, heads: Int, config: EvictionConfig, length: Int, maxCapacity: Int) throws(KVError) {
        precondition(length <= maxCapacity, "a state of \(length) tokens past its most, \(maxCapacity)")
        var c = min(maxCapacity, 1024)
        while c < length { c = min(maxCapacity, 2 * c) }
        try self.init(layers: layers, heads: heads, config: config, length: length, capacity: max(c, 1), maxCapacity: maxCapacity)
    }

    /// An empty state shaped as `other` (its layers, heads, configuration and capacity),
    /// which `copy(from: other)` fills: a fork allocates it before it changes anything.
    /// Throws and costs as the public initializer at `other.capacity`.
    convenience init(shapeOf other: EvictionState) throws(KVError) {
        try self.init(layers: other.layers, heads: other.heads, config: other.config, length: 0,
                      capacity: other.capacity, maxCapacity: other.maxCapacity)
    }

    private init(layers: Int, heads: Int, config: EvictionConfig, length: Int, capacity: Int, maxCapacity: Int) throws(KVError) {
        precondition(layers > 0 && heads > 0 && length >= 0 && length <= capacity && capacity <= max(1, maxCapacity))
        let tracking = config.tracking, rowsPerLayer = config.perHead ? heads : 1
        let rows = layers * rowsPerLayer
        // The failable allocations first: a throw before the raw pointers below are taken leaks nothing.
        lowScores = try LowScoreCache(rows: rows, recording: tracking.contains(.lowScores))
        buffers = try EvictionStateBuffers(rows: rows, heads: heads, tracking: tracking,
                                           episodeBlocks: tracking.contains(.episodes) ? config.episodes + 1 : 0, capacity: capacity)
        self.layers = layers
        self.heads = heads
        self.config = config
        self.policy = config.policy.policy(config)
        self.tracking = tracking
        self.rowsPerLayer = rowsPerLayer
        self.maxCapacity = maxCapacity
        self.capacity = capacity
        nextPosition = length
        embeddingDim = config.embeddingDim
        lengths = .allocate(capacity: layers)
        lengths.initialize(repeating: length, count: layers)
        parked = .allocate(capacity: rows)
        parked.initialize(repeating: 0, count: rows)
        plannedLengths = .allocate(capacity: layers)
        plannedLengths.initialize(repeating: length, count: layers)
        visibleQueries = .allocate(capacity: layers)
        visibleQueries.initialize(repeating: 0, count: layers)
        moveStart = .allocate(capacity: rows)
        moveStart.initialize(repeating: 0, count: rows)
        moveCount = .allocate(capacity: rows)
        moveCount.initialize(repeating: 0, count: rows)
        episodeObserved = [Bool](repeating: false, count: tracking.contains(.episodes) ? config.episodes + 1 : 0)
        entropySum = [Double](repeating: 0, count: layers)
        entropyRows = [Double](repeating: 0, count: layers)
        for r in 0..<rows {
            for i in 0..<length { positions[r * capacity + i] = Int32(i) }
        }
    }

    /// Takes what the server supplied to `old` (same layers): its per-layer sensitivity and
    /// its segments with their embeddings, not its observations (a sequence whose policy
    /// changes before its first compaction, `Engine.setEviction`). Cost: O(segments * dim).
    func takeServerInput(from old: EvictionState) {
        sensitivity = old.sensitivity
        segmentBounds = old.segmentBounds
        embeddings = old.embeddings
        embeddingDim = old.embeddingDim
    }

    /// Makes this state, created by `init(shapeOf: other)` with `other` at the same capacity
    /// since, a deep copy of `other` (a forked sequence's state), parked slots included
    /// (positions and every score): the engine gives the fork its own pins on the records
    /// holding their K/V. Cost: O(rows * capacity) time, no allocation but the small arrays'.
    func copy(from other: EvictionState) {
        precondition(capacity == other.capacity && rows == other.rows && episodeObserved.count == other.episodeObserved.count)
        let n = rows * capacity
        positions.update(from: other.positions, count: n)
        accumulated.update(from: other.accumulated, count: n)
        if tracking.contains(.lastStep) { last.update(from: other.last, count: n) }
        if tracking.contains(.visibility) { visible.update(from: other.visible, count: n) }
        episodeScores.update(from: other.episodeScores, count: episodeObserved.count * n)
        lengths.update(from: other.lengths, count: layers)
        visibleQueries.update(from: other.visibleQueries, count: layers)
        parked.update(from: other.parked, count: rows)
        nextPosition = other.nextPosition
        tailFrom = other.tailFrom
        episodeObserved = other.episodeObserved
        entropySum = other.entropySum
        entropyRows = other.entropyRows
        sensitivity = other.sensitivity
        segmentBounds = other.segmentBounds
        embeddings = other.embeddings
        embeddingDim = other.embeddingDim
        clustering = other.clustering
        clusteredSegments = other.clusteredSegments
        focusedEpisode = other.focusedEpisode
        compactions = other.compactions  // the fork's slots hold the same positions: compacted too
    }

    deinit {
        for p in [lengths, parked, plannedLengths, moveStart, moveCount] as [UnsafeMutablePointer<Int>] { p.deallocate() }
        visibleQueries.deallocate()
        buffers.free()
    }

    /// Moves every per-row buffer to `new` slots per row (more than `capacity`), keeping rows'
    /// contents (resident slots at the bottom, parked slots at the top of each row). Throws
    /// `outOfMemory` naming the bytes when the new buffers cannot be allocated, and then
    /// changes nothing. Cost: O(rows * new).
    private func reallocate(to new: Int) throws(KVError) {
        let old = capacity, rows = self.rows, parked = self.parked
        let b = try EvictionStateBuffers(rows: rows, heads: heads, tracking: tracking, episodeBlocks: episodeObserved.count, capacity: new)
        func move<T>(_ p: UnsafeMutablePointer<T>, to q: UnsafeMutablePointer<T>, blocks: Int) {
            for r in 0..<(blocks * rows) {
                let top = parked[r % rows]
                (q + r * new).update(from: p + r * old, count: old - top)
                (q + r * new + new - top).update(from: p + r * old + old - top, count: top)
            }
        }
        move(positions, to: b.positions, blocks: 1)
        move(accumulated, to: b.accumulated, blocks: 1)
        move(last, to: b.last, blocks: tracking.contains(.lastStep) ? 1 : 0)
        move(visible, to: b.visible, blocks: tracking.contains(.visibility) ? 1 : 0)
        move(episodeScores, to: b.episodeScores, blocks: episodeObserved.count)
        buffers.free()
        buffers = b
        capacity = new
    }

    // MARK: reading

    /// Slots layer `layer` holds.
    public func length(layer: Int) -> Int { lengths[layer] }

    /// Slots the shortest layer holds: below the sequence's length only after a compaction
    /// with adaptive budgets; appends write each layer from its own length. Cost: O(layers).
    var shortestLength: Int { Self.shortest(lengths, layers) }

    /// Slots the shortest layer holds after the last `plan`. Cost: O(layers).
    var shortestPlannedLength: Int { Self.shortest(plannedLengths, layers) }

    private static func shortest(_ lengths: UnsafePointer<Int>, _ layers: Int) -> Int {
        var n = lengths[0]
        for l in 1..<layers { n = min(n, lengths[l]) }
        return n
    }

    /// The original positions of row `row` of `layer` (`row < rowsPerLayer`), slot by slot.
    public func positions(layer: Int, row: Int = 0) -> UnsafeBufferPointer<Int32> {
        UnsafeBufferPointer(start: positions + (layer * rowsPerLayer + row) * capacity, count: lengths[layer])
    }

    /// The accumulated scores of row `row` of `layer`, slot by slot. Tests: no caller in the
    /// package but the tests.
    public func accumulatedScores(layer: Int, row: Int = 0) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: accumulated + (layer * rowsPerLayer + row) * capacity, count: lengths[layer])
    }

    /// The queries that could see each slot's token in row `row` of `layer` (normalised
    /// scores; resident slots). For tests. Cost: O(slots), allocates.
    func visibility(layer: Int, row: Int = 0) -> [Float] {
        let base = (layer * rowsPerLayer + row) * capacity
        return (0..<lengths[layer]).map { visible[base + $0] + visibleQueries[layer] }
    }

    /// The longest layer: the slots the sequence's memory must hold.
    public var maxLength: Int {
        var m = 0
        for l in 0..<layers { m = max(m, lengths[l]) }
        return m
    }

    /// The most slots a row uses, resident plus parked.
    var maxOccupied: Int {
        var m = 0, r = 0
        for l in 0..<layers {
            for _ in 0..<rowsPerLayer {
                m = max(m, lengths[l] + parked[r])
                r += 1
            }
        }
        return m
    }

    // MARK: growing

    /// Grows the state (doubling `capacity`, at most `maxCapacity`) to room for `n` more
    /// tokens in every row, or for `maxCapacity` slots when `maxOccupied + n` exceeds it (the
    /// engine then drops parked slots first, `Engine.makeRoomForAppend`), so that
    /// `appendReserved(n)` cannot fail. Throws `outOfMemory` naming the bytes when the grown
    /// buffers cannot be allocated, and then changes nothing. Cost: O(rows); a growth (when
    /// the append crosses `capacity`: amortised) allocates and copies O(rows * capacity).
    func reserve(appending n: Int) throws(KVError) {
        let slots = min(maxCapacity, maxOccupied + n)
        guard slots > capacity else { return }
        var c = capacity
        while c < slots { c = min(maxCapacity, 2 * c) }
        try reallocate(to: c)
    }

    /// Adds `n` new tokens (the next positions, no attention yet) at the end of every layer:
    /// `reserve(appending: n)`, then `appendReserved(n)`. Precondition: `maxOccupied + n <=
    /// maxCapacity`. Throws `outOfMemory` (as `reserve`: then nothing changed). Cost: O(rows * n),
    /// amortised growth.
    public func append(_ n: Int) throws(KVError) {
        try reserve(appending: n)
        appendReserved(n)
    }

    /// Adds `n` new tokens as `append`, in room `reserve(appending: n)` made. Preconditions:
    /// `maxOccupied + n <= capacity`, positions stay below `positionLimit`. Cost: O(rows * n),
    /// no allocation.
    func appendReserved(_ n: Int) {
        precondition(maxOccupied + n <= capacity)
        precondition(n <= Self.positionLimit - nextPosition, "positions past Int32.max")
        for l in 0..<layers {
            let len = lengths[l]
            for h in 0..<rowsPerLayer {
                let base = (l * rowsPerLayer + h) * capacity + len
                for j in 0..<n { positions[base + j] = Int32(nextPosition + j) }
                (accumulated + base).update(repeating: 0, count: n)
                if tracking.contains(.lastStep) { (last + base).update(repeating: 0, count: n) }
                if tracking.contains(.visibility) { (visible + base).update(repeating: -visibleQueries[l], count: n) }
                for e in 0..<episodeObserved.count { (episodeScores + e * rows * capacity + base).update(repeating: 0, count: n) }
            }
            lengths[l] = len + n
        }
        nextPosition += n
    }

    /// One past the last position a sequence may reach: positions are stored as `Int32` (4
    /// bytes a slot, compared 8 at a time by `Selection.evictFewest`), so a stream stops
    /// there (`Engine.append` refuses the append) rather than wrap.
    public static let positionLimit = Int(Int32.max) + 1

    // MARK: observing

    /// Adds one step's attention for `layer`: `scores` is `[head][token]` row-major, `nHeads`
    /// rows of `nTokens` (slots 0..<nTokens of the layer; later slots get nothing), each the
    /// step's attention probabilities summed over its queries. The number of queries is taken
    /// from the first head's row sum (each query's probabilities sum to 1), at most `nTokens`
    /// (the step's queries are among the tokens it sees); causal attention
    /// lets the last q slots be seen by fewer queries, which the visibility counts follow.
    /// Throws `invalidArgument` (wrong head count, more tokens than the layer holds, a NaN,
    /// infinite or negative score, scores whose float sum overflows) and then changes nothing.
    /// Cost: one pass over the scores (two adds and a compare per score), no allocation.
    public func observe(layer: Int, scores: UnsafePointer<Float>, nHeads: Int, nTokens n: Int) throws(KVError) {
        guard layer >= 0 && layer < layers else { throw .invalid("layer \(layer) is outside 0..<\(layers)") }
        guard nHeads == heads else { throw .invalid("n_heads \(nHeads) is not num_kv_heads \(heads)") }
        guard n <= lengths[layer] else {
            throw .invalid("\(n) tokens of scores for layer \(layer), which holds \(lengths[layer])")
        }
        guard n > 0 else { return }
        let summed = summedScratch(for: scores)
        let perHead = rowsPerLayer > 1, rows0 = accumulated + layer * rowsPerLayer * capacity
        // Pass 1 checks every value: the minimum catches negatives, the total NaN and
        // infinities. Explicit SIMD, since floating-point reductions do not vectorise on their
        // own. Per layer it sums the heads into scratch; per head it already adds each head's
        // scores into its row, the old sums kept in scratch and put back when a value is bad.
        let (minimum, total, firstHead) = perHead
            ? Self.addHeads(scores, heads: heads, n: n, into: rows0, rowStride: capacity, keeping: summed)
            : Self.sumHeads(scores, heads: heads, n: n, into: summed)
        guard minimum >= 0 && total.isFinite else {
            if perHead {  // a copy: bit for bit the old sums (a float add then subtract need not be)
                for h in 0..<heads { (rows0 + h * capacity).update(from: summed + h * n, count: n) }
            }
            throw Self.refusal(scores, heads: heads, n: n, layer: layer)
        }
        // Pass 2: commit.
        // A step's queries are among the tokens it sees: at most n (scores that are no
        // probabilities could claim 2^63 queries, past what an Int holds).
        let queries = min(max(1, firstHead.rounded()), Float(n))
        let seenAll = max(0, n - Int(queries))
        let episode = tracking.contains(.episodes) ? config.episodes : -1  // the turn block
        if episode >= 0 { episodeObserved[episode] = true }
        if tracking.contains(.visibility) {  // every resident token saw them...
            if visibleQueries[layer] + queries > Self.rebaseQueries { rebaseVisibility(layer: layer) }
            visibleQueries[layer] += queries
        }
        for h in 0..<rowsPerLayer {
            let r = layer * rowsPerLayer + h
            let src = perHead ? scores + h * n : UnsafePointer(summed)
            let turn = episode >= 0 ? episodeScores + episode * rows * capacity + r * capacity : nil
            if !perHead {
                // Episodic: the turn's sums in the same pass, so that the sums are read once and
                // the two rows' misses overlap (two passes cost ~30% of observe's samples).
                Self.add(src, n: n, into: accumulated + r * capacity, and: turn)
            } else if let turn {
                for t in 0..<n { turn[t] += src[t] }
            }
            if tracking.contains(.lastStep) {  // this step's attention; those past `n` got none
                (last + r * capacity).update(from: src, count: n)
                (last + r * capacity + n).update(repeating: 0, count: lengths[layer] - n)
            }
            if tracking.contains(.visibility) {  // ...but the last ones saw fewer, and those past `n` none
                let vis = visible + r * capacity
                for t in seenAll..<n { vis[t] += Float(n - t) - queries }
                for t in n..<lengths[layer] { vis[t] -= queries }
            }
        }
        if config.adaptiveBudgets && sensitivity.isEmpty && n > 1 {
            for h in 0..<heads { entropySum[layer] += normalisedEntropy(scores + h * n, n) }
            entropyRows[layer] += Double(heads)
        }
    }

    /// The most queries a layer's `visibleQueries` reaches before `observe` rebases it: 2^23
    /// leaves room for a step's queries (at most its tokens) below 2^24, where a `Float`
    /// still counts by 1.
    static let rebaseQueries: Float = 0x1p23

    /// Makes layer `layer`'s resident counts absolute and its total 0 (`visible`'s
    /// representation), and forgets its rows' low-score records (they bound scores by the
    /// total at their scan). Cost: O(resident slots of the layer), once per `rebaseQueries`
    /// queries at most: nothing per decode step.
    private func rebaseVisibility(layer: Int) {
        let q = visibleQueries[layer]
        for h in 0..<rowsPerLayer {
            let r = layer * rowsPerLayer + h, vis = visible + r * capacity
            for t in 0..<lengths[layer] { vis[t] += q }
            lowScores.invalidate(row: r)
        }
        visibleQueries[layer] = 0
    }

    /// Floats in a 4 KiB page: the room `summedBuffer` has to place a call's sums.
    static let pageFloats = 1024

    /// Where one `observe` stores its sums in `summedBuffer`: half a 4 KiB page away from
    /// `scores` modulo 4 KiB, and `heads x capacity` floats fit from there. The L1 cache's set
    /// index and the processor's check whether a load may read a pending store both use only
    /// an address's low 12 bits: the sums' stores then share neither with the score loads.
    /// Score rows whose stride is a multiple of 4 KiB (a power-of-two token count from 1024)
    /// all share the first row's bits, and with the scratch there too (as the allocator's
    /// page-aligned blocks put it) `observe` of 8 x 32768 scores ran ~15% slower (1.39 against
    /// 1.19 ms for 32 layers, `tools/bench_ratio.sh`-style runs alternated). Cost: a few
    /// integer operations.
    @inline(__always) func summedScratch(for scores: UnsafePointer<Float>) -> UnsafeMutablePointer<Float> {
        let base = UInt(bitPattern: summedBuffer), want = (UInt(bitPattern: scores) &+ 2048) & 4095
        return summedBuffer + Int(((want &- base) & 4095) / 4)  // both are Float-aligned
    }

    /// Why the scores `[heads][n]` of `layer` were refused, once a check found a NaN, infinite
    /// or negative value or an infinite sum: the first bad value, or else the sum. O(heads * n).
    static func refusal(_ scores: UnsafePointer<Float>, heads: Int, n: Int, layer: Int) -> KVError {
        var i = 0
        while i < heads * n && scores[i] >= 0 && scores[i].isFinite { i += 1 }
        guard i < heads * n else {
            return .invalid("the \(heads * n) scores of layer \(layer) are each finite and >= 0 but sum to more than a float holds: the sum must be finite")
        }
        return .invalid("score \(scores[i]) at head \(i / n), token \(i % n) of layer \(layer): scores must be finite and >= 0")
    }

    /// `out[t] = sum over heads of scores[h][t]`; returns a number below 0 when some score
    /// is negative (else 0), the sum of all scores (NaN or infinite when one is) and the sum
    /// of head 0's. Cost: one SIMD pass that reads every head's chunk and stores the chunk's
    /// sum once (no read-modify-write of `out` per head); sign bits are OR-ed (a set bit, even
    /// of -0.0, sends it to a scalar recheck) because a vector minimum does not specialise here.
    @inline(__always)
    private static func sumHeads(_ scores: UnsafePointer<Float>, heads: Int, n: Int, into out: UnsafeMutablePointer<Float>)
        -> (Float, Float, Float)
    {
        typealias V = SIMD8<Float>
        typealias Bits = SIMD8<UInt32>
        let vectors = n / 8
        var signs = Bits(repeating: 0)
        var sum = V(repeating: 0), first = V(repeating: 0)
        let src = UnsafeRawPointer(scores), dst = UnsafeMutableRawPointer(out)
        let rowBytes = n * 4
        for j in 0..<vectors {
            let v0 = src.loadUnaligned(fromByteOffset: j * 32, as: V.self)
            signs |= unsafeBitCast(v0, to: Bits.self)
            first += v0
            var chunk = v0
            var row = src + rowBytes
            for _ in 1..<max(heads, 1) {
                let v = row.loadUnaligned(fromByteOffset: j * 32, as: V.self)
                signs |= unsafeBitCast(v, to: Bits.self)
                chunk += v
                row += rowBytes
            }
            sum += chunk
            dst.storeBytes(of: chunk, toByteOffset: j * 32, as: V.self)
        }
        var total = sum.sum(), firstHead = first.sum()
        var signed = false
        for i in 0..<8 where signs[i] & 0x8000_0000 != 0 { signed = true }
        for t in (vectors * 8)..<n {
            var s: Float = 0
            for h in 0..<heads {
                let v = scores[h * n + t]
                s += v
                if v.sign == .minus { signed = true }
                if h == 0 { firstHead += v }
            }
            out[t] = s
            total += s
        }
        var minimum: Float = 0
        if signed {  // rare: find a real negative (-0.0 is fine)
            for i in 0..<(heads * n) where scores[i] < 0 { minimum = -1 }
        }
        return (minimum, total, firstHead)
    }

    /// Per head: `rows[h * rowStride + t] += scores[h * n + t]`, the old sums kept in
    /// `old[h * n + t]`; the same results as `sumHeads`. The caller copies `old` back when a
    /// value is bad. Cost: one SIMD pass that reads each score once and read-modify-writes each
    /// sum once, plus the store of the old sum (into scratch that every layer reuses, so it
    /// stays in cache), where checking first and adding after read the scores twice.
    @inline(__always)
    private static func addHeads(
        _ scores: UnsafePointer<Float>, heads: Int, n: Int, into rows: UnsafeMutablePointer<Float>, rowStride: Int,
        keeping old: UnsafeMutablePointer<Float>
    ) -> (Float, Float, Float) {
        typealias V = SIMD8<Float>
        typealias Bits = SIMD8<UInt32>
        let vectors = n / 8
        var signs = Bits(repeating: 0)
        var signed = false
        var total: Float = 0, firstHead: Float = 0
        for h in 0..<heads {
            let src = UnsafeRawPointer(scores + h * n), acc = UnsafeMutableRawPointer(rows + h * rowStride)
            let kept = UnsafeMutableRawPointer(old + h * n)
            var sum = V(repeating: 0)
            for j in 0..<vectors {
                let v = src.loadUnaligned(fromByteOffset: j * 32, as: V.self)
                signs |= unsafeBitCast(v, to: Bits.self)
                sum += v
                let a = acc.loadUnaligned(fromByteOffset: j * 32, as: V.self)
                kept.storeBytes(of: a, toByteOffset: j * 32, as: V.self)
                acc.storeBytes(of: a + v, toByteOffset: j * 32, as: V.self)
            }
            var t = sum.sum()
            let s = scores + h * n, a = rows + h * rowStride, k = old + h * n
            for i in (vectors * 8)..<n {
                let v = s[i]
                if v.sign == .minus { signed = true }
                t += v
                k[i] = a[i]
                a[i] += v
            }
            total += t
            if h == 0 { firstHead = t }
        }
        for i in 0..<8 where signs[i] & 0x8000_0000 != 0 { signed = true }
        var minimum: Float = 0
        if signed {  // rare: find a real negative (-0.0 is fine)
            for i in 0..<(heads * n) where scores[i] < 0 { minimum = -1 }
        }
        return (minimum, total, firstHead)
    }

    /// `a[t] += x[t]`, and `b[t] += x[t]` when `b` is given, for `t < n`: the same float adds
    /// as one loop per row, in one SIMD pass that reads `x` once. Cost: O(n).
    @inline(__always)
    static func add(_ x: UnsafePointer<Float>, n: Int, into a: UnsafeMutablePointer<Float>, and b: UnsafeMutablePointer<Float>?) {
        typealias V = SIMD8<Float>
        let vectors = n / 8
        let src = UnsafeRawPointer(x), dstA = UnsafeMutableRawPointer(a)
        if let b {
            let dstB = UnsafeMutableRawPointer(b)
            for j in 0..<vectors {
                let v = src.loadUnaligned(fromByteOffset: j * 32, as: V.self)
                dstA.storeBytes(of: dstA.loadUnaligned(fromByteOffset: j * 32, as: V.self) + v, toByteOffset: j * 32, as: V.self)
                dstB.storeBytes(of: dstB.loadUnaligned(fromByteOffset: j * 32, as: V.self) + v, toByteOffset: j * 32, as: V.self)
            }
            for t in (vectors * 8)..<n {
                a[t] += x[t]
                b[t] += x[t]
            }
        } else {
            for t in 0..<n { a[t] += x[t] }
        }
    }

    /// Entropy of the distribution `p / sum(p)` divided by log(n): 0 (one token) ... 1 (uniform).
    private func normalisedEntropy(_ p: UnsafePointer<Float>, _ n: Int) -> Double {
        var s: Double = 0, sLogS: Double = 0
        for t in 0..<n where p[t] > 0 {
            let v = Double(p[t])
            s += v
            sLogS += v * log(v)
        }
        guard s > 0 else { return 1 }
        return max(0, (log(s) - sLogS / s) / log(Double(n)))
    }

    /// Sets the per-layer sensitivity for adaptive budgets (`layers` values, finite and >= 0,
    /// not all 0). Throws `invalidArgument` and changes nothing otherwise.
    public func setSensitivity(_ values: UnsafeBufferPointer<Float>) throws(KVError) {
        guard values.count == layers else { throw .invalid("\(values.count) sensitivities for \(layers) layers") }
        var sum: Float = 0
        for (l, v) in values.enumerated() {
            guard v.isFinite && v >= 0 else { throw .invalid("sensitivity \(v) of layer \(l) is not finite and >= 0") }
            sum += v
        }
        guard sum > 0 else { throw .invalid("every layer's sensitivity is 0") }
        sensitivity = Array(values)
    }

    // MARK: compaction

    /// Per-layer budgets for a mean of `budget` tokens per layer: all `budget` unless
    /// `adaptiveBudgets`, then `budget * layers` tokens in all (or every token, when the
    /// layers hold fewer) shared in proportion to the sensitivity (or observed entropy), each
    /// layer keeping 1...its length: layer l keeps clamp(λ w_l, 1, length_l) for the λ that
    /// makes them sum to the total (a weight of 0 counts as a tiny one, so such a layer keeps
    /// one token until the others are full), rounded by largest remainder. (Until 2026-11-24
    /// the shares were rounded one by one and the one token a layer keeps came on top of a
    /// capped layer's length: up to layers / 2 + 1 tokens past the total, helper-126/130;
    /// equal weights skipped the surplus of short layers.)
    /// A budget past the longest layer is that layer's length: every layer keeps all its
    /// tokens either way, and `budget * layers` stays far from overflow for any `budget` the
    /// ABI passes (up to `Int.max`). Cost: O(layers^2) (layers are few), a few small arrays.
    func layerBudgets(_ budget: Int, into out: UnsafeMutablePointer<Int>) {
        var longest = 0, all = 0
        for l in 0..<layers {
            longest = max(longest, lengths[l])
            all += lengths[l]
        }
        let budget = min(budget, longest), total = budget * layers
        guard config.adaptiveBudgets else {
            for l in 0..<layers { out[l] = min(budget, lengths[l]) }
            return
        }
        guard total < all else {
            for l in 0..<layers { out[l] = lengths[l] }
            return
        }
        var weights = [Double](repeating: 1, count: layers)
        if !sensitivity.isEmpty {
            for l in 0..<layers { weights[l] = Double(sensitivity[l]) }
        } else if entropyRows.allSatisfy({ $0 > 0 }) {
            for l in 0..<layers { weights[l] = max(1e-3, entropySum[l] / entropyRows[l]) }
        }
        let heaviest = weights.max() ?? 1
        for l in 0..<layers { weights[l] = max(weights[l], heaviest * 1e-12) }
        // kept(λ) = Σ clamp(λ w_l, 1, length_l) grows with λ, linearly between the points where
        // a layer leaves its floor (1 / w) or reaches its length (length / w); it reaches `all`.
        func kept(_ lambda: Double) -> Double {
            var sum = 0.0
            for l in 0..<layers where lengths[l] > 0 { sum += min(Double(lengths[l]), max(1, lambda * weights[l])) }
            return sum
        }
        var points: [Double] = [0]
        for l in 0..<layers where lengths[l] > 0 {
            points.append(1 / weights[l])
            points.append(Double(lengths[l]) / weights[l])
        }
        points.sort()
        let target = Double(total)
        var below = 0.0, above = points[points.count - 1]
        for p in points {
            if kept(p) >= target { above = p; break }
            below = p
        }
        let lo = kept(below), hi = kept(above)
        let lambda = hi > lo ? below + (above - below) * (target - lo) / (hi - lo) : above
        // Largest remainder: each share rounded down, then one more token to the layers whose
        // shares lost the most (the lowest layer first on ties) while the total is short.
        var given = 0
        var lost: [(fraction: Double, layer: Int)] = []
        for l in 0..<layers {
            guard lengths[l] > 0 else { out[l] = 0; continue }
            let share = min(Double(lengths[l]), max(1, lambda * weights[l]))
            out[l] = Int(share)
            given += out[l]
            lost.append((share - Double(out[l]), l))
        }
        lost.sort { $0.fraction != $1.fraction ? $0.fraction > $1.fraction : $0.layer < $1.layer }
        var left = total - given
        while left > 0 {
            var gave = false
            for (_, l) in lost where left > 0 && out[l] < lengths[l] {
                out[l] += 1
                left -= 1
                gave = true
            }
            if !gave { break }
        }
    }

    /// Plans a compaction to `budget` tokens per layer (mean, with adaptive budgets): runs the
    /// policy on every row and records, per row, the moves that pack its kept slots into
    /// 0..<kept — each kept slot at or past `kept` fills the lowest free slot below it, so a
    /// step that evicts e tokens moves at most e tokens per row — and the planned lengths.
    /// Changes no observable state. Returns the longest planned layer.
    /// Cost: the policy's O(slots) per row, no allocation.
    func plan(budget: Int) -> Int {
        var planned = 0
        let keepsAll = type(of: policy).keepsEveryToken
        layerBudgets(budget, into: plannedLengths)
        var used = 0
        for l in 0..<layers {
            let len = lengths[l]
            let b = plannedLengths[l]
            var kept = len
            for h in 0..<rowsPerLayer {
                let r = l * rowsPerLayer + h
                moveStart[r] = used
                moveCount[r] = 0
                let base = r * capacity
                let episode = episodeRow(base)
                let row = EvictionRow(
                    count: len, positions: positions + base, accumulated: accumulated + base,
                    last: tracking.contains(.lastStep) ? UnsafePointer(last + base) : UnsafePointer(accumulated + base),
                    visible: tracking.contains(.visibility) ? UnsafePointer(visible + base) : UnsafePointer(accumulated + base),
                    visibleOffset: tracking.contains(.visibility) ? visibleQueries[l] : 0,
                    episode: episode?.scores, turn: episode?.turn, nextPosition: nextPosition, budget: max(1, b),
                    lowScores: recordsLowScores ? lowScores.row(r) : nil)
                policy.choose(row, scratch: SelectionScratch(values: values, slots: slotScratch, capacity: 2 * capacity), keep: keepMask)
                // Every policy keeps exactly min(budget, count) slots, or all of them.
                let k = keepsAll ? len : min(max(1, b), len)
                kept = k
                pairMoves(row: r, count: len, kept: k, used: &used)
            }
            plannedLengths[l] = kept
            planned = max(planned, kept)
        }
        return planned
    }

    /// Records row `r`'s moves from `keepMask` (its `len` slots, `k` of them kept): each hole
    /// below `k` paired with a kept slot at or past `k`, both in slot order, appended to
    /// `moves` from pair `used`. Cost: O(len), a `memchr` per run of kept slots below `k`.
    private func pairMoves(row r: Int, count len: Int, kept k: Int, used: inout Int) {
        var hole = 0, src = k
        while true {
            if hole < k, let zero = memchr(keepMask + hole, 0, k - hole) {
                hole = UnsafeMutableRawPointer(zero) - UnsafeMutableRawPointer(keepMask)
            } else {
                hole = k
            }
            while src < len && keepMask[src] == 0 { src += 1 }
            guard hole < k && src < len else { break }
            moves[2 * used] = Int32(hole)
            moves[2 * used + 1] = Int32(src)
            used += 1
            moveCount[r] += 1
            hole += 1
            src += 1
        }
    }

    /// Decode steps (over all rows) whose choice scanned the row instead of using `lowScores`.
    /// Tests: read by the tests only.
    var lowScoreScans: Int { lowScores.scans }

    /// Bytes of the low-score records' slots: 0 unless the policy's tracking has
    /// `ScoreTracking.lowScores` (tests).
    var lowScoreRecordBytes: Int { lowScores.recordBytes }

    /// Whether `plan` lets the policy keep `lowScores`: its tracking asks for them
    /// (`ScoreTracking.lowScores`) and the row does not park (parking moves slots outside
    /// compactions).
    private var recordsLowScores: Bool {
        tracking.contains(.lowScores) && !parksEvictions
    }

    /// The episodic scores of the row at `base`, slot by slot: the focused episode's, to which
    /// the current turn's are added; nil without a focused episode that has observed
    /// something (then the policy is H2O). Cost: O(1).
    func episodeRow(_ base: Int) -> (scores: UnsafePointer<Float>, turn: UnsafePointer<Float>)? {
        guard tracking.contains(.episodes), focusedEpisode >= 0, episodeObserved[focusedEpisode] else { return nil }
        let block = rows * capacity
        return (UnsafePointer(episodeScores + focusedEpisode * block + base), UnsafePointer(episodeScores + config.episodes * block + base))
    }

    /// Whether the last `plan` keeps fewer tokens than a layer holds. Cost: O(layers).
    var plansEviction: Bool {
        for l in 0..<layers where plannedLengths[l] < lengths[l] { return true }
        return false
    }

    /// Whether the last `plan` or `planTruncation` moves a slot in some row. Cost: O(rows).
    var plansMoves: Bool {
        for r in 0..<rows where moveCount[r] != 0 { return true }
        return false
    }

    /// The planned moves of row `r`: (destination, source) slot pairs.
    @inline(__always) func plannedMoves(row r: Int) -> UnsafeBufferPointer<Int32> {
        UnsafeBufferPointer(start: moves + 2 * moveStart[r], count: 2 * moveCount[r])
    }

    /// Applies the last `plan`: moves every per-slot value along with its token and sets the
    /// layer lengths. With `parksEvictions` the evicted slots become parked slots, in the order
    /// `forEachPlannedEviction` reports them; otherwise they are dropped.
    /// Cost: O(moves), plus O(evicted) when parking.
    func applyPlan() {
        let block = rows * capacity
        for r in 0..<rows {
            let base = r * capacity
            let m = plannedMoves(row: r)
            let l = r / rowsPerLayer
            if parksEvictions || lengths[l] - plannedLengths[l] >= Selection.smallEviction {
                lowScores.invalidate(row: r)  // remapping costs O(recorded x moves): the next step scans
            } else {
                lowScores.remap(row: r, kept: plannedLengths[l], moves: m)
            }
            for j in 0..<moveCount[r] {
                let d = base + Int(m[2 * j]), s = base + Int(m[2 * j + 1])
                // Parking swaps, so that the evicted token of hole d lands in slot s past the
                // new length, where the evicted slots then form one run.
                if parksEvictions { swapValues(d, s, block: block) } else { copyValues(d, s, block: block) }
            }
        }
        if parksEvictions {
            // The evicted run `kept..<length` moves up below the parked slots (highest first:
            // the two ranges may overlap, the destination lying above the source).
            for r in 0..<rows {
                let l = r / rowsPerLayer, kept = plannedLengths[l], evicted = lengths[l] - kept
                let to = capacity - parked[r] - evicted, base = r * capacity
                precondition(to >= kept, "resident and parked slots exceed the row")
                if tracking.contains(.visibility) { for j in kept..<(kept + evicted) { visible[base + j] += visibleQueries[l] } }
                if to != kept {
                    for j in stride(from: evicted - 1, through: 0, by: -1) { copyValues(base + to + j, base + kept + j, block: block) }
                }
                parked[r] += evicted
            }
        }
        lengths.update(from: plannedLengths, count: layers)
        tailFrom = nextPosition
        compactions += 1
    }

    /// Calls `body` with each slot the last `plan` evicts from row `row`, as slot indices
    /// before the compaction, in the order `applyPlan` parks them (as many for every row of a
    /// layer). Cost: O(evicted), no allocation.
    func forEachPlannedEviction(row: Int, _ body: (Int32) -> Void) {
        let layer = row / rowsPerLayer, kept = plannedLengths[layer], m = plannedMoves(row: row)
        // A move (hole d <- kept slot s) swaps: the run's slot s then holds hole d's token.
        // The moves' kept slots ascend (`pairMoves`), so the run meets them in order.
        var move = 0
        for slot in kept..<lengths[layer] {
            if move < m.count && Int(m[move + 1]) == slot {
                body(m[move])
                move += 2
            } else {
                body(Int32(slot))
            }
        }
        assert(move == m.count, "a planned move's kept slot is not in the evicted run")
    }

    // MARK: truncation

    /// Plans a truncation to the positions below `cut` (`1 ..< nextPosition`): in every row
    /// the resident slots holding a position at or past `cut` go, the kept slots past the new
    /// length filling the holes as in `plan` (a cut past every compacted token only drops the
    /// last slots: no move). Changes no observable state; `applyTruncation` applies it.
    /// Returns the longest planned layer. Throws `unsupported`, with the reason, when the cut
    /// is not representable: per head, the heads of a layer would keep different counts
    /// (a layer's rows share its length; this happens only for cuts below positions that a
    /// compaction decided on); a layer would keep no token; a segment lying wholly past the
    /// cut already took part in a clustering (the episodes and the scores they were credited
    /// cannot be undone).
    /// Cost: O(rows + clustered segments) for a cut at or past `tailFrom` (the drafts appended
    /// since the last compaction: the last slots of every row go, no move); otherwise
    /// O(resident slots) per row. No allocation.
    func planTruncation(below cut: Int) throws(KVError) -> Int {
        precondition(cut >= 1 && cut < nextPosition)
        for i in 0..<clusteredSegments where segmentBounds[2 * i] >= cut {
            throw KVError(.unsupported, "segment \(i) [\(segmentBounds[2 * i]), \(segmentBounds[2 * i + 1])) lies past the cut at "
                          + "position \(cut) and was already clustered into episodes by a focus; truncate to \(segmentBounds[2 * i] + 1) or more")
        }
        func emptyLayer(_ l: Int) -> KVError {
            KVError(.unsupported, "layer \(l) holds no token below position \(cut): a layer keeps at least one")
        }
        var planned = 0, used = 0
        if cut >= tailFrom {
            for l in 0..<layers {
                let k = lengths[l] - (nextPosition - cut)
                guard k > 0 else { throw emptyLayer(l) }
                plannedLengths[l] = k
                planned = max(planned, k)
            }
            moveCount.update(repeating: 0, count: rows)
            return planned
        }
        for l in 0..<layers {
            let len = lengths[l]
            var kept = -1
            for h in 0..<rowsPerLayer {
                let r = l * rowsPerLayer + h, row = positions + r * capacity
                moveStart[r] = used
                moveCount[r] = 0
                var k = 0
                for i in 0..<len {
                    let keep: UInt8 = Int(row[i]) < cut ? 1 : 0
                    keepMask[i] = keep
                    k += Int(keep)
                }
                guard k > 0 else { throw emptyLayer(l) }
                guard kept < 0 || k == kept else {
                    throw KVError(.unsupported, "per head, layer \(l) would keep \(kept) tokens below position \(cut) in head 0 and \(k) in head \(h) "
                                  + "(the heads' kept sets differ there): a layer's heads hold equally many tokens")
                }
                kept = k
                pairMoves(row: r, count: len, kept: k, used: &used)
            }
            plannedLengths[l] = kept
            planned = max(planned, kept)
        }
        return planned
    }

    /// Applies the last `planTruncation(below: cut)`: moves every per-slot value with its
    /// token, sets the layer lengths, forgets the parked slots (episodic offload) at or past
    /// `cut` — calling `dropping(row, position)` for each, before its slot is reused — and the
    /// segments wholly past it, ends the others there, and takes later positions from `cut`.
    /// Low-score records follow the moves and serve no window past `cut` (the positions
    /// appended next were not there at their scan). Attention observed while the removed
    /// tokens were there stays credited to the kept ones.
    /// Cost: O(moves x recorded) (at most `Selection.smallEviction` moves per row, else the
    /// row's record is forgotten), O(segments); O(parked) only for a cut below `tailFrom`.
    func applyTruncation(below cut: Int, dropping: (_ row: Int, _ position: Int32) -> Void) {
        let block = rows * capacity, parkedPastCut = cut < tailFrom  // parked tokens lie below `tailFrom`
        for r in 0..<rows {
            let base = r * capacity, m = plannedMoves(row: r)
            if moveCount[r] >= Selection.smallEviction {
                lowScores.invalidate(row: r)
            } else {
                lowScores.remap(row: r, kept: plannedLengths[r / rowsPerLayer], moves: m)
                lowScores.limit(row: r, below: cut)
            }
            for j in 0..<moveCount[r] { copyValues(base + Int(m[2 * j]), base + Int(m[2 * j + 1]), block: block) }
            // Ascending: `removeParked` moves the lowest parked slot, already visited, into `i`.
            var i = parkedPastCut ? parkedStart(row: r) : capacity
            while i < capacity {
                if positions[base + i] >= Int32(cut) {
                    dropping(r, positions[base + i])
                    removeParked(row: r, slot: i)
                }
                i += 1
            }
        }
        lengths.update(from: plannedLengths, count: layers)
        nextPosition = cut
        tailFrom = min(tailFrom, cut)
        guard !segmentBounds.isEmpty else { return }
        var kept = 0
        for i in 0..<segmentCount where segmentBounds[2 * i] < cut {
            segmentBounds[2 * kept] = segmentBounds[2 * i]
            segmentBounds[2 * kept + 1] = min(segmentBounds[2 * i + 1], cut)
            if kept != i {
                for d in 0..<embeddingDim { embeddings[kept * embeddingDim + d] = embeddings[i * embeddingDim + d] }
            }
            kept += 1
        }
        segmentBounds.removeLast(segmentBounds.count - 2 * kept)
        embeddings.removeLast(embeddings.count - kept * embeddingDim)
    }

    @inline(__always) func copyValues(_ d: Int, _ s: Int, block: Int) {
        positions[d] = positions[s]
        accumulated[d] = accumulated[s]
        if tracking.contains(.lastStep) { last[d] = last[s] }
        if tracking.contains(.visibility) { visible[d] = visible[s] }
        for e in 0..<episodeObserved.count { episodeScores[e * block + d] = episodeScores[e * block + s] }
    }

    @inline(__always) func swapValues(_ a: Int, _ b: Int, block: Int) {
        swap(&positions[a], &positions[b])
        swap(&accumulated[a], &accumulated[b])
        if tracking.contains(.lastStep) { swap(&last[a], &last[b]) }
        if tracking.contains(.visibility) { swap(&visible[a], &visible[b]) }
        for e in 0..<episodeObserved.count { swap(&episodeScores[e * block + a], &episodeScores[e * block + b]) }
    }

    var gather: [Float] = []

    /// Compacts this state alone (no K/V memory): `plan` then `applyPlan`. For evaluation.
    public func compact(budget: Int) {
        _ = plan(budget: budget)
        applyPlan()
    }
}
