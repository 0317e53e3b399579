import CKVMemory
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The process's mapping limit (vm.max_map_count less what the rest of the process holds and
/// 4096) follows the rest of the process back up: a range created while the process briefly
/// held ~61,000 other mappings (a model's weights mapped piecewise, a thread peak) lowered it
/// for good, so once they were gone every later engine, even a lone one created after all
/// others were destroyed, was refused at a few hundred mappings ("mapping limit reached: 1328
/// mappings in use of the 1337 allowed", revmulti's ratchet.c). Now a range created when none
/// is live takes the limit afresh, and a map about to be refused measures it again first.
/// The limit is process-wide, so this runs in a child process (an exit test).
@Suite("Contiguous ranges: the process's mapping limit is taken again")
struct MappingLimitRetakeTests {
    static let prefix = "LIMIT-RETAKE: "

    /// In the child: writes each problem as a prefixed stderr line and exits 0 (a failed exit
    /// status would hide stderr from the parent).
    static func report(_ problems: [String]) -> Never {
        let text = problems.map { "\(prefix)\($0)\n" }.joined()
        _ = text.withCString { write(2, $0, strlen($0)) }
        exit(0)
    }

    /// In the parent: expects the child reported no problem.
    static func expectNone(_ result: ExitTest.Result?) {
        let problems = result.map {
            String(decoding: $0.standardErrorContent, as: UTF8.self).split(separator: "\n").filter { $0.hasPrefix(prefix) }
        }
        #expect(problems?.isEmpty == true, Comment(rawValue: problems?.joined(separator: "\n") ?? ""))
    }

