extension Selection {
    /// Keeps all but the `evict` slots whose positions rank just after the row's `skip` lowest
    /// (`skip + evict < smallEviction`): StreamingLLM's `skip` sinks plus the newest
    /// `row.count - skip - evict`, the same choice as `markByPosition` for the sinks then the
    /// newest, in one pass over the positions with a max-heap by position (`LowestHeap`) of the
    /// `skip + evict` lowest (the steady state of decoding, where each step evicts about one
    /// token). Positions of a row are distinct, so the choice is exact; they are compared as
    /// integers. Cost: one pass comparing each position with the heap's top, O(log(skip +
    /// evict)) per position that enters the heap, one write of `keep`, no allocation.
    @inline(__always)
    static func evictOldest(_ row: EvictionRow, _ evict: Int, after skip: Int, keep: UnsafeMutablePointer<UInt8>) {
        keep.update(repeating: 1, count: row.count)
        guard evict > 0 else { return }
        let size = skip + evict
        @inline(__always) func before(_ a: (Int32, Int32), _ b: (Int32, Int32)) -> Bool { a.0 < b.0 }
        withUnsafeTemporaryAllocation(of: (Int32, Int32).self, capacity: size) { heap in
            for i in 0..<size { heap[i] = (row.positions[i], Int32(i)) }
            makeHeap(heap, size, before: before)
            var cut = heap[0].0
            for i in size..<row.count where row.positions[i] < cut {
                siftDown((row.positions[i], Int32(i)), at: 0, heap, size, before: before)
                cut = heap[0].0
            }
            sortHeap(heap, size, before: before)
            for j in skip..<size { keep[Int(heap[j].1)] = 0 }
        }
    }
}
