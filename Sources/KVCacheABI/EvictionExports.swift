import KVCache

// Token eviction through the C ABI: the eviction fields of kvc_config and the kvc_seq_*
// calls of include/kvcache.h ("Token eviction"). Thin: every check that needs no engine is
// done here, the rest by `Engine` (Engine+Compaction.swift).

extension EvictionConfig {
    /// Writes these settings into the eviction fields of a `kvc_config`.
    func store(into cfg: UnsafeMutableRawPointer) {
        func u32(_ value: Int, _ offset: Int) { cfg.storeBytes(of: UInt32(value), toByteOffset: offset, as: UInt32.self) }
        u32(Int(policy.rawValue), ConfigLayout.evictionPolicy)
        u32(perHead ? 1 : 0, ConfigLayout.evictionPerHead)
        u32(sinkTokens, ConfigLayout.sinkTokens)
        u32(recentTokens, ConfigLayout.recentTokens)
        cfg.storeBytes(of: recentRatio, toByteOffset: ConfigLayout.recentRatio, as: Float.self)
        u32(normalizedScores ? 1 : 0, ConfigLayout.normalizedScores)
        u32(episodes, ConfigLayout.episodes)
        u32(embeddingDim, ConfigLayout.embeddingDim)
        cfg.storeBytes(of: seed, toByteOffset: ConfigLayout.episodeSeed, as: UInt64.self)
        u32(adaptiveBudgets ? 1 : 0, ConfigLayout.adaptiveBudgets)
    }

    /// Reads the eviction fields a `kvc_config` of `size` bytes has (each one wholly covered;
    /// the others keep their defaults). Throws `invalidArgument` for an unknown policy or a
    /// flag other than 0 or 1; ranges are checked by `validate()`.
    mutating func load(from raw: UnsafeRawPointer, size: Int) throws(KVError) {
        func has(_ offset: Int, _ width: Int) -> Bool { offset + width <= size }
        func u32(_ offset: Int) -> UInt32 { raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }
        func flag(_ offset: Int, _ name: String) throws(KVError) -> Bool? {
            guard has(offset, 4) else { return nil }
            let v = u32(offset)
            guard v <= 1 else { throw KVError(.invalidArgument, "\(name) \(v) is neither 0 nor 1") }
            return v == 1
        }
        if has(ConfigLayout.evictionPolicy, 4) {
            let v = u32(ConfigLayout.evictionPolicy)
            guard let kind = EvictionPolicyKind(rawValue: v) else {
                throw KVError(.invalidArgument, "eviction_policy \(v) is not a KVC_EVICTION_* value (0...4)")
            }
            policy = kind
        }
        if let f = try flag(ConfigLayout.evictionPerHead, "eviction_per_head") { perHead = f }
        if has(ConfigLayout.sinkTokens, 4) { sinkTokens = Int(u32(ConfigLayout.sinkTokens)) }
        if has(ConfigLayout.recentTokens, 4) { recentTokens = Int(u32(ConfigLayout.recentTokens)) }
        if has(ConfigLayout.recentRatio, 4) { recentRatio = raw.loadUnaligned(fromByteOffset: ConfigLayout.recentRatio, as: Float.self) }
        if let f = try flag(ConfigLayout.normalizedScores, "normalized_scores") { normalizedScores = f }
        if has(ConfigLayout.episodes, 4) { episodes = Int(u32(ConfigLayout.episodes)) }
        if has(ConfigLayout.embeddingDim, 4) { embeddingDim = Int(u32(ConfigLayout.embeddingDim)) }
        if has(ConfigLayout.episodeSeed, 8) { seed = raw.loadUnaligned(fromByteOffset: ConfigLayout.episodeSeed, as: UInt64.self) }
        if let f = try flag(ConfigLayout.adaptiveBudgets, "adaptive_budgets") { adaptiveBudgets = f }
    }
}

/// `kvc_seq_observe`: `Engine.observe`; the ABI checks the pointer and counts first.
@c public func kvc_seq_observe(
    _ e: OpaquePointer?, _ seq: UInt64, _ layer: UInt32, _ scores: UnsafePointer<Float>?, _ nHeads: UInt32, _ nTokens: Int
) -> kvc_status {
    status("kvc_seq_observe", "seq \(seq), layer \(layer), n_heads \(nHeads), n_tokens \(UInt(bitPattern: nTokens))") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let n = try size(nTokens, "n_tokens")
            guard n <= engine.config.maxSeqTokens else {
                throw KVError(.invalidArgument, "n_tokens \(n) exceeds max_seq_tokens \(engine.config.maxSeqTokens)")
            }
            guard Int(nHeads) == engine.config.numKVHeads else {
                throw KVError(.invalidArgument, "n_heads \(nHeads) is not num_kv_heads \(engine.config.numKVHeads)")
            }
            let values = try buffer(scores, Int(nHeads) * n, "scores", "n_heads * n_tokens")
            guard let base = values.baseAddress else {
                _ = try engine.layerLength(seq, layer: Int(layer))  // still checks seq and layer
                return
            }
            try engine.observe(seq, layer: Int(layer), scores: base, nHeads: Int(nHeads), nTokens: n)
        }
    }
}

