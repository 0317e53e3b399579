import Testing
import KVCache
@testable import KVCacheABI

// Test-side mirrors of the C structs, written from include/kvcache.h on their own (not from
// the library's layout tables), so a wrong offset on either side makes a test fail.

/// `kvc_config` as raw bytes: `kvc_config_init_size` defaults, then fields set at the header's offsets.
struct CConfig {
    static let size = 168
    var bytes: [UInt8]

    /// The defaults of `kvc_config_init_size`, in a struct of `structSize` bytes (at least 168 are
    /// initialised; bytes past 168 are 0) whose `struct_size` field says `structSize`.
    init(structSize: Int = CConfig.size) {
        bytes = [UInt8](repeating: 0, count: max(structSize, CConfig.size))
        bytes.withUnsafeMutableBytes { kvc_config_init_size($0.baseAddress, CConfig.size) }
        set32(0, UInt32(structSize))
    }

    /// The engine configuration these bytes decode to, as kvc_engine_create reads them
    /// (`EngineConfig(cStruct:)`): the offset tests' check of what a struct of some size gives.
    func decoded() throws -> EngineConfig {
        try bytes.withUnsafeBytes { raw throws(KVError) in try EngineConfig(cStruct: raw.baseAddress!) }
    }

    /// The small model every test engine uses: token_bytes = 2 heads * 4 * 2 bytes = 16,
    /// block_bytes = 4 tokens * 16 = 64, 2 layers (4 tensors).
    static func small(_ layout: UInt32, memoryBytes: UInt64 = 1 << 20) -> CConfig {
        var c = CConfig()
        c.numLayers = 2
        c.numKVHeads = 2
        c.headDim = 4
        c.dtypeBytes = 2
        c.blockTokens = 4
        c.layout = layout
        c.maxSeqs = 8
        c.maxSeqTokens = 1024
        c.memoryBytes = memoryBytes
        c.pageBytes = 4096
        return c
    }

    var structSize: UInt32 { get { get32(0) } set { set32(0, newValue) } }
    var numLayers: UInt32 { get { get32(4) } set { set32(4, newValue) } }
    var numKVHeads: UInt32 { get { get32(8) } set { set32(8, newValue) } }
    var headDim: UInt32 { get { get32(12) } set { set32(12, newValue) } }
    var dtypeBytes: UInt32 { get { get32(16) } set { set32(16, newValue) } }
    var blockTokens: UInt32 { get { get32(20) } set { set32(20, newValue) } }
    var layout: UInt32 { get { get32(24) } set { set32(24, newValue) } }
    var maxSeqs: UInt32 { get { get32(28) } set { set32(28, newValue) } }
    var maxSeqTokens: UInt32 { get { get32(32) } set { set32(32, newValue) } }
    var memoryBytes: UInt64 { get { get64(40) } set { set64(40, newValue) } }
    var pageBytes: UInt64 { get { get64(48) } set { set64(48, newValue) } }
    var numaNode: Int32 { get { Int32(bitPattern: get32(56)) } set { set32(56, UInt32(bitPattern: newValue)) } }
    var metadataOnly: UInt32 { get { get32(60) } set { set32(60, newValue) } }
    var offloadBytes: UInt64 { get { get64(72) } set { set64(72, newValue) } }
    var indexOnSchedule: UInt32 { get { get32(124) } set { set32(124, newValue) } }
    var offloadQueueDepth: UInt32 { get { get32(128) } set { set32(128, newValue) } }
    var modelTag: UInt64 { get { get64(144) } set { set64(144, newValue) } }
    var prefillTokensPerSecond: Double {
        get { Double(bitPattern: get64(152)) }
        set { set64(152, newValue.bitPattern) }
    }
    var offloadWriteback: UInt32 { get { get32(160) } set { set32(160, newValue) } }
    var eventCapacity: UInt32 { get { get32(164) } set { set32(164, newValue) } }

    /// `kvc_engine_create` with `offload_dir` (offset 64) pointing at `dir` for the call, and
    /// `peer_offload_dirs` (offset 136) at `peers` when given.
    func create(_ out: inout OpaquePointer?, offloadDir dir: String, peers: String? = nil) -> kvc_status {
        create(&out, offloadDirBytes: Array(dir.utf8), peerBytes: peers.map { Array($0.utf8) })
    }

