/// The heaps `Selection` keeps the lowest candidates of a scan in (`evictFewest` over (score,
/// slot) pairs, `evictOldest` over (position, slot) pairs) and selects with (`heapSelect`): a
/// max-heap by `before`, so that its top (the greatest of them, the scan's cut) is at index 0
/// and replacing it costs O(log count). Every item is not `before` its children (`2j + 1`,
/// `2j + 2`). `before` must be a strict weak order on the items; where it is a total one (it is
/// on distinct slots with finite scores, and on a row's positions), the heap's sorted order,
/// like its set, is fixed by its items.
extension Selection {
    /// Orders `heap[0..<count]` as a max-heap by `before` (Floyd's construction). Cost: O(count).
    @inline(__always)
    static func makeHeap<T>(_ heap: UnsafeMutableBufferPointer<T>, _ count: Int, before: (T, T) -> Bool) {
        var j = count / 2
        while j > 0 {
            j -= 1
            siftDown(heap[j], at: j, heap, count, before: before)
        }
    }

    /// Puts `item` at `at` of the max-heap `heap[0..<count]`, whose item there it replaces,
    /// and moves it down until no child is greater: `heap[0..<count]` stays a max-heap when
    /// the subtrees below `at` were. Cost: O(log count).
    @inline(__always)
    static func siftDown<T>(_ item: T, at: Int, _ heap: UnsafeMutableBufferPointer<T>, _ count: Int, before: (T, T) -> Bool) {
        var j = at
        while true {
            var child = 2 * j + 1
            guard child < count else { break }
            if child + 1 < count && before(heap[child], heap[child + 1]) { child += 1 }
            guard before(item, heap[child]) else { break }
            heap[j] = heap[child]
            j = child
        }
        heap[j] = item
    }

    /// Sorts the max-heap `heap[0..<count]` ascending by `before` (heapsort's second half).
    /// Cost: O(count log count).
    @inline(__always)
    static func sortHeap<T>(_ heap: UnsafeMutableBufferPointer<T>, _ count: Int, before: (T, T) -> Bool) {
        var end = count
        while end > 1 {
            end -= 1
            let last = heap[end]
            heap[end] = heap[0]
            siftDown(last, at: 0, heap, end, before: before)
        }
    }
}
