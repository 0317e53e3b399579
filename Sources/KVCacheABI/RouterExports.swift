#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import KVCache
import KVRouter

// The @c exports of the router section of include/kvcache.h: thin wrappers over
// `KVRouter.Router` that check every C argument first, hold the handle's mutex for the call
// (the router itself is single-threaded), and turn `KVError` into a status and a message.

/// Byte offsets of `kvc_router_config`.
enum RouterConfigLayout {
    static let policy = 4
    static let keyBlocks = 8
    static let virtualNodes = 12
    static let ttftSLOMilliseconds = 16
    static let prefillMillisecondsPerToken = 24
    static let blockTokens = 32
    static let view = 36
    /// `sizeof(kvc_router_config)` of this version.
    static let size = 40
    /// `sizeof(kvc_router_config)` of the first version, which the symbol
    /// `kvc_router_config_init` writes.
    static let firstSize = 40
    /// `KVC_ROUTER_CONFIG_MIN_SIZE`: through `prefill_ms_per_token`.
    static let minimumSize = 32
}

/// Byte offsets of `kvc_instance_load`.
enum InstanceLoadLayout {
    static let pendingPrefillTokens = 8
    static let runningBlocks = 16
    static let freeBlocks = 24
    static let activeRequests = 32
    /// A 40-byte struct of the previous version ends before it (0 waiting).
    static let waitingRequests = 40
    /// `sizeof(kvc_instance_load)` of this version.
    static let size = 48
    /// `KVC_INSTANCE_LOAD_MIN_SIZE`: through `free_blocks`.
    static let minimumSize = 32
}

/// The object behind a `kvc_router *`: the router and the mutex serialising calls on it.
final class RouterHandle {
    let router: Router
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init(_ router: Router) {
        self.router = router
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always) func locked<T>(_ body: (Router) throws(KVError) -> T) throws(KVError) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(router)
    }
}

/// `borrowing` the handle behind a `kvc_router *`.
@inline(__always)
func withRouterHandle<T>(_ handle: OpaquePointer?, _ body: (RouterHandle) throws(KVError) -> T) throws(KVError) -> T {
    try borrowing(handle, "router", body)
}

/// `kvc_router_config_init_size`: writes the defaults of this version's `kvc_router_config`
/// to the first `size` bytes at `cfg` (fields this version does not know zeroed), none past
/// them, and sets `struct_size` to `size`. NULL, or `size` outside
/// `KVC_ROUTER_CONFIG_MIN_SIZE...KVC_STRUCT_SIZE_MAX`: nothing written. The header's
/// `kvc_router_config_init(cfg)` macro calls it with the caller's `sizeof(kvc_router_config)`.
@c public func kvc_router_config_init_size(_ cfg: UnsafeMutableRawPointer?, _ size: Int) {
    initialiseVersionedStruct(cfg, size: size, minimum: RouterConfigLayout.minimumSize, ownSize: RouterConfigLayout.size,
                              writeDefaults: writeRouterDefaults(into:))
}

/// The symbol `kvc_router_config_init`, which binaries built before the sized initialiser
/// call: writes exactly the first version's 40 bytes (`struct_size` 40), never past such a
/// caller's struct. NULL: no-op.
@c public func kvc_router_config_init(_ cfg: UnsafeMutableRawPointer?) {
    kvc_router_config_init_size(cfg, RouterConfigLayout.firstSize)
}