    /// `create(_:offloadDir:peers:)` with the strings' bytes as given (any bytes but 0, such as
    /// a Latin-1 name that is not UTF-8); each is passed NUL-terminated.
    func create(_ out: inout OpaquePointer?, offloadDirBytes dir: [UInt8], peerBytes peers: [UInt8]? = nil) -> kvc_status {
        var copy = bytes
        return (dir + [0]).withUnsafeBufferPointer { d in
            withOptionalBytes(peers.map { $0 + [0] }) { p in
                copy.withUnsafeMutableBytes { raw in
                    raw.storeBytes(of: UInt64(UInt(bitPattern: d.baseAddress)), toByteOffset: 64, as: UInt64.self)
                    if let p { raw.storeBytes(of: UInt64(UInt(bitPattern: p)), toByteOffset: 136, as: UInt64.self) }
                    return kvc_engine_create(raw.baseAddress, &out)
                }
            }
        }
    }

    var tokenBytes: Int { Int(numKVHeads * headDim * dtypeBytes) }

    func get32(_ offset: Int) -> UInt32 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) } }
    func get64(_ offset: Int) -> UInt64 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) } }
    mutating func set32(_ offset: Int, _ value: UInt32) {
        bytes.withUnsafeMutableBytes { $0.storeBytes(of: value, toByteOffset: offset, as: UInt32.self) }
    }
    mutating func set64(_ offset: Int, _ value: UInt64) {
        bytes.withUnsafeMutableBytes { $0.storeBytes(of: value, toByteOffset: offset, as: UInt64.self) }
    }

    /// `kvc_engine_create` on these bytes.
    func create(_ out: inout OpaquePointer?) -> kvc_status {
        bytes.withUnsafeBytes { kvc_engine_create($0.baseAddress, &out) }
    }
}

/// `body` with a pointer to `bytes`, or nil.
func withOptionalBytes<T>(_ bytes: [UInt8]?, _ body: (UnsafePointer<UInt8>?) -> T) -> T {
    guard let bytes else { return body(nil) }
    return bytes.withUnsafeBufferPointer { body($0.baseAddress) }
}

/// `kvc_stats` as read through the ABI with the header's offsets.
struct CStats: Equatable, CustomStringConvertible {
    static let size = 352
    static let minimumSize = 72
    var fields: [UInt64]  // budget_bytes ... disk_io_mode, in header order

    init(bytes: [UInt8]) {
        // Fields past the end of a smaller buffer read 0.
        fields = (0..<43).map { i in
            8 + 8 * i + 8 <= bytes.count ? bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8 + 8 * i, as: UInt64.self) } : 0
        }
    }

    var budgetBytes: UInt64 { fields[0] }
    var committedBytes: UInt64 { fields[1] }
    var blocksTotal: UInt64 { fields[2] }
    var blocksUsed: UInt64 { fields[3] }
    var blocksCached: UInt64 { fields[4] }
    var sequences: UInt64 { fields[5] }
    var prefixQueryTokens: UInt64 { fields[6] }
    var prefixHitTokens: UInt64 { fields[7] }
    var sequencesCreated: UInt64 { fields[8] }
    var blocksEvicted: UInt64 { fields[9] }
    var mappings: UInt64 { fields[10] }
    var eventsDropped: UInt64 { fields[11] }
    var diskCapacityBytes: UInt64 { fields[12] }
    var diskStoredBytes: UInt64 { fields[13] }
    var diskBytesWritten: UInt64 { fields[14] }
    var diskBytesRead: UInt64 { fields[15] }
    var diskHitTokens: UInt64 { fields[16] }
    var blocksSpilled: UInt64 { fields[17] }
    var blocksLoaded: UInt64 { fields[18] }
    var diskErrors: UInt64 { fields[19] }
    var swapOuts: UInt64 { fields[20] }
    var swapIns: UInt64 { fields[21] }
    var tokenRecords: UInt64 { fields[22] }
    var tokensOnDisk: UInt64 { fields[23] }
    var tokensOffloaded: UInt64 { fields[24] }
    var tokensRestored: UInt64 { fields[25] }
    var tokensLost: UInt64 { fields[26] }
    var swapOutsStarted: UInt64 { fields[27] }
    var swapOutsCancelled: UInt64 { fields[28] }
    var swapOutsFailed: UInt64 { fields[29] }
    var swapOutsPending: UInt64 { fields[30] }
    var tokensInOpenRecords: UInt64 { fields[31] }
    var hugePages: UInt64 { fields[32] }
    var spillsSkipped: UInt64 { fields[33] }
    var peerHits: UInt64 { fields[34] }
    var peerStale: UInt64 { fields[35] }
    var peerHitTokens: UInt64 { fields[36] }
    var diskRecoveredBlocks: UInt64 { fields[37] }
    var diskJournalDropped: UInt64 { fields[38] }
    var diskDeclinedHitTokens: UInt64 { fields[39] }
    var diskBlocksWrittenAhead: UInt64 { fields[40] }
    var diskSpillsFailed: UInt64 { fields[41] }
    var diskIOMode: UInt64 { fields[42] }

    var description: String {
        "budget \(budgetBytes) committed \(committedBytes) blocks \(blocksUsed)+\(blocksCached)/\(blocksTotal) "
            + "seqs \(sequences) created \(sequencesCreated) evicted \(blocksEvicted) mappings \(mappings)"
    }
}

