import ArgumentParser
import KVCache

/// `--layout`: the engine's memory layout.
enum LayoutOption: String, ExpressibleByArgument, CaseIterable, Sendable {
    case paged, contiguous

    var layout: Layout {
        switch self {
        case .paged: .paged
        case .contiguous: .contiguous
        }
    }
}

/// The engine's shape and limits, shared by every subcommand that creates an engine.
/// Defaults are `EngineConfig`'s except `--memory` (2 GiB, so a default run fits small machines)
/// and the writeback thread, on whenever there is a disk tier: measured, it takes the tier's
/// copies off the serving path (docs/disk-tier.md), so a load test of the tier runs as a server
/// should configure it; `--no-offload-writeback` measures the engine's zero default.
struct EngineOptions: ParsableArguments {
    @Option(help: "Memory layout: paged (vLLM-style blocks) or contiguous (vAttention-style ranges).")
    var layout: LayoutOption = .paged

    @Option(help: "Exact physical budget for K/V bytes: \(ByteCount.syntax).")
    var memory = ByteCount(bytes: 2 << 30)

    @Option(help: "Physical page size, a power of two from 4KiB to 2MiB (\(ByteCount.syntax)).")
    var pageBytes = ByteCount(bytes: EngineConfig().pageBytes)

    @Option(help: "Tokens per block (prefix-cache unit; allocation unit of the paged layout).")
    var blockTokens = EngineConfig().blockTokens

    @Option(help: "Transformer layers.")
    var layers = EngineConfig().numLayers

    @Option(help: "Key/value heads per layer.")
    var kvHeads = EngineConfig().numKVHeads

    @Option(help: "Elements per head.")
    var headDim = EngineConfig().headDim

    @Option(help: "Bytes per element.")
    var dtypeBytes = EngineConfig().dtypeBytes

    @Option(help: "Live sequences at most.")
    var maxSeqs = EngineConfig().maxSeqs

    @Option(help: "Tokens one sequence may hold at most.")
    var maxSeqTokens = EngineConfig().maxSeqTokens

    @Option(help: "Disk tier directory (offload_dir; it must exist): cold prefix blocks spill there instead of being dropped. Its files (kvcache.slab, preallocated in extents as it fills, up to --offload-bytes; kvcache.journal, kvcache.identity) stay for a later run to find the blocks; delete them when done.")
    var offloadDir: String?

    @Option(help: "Disk tier size (offload_bytes; \(ByteCount.syntax); default \(ByteCount(bytes: EngineOptions.defaultOffloadBytes).defaultValueDescription)), needs --offload-dir.")
    var offloadBytes: ByteCount?

    @Option(help: "Another engine's offload directory to read spilled blocks from (peer_offload_dirs; read-only, its lock is not taken); repeatable, needs --offload-dir.")
    var peerOffloadDir: [String] = []

    @Option(help: "The model whose K/V the engine holds (model_tag): recorded with its disk tier, whose blocks an engine of another tag is refused (own directory or peer). --peer-offload-dir needs one other than 0, in every run sharing the tiers; default \(EngineConfig().modelTag); needs --offload-dir.")
    var modelTag: UInt64?

    @Option(help: "Disk tier staging buffers (offload_queue_depth, 32...1024; default \(EngineConfig().offloadQueueDepth)): more write more cold blocks back when an allocation evicts many at once; needs --offload-dir.")
    var offloadQueueDepth: Int?

    @Flag(inversion: .prefixedNo, help: "Write cold cached blocks to the disk tier ahead of their eviction, on a thread that copies them outside the engine's lock (offload_writeback; on by default with --offload-dir), or (--no-offload-writeback) inside the call that evicts them, as an engine whose kvc_config leaves the field 0 does.")
    var offloadWriteback: Bool?

    @Option(help: "KV events the engine's queue holds between two drains before it drops the oldest (event_capacity, 1...16777216; default \(EngineConfig().eventCapacity); 24 bytes each). Up to two per prompt token at --block-tokens 1 under eviction: raise it when events_dropped grows.")
    var eventCapacity: Int?