/// Writes the `RouterConfig` defaults of every field of this version into
/// `RouterConfigLayout.size` bytes at `cfg`, `struct_size` unset.
private func writeRouterDefaults(into cfg: UnsafeMutableRawPointer) {
    memset(cfg, 0, RouterConfigLayout.size)
    let d = RouterConfig()
    cfg.storeBytes(of: d.policy.rawValue, toByteOffset: RouterConfigLayout.policy, as: UInt32.self)
    cfg.storeBytes(of: UInt32(d.keyBlocks), toByteOffset: RouterConfigLayout.keyBlocks, as: UInt32.self)
    cfg.storeBytes(of: UInt32(d.virtualNodes), toByteOffset: RouterConfigLayout.virtualNodes, as: UInt32.self)
    cfg.storeBytes(of: d.ttftSLOMilliseconds, toByteOffset: RouterConfigLayout.ttftSLOMilliseconds, as: Double.self)
    cfg.storeBytes(of: d.prefillMillisecondsPerToken, toByteOffset: RouterConfigLayout.prefillMillisecondsPerToken, as: Double.self)
    cfg.storeBytes(of: UInt32(d.blockTokens), toByteOffset: RouterConfigLayout.blockTokens, as: UInt32.self)
}

extension RouterConfig {
    /// Decodes the caller's `kvc_router_config` with the same struct_size rules as `kvc_config`.
    init(cStruct raw: UnsafeRawPointer) throws(KVError) {
        let size = try structSize(raw, minimum: RouterConfigLayout.minimumSize, "kvc_router_config")
        self.init()
        let rawPolicy = raw.loadUnaligned(fromByteOffset: RouterConfigLayout.policy, as: UInt32.self)
        guard let policy = PolicyKind(rawValue: rawPolicy) else {
            throw KVError(.invalidArgument, "policy \(rawPolicy) is not a KVC_ROUTER_* policy (0...\(PolicyKind.allCases.count - 1))")
        }
        self.policy = policy
        keyBlocks = Int(raw.loadUnaligned(fromByteOffset: RouterConfigLayout.keyBlocks, as: UInt32.self))
        virtualNodes = Int(raw.loadUnaligned(fromByteOffset: RouterConfigLayout.virtualNodes, as: UInt32.self))
        ttftSLOMilliseconds = raw.loadUnaligned(fromByteOffset: RouterConfigLayout.ttftSLOMilliseconds, as: Double.self)
        prefillMillisecondsPerToken = raw.loadUnaligned(fromByteOffset: RouterConfigLayout.prefillMillisecondsPerToken, as: Double.self)
        if size >= RouterConfigLayout.blockTokens + 4 {
            blockTokens = Int(raw.loadUnaligned(fromByteOffset: RouterConfigLayout.blockTokens, as: UInt32.self))
        }
        if size >= RouterConfigLayout.view + 4 {
            switch raw.loadUnaligned(fromByteOffset: RouterConfigLayout.view, as: UInt32.self) {
            case 0: view = nil
            case 1: view = .exact
            case 2: view = .approximate
            case let v: throw KVError(.invalidArgument, "view \(v) is not KVC_ROUTER_VIEW_DEFAULT, _EXACT or _APPROXIMATE")
            }
        }
        try rejectUnknownBytes(raw, size: size, known: RouterConfigLayout.size, "kvc_router_config")
    }
}

