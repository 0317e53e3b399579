import Foundation
import Testing
@testable import kvcache

/// `ProcessMemory`: the resident set `kvcache load` reports, and its peak reset per run.
@Suite("kvcache load process memory")
struct ProcessMemoryTests {
    /// A peak left by memory since released drops to the current resident set once reset, so
    /// that `--compare-offload`'s second run does not report the first run's peak as its own.
    /// In a child: the peak is the process's, and other tests change it.
    @Test func resettingThePeakForgetsAnEarlierPeak() async {
        await #expect(processExitsWith: .success) {
            let bytes = 256 << 20
            guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else { exit(2) }
            memset(p, 1, bytes)
            let touched = ProcessMemory.current()
            munmap(p, bytes)
            let released = ProcessMemory.current()
            guard touched.peakRSSBytes >= UInt64(bytes), released.peakRSSBytes >= touched.rssBytes,
                  released.rssBytes + UInt64(bytes / 2) < released.peakRSSBytes else { exit(3) }
            guard ProcessMemory.resetPeak() else { exit(4) }
            let reset = ProcessMemory.current()
            guard reset.peakRSSBytes < released.rssBytes + UInt64(bytes / 4) else { exit(5) }
            exit(0)
        }
    }
}