/// `kvc_seq_compact`: `Engine.compact`.
@c public func kvc_seq_compact(_ e: OpaquePointer?, _ seq: UInt64, _ budgetTokens: Int) -> kvc_status {
    status("kvc_seq_compact", "seq \(seq), budget_tokens \(UInt(bitPattern: budgetTokens))") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let budget = try size(budgetTokens, "budget_tokens")
            try engine.compact(seq, budgetTokens: budget)
        }
    }
}

/// `kvc_seq_positions`: `Engine.positions`; BUFFER_TOO_SMALL with the full count when
/// `capacity` is short (the prefix that fits is written).
@c public func kvc_seq_positions(
    _ e: OpaquePointer?, _ seq: UInt64, _ layer: UInt32, _ positions: UnsafeMutablePointer<Int32>?, _ capacity: Int,
    _ n: UnsafeMutablePointer<Int>?
) -> kvc_status {
    var total = 0
    let rc = status("kvc_seq_positions", "seq \(seq), layer \(layer), capacity \(UInt(bitPattern: capacity))") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let n = try required(n, "n")
            let out = try buffer(positions, capacity, "positions", "capacity")
            total = try engine.positions(seq, layer: Int(layer), into: out)
            n.pointee = total
            if total > out.count {
                throw KVError(.bufferTooSmall, "\(total) positions, capacity \(out.count)")
            }
        }
    }
    return rc
}

/// `kvc_seq_layer_length`: `Engine.layerLength`.
@c public func kvc_seq_layer_length(_ e: OpaquePointer?, _ seq: UInt64, _ layer: UInt32, _ nTokens: UnsafeMutablePointer<Int>?)
    -> kvc_status
{
    status("kvc_seq_layer_length", "seq \(seq), layer \(layer)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let out = try required(nTokens, "n_tokens")
            out.pointee = try engine.layerLength(seq, layer: Int(layer))
        }
    }
}

/// `kvc_seq_add_segment`: `Engine.addSegment`.
@c public func kvc_seq_add_segment(
    _ e: OpaquePointer?, _ seq: UInt64, _ start: Int, _ end: Int, _ embedding: UnsafePointer<Float>?, _ dim: UInt32
) -> kvc_status {
    status("kvc_seq_add_segment", "seq \(seq), start \(UInt(bitPattern: start)), end \(UInt(bitPattern: end)), dim \(dim)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let s = try size(start, "start"), t = try size(end, "end")
            let values = try buffer(embedding, Int(dim), "embedding", "dim")
            try engine.addSegment(seq, start: s, end: t, embedding: values)
        }
    }
}

/// `kvc_seq_focus`: `Engine.focus`.
@c public func kvc_seq_focus(
    _ e: OpaquePointer?, _ seq: UInt64, _ query: UnsafePointer<Float>?, _ dim: UInt32, _ episode: UnsafeMutablePointer<UInt32>?
) -> kvc_status {
    status("kvc_seq_focus", "seq \(seq), dim \(dim)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let out = try required(episode, "episode")
            let values = try buffer(query, Int(dim), "query_embedding", "dim")
            out.pointee = UInt32(try engine.focus(seq, query: values))
        }
    }
}

/// `kvc_seq_set_eviction`: `Engine.setEviction` with the engine's parameters and this
/// policy and granularity.
@c public func kvc_seq_set_eviction(_ e: OpaquePointer?, _ seq: UInt64, _ policy: UInt32, _ perHead: UInt32) -> kvc_status {
    status("kvc_seq_set_eviction", "seq \(seq), policy \(policy), per_head \(perHead)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            guard let kind = EvictionPolicyKind(rawValue: policy) else {
                throw KVError(.invalidArgument, "policy \(policy) is not a KVC_EVICTION_* value (0...4)")
            }
            guard perHead <= 1 else { throw KVError(.invalidArgument, "per_head \(perHead) is neither 0 nor 1") }
            var config = engine.config.eviction
            config.policy = kind
            config.perHead = perHead == 1
            try engine.setEviction(seq, config)
        }
    }
}

/// `kvc_seq_set_layer_sensitivity`: `Engine.setLayerSensitivity`.
@c public func kvc_seq_set_layer_sensitivity(
    _ e: OpaquePointer?, _ seq: UInt64, _ sensitivity: UnsafePointer<Float>?, _ nLayers: UInt32
) -> kvc_status {
    status("kvc_seq_set_layer_sensitivity", "seq \(seq), n_layers \(nLayers)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let values = try buffer(sensitivity, Int(nLayers), "sensitivity", "n_layers")
            try engine.setLayerSensitivity(seq, values)
        }
    }
}
