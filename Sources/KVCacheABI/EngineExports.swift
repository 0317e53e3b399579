import KVCache

/// `kvc_engine_create`: decodes `*cfg`, creates the engine and stores a retained
/// `Unmanaged<Engine>` as the handle in `*out` (NULL on failure).
@c public func kvc_engine_create(_ cfg: UnsafeRawPointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> kvc_status {
    status("kvc_engine_create") { () throws(KVError) in
        let out = try required(out, "out")
        out.pointee = nil
        let config = try EngineConfig(cStruct: try required(cfg, "cfg"))
        let engine = try Engine(config)
        out.pointee = OpaquePointer(Unmanaged.passRetained(engine).toOpaque())
    }
}

/// `kvc_engine_destroy`: releases the handle's reference; the engine goes with it. NULL: no-op.
@c public func kvc_engine_destroy(_ e: OpaquePointer?) {
    guard let e else { return }
    Unmanaged<Engine>.fromOpaque(UnsafeRawPointer(e)).release()
}

/// `kvc_engine_reserve`: `Engine.reserve(bytes:)`; `committed_bytes` may be NULL.
@c public func kvc_engine_reserve(_ e: OpaquePointer?, _ bytes: UInt64, _ committedBytes: UnsafeMutablePointer<UInt64>?) -> kvc_status {
    status("kvc_engine_reserve") { () throws(KVError) in
        let committed = try withEngine(e) { (engine) throws(KVError) in try engine.reserve(bytes: bytes) }
        committedBytes?.pointee = committed
    }
}

/// `kvc_engine_trim`: `Engine.trim()`.
@c public func kvc_engine_trim(_ e: OpaquePointer?) -> kvc_status {
    status("kvc_engine_trim") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in try engine.trim() }
    }
}
