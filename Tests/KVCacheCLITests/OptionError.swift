import ArgumentParser

/// The message ArgumentParser prints when `command` is run with `arguments` (parsed and
/// validated as on the command line), or nil when they are accepted.
func optionError<Command: ParsableCommand>(_ command: Command.Type, _ arguments: [String]) -> String? {
    do {
        _ = try command.parse(arguments)
        return nil
    } catch {
        return command.message(for: error)
    }
}
