import KVCache

/// `kvc_seq_create`: `Engine.createSequence` without a salt; the ABI rejects NULL pointers,
/// an empty prompt and a prompt longer than `max_seq_tokens` before the engine reads any token.
@c public func kvc_seq_create(
    _ e: OpaquePointer?, _ seq: UInt64, _ tokens: UnsafePointer<Int32>?, _ nTokens: Int,
    _ cachedTokens: UnsafeMutablePointer<Int>?
) -> kvc_status {
    status("kvc_seq_create", "seq \(seq), n_tokens \(UInt(bitPattern: nTokens))") { () throws(KVError) in
        try create(e, seq, tokens, nTokens, salt: 0, cachedTokens)
    }
}

/// `kvc_seq_create_salted`: `Engine.createSequence` under `salt`, checked as `kvc_seq_create`.
@c public func kvc_seq_create_salted(
    _ e: OpaquePointer?, _ seq: UInt64, _ tokens: UnsafePointer<Int32>?, _ nTokens: Int, _ salt: UInt64,
    _ cachedTokens: UnsafeMutablePointer<Int>?
) -> kvc_status {
    status("kvc_seq_create_salted", "seq \(seq), n_tokens \(UInt(bitPattern: nTokens)), salt \(salt)") { () throws(KVError) in
        try create(e, seq, tokens, nTokens, salt: salt, cachedTokens)
    }
}

/// The checks and the call both creations share.
private func create(
    _ e: OpaquePointer?, _ seq: UInt64, _ tokens: UnsafePointer<Int32>?, _ nTokens: Int, salt: UInt64,
    _ cachedTokens: UnsafeMutablePointer<Int>?
) throws(KVError) {
    try withEngine(e) { (engine) throws(KVError) in
        let cachedTokens = try required(cachedTokens, "cached_tokens")
        let prompt = try checkedPrompt(tokens, nTokens, engine)
        cachedTokens.pointee = try engine.createSequence(seq, tokens: prompt, salt: salt)
    }
}

/// `kvc_seq_create_chunked`: `Engine.createSequence(_:tokens:salt:commitTokens:)`, checked as
/// `kvc_seq_create`, and `commit_tokens` as every `size_t` is (0 the engine refuses); both
/// outputs are checked before the engine is asked and written only on success.
@c public func kvc_seq_create_chunked(
    _ e: OpaquePointer?, _ seq: UInt64, _ tokens: UnsafePointer<Int32>?, _ nTokens: Int, _ salt: UInt64,
    _ commitTokens: Int, _ cachedTokens: UnsafeMutablePointer<Int>?, _ heldTokens: UnsafeMutablePointer<Int>?
) -> kvc_status {
    status("kvc_seq_create_chunked", "seq \(seq), n_tokens \(UInt(bitPattern: nTokens)), salt \(salt), "
        + "commit_tokens \(UInt(bitPattern: commitTokens))") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let cachedTokens = try required(cachedTokens, "cached_tokens")
            let heldTokens = try required(heldTokens, "held_tokens")
            let prompt = try checkedPrompt(tokens, nTokens, engine)
            let admitted = try engine.createSequence(seq, tokens: prompt, salt: salt,
                                                     commitTokens: try size(commitTokens, "commit_tokens"))
            cachedTokens.pointee = admitted.cachedTokens
            heldTokens.pointee = admitted.heldTokens
        }
    }
}

/// `kvc_prefix_lookup`: `Engine.cachedPrefixSources`, the prompt checked as `kvc_seq_create`
/// checks it; every output pointer is checked before the engine is asked, and none is written
/// unless all three are.
@c public func kvc_prefix_lookup(
    _ e: OpaquePointer?, _ tokens: UnsafePointer<Int32>?, _ nTokens: Int, _ salt: UInt64,
    _ memoryTokens: UnsafeMutablePointer<Int>?, _ diskTokens: UnsafeMutablePointer<Int>?,
    _ peerTokens: UnsafeMutablePointer<Int>?
) -> kvc_status {
    status("kvc_prefix_lookup", "n_tokens \(UInt(bitPattern: nTokens)), salt \(salt)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let memoryTokens = try required(memoryTokens, "memory_tokens")
            let diskTokens = try required(diskTokens, "disk_tokens")
            let peerTokens = try required(peerTokens, "peer_tokens")
            let sources = engine.cachedPrefixSources(try checkedPrompt(tokens, nTokens, engine), salt: salt)
            memoryTokens.pointee = sources.memoryTokens
            diskTokens.pointee = sources.diskTokens
            peerTokens.pointee = sources.peerTokens
        }
    }
}

/// `kvc_prefix_admit`: `Engine.admission`, the prompt checked as `kvc_seq_create` checks it and
/// `commit_tokens`/`reserve_tokens` as every `size_t` is; both outputs are checked before the
/// engine is asked, and written when the answer is KVC_OK or KVC_ERR_OUT_OF_MEMORY (then the
/// refusal is the last error), never on another failure.
@c public func kvc_prefix_admit(
    _ e: OpaquePointer?, _ tokens: UnsafePointer<Int32>?, _ nTokens: Int, _ salt: UInt64, _ commitTokens: Int,
    _ reserveTokens: Int, _ cachedTokens: UnsafeMutablePointer<Int>?, _ shortTokens: UnsafeMutablePointer<Int>?
) -> kvc_status {
    status("kvc_prefix_admit", "n_tokens \(UInt(bitPattern: nTokens)), salt \(salt), "
        + "commit_tokens \(UInt(bitPattern: commitTokens)), reserve_tokens \(UInt(bitPattern: reserveTokens))") {
        () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let cachedTokens = try required(cachedTokens, "cached_tokens")
            let shortTokens = try required(shortTokens, "short_tokens")
            let answer = try engine.admission(try checkedPrompt(tokens, nTokens, engine), salt: salt,
                                              commitTokens: try size(commitTokens, "commit_tokens"),
                                              reserveTokens: try size(reserveTokens, "reserve_tokens"))
            cachedTokens.pointee = answer.cachedTokens
            shortTokens.pointee = answer.shortTokens
            if let refusal = answer.refusal { throw refusal }
        }
    }
}