/// One byte of the known K/V pattern of a sequence: differs by salt, layer, K|V, token and byte.
func patternByte(salt: Int, layer: Int, tensor: Int, token: Int, byte: Int) -> UInt8 {
    var x = UInt64(bitPattern: Int64(salt)) &* 0x9E37_79B1 ^ UInt64(layer) &* 0x85EB_CA87 ^ UInt64(tensor) &* 0xC2B2_AE3D
    x ^= UInt64(token) &* 0x27D4_EB4F ^ UInt64(byte) &* 0x1656_67B1
    x ^= x >> 29
    return UInt8(truncatingIfNeeded: (x &* 0xBF58_476D_1CE4_E5B9) >> 56)
}

/// An engine created through the ABI, with helpers that drive it the way a server does, and
/// "witness" sequences whose bytes must survive every failing call.
final class ABIFixture {
    let config: CConfig
    let handle: OpaquePointer
    /// Witness sequences: id -> (salt, tokens).
    private(set) var witnesses: [UInt64: (salt: Int, tokens: [Int32])] = [:]

    var isPaged: Bool { config.layout == 0 }
    var blockTokens: Int { Int(config.blockTokens) }
    var tokenBytes: Int { config.tokenBytes }
    var layers: Int { Int(config.numLayers) }

    init(_ config: CConfig, offloadDir: String? = nil, peers: String? = nil) throws {
        self.config = config
        var out: OpaquePointer?
        let rc = offloadDir.map { config.create(&out, offloadDir: $0, peers: peers) } ?? config.create(&out)
        try #require(rc == KVC_OK, "kvc_engine_create: \(String(cString: kvc_status_name(rc))) \(String(cString: kvc_last_error()))")
        handle = try #require(out)
    }

    /// Adopts `handle`, made outside `kvc_engine_create` (a retained `Unmanaged<Engine>`, as
    /// that call makes) from an engine of `config`'s shape; `deinit` destroys it.
    init(_ config: CConfig, handle: OpaquePointer) {
        self.config = config
        self.handle = handle
    }

    /// A fixture on the small model with two witness sequences (one of several blocks plus a
    /// partial block, one shorter than a block) holding known bytes.
    convenience init(layout: UInt32, memoryBytes: UInt64 = 1 << 20) throws {
        try self.init(CConfig.small(layout, memoryBytes: memoryBytes))
        try addWitness(1001, tokens: uniqueTokens(1001, count: 3 * blockTokens + 2))
        try addWitness(1002, tokens: uniqueTokens(1002, count: blockTokens - 1))
    }

    deinit { kvc_engine_destroy(handle) }

    /// Tokens no other sequence of a test shares (so no prefix hit).
    func uniqueTokens(_ seq: UInt64, count: Int) -> [Int32] {
        (0..<count).map { Int32(truncatingIfNeeded: Int(seq) * 100_000 + $0) }
    }

    // MARK: server-side operations (expected to succeed)

    /// Creates `seq`, returns cached_tokens.
    @discardableResult
    func create(_ seq: UInt64, tokens: [Int32]) throws -> Int {
        var cached = -1
        let rc = tokens.withUnsafeBufferPointer { kvc_seq_create(handle, seq, $0.baseAddress, $0.count, &cached) }
        try expectOK(rc, "kvc_seq_create(\(seq))")
        return cached
    }

    func append(_ seq: UInt64, tokens: [Int32]) throws {
        let rc = tokens.withUnsafeBufferPointer { kvc_seq_append(handle, seq, $0.baseAddress, $0.count) }
        try expectOK(rc, "kvc_seq_append(\(seq))")
    }

