import Foundation

/// The built `kvcache-cli` beside this test binary (`swift build --product kvcache-cli` puts it
/// there), for tests that need a process of their own to run, signal or kill.
public func cliPath() -> String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("kvcache-cli").path
}

/// Which of the CLI's output streams `runCLI` returns (the other goes to /dev/null).
public enum CLIStream: Sendable { case output, error }

/// Runs the built CLI (`cliPath`) with `arguments` to its exit; its exit status and the text it
/// wrote to `stream`. Throws when the CLI is not built or cannot start. For short outputs: the
/// stream is read to its end before the exit is awaited.
public func runCLI(_ arguments: [String], reading stream: CLIStream) throws -> (status: Int32, text: String) {
    let cli = cliPath()
    guard FileManager.default.isExecutableFile(atPath: cli) else {
        throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: cli, NSLocalizedDescriptionKey: "build kvcache-cli first: \(cli)"])
    }
    let child = Process()
    child.executableURL = URL(fileURLWithPath: cli)
    child.arguments = arguments
    let pipe = Pipe()
    child.standardOutput = stream == .output ? pipe : FileHandle.nullDevice
    child.standardError = stream == .error ? pipe : FileHandle.nullDevice
    try child.run()
    let text = pipe.fileHandleForReading.readDataToEndOfFile()
    child.waitUntilExit()
    return (child.terminationStatus, String(decoding: text, as: UTF8.self))
}
