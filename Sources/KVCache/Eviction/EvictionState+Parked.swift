#if canImport(Glibc)
import Glibc
#endif

/// One sequence's parked slots (episodic offload): the tokens whose K/V the engine offloaded to
/// its disk tier, at the top of their rows, found, swapped, removed and restored.
extension EvictionState {
    /// Parked slots of row `row`.
    func parkedCount(row: Int) -> Int { parked[row] }

    /// The first parked slot of row `row` (parked slots are `parkedStart..<capacity`).
    func parkedStart(row: Int) -> Int { capacity - parked[row] }

    /// Resident slots of row `row` (its layer's length).
    func length(row: Int) -> Int { lengths[row / rowsPerLayer] }

    /// The original position slot `slot` (resident or parked) of row `row` holds.
    func position(row: Int, slot: Int) -> Int32 { positions[row * capacity + slot] }

    /// The parked slot of row `row` holding `position`, or -1. Cost: O(parked).
    func parkedSlot(row: Int, position: Int32) -> Int {
        let base = row * capacity
        for i in parkedStart(row: row)..<capacity where positions[base + i] == position { return i }
        return -1
    }

    /// Exchanges every value of slots `a` and `b` of row `row` (a resident and a parked slot:
    /// one token enters memory, the other leaves it). O(episodes).
    func swapSlots(row: Int, _ a: Int, _ b: Int) {
        lowScores.invalidate(row: row)
        tailFrom = nextPosition  // a parked token may enter a slot of the tail
        swapValues(row * capacity + a, row * capacity + b, block: rows * capacity)
        if tracking.contains(.visibility) {  // resident slots count relative to the layer's queries
            let q = visibleQueries[row / rowsPerLayer]
            visible[row * capacity + a] -= q
            visible[row * capacity + b] += q
        }
    }

    /// Forgets parked slot `slot` of row `row` (its K/V are gone): the row's lowest parked slot
    /// takes its place. O(episodes).
    func removeParked(row: Int, slot: Int) {
        let first = parkedStart(row: row)
        precondition(slot >= first && slot < capacity, "slot \(slot) is not parked")
        if slot != first { copyValues(row * capacity + slot, row * capacity + first, block: rows * capacity) }
        parked[row] -= 1
        lowScores.invalidate(row: row)
    }

    /// Plans an episodic restore of row `row`: runs the policy (the focused episode's scores)
    /// over all its tokens, resident and parked, with the row's length as the budget, and
    /// calls `pair(out, in)` for each pair that changes, in resident-slot order: `out` a
    /// resident slot whose token leaves memory, `in` the parked slot whose token takes its
    /// place. Changes no state itself, so planning a row again before it changed makes the
    /// same pairs; `pair` may swap the row's slots (`swapSlots`) but must not plan again.
    /// Cost: O(resident + parked), no allocation once the gather buffers exist.
    func planRestore(row: Int, _ pair: (_ out: Int32, _ in: Int32) -> Void) {
        let len = length(row: row), top = parked[row], first = capacity - top
        guard top > 0 && len > 0 else { return }
        let keep = choose(row: row, count: len + top, budget: len) { j in j < len ? j : first + j - len }
        var out = 0
        for j in len..<(len + top) where keep[j] == 1 {
            while keep[out] == 1 { out += 1 }  // as many resident slots lose as parked ones win
            pair(Int32(out), Int32(first + j - len))
            out += 1
        }
    }

    /// Runs the policy on the `count` slots `slot(0..<count)` of row `row` (any resident or
    /// parked slots) with `budget`; returns the keep mask by candidate index (valid until the
    /// next choice). Cost: O(count); allocates the gather buffers once.
    private func choose(row: Int, count n: Int, budget: Int, slot: (Int) -> Int) -> UnsafePointer<UInt8> {
        let base = row * capacity, resident = length(row: row), queries = tracking.contains(.visibility) ? visibleQueries[row / rowsPerLayer] : 0
        if gather.count < 5 * capacity { gather = [Float](repeating: 0, count: 5 * capacity) }
        let episode = episodeRow(base)
        gather.withUnsafeMutableBufferPointer { g in
            let pos = UnsafeMutableRawPointer(g.baseAddress!).bindMemory(to: Int32.self, capacity: capacity)
            let acc = g.baseAddress! + capacity, lst = acc + capacity, vis = lst + capacity, epi = vis + capacity
            for j in 0..<n {
                let i = slot(j)
                pos[j] = positions[base + i]
                acc[j] = accumulated[base + i]
                lst[j] = tracking.contains(.lastStep) ? last[base + i] : 0
                vis[j] = tracking.contains(.visibility) ? visible[base + i] + (i < resident ? queries : 0) : 0
                epi[j] = episode.map { $0.scores[i] + $0.turn[i] } ?? 0
            }
            let row = EvictionRow(count: n, positions: pos, accumulated: acc, last: lst, visible: vis,
                                  episode: episode != nil ? UnsafePointer(epi) : nil, nextPosition: nextPosition, budget: max(1, budget))
            policy.choose(row, scratch: SelectionScratch(values: values, slots: slotScratch, capacity: 2 * capacity), keep: keepMask)
        }
        return UnsafePointer(keepMask)
    }
}
