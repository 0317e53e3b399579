import Foundation
import Testing
@testable import KVEval

/// `TraceFileWriter` reports what the system refuses: a full disk once went unnoticed (no
/// `fwrite` or `fclose` result was read), so `evict-eval --write-trace` reported success and
/// left a truncated trace. `/dev/full` refuses every write with ENOSPC.
@Suite struct TraceFileWriterTests {
    @Test func aFullDiskFailsTheWriteOrTheClose() throws {
        var source = SyntheticAttention(.longDecode, seed: 1)
        let header = source.header
        #expect {
            let writer = try TraceFileWriter(path: "/dev/full", header: header)
            var step = TraceStep()
            while try source.next(into: &step) { try writer.write(step, layers: header.layers, heads: header.heads) }
            try writer.close()
        } throws: { "\($0)" == "cannot write /dev/full: No space left on device" }
    }

    /// A header fits `fwrite`'s buffer: the full disk shows only when `close()` flushes it.
    @Test func aFullDiskShowsAtCloseWhenTheWritesWereBuffered() throws {
        let header = TraceHeader(layers: 1, heads: 1, embeddingDim: 0, segments: [], steps: 1, markStep: nil, maxTokens: 1)
        let writer = try TraceFileWriter(path: "/dev/full", header: header)
        #expect { try writer.close() } throws: { "\($0)" == "cannot write /dev/full: No space left on device" }
        try writer.close()  // closed already: nothing to report
    }

    /// A writer released unclosed closes its file, flushing the header it buffered (it once
    /// leaked the `FILE` and lost the bytes).
    @Test func anUnclosedWriterClosesItsFileWhenReleased() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kvattn-unclosed-\(UUID().uuidString).bin").path
        defer { unlink(path) }
        let header = TraceHeader(layers: 1, heads: 1, embeddingDim: 0, segments: [], steps: 1, markStep: nil, maxTokens: 1)
        do { _ = try TraceFileWriter(path: path, header: header) }
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int == 36)
    }

    @Test func aPathThatCannotBeCreatedIsNamed() {
        let header = TraceHeader(layers: 1, heads: 1, embeddingDim: 0, segments: [], steps: 1, markStep: nil, maxTokens: 1)
        #expect { try TraceFileWriter(path: "/nonexistent-kvattn-dir/t.bin", header: header) } throws: {
            "\($0)" == "cannot create /nonexistent-kvattn-dir/t.bin: No such file or directory"
        }
    }
}
