/// Deterministic k-means over `n` points of dimension `dim` (row-major, flat), for the
/// episodic policy's episodes: k-means++ seeding from a SplitMix64 stream of `seed`, then
/// Lloyd iterations until no assignment changes (at most `maxIterations`). The same points,
/// k and seed give the same centroids and assignments on every machine (the arithmetic is
/// float32 in a fixed order).
///
/// Cost: O(iterations * n * k * dim); n is the number of segments (a few hundred), not tokens.
public struct KMeans {
    /// Clusters found: min(k, n).
    public private(set) var k: Int
    /// `k * dim` centroid coordinates.
    public private(set) var centroids: [Float]
    /// Per point, its cluster.
    public private(set) var assignment: [Int32]

    /// Lloyd iterations at most.
    public static let maxIterations = 50

    /// Clusters `points` (`n * dim` floats) into min(k, n) clusters. Precondition: n >= 1.
    public init(points: UnsafeBufferPointer<Float>, n: Int, dim: Int, k requested: Int, seed: UInt64) {
        precondition(n >= 1 && dim >= 1 && points.count == n * dim && requested >= 1)
        let k = min(requested, n)
        self.k = k
        var rng = SplitMix64(seed: seed)
        var centroids = [Float](repeating: 0, count: k * dim)
        var nearest = [Float](repeating: .infinity, count: n)
        func distance(_ p: Int, _ c: Int, _ cs: [Float]) -> Float {
            var d: Float = 0
            for j in 0..<dim {
                let x = points[p * dim + j] - cs[c * dim + j]
                d += x * x
            }
            return d
        }
        // k-means++: the first centre uniformly, each next one with probability ~ distance^2.
        var chosen = Int(rng.next() % UInt64(n))
        for c in 0..<k {
            for j in 0..<dim { centroids[c * dim + j] = points[chosen * dim + j] }
            var total: Double = 0
            for p in 0..<n {
                nearest[p] = min(nearest[p], distance(p, c, centroids))
                total += Double(nearest[p])
            }
            if c + 1 == k { break }
            if total == 0 {  // every point coincides with a centre: take the next unused index
                chosen = (chosen + 1) % n
                continue
            }
            var r = Double(rng.next() >> 11) / Double(1 << 53) * total
            chosen = n - 1
            for p in 0..<n {
                r -= Double(nearest[p])
                if r < 0 {
                    chosen = p
                    break
                }
            }
        }
        var assignment = [Int32](repeating: -1, count: n)
        var sums = [Float](repeating: 0, count: k * dim)
        var counts = [Int](repeating: 0, count: k)
        for _ in 0..<Self.maxIterations {
            var changed = false
            for p in 0..<n {
                var best = 0
                var bestDistance = Float.infinity
                for c in 0..<k {
                    let d = distance(p, c, centroids)
                    if d < bestDistance {
                        bestDistance = d
                        best = c
                    }
                }
                if assignment[p] != Int32(best) {
                    assignment[p] = Int32(best)
                    changed = true
                }
            }
            if !changed { break }
            for i in 0..<sums.count { sums[i] = 0 }
            for c in 0..<k { counts[c] = 0 }
            for p in 0..<n {
                let c = Int(assignment[p])
                counts[c] += 1
                for j in 0..<dim { sums[c * dim + j] += points[p * dim + j] }
            }
            for c in 0..<k where counts[c] > 0 {  // an empty cluster keeps its centre
                for j in 0..<dim { centroids[c * dim + j] = sums[c * dim + j] / Float(counts[c]) }
            }
        }
        self.centroids = centroids
        self.assignment = assignment
    }

    /// The cluster whose centroid is nearest to `point` (`dim` floats); ties to the lowest.
    public func nearest(_ point: UnsafeBufferPointer<Float>) -> Int {
        let dim = point.count
        var best = 0
        var bestDistance = Float.infinity
        for c in 0..<k {
            var d: Float = 0
            for j in 0..<dim {
                let x = point[j] - centroids[c * dim + j]
                d += x * x
            }
            if d < bestDistance {
                bestDistance = d
                best = c
            }
        }
        return best
    }
}
