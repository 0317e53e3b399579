#if canImport(Glibc)
import Glibc
#endif
import KVCache

/// A single status line on stderr, rewritten in place, only when stderr is a terminal (so
/// logs and pipes get no control characters) and at most `maxUpdatesPerSecond` times a second.
struct ProgressLine {
    static let maxUpdatesPerSecond: UInt64 = 4

    let enabled: Bool
    private var lastUpdateNanoseconds: UInt64 = 0
    private var shown = false

    init(enabled: Bool = isatty(STDERR_FILENO) == 1) {
        self.enabled = enabled
    }

    /// Shows `text` unless the previous update was less than 1/`maxUpdatesPerSecond` s ago.
    /// `text` is built only when it will be shown.
    mutating func update(_ text: @autoclosure () -> String) {
        guard enabled else { return }
        let now = monotonicNanoseconds()
        guard now &- lastUpdateNanoseconds >= 1_000_000_000 / Self.maxUpdatesPerSecond else { return }
        lastUpdateNanoseconds = now
        // \r: back to column 0; ESC[2K: erase the line; the text never ends in a newline.
        write("\r\u{1B}[2K" + text())
        shown = true
    }

    /// Erases the line, so the report starts on a clean terminal.
    mutating func clear() {
        guard enabled, shown else { return }
        write("\r\u{1B}[2K")
        shown = false
    }

    private func write(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(STDERR_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
                if n <= 0 { if errno == EINTR { continue } else { return } }
                offset += n
            }
        }
    }
}
