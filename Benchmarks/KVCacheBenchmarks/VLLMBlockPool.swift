import KVCache

/// A second baseline: vLLM v1's prefix-caching block manager, re-implemented in Swift for one
/// KV cache group of full attention, so the engine is measured against the algorithm vLLM
/// serves with, not only against `BaselineBlockManager` (which never evicts).
///
/// Followed (read, not copied) from `github.com/vllm-project/vllm`:
/// - `vllm/v1/core/block_pool.py` at commit c59cb7941357443da7c5eef75cfa8697d683d228
///   (`BlockPool`: `get_new_blocks`, `_maybe_evict_cached_block`, `touch`, `free_blocks`,
///   `cache_full_blocks`; `BlockHashToBlockMap`), which includes PR #33710: freed blocks that
///   were never cached go to the *front* of the free queue, cached ones to the *back*;
/// - `vllm/v1/core/kv_cache_utils.py` (`KVCacheBlock`, `FreeKVCacheBlockQueue`: a doubly
///   linked list threaded through the blocks, with a fake head and tail);
/// - `vllm/v1/core/single_type_kv_cache_manager.py` at commit
///   129ab7c60cbb8eb11e875373e67f7e521b74aa30 (`FullAttentionManager.find_longest_cache_hit`,
///   `get_num_blocks_to_allocate`, `allocate_new_computed_blocks`, `allocate_new_blocks`,
///   `cache_blocks`, `free`: a request's blocks are freed in *reverse* order, tail first) and
///   `kv_cache_manager.py` (`get_computed_blocks` looks up at most `tokens - 1` tokens, so one
///   token is always computed).
///
/// The algorithm, as kept here:
/// - Blocks `0..<capacity`; block 0 is vLLM's null block (taken off the queue at start, never
///   handed out), so `init(blocks:)` adds one to give `blocks` usable ones.
/// - Free queue: every block with no reference, cached or not, in eviction order (head first).
///   Invariant: it is `[never-cached blocks][cached blocks]` (fresh ones are prepended, cached
///   ones appended), and within the cached part the least recently freed come first; blocks of
///   one request freed together are queued tail block first.
/// - Allocation pops the head; a popped block that is cached leaves the hash map (eviction).
/// - Hash map: chained block hash -> the blocks cached under it, first inserted first. No
///   de-duplication (a block filled with the same content as a cached one is cached too, so
///   block tables stay append-only); a lookup returns the first.
/// - A prefix hit `touch`es the blocks: a reference each, and a block with none leaves the
///   free queue. Admission counts such revived blocks against the free blocks.
/// - A request's full prompt blocks are cached when its slots are allocated (vLLM caches the
///   scheduled tokens' full blocks right after allocating them).
///
/// Left out: multiple KV cache groups and hybrid models, sliding window / chunked local /
/// Mamba managers and their null-block padding, EAGLE (dropping the last hit block), KV
/// connectors and external computed tokens, LoRA / multimodal / salt extra hash keys (one
/// hash chain, `naming`), chunked prefill and speculative lookahead slots, KV events,
/// metrics, `reset_prefix_cache`, preemption. Blocks filled by appended (decode) tokens are not
/// cached: at block level their tokens are unknown, which is what the engine's hash-only
/// `createSequence(_:blockHashes:tokens:)` does too. vLLM would cache them; here no later
/// prompt could match them (the trace does not have their tokens), and cached they would wait
/// at the back of the free queue with the other cached blocks instead of being reused first,
/// so the replay's eviction order is not exactly what vLLM serving this trace would see.
///
/// Block naming (`Naming`, vLLM's `prefix_caching_hash_algo`): `.blockHash` chains the engine's
/// public 64-bit `BlockHash` (cheap; a crafted prompt can collide with a given one), `.sha256`
/// chains vLLM's default SHA-256 (`SHA256BlockChain`). Either way the map is keyed by 64 bits:
/// with `.sha256` the digest's first 64 bits, where vLLM keys by all 32 bytes (a probe here hashes
/// 8 bytes instead of 32, which flatters vLLM a little; a cost model, nothing is verified).
///
/// Costs: `allocateBlock`, `releaseBlock`, the queue operations and `touch` are O(1); a prompt
/// is O(its blocks) plus one Dictionary lookup per prefix block probed and one insert per
/// newly cached block. The hash map is Swift's `Dictionary` (vLLM's is a Python dict); the
/// per-block fields are flat arrays, the queue links block ids. Not thread-safe (vLLM's
/// scheduler is single-threaded); no lock, no memory behind blocks, no events.
final class VLLMBlockPool {
    /// The blocks cached under one hash, first inserted first (vLLM's single block or
    /// `{block_id: block}` dict). Never empty.
    private enum Cached {
        case one(Int32)
        case many([Int32])