    @Flag(help: "Index a prompt's blocks only as they are scheduled (index_on_schedule). Nothing here calls kvc_seq_schedule, so they enter the index at the sequence's first append, after its prefill: later prompts hit only computed blocks.")
    var indexOnSchedule = false

    /// The disk tier's size when `--offload-dir` comes without `--offload-bytes`.
    static let defaultOffloadBytes: UInt64 = 4 << 30

    /// The configuration these options describe.
    var config: EngineConfig {
        var config = EngineConfig()
        config.layout = layout.layout
        config.memoryBytes = memory.bytes
        config.pageBytes = pageBytes.bytes
        config.blockTokens = blockTokens
        config.numLayers = layers
        config.numKVHeads = kvHeads
        config.headDim = headDim
        config.dtypeBytes = dtypeBytes
        config.maxSeqs = maxSeqs
        config.maxSeqTokens = maxSeqTokens
        config.indexOnSchedule = indexOnSchedule
        if let offloadDir {
            config.offloadDir = offloadDir
            config.offloadBytes = offloadBytes?.bytes ?? Self.defaultOffloadBytes
        }
        if let offloadQueueDepth { config.offloadQueueDepth = offloadQueueDepth }
        config.offloadWriteback = offloadWriteback ?? (offloadDir != nil)
        config.peerOffloadDirs = peerOffloadDir
        if let modelTag { config.modelTag = modelTag }
        if let eventCapacity { config.eventCapacity = eventCapacity }
        return config
    }

    /// Refuses tier options given without a tier (they would configure nothing), then the
    /// configuration as `EngineConfig.validate()` does.
    func validate() throws {
        // Either would leave the engine without a tier, refused by the writeback's check.
        if offloadDir?.isEmpty == true { throw ValidationError("--offload-dir must name a directory") }
        if offloadDir != nil && offloadBytes?.bytes == 0 { throw ValidationError("--offload-bytes must be more than 0 (it sizes the disk tier)") }
        if offloadDir == nil {
            if offloadBytes != nil { throw ValidationError("--offload-bytes needs --offload-dir (it sizes the disk tier)") }
            if offloadQueueDepth != nil { throw ValidationError("--offload-queue-depth needs --offload-dir (it sets the disk tier's staging buffers)") }
            if modelTag != nil { throw ValidationError("--model-tag needs --offload-dir (it names the model of the disk tier's blocks)") }
            if let offloadWriteback {
                throw ValidationError("--\(offloadWriteback ? "" : "no-")offload-writeback needs --offload-dir (it chooses how the disk tier is written)")
            }
        }
        do {
            try config.validate()
        } catch {
            throw ValidationError(Self.flagWording(error.message))
        }
    }

    /// The flag that sets each `kvc_config` field the engine's refusals name.
    private static let flags = [
        "memory_bytes": "--memory", "page_bytes": "--page-bytes", "block_tokens": "--block-tokens",
        "num_layers": "--layers", "num_kv_heads": "--kv-heads", "head_dim": "--head-dim",
        "dtype_bytes": "--dtype-bytes", "max_seqs": "--max-seqs", "max_seq_tokens": "--max-seq-tokens",
        "offload_dir": "--offload-dir", "offload_bytes": "--offload-bytes", "peer_offload_dirs": "--peer-offload-dir",
        "model_tag": "--model-tag", "offload_queue_depth": "--offload-queue-depth",
        "offload_writeback": "--offload-writeback", "index_on_schedule": "--index-on-schedule",
        "prefill_tokens_per_s": "--prefill-tokens-per-s", "event_capacity": "--event-capacity",
    ]

    /// `message`, an engine's refusal of its configuration (which names `kvc_config`'s fields,
    /// as a C caller sets them), with each field a flag sets named by that flag: "memory_bytes
    /// is 0" reads "--memory is 0". Only a whole word between spaces or `,;:()` is a field, so
    /// a path that contains one is left as it is. O(message length).
    static func flagWording(_ message: String) -> String {
        var out = ""
        var word = ""
        for character in message {
            if character.isWhitespace || ",;:()".contains(character) {
                out += flags[word] ?? word
                word = ""
                out.append(character)
            } else {
                word.append(character)
            }
        }
        return out + (flags[word] ?? word)
    }
}
