import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// What the blocks of a disk tier are: the model tag and the K/V shape of the engine that
/// writes them, kept as `kvcache.identity` beside the slab. A block hash depends on the
/// tokens only, so two models with the same bytes per block would otherwise serve each
/// other's K/V: a restarted engine given another model's directory, or a peer tier of another
/// model, would pass every slot check (header, hash, generation, checksum) with bytes of the
/// wrong model. The identity makes both a refusal at `kvc_engine_create` instead.
///
/// The file is text, one `key value` per line after a version line, so that an operator can
/// read it:
///
///     kvcache tier identity 3
///     model_tag 0x00000000000000a1
///     num_layers 32
///     num_kv_heads 8
///     head_dim 128
///     dtype_bytes 2
///     block_tokens 16
///     fingerprint_key 0x0123456789abcdef0123456789abcdef
///
/// The key is the directory's `BlockFingerprint` key (128 bits from `getrandom`, chosen by the
/// engine that first claims the directory): every engine that owns the directory uses it, so
/// that the fingerprints its journal records (`kvm_journal_record.fingerprint`) stay
/// checkable after a restart, and a peer reading the directory checks that directory's blocks
/// under it (`PeerTier`). It is a secret: the file is written with mode 0600, and anyone who
/// can read it can craft a prompt whose fingerprint collides (no worse than the public hash,
/// which has no key at all). So the own directory's file is refused unless it is this user's
/// and no one else's (another local user may have planted it, key and all, in a shared
/// directory), and a peer's unless only its owner can write it (`read`).
/// It is written once, by the engine that owns the directory (under its lock), to a temporary
/// file that is synced and renamed over, so it is never seen half written. The layout (paged
/// or contiguous) is not part of it: a slot holds a block in one format for both.
///
/// The version is the slab's format too: version 2 slots carry the payload checksum keyed by
/// stripe position (`kvm_checksum64`, 2026-11-24); a version 1 directory's slots would all
/// fail verification, so its engine is refused, naming the files to remove, rather than
/// adopting a tier whose every block reads back as corrupt. Version 3 (2026-11-25) adds the
/// fingerprint key and journal records carrying fingerprints (`KVM_JOURNAL_MAGIC` "JRL2");
/// a version 2 directory's records have none, so it is refused the same way. (A directory from before
/// identities, without the file, is adopted: its blocks read back as corrupt, each a miss
/// once, dropped, never served.)
/// Cost: one small file read at open, and one write when the directory has none.
struct TierIdentity: Equatable {
    var modelTag: UInt64
    var numLayers: Int
    var numKVHeads: Int
    var headDim: Int
    var dtypeBytes: Int
    var blockTokens: Int
    /// The directory's fingerprint key (not part of `differences`: it is the directory's own).
    var fingerprint: BlockFingerprint

    static let fileName = "kvcache.identity"
    /// Where `write` puts an identity before renaming it over `fileName`: there only while
    /// one is written, or after a process ended in the middle.
    static let temporaryFileName = fileName + ".tmp"
    private static let versionLine = "kvcache tier identity 3"
    /// The first lines of former versions this build refuses, and why.
    private static let formerVersions = [
        ("kvcache tier identity 1", "tier format 1, whose slots this build cannot verify (their payload checksums changed)"),
        ("kvcache tier identity 2", "tier format 2, whose journal records carry no block fingerprints (this build checks one before it serves a block)"),
    ]

    /// The identity of blocks written by an engine of `config`, with a fresh fingerprint key.
    init(_ config: EngineConfig) {
        fingerprint = BlockFingerprint.random()
        modelTag = config.modelTag
        numLayers = config.numLayers
        numKVHeads = config.numKVHeads
        headDim = config.headDim
        dtypeBytes = config.dtypeBytes
        blockTokens = config.blockTokens
    }

    /// The file's text.
    var text: String {
        let tag = String(modelTag, radix: 16)
        return TierIdentity.versionLine + "\n"
            + "model_tag 0x\(String(repeating: "0", count: 16 - tag.count))\(tag)\n"
            + fields.map { "\($0.name) \($0.value)\n" }.joined()
            + "fingerprint_key 0x\(fingerprint.keyText)\n"
    }

    /// The shape's fields, in file order (the model tag is printed apart, in hexadecimal).
    private var fields: [(name: String, value: Int)] {
        [("num_layers", numLayers), ("num_kv_heads", numKVHeads), ("head_dim", headDim),
         ("dtype_bytes", dtypeBytes), ("block_tokens", blockTokens)]
    }

    /// What differs between `self` (this engine's) and `other` (the directory's), as
    /// "model_tag 0x1 here, 0x2 there; num_layers 4 here, 8 there"; empty when they match.
    func differences(from other: TierIdentity) -> String {
        var parts: [String] = []
        if modelTag != other.modelTag {
            parts.append("model_tag 0x\(String(modelTag, radix: 16)) here, 0x\(String(other.modelTag, radix: 16)) there")
        }
        for (mine, theirs) in zip(fields, other.fields) where mine.value != theirs.value {
            parts.append("\(mine.name) \(mine.value) here, \(theirs.value) there")
        }
        return parts.joined(separator: "; ")
    }

