#if canImport(Glibc)
import Glibc
#endif
import KVCache

// Checks every export runs on its C arguments before it touches an engine, so that bad input
// becomes KVC_ERR_INVALID_ARGUMENT instead of a crash. They throw the `KVError` that
// `status(_:_:)` turns into the status and this thread's last error.

/// Runs `body` with the object behind `handle`, a pointer `Unmanaged.passRetained` made
/// (`kvc_engine_create`, `kvc_router_create`), borrowed: the handle's own reference keeps it
/// alive (the caller must not destroy it during the call), so no retain or release is paid per
/// call (`takeUnretainedValue` would return it owned: one of each). NULL is `invalidArgument`
/// naming `name`; any other pointer must be a live handle. Every export reaches its engine or
/// router through this.
@inline(__always)
func borrowing<Object: AnyObject, T>(
    _ handle: OpaquePointer?, _ name: StaticString, _ body: (Object) throws(KVError) -> T
) throws(KVError) -> T {
    guard let handle else { throw KVError(.invalidArgument, "\(name) is NULL") }
    // `_withUnsafeGuaranteedRef` rethrows untyped: the `Result` carries the `KVError` through.
    return try Unmanaged<Object>.fromOpaque(UnsafeRawPointer(handle))._withUnsafeGuaranteedRef { object in
        Result { () throws(KVError) in try body(object) }
    }.get()
}

/// `borrowing` the engine behind a `kvc_engine *`; `invalidArgument` naming the creating
/// process in a forked child that inherited it (`Engine.isInherited`: one load and compare).
@inline(__always)
func withEngine<T>(_ handle: OpaquePointer?, _ body: (Engine) throws(KVError) -> T) throws(KVError) -> T {
    try borrowing(handle, "engine") { (engine: Engine) throws(KVError) in
        if engine.isInherited {
            throw KVError(.invalidArgument, "engine of process \(engine.creatorPID), inherited through fork(): only kvc_engine_destroy may be called on it here")
        }
        return try body(engine)
    }
}

/// `pointer`, or `invalidArgument` naming the parameter when it is NULL.
@inline(__always)
func required<P>(_ pointer: P?, _ name: StaticString) throws(KVError) -> P {
    guard let pointer else { throw KVError(.invalidArgument, "\(name) is NULL") }
    return pointer
}

/// A C `size_t` count (imported as `Int`), or `invalidArgument` when it exceeds PTRDIFF_MAX
/// (it arrives negative): no real array is that large, so it is garbage or an underflow.
@inline(__always)
func size(_ value: Int, _ name: StaticString) throws(KVError) -> Int {
    guard value >= 0 else {
        throw KVError(.invalidArgument, "\(name) \(UInt(bitPattern: value)) is larger than PTRDIFF_MAX")
    }
    return value
}

/// A C count of elements of `stride` bytes (`size`), or `invalidArgument` when their bytes
/// would pass PTRDIFF_MAX (count x stride overflows): no array is that large, and offsets into
/// it would wrap.
@inline(__always)
func count(_ value: Int, stride: Int, _ name: StaticString) throws(KVError) -> Int {
    let n = try size(value, name)
    guard n <= Int.max / stride else {
        throw KVError(.invalidArgument, "\(name) \(n) is larger than PTRDIFF_MAX / \(stride): the bytes of that many "
                      + "\(stride)-byte elements would overflow")
    }
    return n
}

/// A view of the C array `start[0 ..< count]` (no copy); `start` may be NULL only when `count` is 0.
@inline(__always)
func buffer<T>(_ start: UnsafePointer<T>?, _ count: Int, _ name: StaticString, _ countName: StaticString)
    throws(KVError) -> UnsafeBufferPointer<T>
{
    let n = try KVCacheABI.count(count, stride: MemoryLayout<T>.stride, countName)
    if n == 0 { return UnsafeBufferPointer(start: nil, count: 0) }
    guard let start else { throw KVError(.invalidArgument, "\(name) is NULL but \(countName) is \(n)") }
    return UnsafeBufferPointer(start: start, count: n)
}

