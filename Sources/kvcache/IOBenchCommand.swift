import ArgumentParser
import CKVMemory
import KVCache
#if canImport(Glibc)
import Glibc
#endif

/// `kvcache io-bench`: throughput and latency of the disk tier's I/O path (the `kvm_io` queue
/// on an O_DIRECT file with registered buffers) for each block size and queue depth, beside a
/// synchronous one-request-at-a-time pread/pwrite baseline on the same file, in one run.
struct IOBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "io-bench",
        abstract: "Benchmark the disk tier's I/O path against synchronous pread/pwrite.",
        discussion: """
        Creates DIR/kvcache-io-bench.dat (--file-size, written in full first so that reads hit \
        the device, removed at the end unless --keep-file, and by SIGINT or SIGTERM unless \
        --keep-file kept a whole one), then for every block size and for \
        write and read: the synchronous baseline (one pread/pwrite at a time, O_DIRECT, same \
        file) and the io_uring queue at each depth (--backend threads: the pread/pwrite thread \
        pool). Offsets are random and block-aligned (like fio's randwrite/randread with \
        norandommap). Each cell runs --seconds.

        --json prints {"file", "file_bytes", "direct", "backend", "registered_buffers", \
        "seconds_per_cell", "cells": [{"op": "write"|"read", "engine": "sync"|"queue"|"tier", \
        "block_bytes", "depth", "bytes", "mib_per_s", "iops", "mean_us", "p50_us", "p99_us", \
        "max_us"}]}; latency percentiles are nearest ranks (the replay's definition). A "tier" \
        cell (--tier) also has "async" (--tier-async), and its write cell "call_p50_us" and \
        "call_p99_us": the swap-out call's own duration, while its latencies run until the \
        memory was released.
        """
    )

    @Option(help: "Directory of the test file (the file system the disk tier would use).")
    var dir = "."

    @Option(help: "Size of the test file (\(ByteCount.syntax)).")
    var fileSize = ByteCount(bytes: 1 << 30)

    @Option(help: "Block sizes, comma-separated, each in \(ByteCount.syntax).")
    var blockSizes = "64KiB,128KiB,256KiB,512KiB,1MiB,2MiB"

    @Option(help: "Queue depths, comma-separated (1...256).")
    var depths = "1,2,4,8,16,32,64"

    @Option(help: "Operations: write,read or one of them.")
    var ops = "write,read"

    @Option(help: "Seconds per cell.")
    var seconds = 1.0

    @Option(help: "Queue backend: uring or threads.")
    var backend = "uring"

    @Flag(help: "Skip the synchronous baseline.")
    var noBaseline = false

    @Flag(help: "Keep the test file (for tools/fio_compare.sh).")
    var keepFile = false

    @Flag(help: "Do not write the test file first (it was written by an earlier run with --keep-file).")
    var skipFill = false

    @Flag(help: "Print the report as JSON.")
    var json = false

    @Flag(help: "Also measure the disk tier through the engine: swap-out and swap-in with slots of each block size (multiples of 64KiB), queue depth 32, in a directory made under DIR for the run and removed after it.")
    var tier = false

    @Flag(help: "With --tier: swap out with swapOutAsync (kvc_seq_swap_out_async), polling until the memory is released; the swap-out call's own duration is reported apart.")
    var tierAsync = false

    @Option(help: "Bytes of K/V per swapped sequence with --tier (a sequence is at least 64 slots: a smaller value is raised to that; \(ByteCount.syntax); default \(Self.defaultTierSequenceBytes.defaultValueDescription)).")
    var tierSequenceBytes: ByteCount?

    /// `--tier-sequence-bytes` when not given: 512 MiB.
    static let defaultTierSequenceBytes = ByteCount(bytes: 512 << 20)

    /// The shortest cell: 10 ms, so that every cell completes at least one request and runs
    /// for a nonzero time (a cell of 1e-12 s ended before its first request: 0 bytes in 0 s).
    static let minimumSeconds = 0.01

    /// The largest --file-size: the largest file offset (`off_t`), 2^63-1 bytes.
    static let maximumFileBytes = UInt64(Int.max)

    func validate() throws {
        guard !dir.isEmpty else { throw ValidationError("--dir must not be empty (it is the directory of the test file)") }
        guard seconds >= Self.minimumSeconds && seconds <= 600 else {
            throw ValidationError("--seconds must be in \(Self.minimumSeconds)...600 (a shorter cell may end before its first request)")
        }
        guard parsedSizes != nil else {
            throw ValidationError("--block-sizes '\(blockSizes)': sizes that are multiples of 4KiB up to 64MiB, each once")
        }
        guard parsedDepths != nil else { throw ValidationError("--depths '\(depths)': depths in 1...256, each once") }
        guard ["uring", "threads"].contains(backend) else { throw ValidationError("--backend is uring or threads") }
        guard parsedOps != nil else { throw ValidationError("--ops '\(ops)': write, read, or both, each once (write,read)") }
        if tierAsync && !tier { throw ValidationError("--tier-async needs --tier") }
        if tierSequenceBytes != nil && !tier { throw ValidationError("--tier-sequence-bytes needs --tier") }
        if tier && tierSizes.isEmpty {
            throw ValidationError("--tier needs a block size that is a multiple of 64KiB (--block-sizes '\(blockSizes)')")
        }
        guard fileSize.bytes <= Self.maximumFileBytes else {
            throw ValidationError("--file-size must be at most \(Self.maximumFileBytes) bytes (the largest file offset)")
        }
        if tier, let smallest = tierSizes.min() {
            // Every tier block size runs after every cell: refused there, the cells were lost.
            let bound = UInt64(TierBench.sequenceSlotBound) * UInt64(smallest)
            guard (tierSequenceBytes ?? Self.defaultTierSequenceBytes).bytes < bound else {
                throw ValidationError("--tier-sequence-bytes must be below \(ByteCount(bytes: bound)) (2^20 slots of "
                                      + "\(ByteCount(bytes: UInt64(smallest))), the smallest --tier block size: the tier's engine holds no longer sequence)")
            }
        }
        let largest = parsedSizes!.max()!
        let deepest = parsedDepths!.max()!
        guard fileSize.bytes >= UInt64(largest * deepest) * 2 else {
            throw ValidationError("--file-size must be at least twice the largest block x the deepest queue (\(ByteCount.format(UInt64(2 * largest * deepest))))")
        }
    }

    /// The block sizes of `--block-sizes` in bytes, in order; nil when one is not a multiple of
    /// 4KiB in 4KiB...64MiB or is repeated (`64KiB` and `65536` are the same size): the table
    /// has one row per size, so a repeat was measured twice and shown once, twice.
    var parsedSizes: [Int]? {
        let sizes = blockSizes.split(separator: ",").map { ByteCount(argument: String($0)).flatMap { Int(exactly: $0.bytes) } }
        guard !sizes.isEmpty, sizes.allSatisfy({ $0 != nil && $0! % 4096 == 0 && $0! > 0 && $0! <= 64 << 20 }),
              Set(sizes).count == sizes.count else { return nil }
        return sizes.map { $0! }
    }

    /// The queue depths of `--depths`, in order; nil when one is outside 1...256 or repeated
    /// (one column per depth, as the sizes' rows).
    var parsedDepths: [Int]? {
        let values = depths.split(separator: ",").map { Int($0) }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil && (1...256).contains($0!) }), Set(values).count == values.count else { return nil }
        return values.map { $0! }
    }

    /// The block sizes `--tier` measures: those of `--block-sizes` (valid) that are a whole
    /// number of the tier bench's layers.
    var tierSizes: [Int] { parsedSizes!.filter { $0 % TierBench.layerPayloadBytes == 0 } }

    /// The operations of `--ops`, in order; nil when a name is unknown or repeated.
    var parsedOps: [IOBench.Op]? {
        let named = ops.split(separator: ",").map { IOBench.Op(rawValue: String($0)) }
        guard !named.isEmpty, named.allSatisfy({ $0 != nil }), Set(named).count == named.count else { return nil }
        return named.map { $0! }
    }

    func run() throws {
        let sizes = parsedSizes!, depthList = parsedDepths!
        let handlers = InterruptCleanup.install()
        defer { handlers.restore() }
        let path = dir + "/kvcache-io-bench.dat"
        // A signal removes the file when the end would, and one not yet written whole in any
        // case (a later --skip-fill would time reads of its unwritten extents).
        if !keepFile || !skipFill { InterruptCleanup.set([path], for: .testFile) }
        let bench = try IOBench(path: path, fileBytes: Int(fileSize.bytes),
                                maxBlockBytes: sizes.max()!, maxDepth: depthList.max()!, forceThreads: backend == "threads",
                                written: skipFill)
        defer { if !keepFile { bench.removeFile() } }
        var progress = ProgressLine()
        if !skipFill {
            progress.update("io-bench: writing the \(fileSize) test file")
            do {
                try bench.fill()
            } catch {
                // Kept or not, a file written in part must go: a later --skip-fill would time
                // reads of its unwritten extents.
                if keepFile { bench.removeFile() }
                throw error
            }
            if keepFile { InterruptCleanup.set([], for: .testFile) }
        }
        var cells: [IOBench.Cell] = []
        let opList = parsedOps!  // validated
        let total = sizes.count * opList.count * (depthList.count + (noBaseline ? 0 : 1))
        for size in sizes {
            for op in opList {
                if !noBaseline {
                    progress.update("io-bench: \(cells.count + 1)/\(total) sync \(op.rawValue) \(ByteCount.format(UInt64(size)))")
                    cells.append(try bench.runSync(op: op, blockBytes: size, seconds: seconds))
                }
                for depth in depthList {
                    progress.update("io-bench: \(cells.count + 1)/\(total) queue \(op.rawValue) \(ByteCount.format(UInt64(size))) depth \(depth)")
                    cells.append(try bench.runQueue(op: op, blockBytes: size, depth: depth, seconds: seconds))
                }
            }
        }
        var tierCells: [IOBench.Cell] = []
        var callSummaries: [String] = []
        if tier {
            for size in tierSizes {
                progress.update("io-bench: engine swap with \(ByteCount.format(UInt64(size))) slots")
                let result = try TierBench(dir: dir, payloadBytes: size, sequenceBytes: Int((tierSequenceBytes ?? Self.defaultTierSequenceBytes).bytes), seconds: seconds,
                                           asyncSwapOut: tierAsync).run()
                tierCells += [result.writeCell, result.readCell]
                callSummaries.append(result.callSummary + (tierAsync ? " (asynchronous)" : " (synchronous)"))
            }
        }
        progress.clear()
        if json {
            print(bench.json(cells + tierCells, seconds: seconds))
        } else {
            print(bench.table(cells, sizes: sizes, depths: depthList, ops: opList), terminator: "")
            if !tierCells.isEmpty { print(bench.tierTable(tierCells) + callSummaries.joined(separator: "\n")) }
        }
    }
}
