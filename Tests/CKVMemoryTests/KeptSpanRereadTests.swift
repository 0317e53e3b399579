import CKVMemory
import Foundation
import TestSupport
import Testing

/// Maps next to kept pages (a span some tensor may still map though the table lists none,
/// after a failed unmap) do not read /proc/self/maps: until 2026-11-26 each failed change and
/// each change of that slot or a neighbour read it under the engine's lock (O(the process's
/// mappings): 2.2 ms per one-page map with 1,000 other mappings, 21 ms with 30,000). The count
/// stays an upper bound of the kernel's without them.
@Suite("Virtual ranges: no /proc/self/maps reads next to kept pages")
struct KeptSpanRereadTests {
    /// Three slots of 64 pages, 4 tensors: slot 1's pages 0-7 mapped, then its unmap fails in
    /// two tensors (they keep their pages); then 30 one-page appends in each of slot 0, slot 2
    /// (its neighbours) and slot 1 past the kept span. At most one read of /proc/self/maps in
    /// all, and the count never below the kernel's.
    @Test func appendsNextToKeptPagesReadTheMapsAtMostOnce() {
        let (made, _) = makePool(budget: 256 * 4 * 4096)
        guard let pool = made else { Issue.record("pool"); return }
        var r: OpaquePointer?
        guard kvm_ranges_create(pool, 3, 64 * 4096, &r) == 0, let ranges = r else { kvm_pool_destroy(pool); Issue.record("ranges"); return }
        defer { kvm_ranges_destroy(ranges); kvm_pool_destroy(pool) }
        for g: UInt32 in 0..<256 { _ = kvm_pool_alloc(pool, g) }  // the test holds every group
        let start = UInt(bitPattern: kvm_ranges_base(ranges)), bytes = UInt(kvm_ranges_reserved_bytes(ranges))
        let kernel = { UInt64(SmapsFields(start: start, bytes: bytes)?.mappings ?? -1) }
        #expect(kvm_ranges_map(ranges, 1, 0, 0, 8) == 0)
        kvm_ranges_fail_mmaps(ranges, 2, 2)  // tensors 0 and 1 unmap slot 1, tensors 2 and 3 cannot
        #expect(kvm_ranges_unmap(ranges, 1, 0, 8) == -ENOMEM)
        let before = kvm_ranges_rereads(ranges)
        var group: UInt32 = 10
        var below: [String] = []
        for page: UInt32 in 0..<30 {
            for (slot, at) in [(UInt32(0), page), (2, page), (1, 8 + page)] {
                #expect(kvm_ranges_map(ranges, slot, at, group, 1) == 0)
                group += 2  // never file-contiguous with the page before: a VMA per page
                let held = kernel()
                if kvm_ranges_mappings(ranges) < held { below.append("slot \(slot) page \(at): \(kvm_ranges_mappings(ranges)) < \(held)") }
            }
        }
        let rereads = kvm_ranges_rereads(ranges) - before
        #expect(rereads <= 1, "90 appends next to kept pages read /proc/self/maps \(rereads) times")
        #expect(below.isEmpty, Comment(rawValue: below.joined(separator: "\n")))
    }
}