    @Test func theLimitHealsOnceTheOtherMappingsAreGone() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            Self.report(Self.problems())
        }
        Self.expectNone(result)
    }

    /// A re-take where the rest of the process leaves no room keeps the limit: it stored the
    /// creation's fallback (half of vm.max_map_count), raising 3,399 to 32,765 in a crowded
    /// process, so the range mapped into the 4,096 kept for the host until the kernel refused
    /// (revdiff's crowded.c). A range created while the rest holds vm.max_map_count - ~7,500
    /// mappings; the rest grows past vm.max_map_count - 4,096; the range's maps must then meet
    /// this limit's refusal, with the limit not raised.
    @Test func aRetakeInACrowdedProcessKeepsTheLimit() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            Self.report(Self.crowdedProblems())
        }
        Self.expectNone(result)
    }

    /// What is wrong in the crowded re-take, or nothing (`aRetakeInACrowdedProcessKeepsTheLimit`).
    static func crowdedProblems() -> [String] {
        guard let text = try? String(contentsOfFile: "/proc/sys/vm/max_map_count", encoding: .utf8),
              let most = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), most > 20_000 else {
            return ["vm.max_map_count unreadable or too low for this test"]
        }
        let pages = most + 64
        let m = mmap(nil, pages * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)!
        var split = 0  // pages made PROT_NONE, every other one: two mappings each
        func crowd(to held: Int) {
            while split * 2 < held, split * 2 + 1 < pages, mprotect(m + split * 2 * 4096, 4096, PROT_NONE) == 0 { split += 1 }
        }
        crowd(to: most - 7_500)
        let (pool, rc) = makePool(budget: 2 * 4096 * 4096, tensors: 2)
        guard rc == 0 else { return ["the pool: \(String(cString: kvm_error()))"] }
        var r: OpaquePointer?
        guard kvm_ranges_create(pool, 1, 20_000 * 4096, &r) == 0 else { return ["the range: \(String(cString: kvm_error()))"] }
        let created = kvm_ranges_process_mapping_limit()
        var problems: [String] = []
        if created > 5_000 { problems.append("the crowd left a limit of \(created): the test's set-up failed") }
        crowd(to: most - 3_500)
        sleep(1)  // past the re-take's once-a-second guard
        for i: UInt32 in 0..<4_000 {
            let g = kvm_pool_alloc(pool, UInt32.max)
            guard g >= 0 else { problems.append("no group for page \(i)"); break }
            if kvm_ranges_map(r, 0, 2 * i, UInt32(g), 1) != 0 {
                let why = String(cString: kvm_error())
                if !why.contains("mapping limit reached") { problems.append("page \(i) refused by the kernel, not the limit: \(why)") }
                kvm_pool_unref(pool, UInt32(g))
                break
            }
        }
        let after = kvm_ranges_process_mapping_limit()
        if after > created { problems.append("the limit rose from \(created) to \(after) in a process with no room left") }
        kvm_ranges_destroy(r)
        kvm_pool_destroy(pool)
        munmap(m, pages * 4096)
        return problems
    }

    /// Maps `pages` pages of alternating protections (one mapping each) for the length of a
    /// burst; the caller unmaps them.
    static func burst(_ pages: Int) -> UnsafeMutableRawPointer {
        let m = mmap(nil, pages * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)!
        for i in stride(from: 0, to: pages, by: 2) { mprotect(m + i * 4096, 4096, PROT_NONE) }
        return m
    }

    /// What is wrong, or nothing: a range `a` takes the limit, a burst of other mappings
    /// brings the next range's down to ~300, the burst ends and that range goes; `a` then maps
    /// 400 separate pages (1,600 mappings) unrefused. With no range live, a burst lowers the
    /// next range's limit again; once it is over and that range is gone, a new range's limit
    /// is the fresh one.
    static func problems() -> [String] {
        let (pool, rc) = makePool(budget: 2 * 4096 * 512, tensors: 2)
        guard rc == 0 else { return ["the pool: \(String(cString: kvm_error()))"] }
        var a: OpaquePointer?, b: OpaquePointer?
        guard kvm_ranges_create(pool, 1, 1024 * 4096, &a) == 0 else { return ["range a: \(String(cString: kvm_error()))"] }
        let fresh = kvm_ranges_process_mapping_limit()
        guard fresh > 8192 else { return ["a fresh limit of \(fresh): vm.max_map_count too low for this test"] }
        var problems: [String] = []
        let pages = Int(fresh) - 300
        var m = burst(pages)
        if kvm_ranges_create(pool, 1, 4096, &b) != 0 { problems.append("range b in the burst: \(String(cString: kvm_error()))") }
        let lowered = kvm_ranges_process_mapping_limit()
        if lowered > 1000 { problems.append("the burst left the limit at \(lowered) (fresh \(fresh)): the test's set-up failed") }
        munmap(m, pages * 4096)
        kvm_ranges_destroy(b)
        for i: UInt32 in 0..<400 {
            let g = kvm_pool_alloc(pool, UInt32.max)
            guard g >= 0 else { problems.append("no group for page \(i)"); break }
            if kvm_ranges_map(a, 0, 2 * i, UInt32(g), 1) != 0 {
                problems.append("a's map \(i) after the burst, at \(kvm_ranges_mappings(a)) mappings: \(String(cString: kvm_error()))")
                break
            }
        }
        kvm_ranges_destroy(a)
        m = burst(pages)
        var c: OpaquePointer?, d: OpaquePointer?
        if kvm_ranges_create(pool, 1, 4096, &c) != 0 { problems.append("range c in the burst: \(String(cString: kvm_error()))") }
        munmap(m, pages * 4096)
        kvm_ranges_destroy(c)
        if kvm_ranges_create(pool, 1, 4096, &d) != 0 { problems.append("range d: \(String(cString: kvm_error()))") }
        if kvm_ranges_mapping_limit(d) + 64 < fresh {
            problems.append("a lone range after the burst has \(kvm_ranges_mapping_limit(d)) of the fresh \(fresh) (process \(kvm_ranges_process_mapping_limit()))")
        }
        kvm_ranges_destroy(d)
        kvm_pool_destroy(pool)
        return problems
    }
}