/// `kvc_router_create`: decodes `*cfg`, creates the router and stores a retained handle in
/// `*out` (NULL on failure).
@c public func kvc_router_create(_ cfg: UnsafeRawPointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> kvc_status {
    status("kvc_router_create") { () throws(KVError) in
        let out = try required(out, "out")
        out.pointee = nil
        let router = try Router(try RouterConfig(cStruct: try required(cfg, "cfg")))
        out.pointee = OpaquePointer(Unmanaged.passRetained(RouterHandle(router)).toOpaque())
    }
}

/// `kvc_router_destroy`: releases the handle. NULL: no-op.
@c public func kvc_router_destroy(_ r: OpaquePointer?) {
    guard let r else { return }
    Unmanaged<RouterHandle>.fromOpaque(UnsafeRawPointer(r)).release()
}

/// `kvc_router_add_instance`: `Router.addInstance`.
@c public func kvc_router_add_instance(_ r: OpaquePointer?, _ instance: UInt32, _ weight: Double) -> kvc_status {
    status("kvc_router_add_instance", "instance \(instance)") { () throws(KVError) in
        try withRouterHandle(r) { (handle) throws(KVError) in
            try handle.locked { (router) throws(KVError) in try router.addInstance(instance, weight: weight) }
        }
    }
}

/// `kvc_router_remove_instance`: `Router.removeInstance`.
@c public func kvc_router_remove_instance(_ r: OpaquePointer?, _ instance: UInt32) -> kvc_status {
    status("kvc_router_remove_instance", "instance \(instance)") { () throws(KVError) in
        try withRouterHandle(r) { (handle) throws(KVError) in
            try handle.locked { (router) throws(KVError) in try router.removeInstance(instance) }
        }
    }
}

/// `kvc_router_route`: `Router.route`; `*instance` is written only on success.
@c public func kvc_router_route(
    _ r: OpaquePointer?, _ blockHashes: UnsafePointer<UInt64>?, _ nBlocks: Int, _ nTokens: Int,
    _ instance: UnsafeMutablePointer<UInt32>?
) -> kvc_status {
    status("kvc_router_route") { () throws(KVError) in
        try withRouterHandle(r) { (handle) throws(KVError) in
            let out = try required(instance, "instance")
            let hashes = try buffer(blockHashes, nBlocks, "block_hashes", "n_blocks")
            let tokens = try size(nTokens, "n_tokens")
            out.pointee = try handle.locked { (router) throws(KVError) in try router.route(hashes, tokens: tokens) }
        }
    }
}

/// `kvc_router_finish`: `Router.finish`, which checks the instance and the hashes.
@c public func kvc_router_finish(
    _ r: OpaquePointer?, _ instance: UInt32, _ blockHashes: UnsafePointer<UInt64>?, _ nBlocks: Int
) -> kvc_status {
    status("kvc_router_finish", "instance \(instance)") { () throws(KVError) in
        try withRouterHandle(r) { (handle) throws(KVError) in
            let hashes = try buffer(blockHashes, nBlocks, "block_hashes", "n_blocks")
            try handle.locked { (router) throws(KVError) in try router.finish(instance, hashes: hashes) }
        }
    }
}

/// `kvc_router_report`: decodes `*load` (struct_size rules as `kvc_stats`, read-only) and
/// replaces the instance's load.
@c public func kvc_router_report(_ r: OpaquePointer?, _ instance: UInt32, _ load: UnsafeRawPointer?) -> kvc_status {
    status("kvc_router_report", "instance \(instance)") { () throws(KVError) in
        try withRouterHandle(r) { (handle) throws(KVError) in
            let raw = try required(load, "load")
            let size = try structSize(raw, minimum: InstanceLoadLayout.minimumSize, "kvc_instance_load")
            var l = InstanceLoad()
            l.pendingPrefillTokens = raw.loadUnaligned(fromByteOffset: InstanceLoadLayout.pendingPrefillTokens, as: UInt64.self)
            l.runningBlocks = raw.loadUnaligned(fromByteOffset: InstanceLoadLayout.runningBlocks, as: UInt64.self)
            l.freeBlocks = raw.loadUnaligned(fromByteOffset: InstanceLoadLayout.freeBlocks, as: UInt64.self)
            if size >= InstanceLoadLayout.activeRequests + 8 {
                l.activeRequests = raw.loadUnaligned(fromByteOffset: InstanceLoadLayout.activeRequests, as: UInt64.self)
            }
            if size >= InstanceLoadLayout.waitingRequests + 8 {
                l.waitingRequests = raw.loadUnaligned(fromByteOffset: InstanceLoadLayout.waitingRequests, as: UInt64.self)
            }
            try rejectUnknownBytes(raw, size: size, known: InstanceLoadLayout.size, "kvc_instance_load")
            try handle.locked { (router) throws(KVError) in try router.report(instance, load: l) }
        }
    }
}

/// The caller's `nEvents` events at `events` as `EventPieces` read in place when aligned
/// (`withEventBatches`), after checking the count (its bytes within PTRDIFF_MAX), the pointer
/// and every event's kind, so that a refused batch is refused before the router's lock.
private func checkedEvents(_ events: UnsafeRawPointer?, _ nEvents: Int) throws(KVError) -> (count: Int, pieces: EventPieces) {
    let n = try count(nEvents, stride: EventLayout.size, "n_events")
    guard n == 0 || events != nil else { throw KVError(.invalidArgument, "events is NULL but n_events is \(n)") }
    guard let events, n > 0 else { return (0, { _, _ in }) }
    for i in 0..<n {
        let kind = events.loadUnaligned(fromByteOffset: i * EventLayout.size + EventLayout.kind, as: UInt32.self)
        guard KVEvent.Kind(rawValue: kind) != nil else {
            throw KVError(.invalidArgument, "events[\(i)].kind \(kind) is not a KVC_EVENT_* kind")
        }
    }
    return (n, { from, body in withEventBatches(events + from * EventLayout.size, n - from, body) })
}

/// `kvc_router_observe_events`: checks the events (`checkedEvents`), and under the mutex the
/// view's room (`Router.checkRoom`), first (so a refused batch changes nothing), then applies
/// them in order to the instance's exact view, read where they are when aligned: no conversion.
@c public func kvc_router_observe_events(
    _ r: OpaquePointer?, _ instance: UInt32, _ events: UnsafeRawPointer?, _ nEvents: Int
) -> kvc_status {
    status("kvc_router_observe_events", "instance \(instance)") { () throws(KVError) in
        try withRouterHandle(r) { (handle) throws(KVError) in
            let (_, pieces) = try checkedEvents(events, nEvents)
            try handle.locked { (router) throws(KVError) in
                let slot = try router.liveSlot(instance)
                try router.checkRoom(slot: slot, pieces)
                pieces(0) { router.observe(slot: slot, events: $0) }
            }
        }
    }
}

/// `kvc_router_observe_events_seq`: `Router.observe(slot:epoch:firstSequence:count:_:)` on the
/// checked events (`checkedEvents`).
@c public func kvc_router_observe_events_seq(
    _ r: OpaquePointer?, _ instance: UInt32, _ epoch: UInt64, _ firstSeq: UInt64, _ events: UnsafeRawPointer?, _ nEvents: Int
) -> kvc_status {
    status("kvc_router_observe_events_seq", "instance \(instance), first_seq \(firstSeq)") { () throws(KVError) in
        try withRouterHandle(r) { (handle) throws(KVError) in
            let (n, pieces) = try checkedEvents(events, nEvents)
            try handle.locked { (router) throws(KVError) in
                try router.observe(slot: router.liveSlot(instance), epoch: epoch, firstSequence: firstSeq, count: n, pieces)
            }
        }
    }
}

/// `kvc_router_resync_instance`: `Router.resync(slot:epoch:nextSequence:count:_:)` on the
/// checked events (`checkedEvents`).
@c public func kvc_router_resync_instance(
    _ r: OpaquePointer?, _ instance: UInt32, _ epoch: UInt64, _ nextSeq: UInt64, _ events: UnsafeRawPointer?, _ nEvents: Int
) -> kvc_status {
    status("kvc_router_resync_instance", "instance \(instance), next_seq \(nextSeq)") { () throws(KVError) in
        try withRouterHandle(r) { (handle) throws(KVError) in
            let (n, pieces) = try checkedEvents(events, nEvents)
            try handle.locked { (router) throws(KVError) in
                try router.resync(slot: router.liveSlot(instance), epoch: epoch, nextSequence: nextSeq, count: n, pieces)
            }
        }
    }
}

/// `kvc_router_observe_prefill`: `Router.observePrefill`, which checks the arguments.
@c public func kvc_router_observe_prefill(_ r: OpaquePointer?, _ nTokens: Int, _ milliseconds: Double) -> kvc_status {
    status("kvc_router_observe_prefill") { () throws(KVError) in
        try withRouterHandle(r) { (handle) throws(KVError) in
            let tokens = try size(nTokens, "n_tokens")
            try handle.locked { (router) throws(KVError) in try router.observePrefill(tokens: tokens, milliseconds: milliseconds) }
        }
    }
}