    func length(_ seq: UInt64) throws -> Int {
        var n = -1
        try expectOK(kvc_seq_length(handle, seq, &n), "kvc_seq_length(\(seq))")
        return n
    }

    func stats() throws -> CStats {
        var bytes = [UInt8](repeating: 0, count: CStats.size)
        bytes.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(CStats.size), toByteOffset: 0, as: UInt32.self) }
        let rc = bytes.withUnsafeMutableBytes { kvc_engine_stats(handle, $0.baseAddress) }
        try expectOK(rc, "kvc_engine_stats")
        return CStats(bytes: bytes)
    }

    func blockTable(_ seq: UInt64) throws -> [Int32] {
        var n = 0
        _ = kvc_seq_block_table(handle, seq, nil, 0, &n)
        var blocks = [Int32](repeating: -1, count: n)
        let rc = blocks.withUnsafeMutableBufferPointer { kvc_seq_block_table(handle, seq, $0.baseAddress, $0.count, &n) }
        try expectOK(rc, "kvc_seq_block_table(\(seq))")
        return blocks
    }

    /// Base of token `token` of `seq` in `layer`, K (tensor 0) or V (tensor 1).
    func tokenAddress(_ seq: UInt64, layer: Int, tensor: Int, token: Int, table: [Int32]) throws -> UnsafeMutableRawPointer {
        var k: UnsafeMutableRawPointer?
        var v: UnsafeMutableRawPointer?
        let offset: Int
        if isPaged {
            try expectOK(kvc_block_kv(handle, table[token / blockTokens], UInt32(layer), &k, &v), "kvc_block_kv")
            offset = (token % blockTokens) * tokenBytes
        } else {
            try expectOK(kvc_seq_kv(handle, seq, UInt32(layer), &k, &v), "kvc_seq_kv")
            offset = token * tokenBytes
        }
        return try #require(tensor == 0 ? k : v) + offset
    }

    /// Writes `seq`'s pattern for tokens `from..<to` in every layer, K and V.
    func write(_ seq: UInt64, salt: Int, from: Int, to: Int) throws {
        try write(seq, from: from, to: to) { _ in salt }
    }

    /// Creates `seq` with `prompt`, writes it with `salt` (`write`), frees it and spills every
    /// cached block to the disk tier (`kvc_engine_trim`, then `kvc_engine_sync`: on disk and
    /// journaled), as a server's cold prefix ends up there.
    func spill(_ seq: UInt64, prompt: [Int32], salt: Int) throws {
        _ = try create(seq, tokens: prompt)
        try write(seq, salt: salt, from: 0, to: prompt.count)
        #expect(kvc_seq_free(handle, seq) == KVC_OK)
        #expect(kvc_engine_trim(handle) == KVC_OK)
        #expect(kvc_engine_sync(handle) == KVC_OK)
    }

    /// Writes the pattern of `salt(token)` for each token `from..<to` of `seq`, every layer, K and V.
    func write(_ seq: UInt64, from: Int, to: Int, salt: (Int) -> Int) throws {
        let table = isPaged ? try blockTable(seq) : []
        for layer in 0..<layers {
            for tensor in 0..<2 {
                for token in from..<to {
                    let p = try tokenAddress(seq, layer: layer, tensor: tensor, token: token, table: table)
                    let s = salt(token)
                    for b in 0..<tokenBytes {
                        p.storeBytes(of: patternByte(salt: s, layer: layer, tensor: tensor, token: token, byte: b),
                                     toByteOffset: b, as: UInt8.self)
                    }
                }
            }
        }
    }

    /// The first (layer, tensor, token, byte) in `from..<to` whose byte differs from `seq`'s
    /// pattern, or nil when all match.
    func firstMismatch(_ seq: UInt64, salt: Int, from: Int = 0, to: Int) throws -> String? {
        try firstMismatch(seq, from: from, to: to) { _ in salt }
    }

    /// As above, with the salt of each token given by `salt(token)`.
    func firstMismatch(_ seq: UInt64, from: Int = 0, to: Int, salt: (Int) -> Int) throws -> String? {
        let table = isPaged ? try blockTable(seq) : []
        for layer in 0..<layers {
            for tensor in 0..<2 {
                for token in from..<to {
                    let p = try tokenAddress(seq, layer: layer, tensor: tensor, token: token, table: table)
                    let s = salt(token)
                    for b in 0..<tokenBytes
                    where p.load(fromByteOffset: b, as: UInt8.self)
                        != patternByte(salt: s, layer: layer, tensor: tensor, token: token, byte: b)
                    {
                        return "seq \(seq) layer \(layer) tensor \(tensor) token \(token) byte \(b)"
                    }
                }
            }
        }
        return nil
    }

    /// Creates `seq` from `tokens` and writes its pattern for the tokens it computes.
    func addWitness(_ seq: UInt64, tokens: [Int32]) throws {
        let cached = try create(seq, tokens: tokens)
        try #require(cached == 0, "witness \(seq) must not hit the prefix cache")
        try write(seq, salt: Int(seq), from: 0, to: tokens.count)
        witnesses[seq] = (Int(seq), tokens)
    }

    /// Every witness still holds its tokens and bytes.
    func expectWitnessesIntact(sourceLocation: SourceLocation = #_sourceLocation) throws {
        for (seq, w) in witnesses.sorted(by: { $0.key < $1.key }) {
            #expect(try length(seq) == w.tokens.count, "witness \(seq) length", sourceLocation: sourceLocation)
            let mismatch = try firstMismatch(seq, salt: w.salt, to: w.tokens.count)
            #expect(mismatch == nil, "witness bytes changed at \(mismatch ?? "")", sourceLocation: sourceLocation)
        }
    }

    // MARK: failures

    /// Runs `call` (one failing ABI call) and checks that it returns `expected`, that this
    /// thread's kvc_last_error() is a fresh message containing every word of `mentioning`,
    /// and that the stats and every witness's bytes are exactly as before.
    func expectFailure(
        _ expected: kvc_status, mentioning words: [String], sourceLocation: SourceLocation = #_sourceLocation,
        _ call: (OpaquePointer) -> kvc_status
    ) throws {
        let before = try stats()
        LastError.clear()
        let rc = call(handle)
        expectStatus(rc, expected, mentioning: words, sourceLocation: sourceLocation)
        #expect(try stats() == before, "stats changed by a failing call", sourceLocation: sourceLocation)
        try expectWitnessesIntact(sourceLocation: sourceLocation)
    }

    private func expectOK(_ rc: kvc_status, _ what: String) throws {
        try #require(rc == KVC_OK, "\(what): \(String(cString: kvc_status_name(rc))) \(String(cString: kvc_last_error()))")
    }
}