        /// The block a lookup returns: the first inserted.
        var first: Int32 {
            switch self {
            case .one(let b): return b
            case .many(let bs): return bs[0]
            }
        }
    }

    /// One request: its block table (`req_to_blocks`), how many leading blocks are in the hash
    /// map (`num_cached_block`) and its tokens.
    private struct Request {
        var blocks: [Int32]
        var cachedBlocks: Int
        var tokens: Int
    }

    /// How a full block is named (vLLM's `prefix_caching_hash_algo`; see above).
    enum Naming {
        /// `BlockHash.chain`, the engine's public block hash.
        case blockHash
        /// `SHA256BlockChain`, keyed by each digest's first 64 bits.
        case sha256
    }

    /// Tokens per block.
    let blockTokens: Int
    /// How token-level calls name a prompt's full blocks.
    let naming: Naming
    /// Blocks in all, the null block included.
    let capacity: Int
    /// vLLM's placeholder block: never queued, never referenced.
    static let nullBlock: Int32 = 0

    /// Per block: references held by requests.
    private let refs: UnsafeMutablePointer<Int32>
    /// Per block: the hash it is cached under, meaningful while `hashed` is true.
    private let hashes: UnsafeMutablePointer<UInt64>
    private let hashed: UnsafeMutablePointer<Bool>
    /// Free-queue links by block id; `head` and `tail` are the fake ends (ids `capacity` and
    /// `capacity + 1`), so every real block has both neighbours while queued. -1 when unqueued.
    private let prev: UnsafeMutablePointer<Int32>
    private let next: UnsafeMutablePointer<Int32>
    private let head: Int32
    private let tail: Int32
    /// Blocks in the free queue (vLLM's `num_free_blocks`): what allocation can still take.
    private(set) var freeBlocks: Int
    private var cache: [UInt64: Cached]
    private var requests: [UInt64: Request] = [:]
    /// Hits of the current prompt (`find_longest_cache_hit`'s result), and its hashes for
    /// token-level lookups; reused across calls.
    private var hitScratch: [Int32] = []
    private var hashScratch: [UInt64] = []
    /// `.sha256` naming's digests of the current prompt and one block's message; reused.
    private var digestScratch: [SHA256.Digest] = []
    private let message: UnsafeMutableRawBufferPointer
    /// Blocks freed by one `free`, split into never-cached and cached; reused across calls.
    private var freshScratch: [Int32] = []
    private var cachedScratch: [Int32] = []
    /// Cached blocks evicted by allocation, in total.
    private(set) var evictions = 0

    /// A pool of `blocks` usable blocks of `blockTokens` tokens (plus the null block), all free,
    /// queued in id order, naming blocks by `naming`.
    init(blocks: Int, blockTokens: Int, naming: Naming = .blockHash) {
        precondition(blocks > 0 && blockTokens > 0)
        self.blockTokens = blockTokens
        self.naming = naming
        message = .allocate(byteCount: SHA256BlockChain.messageBytes(blockTokens: blockTokens), alignment: 8)
        capacity = blocks + 1
        let slots = capacity + 2
        refs = .allocate(capacity: capacity)
        refs.initialize(repeating: 0, count: capacity)
        hashes = .allocate(capacity: capacity)
        hashes.initialize(repeating: 0, count: capacity)
        hashed = .allocate(capacity: capacity)
        hashed.initialize(repeating: false, count: capacity)
        prev = .allocate(capacity: slots)
        next = .allocate(capacity: slots)
        head = Int32(capacity)
        tail = Int32(capacity + 1)
        // Queue every block but the null block, in id order.
        prev.initialize(repeating: -1, count: slots)
        next.initialize(repeating: -1, count: slots)
        var last = head
        for b in 1..<Int32(capacity) {
            next[Int(last)] = b
            prev[Int(b)] = last
            last = b
        }
        next[Int(last)] = tail
        prev[Int(tail)] = last
        freeBlocks = blocks
        cache = Dictionary(minimumCapacity: capacity)
    }