/// A prompt as every call taking one checks it: not NULL (`buffer`), at least one token, at
/// most `max_seq_tokens` (`checkTokenCount`), before the engine reads any token.
private func checkedPrompt(_ tokens: UnsafePointer<Int32>?, _ nTokens: Int, _ engine: Engine)
    throws(KVError) -> UnsafeBufferPointer<Int32>
{
    let prompt = try buffer(tokens, nTokens, "tokens", "n_tokens")
    guard !prompt.isEmpty else {
        throw KVError(.invalidArgument, "n_tokens is 0; a sequence starts with at least one token")
    }
    try checkTokenCount(prompt.count, engine)
    return prompt
}

/// `kvc_seq_append`: `Engine.append`; `n_tokens` 0 is a no-op (still checked: engine and seq).
@c public func kvc_seq_append(_ e: OpaquePointer?, _ seq: UInt64, _ tokens: UnsafePointer<Int32>?, _ nTokens: Int)
    -> kvc_status
{
    status("kvc_seq_append", "seq \(seq), n_tokens \(UInt(bitPattern: nTokens))") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let decoded = try buffer(tokens, nTokens, "tokens", "n_tokens")
            try checkTokenCount(decoded.count, engine)
            try engine.append(seq, tokens: decoded)
        }
    }
}

/// `kvc_seq_fork`: `Engine.fork`.
@c public func kvc_seq_fork(_ e: OpaquePointer?, _ parent: UInt64, _ child: UInt64) -> kvc_status {
    status("kvc_seq_fork", "parent \(parent), child \(child)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in try engine.fork(parent: parent, child: child) }
    }
}

/// `kvc_seq_free`: `Engine.free`.
@c public func kvc_seq_free(_ e: OpaquePointer?, _ seq: UInt64) -> kvc_status {
    status("kvc_seq_free", "seq \(seq)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in try engine.free(seq) }
    }
}

/// `kvc_seq_abort`: `Engine.free(_:computedTokens:)`; a `computed_tokens` above PTRDIFF_MAX is
/// rejected as every `size_t` is (`size`), before the engine sees it negative.
@c public func kvc_seq_abort(_ e: OpaquePointer?, _ seq: UInt64, _ computedTokens: Int) -> kvc_status {
    status("kvc_seq_abort", "seq \(seq), computed_tokens \(UInt(bitPattern: computedTokens))") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            try engine.free(seq, computedTokens: try size(computedTokens, "computed_tokens"))
        }
    }
}

/// `kvc_seq_truncate`: `Engine.truncate`; `n_tokens` is checked as every `size_t` is.
@c public func kvc_seq_truncate(_ e: OpaquePointer?, _ seq: UInt64, _ nTokens: Int) -> kvc_status {
    status("kvc_seq_truncate", "seq \(seq), n_tokens \(UInt(bitPattern: nTokens))") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            try engine.truncate(seq, to: try size(nTokens, "n_tokens"))
        }
    }
}

/// `kvc_seq_schedule`: `Engine.schedule`.
@c public func kvc_seq_schedule(_ e: OpaquePointer?, _ seq: UInt64, _ tokens: Int) -> kvc_status {
    status("kvc_seq_schedule", "seq \(seq), tokens \(UInt(bitPattern: tokens))") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            try engine.schedule(seq, tokens: try size(tokens, "tokens"))
        }
    }
}

/// `kvc_seq_length`: `Engine.length`.
@c public func kvc_seq_length(_ e: OpaquePointer?, _ seq: UInt64, _ nTokens: UnsafeMutablePointer<Int>?) -> kvc_status {
    status("kvc_seq_length", "seq \(seq)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let nTokens = try required(nTokens, "n_tokens")
            nTokens.pointee = try engine.length(seq)
        }
    }
}

/// `kvc_seq_prefix_sources`: `Engine.prefixSources`; every output pointer is checked before
/// the engine is asked, and none is written unless all three are.
@c public func kvc_seq_prefix_sources(
    _ e: OpaquePointer?, _ seq: UInt64, _ memoryTokens: UnsafeMutablePointer<Int>?,
    _ diskTokens: UnsafeMutablePointer<Int>?, _ peerTokens: UnsafeMutablePointer<Int>?
) -> kvc_status {
    status("kvc_seq_prefix_sources", "seq \(seq)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let memoryTokens = try required(memoryTokens, "memory_tokens")
            let diskTokens = try required(diskTokens, "disk_tokens")
            let peerTokens = try required(peerTokens, "peer_tokens")
            let sources = try engine.prefixSources(of: seq)
            memoryTokens.pointee = sources.memoryTokens
            diskTokens.pointee = sources.diskTokens
            peerTokens.pointee = sources.peerTokens
        }
    }
}

/// No sequence holds more than `max_seq_tokens`, so a larger count is rejected before the
/// engine is handed a buffer of that many tokens (a garbage count would make it read far).
@inline(__always)
private func checkTokenCount(_ n: Int, _ engine: Engine) throws(KVError) {
    guard n <= engine.config.maxSeqTokens else {
        throw KVError(.invalidArgument, "n_tokens \(n) exceeds max_seq_tokens \(engine.config.maxSeqTokens)")
    }
}
