#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import KVCache

/// Byte offsets of `kvc_config` (include/kvcache.h) on LP64, the only data model the header
/// compiles for (pointers and 8-byte integers 8-byte aligned). Read and written field by
/// field, so that a caller's struct of another version (another `struct_size`) is handled
/// exactly.
enum ConfigLayout {
    static let structSize = 0
    static let numLayers = 4
    static let numKVHeads = 8
    static let headDim = 12
    static let dtypeBytes = 16
    static let blockTokens = 20
    static let layout = 24
    static let maxSeqs = 28
    static let maxSeqTokens = 32
    static let memoryBytes = 40
    static let pageBytes = 48
    static let numaNode = 56
    static let metadataOnly = 60
    /// `const char *offload_dir`.
    static let offloadDir = 64
    static let offloadBytes = 72
    // Token eviction (EvictionExports.swift documents them).
    static let evictionPolicy = 80
    static let evictionPerHead = 84
    static let sinkTokens = 88
    static let recentTokens = 92
    static let recentRatio = 96
    static let normalizedScores = 100
    static let episodes = 104
    static let embeddingDim = 108
    static let episodeSeed = 112
    static let adaptiveBudgets = 120
    /// In what was padding up to this field, so the first version's struct stayed 128 bytes.
    static let indexOnSchedule = 124
    /// `sizeof(kvc_config)` of the first version, which the symbol `kvc_config_init` writes.
    static let firstSize = 128
    /// The first field past the 128 bytes of earlier versions (then 4 bytes of padding).
    static let offloadQueueDepth = 128
    /// `const char *peer_offload_dirs` (':'-separated); a 136-byte struct of the previous
    /// version ends before it (no peers).
    static let peerOffloadDirs = 136
    /// `uint64_t model_tag`; a 144-byte struct of the previous version ends before it (tag 0).
    static let modelTag = 144
    /// `double prefill_tokens_per_s`; a 152-byte struct of the previous version ends before it (0).
    static let prefillTokensPerSecond = 152
    /// `uint32_t offload_writeback`; a 160-byte struct of the previous version ends before it
    /// (0: no writeback thread).
    static let offloadWriteback = 160
    /// `uint32_t event_capacity`, in what was reserved_164 (so the struct stayed 168 bytes);
    /// 0 there, or a struct that ends before it: the default 65536.
    static let eventCapacity = 164
    /// The end of the last field this version reads (`event_capacity`).
    static let known = 168
    /// `sizeof(kvc_config)` of this version.
    static let size = 168
    /// The reserved fields between fields (reserved_36, reserved_132; padding in earlier
    /// headers), which `kvc_config_init` zeroes and a newer header could fill.
    static let padding = [36..<40, 132..<136]
    /// `KVC_CONFIG_MIN_SIZE`: through `numa_node`.
    static let minimumSize = 60
}

/// `kvc_config_init_size`: writes the defaults of this version's `kvc_config` to the first
/// `size` bytes at `cfg` (fields this version does not know, and padding, zeroed: 0 is every
/// later field's "as before"), none past them, and sets `struct_size` to `size`. NULL, or
/// `size` outside `KVC_CONFIG_MIN_SIZE...KVC_STRUCT_SIZE_MAX`: nothing written. The header's
/// `kvc_config_init(cfg)` macro calls it with the caller's `sizeof(kvc_config)`.
@c public func kvc_config_init_size(_ cfg: UnsafeMutableRawPointer?, _ size: Int) {
    initialiseVersionedStruct(cfg, size: size, minimum: ConfigLayout.minimumSize, ownSize: ConfigLayout.size,
                              writeDefaults: writeDefaults(into:))
}

/// The symbol `kvc_config_init`, which binaries built against the first header call: writes
/// exactly the first version's 128 bytes (`struct_size` 128), as that header promised, so
/// that it never writes past such a caller's struct. NULL: no-op.
@c public func kvc_config_init(_ cfg: UnsafeMutableRawPointer?) {
    kvc_config_init_size(cfg, ConfigLayout.firstSize)
}

/// Writes the `EngineConfig` defaults of every field of this version into `ConfigLayout.size`
/// bytes at `cfg`, padding zeroed, `struct_size` unset.
private func writeDefaults(into cfg: UnsafeMutableRawPointer) {
    memset(cfg, 0, ConfigLayout.size)
    let d = EngineConfig()
    func u32(_ value: Int, _ offset: Int) { cfg.storeBytes(of: UInt32(value), toByteOffset: offset, as: UInt32.self) }
    u32(d.numLayers, ConfigLayout.numLayers)
    u32(d.numKVHeads, ConfigLayout.numKVHeads)
    u32(d.headDim, ConfigLayout.headDim)
    u32(d.dtypeBytes, ConfigLayout.dtypeBytes)
    u32(d.blockTokens, ConfigLayout.blockTokens)
    cfg.storeBytes(of: d.layout.rawValue, toByteOffset: ConfigLayout.layout, as: UInt32.self)
    u32(d.maxSeqs, ConfigLayout.maxSeqs)
    u32(d.maxSeqTokens, ConfigLayout.maxSeqTokens)
    cfg.storeBytes(of: d.memoryBytes, toByteOffset: ConfigLayout.memoryBytes, as: UInt64.self)
    cfg.storeBytes(of: d.pageBytes, toByteOffset: ConfigLayout.pageBytes, as: UInt64.self)
    cfg.storeBytes(of: d.numaNode, toByteOffset: ConfigLayout.numaNode, as: Int32.self)
    u32(d.metadataOnly ? 1 : 0, ConfigLayout.metadataOnly)
    d.eviction.store(into: cfg)
    u32(d.indexOnSchedule ? 1 : 0, ConfigLayout.indexOnSchedule)
    u32(d.offloadQueueDepth, ConfigLayout.offloadQueueDepth)
}