/// Checks `rc == expected` and that this thread's last error mentions every word (case-insensitive).
/// Callers clear the last error first so that a stale message cannot pass.
func expectStatus(_ rc: kvc_status, _ expected: kvc_status, mentioning words: [String],
                  sourceLocation: SourceLocation = #_sourceLocation) {
    let message = String(cString: kvc_last_error())
    #expect(String(cString: kvc_status_name(rc)) == String(cString: kvc_status_name(expected)),
            "message: \(message)", sourceLocation: sourceLocation)
    #expect(!message.isEmpty, "kvc_last_error() is empty", sourceLocation: sourceLocation)
    for word in words {
        #expect(message.lowercased().contains(word.lowercased()), "\"\(message)\" does not mention \"\(word)\"",
                sourceLocation: sourceLocation)
    }
}

/// Runs `call` with this thread's last error cleared and checks it as `expectStatus` does
/// (for calls that need no engine fixture).
func expectFailure(_ expected: kvc_status, mentioning words: [String], sourceLocation: SourceLocation = #_sourceLocation,
                   _ call: () -> kvc_status) {
    LastError.clear()
    expectStatus(call(), expected, mentioning: words, sourceLocation: sourceLocation)
}

let KVC_ERR_INVALID_ARGUMENT: kvc_status = -1
let KVC_ERR_NOT_FOUND: kvc_status = -2
let KVC_ERR_EXISTS: kvc_status = -3
let KVC_ERR_OUT_OF_MEMORY: kvc_status = -4
let KVC_ERR_BUFFER_TOO_SMALL: kvc_status = -5
let KVC_ERR_IO: kvc_status = -6
let KVC_ERR_UNSUPPORTED: kvc_status = -7
let KVC_ERR_INTERNAL: kvc_status = -8
let KVC_LAYOUT_PAGED: UInt32 = 0
let KVC_LAYOUT_CONTIGUOUS: UInt32 = 1
let bothLayouts = [KVC_LAYOUT_PAGED, KVC_LAYOUT_CONTIGUOUS]
