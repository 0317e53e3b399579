/// The one error type of the engine. Each case maps to one `kvc_status` code of
/// `include/kvcache.h`; the message says what was wrong in words a server operator can act on.
///
/// Invariant: an operation that throws has changed nothing observable (no sequence, block,
/// cached prefix or statistic differs from before the call), except that one that processed
/// earlier disk requests' completions before running out of memory has applied their
/// outcomes (kvcache.h, CONVENTIONS).
public struct KVError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The failure class; raw values are the C ABI's `kvc_status` codes.
    public enum Code: Int32, Sendable, CaseIterable {
        case invalidArgument = -1
        case notFound = -2
        case exists = -3
        case outOfMemory = -4
        case bufferTooSmall = -5
        case io = -6
        case unsupported = -7
        case `internal` = -8
    }

    /// What kind of failure this is.
    public let code: Code
    /// A human-readable explanation, naming the offending value.
    public let message: String

    /// Creates an error of `code` explained by `message`.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// "code: message", as the CLI prints an engine error.
    public var description: String { "\(code): \(message)" }

    static func invalid(_ message: String) -> KVError { KVError(.invalidArgument, message) }
    static func notFound(_ message: String) -> KVError { KVError(.notFound, message) }
    static func exists(_ message: String) -> KVError { KVError(.exists, message) }
    static func outOfMemory(_ message: String) -> KVError { KVError(.outOfMemory, message) }
}