extension EngineConfig {
    /// Decodes the caller's `kvc_config`: fields its `struct_size` does not cover keep their
    /// defaults; bytes past the fields this version knows must be 0 (a newer caller's fields
    /// left at "as before"), else `unsupported`. Ranges are checked later by `validate()`.
    init(cStruct raw: UnsafeRawPointer) throws(KVError) {
        let size = try structSize(raw, minimum: ConfigLayout.minimumSize, "kvc_config")
        self.init()
        func has(_ offset: Int, _ width: Int) -> Bool { offset + width <= size }
        func int(_ offset: Int) -> Int { Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }

        numLayers = int(ConfigLayout.numLayers)
        numKVHeads = int(ConfigLayout.numKVHeads)
        headDim = int(ConfigLayout.headDim)
        dtypeBytes = int(ConfigLayout.dtypeBytes)
        blockTokens = int(ConfigLayout.blockTokens)
        let rawLayout = raw.loadUnaligned(fromByteOffset: ConfigLayout.layout, as: UInt32.self)
        guard let layout = Layout(rawValue: rawLayout) else {
            throw KVError(.invalidArgument,
                          "layout \(rawLayout) is neither KVC_LAYOUT_PAGED (0) nor KVC_LAYOUT_CONTIGUOUS (1)")
        }
        self.layout = layout
        maxSeqs = int(ConfigLayout.maxSeqs)
        maxSeqTokens = int(ConfigLayout.maxSeqTokens)
        memoryBytes = raw.loadUnaligned(fromByteOffset: ConfigLayout.memoryBytes, as: UInt64.self)
        pageBytes = raw.loadUnaligned(fromByteOffset: ConfigLayout.pageBytes, as: UInt64.self)
        numaNode = raw.loadUnaligned(fromByteOffset: ConfigLayout.numaNode, as: Int32.self)
        if has(ConfigLayout.metadataOnly, 4) {
            let flag = raw.loadUnaligned(fromByteOffset: ConfigLayout.metadataOnly, as: UInt32.self)
            guard flag <= 1 else { throw KVError(.invalidArgument, "metadata_only \(flag) is neither 0 nor 1") }
            metadataOnly = flag == 1
        }
        func string(_ offset: Int, _ name: String, maxBytes: Int) throws(KVError) -> String? {
            let pointer = raw.loadUnaligned(fromByteOffset: offset, as: UInt.self)
            guard let text = UnsafePointer<CChar>(bitPattern: pointer) else { return nil }
            guard strnlen(text, maxBytes + 1) <= maxBytes else { throw KVError(.invalidArgument, "\(name) is longer than \(maxBytes) bytes") }
            // Repairing bad bytes (U+FFFD) would name, create and lock another directory.
            guard let value = String(validatingCString: text) else {
                throw KVError(.invalidArgument, "\(name) is not valid UTF-8: the engine names directories by their UTF-8 paths; "
                                                + "give it a directory whose path is UTF-8")
            }
            return value
        }
        if has(ConfigLayout.offloadBytes, 8) {
            offloadDir = try string(ConfigLayout.offloadDir, "offload_dir", maxBytes: 4096)
            offloadBytes = raw.loadUnaligned(fromByteOffset: ConfigLayout.offloadBytes, as: UInt64.self)
        } else if has(ConfigLayout.offloadDir, 8), try string(ConfigLayout.offloadDir, "offload_dir", maxBytes: 4096) != nil {
            throw KVError(.invalidArgument, "offload_dir is set but struct_size \(size) ends before offload_bytes: set both")
        }
        try eviction.load(from: raw, size: size)
        if has(ConfigLayout.indexOnSchedule, 4) {
            let flag = raw.loadUnaligned(fromByteOffset: ConfigLayout.indexOnSchedule, as: UInt32.self)
            guard flag <= 1 else { throw KVError(.invalidArgument, "index_on_schedule \(flag) is neither 0 nor 1") }
            indexOnSchedule = flag == 1
        }
        if has(ConfigLayout.offloadQueueDepth, 4) { offloadQueueDepth = int(ConfigLayout.offloadQueueDepth) }
        if has(ConfigLayout.peerOffloadDirs, 8),
           let list = try string(ConfigLayout.peerOffloadDirs, "peer_offload_dirs", maxBytes: EngineConfig.maxPeers * 4097) {
            // Empty entries (a leading, trailing or doubled ':') name nothing.
            peerOffloadDirs = list.split(separator: ":", omittingEmptySubsequences: true).map(String.init)
        }
        if has(ConfigLayout.modelTag, 8) { modelTag = raw.loadUnaligned(fromByteOffset: ConfigLayout.modelTag, as: UInt64.self) }
        if has(ConfigLayout.prefillTokensPerSecond, 8) {
            prefillTokensPerSecond = raw.loadUnaligned(fromByteOffset: ConfigLayout.prefillTokensPerSecond, as: Double.self)
        }
        if has(ConfigLayout.offloadWriteback, 4) {
            let flag = raw.loadUnaligned(fromByteOffset: ConfigLayout.offloadWriteback, as: UInt32.self)
            guard flag <= 1 else { throw KVError(.invalidArgument, "offload_writeback \(flag) is neither 0 nor 1") }
            offloadWriteback = flag == 1
        }
        if has(ConfigLayout.eventCapacity, 4), int(ConfigLayout.eventCapacity) != 0 {
            eventCapacity = int(ConfigLayout.eventCapacity)
        }
        try rejectUnknownBytes(raw, size: size, known: ConfigLayout.known, padding: ConfigLayout.padding, "kvc_config")
    }
}