/// A view of the C output array `start[0 ..< capacity]` (no copy); `start` may be NULL only when `capacity` is 0.
@inline(__always)
func buffer<T>(_ start: UnsafeMutablePointer<T>?, _ capacity: Int, _ name: StaticString, _ capacityName: StaticString)
    throws(KVError) -> UnsafeMutableBufferPointer<T>
{
    let n = try count(capacity, stride: MemoryLayout<T>.stride, capacityName)
    if n == 0 { return UnsafeMutableBufferPointer(start: nil, count: 0) }
    guard let start else { throw KVError(.invalidArgument, "\(name) is NULL but \(capacityName) is \(n)") }
    return UnsafeMutableBufferPointer(start: start, count: n)
}

/// The `struct_size` of a versioned C struct (`kvc_config`, `kvc_stats`), checked against the
/// smallest size the ABI accepts and `structSizeMax`.
@inline(__always)
func structSize(_ raw: UnsafeRawPointer, minimum: Int, _ name: StaticString) throws(KVError) -> Int {
    let size = Int(raw.loadUnaligned(as: UInt32.self))
    guard size >= minimum else {
        throw KVError(.invalidArgument,
                      "\(name).struct_size \(size) is smaller than the minimum \(minimum); set it to sizeof(\(name))")
    }
    guard size <= structSizeMax else {
        throw KVError(.invalidArgument,
                      "\(name).struct_size \(size) is larger than \(structSizeMax); is the struct initialised?")
    }
    return size
}

/// Refuses (`unsupported`) a non-zero byte of a versioned C struct where this library has no
/// field: in `padding` (a later header may put a field there without changing the struct's
/// size, as `index_on_schedule` did) and from `known` (the end of the last field this library
/// reads) up to `size`. A newer caller's setting there cannot be honoured; a struct not started
/// from its `_init` may hold garbage there. O(size - known + padding), no heap allocation
/// (`kvc_router_report` runs it per instance per step).
func rejectUnknownBytes(_ raw: UnsafeRawPointer, size: Int, known: Int, padding: [Range<Int>] = [], _ name: StaticString)
    throws(KVError)
{
    func rejectNonZero(_ range: Range<Int>) throws(KVError) {
        for offset in range where offset < size && raw.load(fromByteOffset: offset, as: UInt8.self) != 0 {
            throw KVError(.unsupported,
                          "\(name) byte \(offset) is not 0, but this library (ABI \(kvcacheABIVersion)) has no field there: it cannot "
                          + "honour a newer field (or the struct was not started from its _init, which zeroes it)")
        }
    }
    for range in padding { try rejectNonZero(range) }
    try rejectNonZero(known..<max(size, known))
}

/// The `_init_size` of a versioned C struct: `writeDefaults` fills this version's `ownSize`
/// bytes (padding zeroed) in scratch, the first `size` of them are copied to `cfg`, bytes past
/// `ownSize` up to `size` zeroed (0 is every later field's "as before"), none past `size`
/// written, and `struct_size` (offset 0) set to `size`. NULL, or `size` outside
/// `minimum...structSizeMax`: nothing written. O(size).
func initialiseVersionedStruct(_ cfg: UnsafeMutableRawPointer?, size: Int, minimum: Int, ownSize: Int,
                               writeDefaults: (UnsafeMutableRawPointer) -> Void) {
    guard let cfg, size >= minimum, size <= structSizeMax else { return }
    withUnsafeTemporaryAllocation(byteCount: ownSize, alignment: 8) { defaults in
        writeDefaults(defaults.baseAddress!)
        cfg.copyMemory(from: defaults.baseAddress!, byteCount: min(size, ownSize))
    }
    if size > ownSize { memset(cfg + ownSize, 0, size - ownSize) }
    cfg.storeBytes(of: UInt32(size), toByteOffset: 0, as: UInt32.self)
}

/// `KVC_STRUCT_SIZE_MAX`: a larger `struct_size` is taken to be garbage, not a newer struct.
let structSizeMax = 4096
