#if canImport(Glibc)
import Glibc
#endif

/// One sequence's segments and episodes (episodic eviction): registering segments with their
/// embeddings, clustering them into episodes (k-means) and focusing the episode nearest to a
/// query.
extension EvictionState {
    /// Registers segment `[start, end)` of the positions seen so far with its embedding.
    /// Throws `invalidArgument` (empty or out-of-range bounds, an embedding of the wrong
    /// dimension, with a non-finite value or a squared norm past `maxSquaredNorm`, too many
    /// segments) and then changes nothing.
    public func addSegment(start: Int, end: Int, embedding: UnsafeBufferPointer<Float>) throws(KVError) {
        guard start >= 0 && start < end && end <= nextPosition else {
            throw .invalid("segment [\(start), \(end)) is empty or outside the \(nextPosition) positions seen")
        }
        try checkEmbedding(embedding)
        guard segmentBounds.count / 2 < Self.maxSegments else { throw .invalid("more than \(Self.maxSegments) segments") }
        embeddingDim = embedding.count
        segmentBounds.append(start)
        segmentBounds.append(end)
        embeddings.append(contentsOf: embedding)
    }

    private func checkEmbedding(_ embedding: UnsafeBufferPointer<Float>) throws(KVError) {
        guard !embedding.isEmpty && embedding.count <= 4096 else { throw .invalid("embedding dimension \(embedding.count) is outside 1...4096") }
        if embeddingDim != 0 && embedding.count != embeddingDim {
            throw .invalid("embedding dimension \(embedding.count) is not the sequence's \(embeddingDim)")
        }
        var squared = 0.0
        for (j, x) in embedding.enumerated() {
            guard x.isFinite else { throw .invalid("embedding value \(x) at \(j) is not finite") }
            squared += Double(x) * Double(x)
        }
        guard squared <= Self.maxSquaredNorm else {
            throw .invalid("embedding's squared norm \(squared) is past \(Self.maxSquaredNorm): squared distances between embeddings would overflow a float")
        }
    }

    /// The largest squared norm an embedding may have: a quarter of the largest float leaves
    /// room for the squared distance of two of them (at most twice the sum of their squared
    /// norms), so that k-means and focus compare finite distances (±3e38 values once gave
    /// infinities and NaN, and every focus episode 0).
    static let maxSquaredNorm = Double(Float.greatestFiniteMagnitude) / 8

    /// Segments registered.
    public var segmentCount: Int { segmentBounds.count / 2 }

    /// Clusters the segments into episodes when they changed (k-means, `config.seed`), then
    /// returns the episode nearest to `query` and focuses it: later observations are credited
    /// to it and compaction keeps its heavy hitters. Re-clustering maps each old episode's
    /// scores to the new episode holding most of its segments. Throws `invalidArgument`
    /// (no segment yet, wrong dimension, non-finite value, squared norm past `maxSquaredNorm`)
    /// and then changes nothing.
    /// Cost: k-means over the segments when they changed; O(k * dim) otherwise.
    public func focus(_ query: UnsafeBufferPointer<Float>) throws(KVError) -> Int {
        focusedEpisode = try nearestEpisode(query)
        return focusedEpisode
    }

    /// Throws what `focus` throws for `query` itself (the policy, no segment yet, its
    /// dimension or values), changing nothing: so that the engine refuses a bad query before
    /// it waits for anything. O(query).
    func checkFocus(_ query: UnsafeBufferPointer<Float>) throws(KVError) {
        guard tracking.contains(.episodes) else { throw KVError(.unsupported, "focus needs the episodic policy, this sequence uses \(config.policy.name)") }
        guard segmentCount > 0 else { throw .invalid("no segment registered: add segments before focusing") }
        try checkEmbedding(query)
    }

    /// `focus` short of focusing: validates `query`, re-clusters changed segments, credits the
    /// current turn's observations to its segment's episode, and returns the episode nearest
    /// to `query`. (The engine's episodic offload focuses it only once its tokens can be
    /// restored.) Throws as `focus` does, and then changes nothing.
    func nearestEpisode(_ query: UnsafeBufferPointer<Float>) throws(KVError) -> Int {
        try checkFocus(query)
        if clusteredSegments != segmentCount { try recluster() }
        let turn = config.episodes
        if episodeObserved[turn] {
            let target = Int(clustering!.assignment[segmentCount - 1])
            let block = rows * capacity
            let dst = episodeScores + target * block, src = episodeScores + turn * block
            for i in 0..<block { dst[i] += src[i] }
            src.update(repeating: 0, count: block)
            episodeObserved[target] = true
            episodeObserved[turn] = false
        }
        return clustering!.nearest(query)
    }

    /// Throws `outOfMemory` (changing nothing) when the copy of the episodes' scores that the
    /// remapping reads from cannot be allocated: episodes x rows x capacity floats, as large as
    /// most of the state, from `CheckedAllocations` so that a refusal is a status, not the end
    /// of the process.
    private func recluster() throws(KVError) {
        let n = segmentCount
        let fresh = embeddings.withUnsafeBufferPointer {
            KMeans(points: $0, n: n, dim: embeddingDim, k: config.episodes, seed: config.seed)
        }
        if let old = clustering, episodeObserved.contains(true) {
            // Old episode e -> the new episode holding most of e's (old) segments.
            var target = [Int](repeating: -1, count: config.episodes)
            for e in 0..<old.k {
                var votes = [Int](repeating: 0, count: fresh.k)
                for s in 0..<clusteredSegments where Int(old.assignment[s]) == e { votes[Int(fresh.assignment[s])] += 1 }
                if let best = votes.indices.max(by: { votes[$0] < votes[$1] || (votes[$0] == votes[$1] && $0 > $1) }), votes[best] > 0 {
                    target[e] = best
                }
            }
            let block = rows * capacity, episodes = config.episodes  // the turn block stays
            // Fits an Int: the state holds episodes + 1 such blocks.
            let scratch = CheckedAllocations()  // freed on leaving this scope
            let copy: UnsafeMutablePointer<Float> = try scratch.allocate(
                count: episodes * block, "a copy of the episodes' scores to re-cluster them (outside memory_bytes; kvcache.h TOKEN EVICTION)")
            copy.update(from: episodeScores, count: episodes * block)
            episodeScores.update(repeating: 0, count: episodes * block)
            let wasObserved = episodeObserved
            for e in 0..<episodes { episodeObserved[e] = false }
            for e in 0..<old.k where target[e] >= 0 && wasObserved[e] {
                let dst = episodeScores + target[e] * block, src = copy + e * block
                for i in 0..<block { dst[i] += src[i] }
                episodeObserved[target[e]] = true
            }
            if focusedEpisode >= 0 { focusedEpisode = target[focusedEpisode] }
        }
        clustering = fresh
        clusteredSegments = n
    }

    /// The episode of every segment (after the last clustering; -1 for newer ones). Tests: no
    /// caller in the package but the tests.
    public var segmentEpisodes: [Int] {
        (0..<segmentCount).map { $0 < clusteredSegments ? Int(clustering!.assignment[$0]) : -1 }
    }
}