    deinit {
        refs.deallocate()
        hashes.deallocate()
        hashed.deallocate()
        prev.deallocate()
        next.deallocate()
        message.deallocate()
    }

    // MARK: the free queue (FreeKVCacheBlockQueue)

    /// Unlinks queued block `b`. O(1).
    @inline(__always)
    private func unlink(_ b: Int32) {
        let p = prev[Int(b)], n = next[Int(b)]
        next[Int(p)] = n
        prev[Int(n)] = p
        prev[Int(b)] = -1
        next[Int(b)] = -1
        freeBlocks -= 1
    }

    /// Links unqueued block `b` between `p` and its successor. O(1).
    @inline(__always)
    private func link(_ b: Int32, after p: Int32) {
        let n = next[Int(p)]
        next[Int(p)] = b
        prev[Int(b)] = p
        next[Int(b)] = n
        prev[Int(n)] = b
        freeBlocks += 1
    }

    // MARK: blocks (BlockPool)

    /// Takes the head of the free queue with one reference, evicting it from the hash map if it
    /// was cached (`get_new_blocks` of one block). Nil when the queue is empty. O(1) plus a
    /// Dictionary removal on eviction.
    @inline(__always)
    func allocateBlock() -> Int32? {
        let b = next[Int(head)]
        if b == tail { return nil }
        unlink(b)
        if hashed[Int(b)] { evict(b) }
        refs[Int(b)] = 1
        return b
    }

    /// Drops one reference to `b` (`free_blocks` of one block): at zero it joins the free queue,
    /// at the front when never cached, at the back when cached. O(1).
    @inline(__always)
    func releaseBlock(_ b: Int32) {
        precondition(refs[Int(b)] > 0, "release of an unreferenced block")
        refs[Int(b)] -= 1
        if refs[Int(b)] > 0 || b == Self.nullBlock { return }
        link(b, after: hashed[Int(b)] ? prev[Int(tail)] : head)
    }

    /// Removes cached block `b` from the hash map and clears its hash
    /// (`_maybe_evict_cached_block`). Precondition: `b` is hashed.
    private func evict(_ b: Int32) {
        let h = hashes[Int(b)]
        guard let entry = cache.removeValue(forKey: h) else { preconditionFailure("hashed block \(b) is not in the map") }
        switch entry {
        case .one(let only):
            precondition(only == b, "hashed block \(b) is not in the map")
        case .many(var bs):
            guard let i = bs.firstIndex(of: b) else { preconditionFailure("hashed block \(b) is not in the map") }
            bs.remove(at: i)
            if !bs.isEmpty { cache[h] = .many(bs) }  // vLLM keeps the dict form even with one block left
        }
        hashed[Int(b)] = false
        evictions += 1
    }

    /// Caches used block `b` under `h`, after any block already there (`BlockHashToBlockMap.insert`).
    private func insert(_ b: Int32, hash h: UInt64) {
        hashes[Int(b)] = h
        hashed[Int(b)] = true
        if let entry = cache[h] {
            switch entry {
            case .one(let other): cache[h] = .many([other, b])
            case .many(var bs):
                cache[h] = nil
                bs.append(b)
                cache[h] = .many(bs)
            }
        } else {
            cache[h] = .one(b)
        }
    }

    /// Adds a reference to a hit block; one with none leaves the free queue (`touch`). O(1).
    @inline(__always)
    private func touch(_ b: Int32) {
        if refs[Int(b)] == 0 && b != Self.nullBlock { unlink(b) }
        refs[Int(b)] += 1
    }

    // MARK: requests (KVCacheManager with one FullAttentionManager)

    /// Fills `hitScratch` with the longest cached prefix of the chained hashes `blockHashes`
    /// of a `tokens`-token prompt, at most `(tokens - 1) / blockTokens` blocks
    /// (`get_computed_blocks`). Returns how many. O(hits + 1) Dictionary lookups.
    private func findHits(_ blockHashes: UnsafeBufferPointer<UInt64>, tokens: Int) -> Int {
        // Worked on as a local (moved out and back, no copy): appends to a class property
        // would each pay a dynamic exclusivity check.
        var hits: [Int32] = []
        swap(&hits, &hitScratch)
        defer { swap(&hits, &hitScratch) }
        hits.removeAll(keepingCapacity: true)
        let limit = min(blockHashes.count, (tokens - 1) / blockTokens)
        while hits.count < limit, let entry = cache[blockHashes[hits.count]] {
            hits.append(entry.first)
        }
        return hits.count
    }