    /// Parses a file's text; nil when it is not an identity of this version.
    init?(text: String) {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        guard lines.first.map(String.init) == TierIdentity.versionLine else { return nil }
        var values: [String: Substring] = [:]
        for line in lines.dropFirst() {
            let pair = line.split(separator: " ", maxSplits: 1)
            guard pair.count == 2, values[String(pair[0])] == nil else { return nil }
            values[String(pair[0])] = pair[1]
        }
        func int(_ key: String) -> Int? { values[key].flatMap { Int($0) } }
        guard values.count == 7, let tagText = values["model_tag"], tagText.hasPrefix("0x"),
              let tag = UInt64(tagText.dropFirst(2), radix: 16),
              let layers = int("num_layers"), let heads = int("num_kv_heads"), let dim = int("head_dim"),
              let dtype = int("dtype_bytes"), let bt = int("block_tokens"),
              let keyText = values["fingerprint_key"], keyText.hasPrefix("0x"),
              let key = BlockFingerprint(keyText: keyText.dropFirst(2))
        else { return nil }
        fingerprint = key
        modelTag = tag
        numLayers = layers
        numKVHeads = heads
        headDim = dim
        dtypeBytes = dtype
        blockTokens = bt
    }

    /// The identity in `dir`, or nil when it has no identity file. `own`: the engine's own
    /// directory, whose file must be its user's alone (`KVM_TIER_FILE_OWN`, `_SECRET`: another
    /// user's, or one others could read or write, may hold a key they know); else a peer's,
    /// which may be another user's but must not be writable by others (`_SEALED`). Never
    /// through a symbolic link, and only a regular file (a FIFO planted there is refused, not
    /// waited on: `kvm_tier_file_open`). Throws `io` when the file exists but cannot be read or
    /// is refused (`outOfMemory` when no descriptor is left to open it: `KVError.file`), and
    /// `invalidArgument` when it is not an identity.
    static func read(dir: String, own: Bool) throws(KVError) -> TierIdentity? {
        let path = dir + "/" + fileName
        let checks = own ? Int32(KVM_TIER_FILE_OWN | KVM_TIER_FILE_SECRET) : Int32(KVM_TIER_FILE_SEALED)
        var entry: Int32 = -1  // registered: a child forked meanwhile closes it (kvm_fork_close.h)
        let fd = kvm_tier_file_open(path, O_RDONLY, checks, &entry)
        if fd < 0 {
            if fd == -ENOENT { return nil }
            throw .file(fd)
        }
        defer { kvm_fork_close_close(fd, entry) }
        var bytes = [UInt8](repeating: 0, count: 1024)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + count, $0.count - count, off_t(count)) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw KVError(.io, "'\(path)': \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            count += n
        }
        let text = String(decoding: bytes[0..<count], as: UTF8.self)
        if let (_, why) = formerVersions.first(where: { text.hasPrefix($0.0 + "\n") }) {
            throw .invalid("'\(path)' is of \(why); "
                           + "an engine of this build owning '\(dir)' starts its tier empty once \(DiskTierFiles.names.prefix(3).joined(separator: ", ")) are removed there")
        }
        guard count < bytes.count, let identity = TierIdentity(text: text) else {
            throw .invalid("'\(path)' is not a kvcache tier identity (version 3); it was not written by this engine")
        }
        return identity
    }

    /// Writes the identity into `dir` atomically (a synced temporary file of mode 0600, since
    /// it holds the fingerprint key, renamed over `kvcache.identity`, then the directory
    /// synced). Throws `io` (`outOfMemory` when no
    /// descriptor is left for the file or the directory: `KVError.file`).
    func write(dir: String) throws(KVError) {
        let path = dir + "/" + TierIdentity.fileName, temporary = dir + "/" + TierIdentity.temporaryFileName
        unlink(temporary)  // one left by a process that ended in the middle may have another mode
        var entry: Int32 = -1
        let fd = kvm_tier_file_open(temporary, O_WRONLY | O_CREAT | O_EXCL, Int32(KVM_TIER_FILE_OWN), &entry)
        guard fd >= 0 else { throw .file(fd) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        kvm_fork_close_close(fd, entry)
        guard written == bytes.count && synced && rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw KVError(.io, "cannot write '\(path)': \(reason)")
        }
        // Durable once the directory is: a crash before it may bring back no identity (the
        // next open then writes this one again), never a torn one.
        let directorySynced = kvm_sync_parent(path)
        if directorySynced < 0 { throw .file(directorySynced) }
    }

    /// The own tier's check, under the directory's lock: a directory without an identity (new,
    /// or written before identities existed) gets this one, key included; one with another
    /// identity is refused (`invalidArgument`, naming what differs), and nothing in it is
    /// changed. Returns the fingerprint key the engine uses, the directory's, and whether it
    /// is new (then no block already on disk was fingerprinted under it).
    func claim(dir: String) throws(KVError) -> (key: BlockFingerprint, isNew: Bool) {
        guard let found = try TierIdentity.read(dir: dir, own: true) else {
            try write(dir: dir)
            return (fingerprint, true)
        }
        let differences = differences(from: found)
        guard differences.isEmpty else {
            throw .invalid("offload_dir '\(dir)' holds blocks of another model or shape (\(differences)); "
                           + "give this engine its own directory, or remove the directory's kvcache.* files to start it empty")
        }
        return (found.fingerprint, false)
    }

    /// A peer's check: its directory must carry this identity (its key aside). Returns the
    /// directory's fingerprint key, under which its blocks are checked. Throws `io` when it
    /// has none (its engine predates identities, or never opened it), `invalidArgument` when
    /// it differs.
    @discardableResult
    func check(peer dir: String) throws(KVError) -> BlockFingerprint {
        guard let found = try TierIdentity.read(dir: dir, own: false) else {
            throw KVError(.io, "peer offload dir '\(dir)' has no \(TierIdentity.fileName): no engine has used it as its offload_dir yet (or only one older than tier identities)")
        }
        let differences = differences(from: found)
        guard differences.isEmpty else {
            throw .invalid("peer offload dir '\(dir)' holds blocks of another model or shape (\(differences)); its K/V cannot serve this engine")
        }
        return found.fingerprint
    }
}
