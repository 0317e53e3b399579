import KVCache

/// `kvc_status`: 0 for success, a negative `KVError.Code` raw value for failure.
public typealias kvc_status = Int32

/// `KVC_OK`.
public let KVC_OK: kvc_status = 0

/// `KVC_ABI_VERSION` of this library; bumped only when an existing function or field
/// changes meaning.
let abiVersion: UInt32 = 1

/// The names `kvc_status_name` returns, as immortal C strings (allocated once, never freed).
/// Index `-status` for `KVC_OK` ... `KVC_ERR_INTERNAL`; the last entry is for unknown codes.
nonisolated(unsafe) private let statusNames: [UnsafePointer<CChar>] = {
    var names = ["KVC_OK"]
    for code in KVError.Code.allCases.sorted(by: { $0.rawValue > $1.rawValue }) {
        precondition(Int(-code.rawValue) == names.count, "kvc_status codes must be -1, -2, ... without gaps")
        names.append(statusName(code))
    }
    names.append("KVC_ERR_UNKNOWN")
    return names.map(immortalCString)
}()

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
    let unknown = statusNames.count - 1
    let index = status <= 0 && Int(-Int64(status)) < unknown ? Int(-Int64(status)) : unknown
    return statusNames[index]
}

/// `kvc_abi_version`: `KVC_ABI_VERSION` of this library.
@c public func kvc_abi_version() -> UInt32 {
    abiVersion
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
