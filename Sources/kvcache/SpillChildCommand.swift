import ArgumentParser
import KVCache
#if canImport(Glibc)
import Glibc
#endif

/// `kvcache spill-child` (hidden): the process the crash test kills. It spills without end:
/// each prompt is one full block plus one token (`prompt i` = tokens i*1000 ..< i*1000+bt+1,
/// so every block is its own chain and can be looked up alone), its K/V written with the test
/// suite's byte pattern, then freed; a memory budget of a few blocks makes every new prompt
/// evict, and so spill, an older one. Prints "prompt N" after each prompt it finished.
/// With `--hold` (after `--prompts`) it spills every cached block (`trim`), makes the tier
/// durable, prints "holding" and sleeps until killed, holding the directory: the peer-tier
/// test reads its blocks from another process meanwhile.
struct SpillChildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spill-child",
        abstract: "Spill blocks to a disk tier until killed (for the crash test).",
        shouldDisplay: false
    )

    @Option(help: "The disk tier's directory.")
    var dir: String

    @Option(help: "Disk tier size in bytes.")
    var offloadBytes: UInt64 = 2 << 20

    @Option(help: "Stop after this many prompts (default: run until killed).")
    var prompts = Int.max

    @Flag(help: "After --prompts: spill everything, sync, print 'holding' and sleep until killed.")
    var hold = false

    /// The test suite's shape (`smallConfig`): 2 layers, 2 heads x 8 x fp16, 4-token blocks,
    /// and its model tag (`testModelTag`, 0x7E57: a peer needs one other than 0).
    static func config(dir: String, memoryBytes: UInt64, offloadBytes: UInt64) -> EngineConfig {
        var c = EngineConfig()
        c.layout = .paged
        c.numLayers = 2
        c.numKVHeads = 2
        c.headDim = 8
        c.dtypeBytes = 2
        c.blockTokens = 4
        c.maxSeqs = 16
        c.maxSeqTokens = 4096
        c.memoryBytes = memoryBytes
        c.pageBytes = 4096
        c.offloadDir = dir
        c.offloadBytes = offloadBytes
        c.modelTag = 0x7E57
        return c
    }

    /// The byte the test suite's `kvByte` gives (salt 0).
    @inline(__always) static func kvByte(layer: Int, kv: Int, position: Int, token: Int32, i: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: Int(token) &* 131 &+ position &* 31 &+ layer &* 7 &+ kv &* 3 &+ i)
    }

    func run() throws {
        let e = try Engine(Self.config(dir: dir, memoryBytes: 4096 * 4, offloadBytes: offloadBytes))
        let c = e.config
        let n = c.blockTokens + 1
        var table = [Int32](repeating: 0, count: 2)
        var i = 0
        while i < prompts {
            let prompt = (0..<n).map { Int32(truncatingIfNeeded: i &* 1000 &+ $0) }
            try e.createSequence(1, tokens: prompt)
            _ = try table.withUnsafeMutableBufferPointer { try e.blockTable(1, into: $0) }
            for layer in 0..<c.numLayers {
                for p in 0..<n {
                    let (k, v) = try e.blockKV(table[p / c.blockTokens], layer: layer)
                    let offset = (p % c.blockTokens) * c.tokenBytes
                    for b in 0..<c.tokenBytes {
                        k.storeBytes(of: Self.kvByte(layer: layer, kv: 0, position: p, token: prompt[p], i: b), toByteOffset: offset + b, as: UInt8.self)
                        v.storeBytes(of: Self.kvByte(layer: layer, kv: 1, position: p, token: prompt[p], i: b), toByteOffset: offset + b, as: UInt8.self)
                    }
                }
            }
            try e.free(1)
            var line = "prompt \(i)\n"  // unbuffered: the test reads what the killed process reached
            line.withUTF8 { _ = write(STDOUT_FILENO, $0.baseAddress, $0.count) }
            i += 1
        }
        guard hold else { return }
        try e.trim()
        try e.syncOffload()
        var line = "holding\n"
        line.withUTF8 { _ = write(STDOUT_FILENO, $0.baseAddress, $0.count) }
        while true { pause() }
    }
}