    /// Admits request `id` of `tokens` prompt tokens whose full blocks have the chained hashes
    /// `blockHashes` (`tokens / blockTokens` of them): looks up its cached prefix, checks that
    /// the free queue holds the new blocks plus the hit blocks it revives, touches the hits,
    /// allocates the rest and caches the prompt's new full blocks (`get_computed_blocks` +
    /// `allocate_slots`). Returns the cached prefix in tokens, or nil when the blocks do not
    /// fit (nothing changed then). O(blocks of the prompt).
    func createRequest(_ id: UInt64, blockHashes: UnsafeBufferPointer<UInt64>, tokens: Int) -> Int? {
        precondition(tokens >= 1 && blockHashes.count == tokens / blockTokens && requests[id] == nil)
        let hit = findHits(blockHashes, tokens: tokens)
        let total = (tokens + blockTokens - 1) / blockTokens
        var revived = 0
        for b in hitScratch where refs[Int(b)] == 0 { revived += 1 }
        guard total - hit + revived <= freeBlocks else { return nil }
        var table: [Int32] = []
        table.reserveCapacity(total + 1)
        for b in hitScratch {
            touch(b)
            table.append(b)
        }
        for _ in hit..<total { table.append(allocateBlock()!) }
        // cache_full_blocks: the hits are cached already, the other full prompt blocks now.
        for i in hit..<blockHashes.count { insert(table[i], hash: blockHashes[i]) }
        requests[id] = Request(blocks: table, cachedBlocks: blockHashes.count, tokens: tokens)
        return hit * blockTokens
    }

    /// Token-level admission: names the full blocks of `tokens` (`naming`; as vLLM's `Request`
    /// hashes its prompt on arrival) and calls `createRequest(_:blockHashes:tokens:)`.
    func createRequest(_ id: UInt64, tokens: UnsafeBufferPointer<Int32>) -> Int? {
        let full = tokens.count / blockTokens
        if hashScratch.count < full { hashScratch = [UInt64](repeating: 0, count: full) }
        return hashScratch.withUnsafeMutableBufferPointer { out in
            nameBlocks(tokens, into: UnsafeMutableBufferPointer(rebasing: out[0..<full]))
            return createRequest(id, blockHashes: UnsafeBufferPointer(rebasing: out[0..<full]), tokens: tokens.count)
        }
    }

    /// Writes the map keys of the first `out.count` full blocks of `tokens` into `out`, by
    /// `naming`. O(tokens named): one `BlockHash` step or SHA-256 per block.
    private func nameBlocks(_ tokens: UnsafeBufferPointer<Int32>, into out: UnsafeMutableBufferPointer<UInt64>) {
        switch naming {
        case .blockHash:
            BlockHash.chain(tokens, blockTokens: blockTokens, into: out)
        case .sha256:
            if digestScratch.count < out.count { digestScratch = [SHA256.Digest](repeating: .zero, count: out.count) }
            digestScratch.withUnsafeMutableBufferPointer { digests in
                let prompt = UnsafeMutableBufferPointer(rebasing: digests[0..<out.count])
                SHA256BlockChain.chain(tokens, blockTokens: blockTokens, message: message, into: prompt)
                for i in 0..<out.count { out[i] = SHA256.prefix64(prompt[i]) }
            }
        }
    }

    /// Gives request `id` a slot for `count` more tokens (`allocate_slots` of a decode step),
    /// taking new blocks from the free queue. Returns false when `id` does not exist or the
    /// blocks do not fit (nothing changed then). O(1) per new block plus one Dictionary lookup.
    @inline(__always)
    func appendTokens(_ id: UInt64, count: Int) -> Bool {
        guard let index = requests.index(forKey: id) else { return false }
        let tokens = requests.values[index].tokens + count
        let needed = (tokens + blockTokens - 1) / blockTokens - requests.values[index].blocks.count
        if needed > freeBlocks { return false }
        for _ in 0..<max(0, needed) { requests.values[index].blocks.append(allocateBlock()!) }
        requests.values[index].tokens = tokens
        return true
    }

