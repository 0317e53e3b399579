import CKVMemory
import Testing

/// Whether a memfd can get 2 MiB transparent huge pages, from the top-level shmem_enabled word,
/// the per-size hugepages-2048kB/shmem_enabled word (Linux 6.11+) and the process's
/// PR_GET_THP_DISABLE, for every combination. Before, only the top-level word counted: a
/// per-size `never` under a top-level `advise` was reported huge with no huge page given, a
/// per-size `always` under `never` was reported small, and a process with THP disabled by
/// prctl was reported huge.
@Suite("Huge page refusal")
struct HugePageRefusalTests {
    /// Per top-level word (nil: unreadable), whether huge pages are possible for the per-size
    /// words nil (absent), inherit, always, within_size, advise, never: "H" yes, "-" no.
    static let table: [(top: String?, huge: String)] = [
        ("always", "HHHHH-"), ("within_size", "HHHHH-"), ("advise", "HHHHH-"), ("force", "HHHHH-"),
        ("never", "--HHH-"), ("deny", "------"), (nil, "------"),
    ]
    static let perSize: [String?] = [nil, "inherit", "always", "within_size", "advise", "never"]

    @Test(arguments: [false, true])
    func everyCombinationOfSettings(thpDisabled: Bool) {
        for row in Self.table {
            for (perSize, mark) in zip(Self.perSize, row.huge) {
                let why = withOptionalCString(row.top) { top in
                    withOptionalCString(perSize) { kvm_shmem_hugepages_refusal(top, $0, thpDisabled ? 1 : 0) }
                }.map { String(cString: $0) }
                let huge = mark == "H" && !thpDisabled
                let label = "top \(row.top ?? "unreadable"), per-size \(perSize ?? "absent"), thp disabled \(thpDisabled)"
                #expect((why == nil) == huge, "\(label): \(why ?? "huge")")
                if thpDisabled { #expect(why?.contains("PR_SET_THP_DISABLE") == true, "\(label): \(why ?? "huge")") }
                if !thpDisabled && perSize == "never" && row.top != nil && row.top != "deny" {
                    #expect(why?.contains("hugepages-2048kB") == true, "\(label): \(why ?? "huge")")
                }
            }
        }
    }
}

private func withOptionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let s else { return body(nil) }
    return s.withCString { body($0) }
}
