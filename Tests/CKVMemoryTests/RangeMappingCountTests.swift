import CKVMemory
import TestSupport
import Testing

/// A range's mapping count is the kernel's: the VMAs /proc/self/smaps (the same list as
/// /proc/self/maps) shows overlapping its reservation, after every change. It once counted two
/// per run and tensor (a run and a split of the reservation after it), twice the kernel's when
/// sequences grow in lockstep, as a decode batch does: each page its own run, the runs adjacent
/// with no reserved stretch between them. The engine then refused appends at half of
/// vm.max_map_count (revlong: 61,337 counted against 30,773 lines of /proc/self/maps).
@Suite("Virtual ranges: the mapping count")
struct RangeMappingCountTests {
    /// Lockstep growth, a run extended, gaps opened and closed, a page file-contiguous across
    /// a tensor boundary (the kernel merges it with the next tensor's first page), and freeing.
    @Test func theCountIsTheKernelsAfterEveryChange() {
        let groups: UInt32 = 64
        let (pool, rc) = makePool(budget: UInt64(groups) * 4 * 4096)
        #expect(rc == 0)
        var made: OpaquePointer?
        #expect(kvm_ranges_create(pool, 3, 16 * 4096, &made) == 0)
        guard let ranges = made else { kvm_pool_destroy(pool); return }
        defer { kvm_ranges_destroy(ranges); kvm_pool_destroy(pool) }
        for g in 0..<groups { #expect(kvm_pool_alloc(pool, g) == Int64(g)) }  // the test holds every group
        let start = UInt(bitPattern: kvm_ranges_base(ranges)), bytes = UInt(kvm_ranges_reserved_bytes(ranges))
        func expectTheKernels(_ step: String, sourceLocation: SourceLocation = #_sourceLocation) {
            let kernel = SmapsFields(start: start, bytes: bytes)?.mappings ?? -1
            #expect(kvm_ranges_mappings(ranges) == UInt64(kernel), "\(step)", sourceLocation: sourceLocation)
        }
        func map(_ slot: UInt32, _ page: UInt32, _ group: UInt32, _ n: UInt32 = 1) {
            #expect(kvm_ranges_map(ranges, slot, page, group, n) == 0, "map \(slot):\(page) \(String(cString: kvm_error()))")
        }
        expectTheKernels("reserved only")
        for page: UInt32 in 0..<6 {  // two sequences taking a group each in turn: every page a run
            for slot: UInt32 in 0..<2 {
                map(slot, page, 2 * page + slot)
                expectTheKernels("lockstep page \(page) slot \(slot)")
            }
        }
        map(0, 6, 11)  // the file-successor of page 5's group 10: the run grows, no new mapping
        expectTheKernels("run extended")
        map(0, 10, 20)
        map(0, 12, 30, 2)
        expectTheKernels("runs after gaps")
        map(0, 3, 40)  // replaces one page inside the lockstep pages
        expectTheKernels("a page replaced")
        #expect(kvm_ranges_unmap(ranges, 0, 2, 4) == 0)
        expectTheKernels("a gap opened")
        #expect(kvm_ranges_unmap(ranges, 0, 10, 11) == 0)
        expectTheKernels("a lone run unmapped: its gaps merge")
        map(0, 7, 12, 3)  // fills the gap up to page 10 with page 6's file-successors
        expectTheKernels("a gap filled by the run")
        map(2, 15, groups - 1)  // tensor t's last page, then tensor t + 1's first: file-contiguous
        expectTheKernels("last page of the file")
        map(2, 0, 0)
        expectTheKernels("merged across a tensor boundary")
        map(1, 15, 50)
        expectTheKernels("a slot's last page before the next slot's first")
        map(2, 0, 0, 16)  // the whole slot one run; tensor t's end is no longer t + 1's start
        expectTheKernels("a whole slot")
        for slot: UInt32 in 0..<2 {
            #expect(kvm_ranges_unmap(ranges, slot, 0, 16) == 0)
            expectTheKernels("slot \(slot) freed")
        }
        #expect(kvm_ranges_unmap(ranges, 2, 0, 16) == 0)
        expectTheKernels("all freed")
        #expect(kvm_ranges_mappings(ranges) == 1)
    }
}
