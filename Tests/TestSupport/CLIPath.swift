import Foundation

/// The built `kvcache-cli` beside this test binary (`swift build --product kvcache-cli` puts it
/// there), for tests that need a process of their own to run, signal or kill.
public func cliPath() -> String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("kvcache-cli").path
}
