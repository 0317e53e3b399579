import KVCache

/// `kvc_status`: 0 for success, a negative `KVError.Code` raw value for failure.
public typealias kvc_status = Int32

/// `KVC_OK`.
public let KVC_OK: kvc_status = 0

/// The names `kvc_status_name` returns, as immortal C strings (allocated once, on first use,
/// never freed): one per `KVError.Code`, plus `KVC_OK` and the name for unknown codes.
private struct StatusNames: @unchecked Sendable {
    let ok = immortalCString("KVC_OK")
    let unknown = immortalCString("KVC_ERR_UNKNOWN")
    let errors: [KVError.Code: UnsafePointer<CChar>] = Dictionary(
        uniqueKeysWithValues: KVError.Code.allCases.map { ($0, immortalCString(statusName($0))) })
}
private let statusNames = StatusNames()

/// A copy of `text` as a NUL-terminated C string that is never freed.
private func immortalCString(_ text: String) -> UnsafePointer<CChar> {
    let utf8 = Array(text.utf8CString)
    let p = UnsafeMutablePointer<CChar>.allocate(capacity: utf8.count)
    p.initialize(from: utf8, count: utf8.count)
    return UnsafePointer(p)
}

/// The header's name of `code`.
private func statusName(_ code: KVError.Code) -> String {
    switch code {
    case .invalidArgument: "KVC_ERR_INVALID_ARGUMENT"
    case .notFound: "KVC_ERR_NOT_FOUND"
    case .exists: "KVC_ERR_EXISTS"
    case .outOfMemory: "KVC_ERR_OUT_OF_MEMORY"
    case .bufferTooSmall: "KVC_ERR_BUFFER_TOO_SMALL"
    case .io: "KVC_ERR_IO"
    case .unsupported: "KVC_ERR_UNSUPPORTED"
    case .internal: "KVC_ERR_INTERNAL"
    }
}

/// `kvc_status_name`: a static name for `status`, "KVC_ERR_UNKNOWN" for unknown codes.
@c public func kvc_status_name(_ status: kvc_status) -> UnsafePointer<CChar> {
    if status == KVC_OK { return statusNames.ok }
    guard let code = KVError.Code(rawValue: status), let name = statusNames.errors[code] else { return statusNames.unknown }
    return name
}

/// `kvc_abi_version`: `KVC_ABI_VERSION` of this library.
@c public func kvc_abi_version() -> UInt32 {
    kvcacheABIVersion
}

/// Runs the body of export `function`: returns `KVC_OK`, or the code of the `KVError` it
/// threw after recording "function(context): message" as this thread's last error, where
/// `context` names the call's key arguments (evaluated only on failure).
@inline(__always)
func status(_ function: StaticString, _ context: @autoclosure () -> String = "", _ body: () throws(KVError) -> Void)
    -> kvc_status
{
    do {
        try body()
        return KVC_OK
    } catch {
        let arguments = context()
        LastError.set(arguments.isEmpty ? "\(function): \(error.message)" : "\(function)(\(arguments)): \(error.message)")
        return error.code.rawValue
    }
}
