/// Which of the disk tier's staging buffers are free (`DiskTier`: each request stages one
/// slot's bytes in one buffer, identified by its index 0..<`count`), and which one a request
/// takes: the buffer after the previous request's when its slot follows the previous slot, so
/// that the two requests are adjacent in memory and on disk and merge into one (`DiskTier.flush`),
/// else the lowest free one.
///
/// Only the indexes live here; the buffers' memory, and waiting for a completion to free one
/// when none is (`DiskTier.takeStage`, which needs the I/O queue), stay with `DiskTier`.
///
/// Invariants: `freeCount` is the number of set bits of the free set; a buffer is taken at most
/// once until released (a second release is a precondition failure).
/// Cost: `take` O(count / 64) at worst (a scan of the free set's words), O(1) when the next
/// buffer follows; `release` O(1). One bit per buffer, allocated at init and freed at deinit;
/// no allocation after. Not thread-safe: the engine serialises calls.
final class StagingBuffers {
    /// Staging buffers in all.
    let count: Int
    /// Free buffers, one bit each (1: free).
    private let freeBits: UnsafeMutablePointer<UInt64>
    /// Free buffers.
    private(set) var freeCount: Int
    /// The slot and buffer taken last, so that the next slot takes the next buffer.
    private var lastSlot: Int32 = -2
    private var lastStage: Int32 = -2

    /// `count` (> 0) buffers, all free. O(count / 64).
    init(count: Int) {
        precondition(count > 0)
        self.count = count
        let words = (count + 63) / 64
        freeBits = .allocate(capacity: words)
        freeBits.initialize(repeating: 0, count: words)
        for i in 0..<count { freeBits[i / 64] |= 1 << UInt64(i % 64) }
        freeCount = count
    }

    deinit { freeBits.deallocate() }

    /// Takes a free buffer for a request on `slot`: the one after the previous request's when
    /// `slot` follows its slot and that buffer is free, else the lowest free one; nil when none
    /// is free (the caller waits for a completion and asks again). O(count / 64).
    func take(for slot: Int32) -> Int32? {
        guard freeCount > 0 else { return nil }
        var stage: Int32 = -1
        let next = lastStage + 1
        if slot == lastSlot + 1 && next >= 0 && Int(next) < count && freeBits[Int(next) / 64] & (1 << UInt64(next % 64)) != 0 {
            stage = next
        } else {
            var w = 0
            while freeBits[w] == 0 { w += 1 }
            stage = Int32(w * 64 + freeBits[w].trailingZeroBitCount)
        }
        freeBits[Int(stage) / 64] &= ~(1 << UInt64(stage % 64))
        freeCount -= 1
        lastSlot = slot
        lastStage = stage
        return stage
    }

    /// Frees taken buffer `stage`. Precondition: it is taken. O(1).
    func release(_ stage: Int32) {
        precondition(freeBits[Int(stage) / 64] & (1 << UInt64(stage % 64)) == 0, "staging buffer released twice")
        freeBits[Int(stage) / 64] |= 1 << UInt64(stage % 64)
        freeCount += 1
    }
}
