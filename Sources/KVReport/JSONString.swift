import Foundation

/// `text` as a JSON string literal: quoted, with `"`, `\` and control characters escaped (by
/// `JSONEncoder`, which cannot fail on a String), slashes left as they are. For the reports
/// that write their JSON by hand (a file name may hold any of these). O(text).
public func jsonString(_ text: String) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = .withoutEscapingSlashes
    return String(decoding: try! encoder.encode(text), as: UTF8.self)
}