    /// How many leading tokens of `tokens` are cached (at most `tokens.count - 1`, like
    /// `Engine.cachedPrefixTokens`): names every full block (`naming`), then walks the hash map
    /// until the first miss. Changes nothing.
    func cachedPrefixTokens(_ tokens: UnsafeBufferPointer<Int32>) -> Int {
        let full = tokens.count / blockTokens
        if hashScratch.count < full { hashScratch = [UInt64](repeating: 0, count: full) }
        return hashScratch.withUnsafeMutableBufferPointer { out in
            nameBlocks(tokens, into: UnsafeMutableBufferPointer(rebasing: out[0..<full]))
            return findHits(UnsafeBufferPointer(rebasing: out[0..<full]), tokens: tokens.count) * blockTokens
        }
    }

    /// Frees request `id` (`free`): its blocks are released tail first; those left with no
    /// reference join the free queue, never-cached ones at the front, cached ones at the back
    /// in that order (so a request's last block is evicted before its first). Returns false
    /// when `id` does not exist. O(blocks of the request).
    @discardableResult
    func free(_ id: UInt64) -> Bool {
        guard let request = requests.removeValue(forKey: id) else { return false }
        var fresh: [Int32] = [], cached: [Int32] = []  // the scratch lists, as locals (see findHits)
        swap(&fresh, &freshScratch)
        swap(&cached, &cachedScratch)
        defer {
            swap(&fresh, &freshScratch)
            swap(&cached, &cachedScratch)
        }
        fresh.removeAll(keepingCapacity: true)
        cached.removeAll(keepingCapacity: true)
        let count = request.blocks.count
        for i in 0..<count {
            let b = request.blocks[count - 1 - i]  // tail block first
            refs[Int(b)] -= 1
            if refs[Int(b)] == 0 && b != Self.nullBlock {
                if hashed[Int(b)] { cached.append(b) } else { fresh.append(b) }
            }
        }
        // prepend_n: the list goes to the front in its order (its first element becomes the head).
        for b in fresh.reversed() { link(b, after: head) }
        for b in cached { link(b, after: prev[Int(tail)]) }
        return true
    }

    /// Cached blocks (in the hash map, used or queued).
    var cachedBlockCount: Int { cache.values.reduce(0) { n, e in if case .many(let bs) = e { return n + bs.count } else { return n + 1 } } }

    /// Checks the pool's invariants; returns the first one broken, or nil. O(capacity): the
    /// queue is walked from the head; every queued block has no reference, every block with
    /// none but the null block is queued, never-cached blocks precede cached ones, every hashed
    /// block is in the map under its hash and the map holds only hashed blocks, and the
    /// references equal the requests' block-table entries. For checks, not for timing.
    func invariantViolation() -> String? {
        var queued = [Bool](repeating: false, count: capacity)
        var count = 0
        var seenCached = false
        var b = next[Int(head)]
        while b != tail {
            guard b > 0 && Int(b) < capacity && !queued[Int(b)] else { return "bad or repeated block \(b) in the free queue" }
            queued[Int(b)] = true
            count += 1
            if refs[Int(b)] != 0 { return "queued block \(b) has \(refs[Int(b)]) references" }
            if hashed[Int(b)] { seenCached = true } else if seenCached { return "never-cached block \(b) queued after a cached one" }
            guard next[Int(b)] >= 0, prev[Int(next[Int(b)])] == b else { return "broken links at block \(b)" }
            b = next[Int(b)]
        }
        if count != freeBlocks { return "\(count) blocks queued, freeBlocks says \(freeBlocks)" }
        var expected = [Int32](repeating: 0, count: capacity)
        for request in requests.values { for b in request.blocks { expected[Int(b)] += 1 } }
        for b in 1..<capacity {
            if refs[b] != expected[b] { return "block \(b) has \(refs[b]) references, its requests hold \(expected[b])" }
            if refs[b] == 0 && !queued[b] { return "unreferenced block \(b) is not queued" }
            if hashed[b] && !(cache[hashes[b]].map { e in if case .many(let bs) = e { return bs.contains(Int32(b)) } else { return e.first == Int32(b) } } ?? false) {
                return "hashed block \(b) is not in the map under its hash"
            }
        }
        for (h, e) in cache {
            let bs: [Int32] = if case .many(let m) = e { m } else { [e.first] }
            for b in bs where !(hashed[Int(b)] && hashes[Int(b)] == h) { return "map entry for block \(b) does not match its hash" }
        }
        return nil
    }
}
