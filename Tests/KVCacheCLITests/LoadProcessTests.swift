import Foundation
import TestSupport
import Testing

/// `kvcache load` as a process: what it writes on standard error, its exit status, and what
/// SIGINT and SIGTERM do to a run.
@Suite("kvcache load as a process", .serialized)
struct LoadProcessTests {
    /// A small engine shape that starts at once.
    static let shape = ["--layers", "1", "--kv-heads", "1", "--head-dim", "32", "--memory", "64MiB", "--max-seq-tokens", "4096",
                        "--plots", ""]

    /// A started `kvcache-cli` with `arguments`, its standard output and error going to files
    /// (a pipe the test did not drain could stop it).
    final class Child {
        let process = Process()
        private let outputPath: String, errorPath: String
        private(set) var stdout = Data(), stderr = Data()

        /// With `standardError` a terminal's descriptor (`Terminal`): the progress line shows
        /// only on one.
        init(_ arguments: [String], standardError terminal: FileHandle? = nil) throws {
            let cli = cliPath()
            try #require(FileManager.default.isExecutableFile(atPath: cli), "build kvcache-cli first: \(cli)")
            let base = FileManager.default.temporaryDirectory.appendingPathComponent("kvcache-load-\(UUID().uuidString)").path
            (outputPath, errorPath) = (base + ".out", base + ".err")
            for path in [outputPath, errorPath] { _ = FileManager.default.createFile(atPath: path, contents: nil) }
            process.executableURL = URL(fileURLWithPath: cli)
            process.arguments = arguments
            process.standardOutput = FileHandle(forWritingAtPath: outputPath)
            process.standardError = terminal ?? FileHandle(forWritingAtPath: errorPath)
            try process.run()
        }

        deinit {
            for path in [outputPath, errorPath] { try? FileManager.default.removeItem(atPath: path) }
        }

        /// Waits for the exit, at most `seconds` (then kills it and fails).
        func wait(seconds: Double = 60) -> Int32 {
            let deadline = Date().addingTimeInterval(seconds)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning {
                Issue.record("kvcache-cli still runs after \(seconds) s: killed")
                kill(process.processIdentifier, SIGKILL)
            }
            process.waitUntilExit()
            stdout = FileManager.default.contents(atPath: outputPath) ?? Data()
            stderr = FileManager.default.contents(atPath: errorPath) ?? Data()
            return process.terminationReason == .exit ? process.terminationStatus : 128 + process.terminationStatus
        }

        /// Whether the process catches `signal` (/proc/PID/status, SigCgt).
        func catches(_ signal: Int32) -> Bool {
            guard let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8),
                  let line = status.split(separator: "\n").first(where: { $0.hasPrefix("SigCgt:") }),
                  let mask = UInt64(line.dropFirst("SigCgt:".count).trimmingCharacters(in: .whitespaces), radix: 16) else { return false }
            return mask & (1 << UInt64(signal - 1)) != 0
        }
    }

    /// `--requests` beyond the trace's length runs the whole trace, says so on standard error
    /// and puts both numbers in the JSON (it ran the shorter trace silently).
    @Test func moreRequestsThanTheTraceHoldsAreNoticed() throws {
        let lines = (0..<5).map { #"{"timestamp": \#($0), "input_length": 100, "output_length": 3, "hash_ids": [\#($0)]}"# }
        let trace = try TraceWorkloadTests.file(lines.joined(separator: "\n") + "\n")
        defer { try? FileManager.default.removeItem(atPath: trace) }
        let child = try Child(["load", "--trace", trace, "--requests", "10", "--json"] + Self.shape)
        #expect(child.wait() == 0)
        let notice = String(decoding: child.stderr, as: UTF8.self)
        #expect(notice == "kvcache-cli load: --requests 10, but the trace holds 5 requests: running those 5\n", "\(notice)")
        let top = try #require(try JSONSerialization.jsonObject(with: child.stdout) as? [String: Any])
        let requests = try #require(top["requests"] as? [String: Any])
        #expect((requests["requested"] as? NSNumber)?.intValue == 10)
        #expect((requests["trace_requests"] as? NSNumber)?.intValue == 5)
        #expect((requests["offered"] as? NSNumber)?.intValue == 5 && (requests["completed"] as? NSNumber)?.intValue == 5)

        // Within the trace's length: no notice, the same keys.
        let within = try Child(["load", "--trace", trace, "--requests", "4", "--json"] + Self.shape)
        #expect(within.wait() == 0)
        #expect(within.stderr.isEmpty, "\(String(decoding: within.stderr, as: UTF8.self))")
        let counts = try #require((try JSONSerialization.jsonObject(with: within.stdout) as? [String: Any])?["requests"] as? [String: Any])
        #expect((counts["requested"] as? NSNumber)?.intValue == 4 && (counts["trace_requests"] as? NSNumber)?.intValue == 4)
    }

    /// `--compare-offload` with a tier the engine refuses (a missing --offload-dir, an
    /// --offload-bytes past the slab's limit, a missing --peer-offload-dir) ends at once, as
    /// without `--compare-offload`: it ran the whole first (no-tier) run, here an 8 s modelled
    /// prefill, then failed creating the second engine and printed no report. The tier's size
    /// limit is a validation rule (`EngineConfig.validate`): a usage error (64) naming it.
    @Test(arguments: [(["--offload-dir", "/nonexistent-kvcache-dir/tier"], Int32(1), "cannot create the engine"),
                      (["--offload-dir", "/tmp", "--offload-bytes", "100TiB"], 64, "more than a tier manages"),
                      (["--offload-dir", "/tmp", "--peer-offload-dir", "/nonexistent-kvcache-dir/peer", "--model-tag", "5"], 1,
                       "cannot create the engine")])
    func aTierTheEngineRefusesEndsTheComparisonBeforeItsFirstRun(tier: [String], status: Int32, reason: String) throws {
        let scratch = ScratchDir("cmp"), dir = scratch.path
        defer { scratch.remove() }
        let options = tier.map { $0 == "/tmp" ? dir : $0 }
        let started = Date()
        let child = try Child(["load", "--compare-offload", "--requests", "1", "--prompt-dist", "fixed", "--prompt-mean", "8", "--prompt-max", "8",
                               "--prefill-tokens-per-s", "1"] + options + Self.shape)
        #expect(child.wait() == status)
        let elapsed = Date().timeIntervalSince(started)
        let message = String(decoding: child.stderr, as: UTF8.self)
        #expect(message.contains(reason), "\(message)")
        #expect(elapsed < 4, "refused after \(elapsed) s")
    }

    /// A request claimed ahead of its arrival (a worker sleeps until it arrives) and not yet
    /// arrived at SIGINT is not offered, as with --duration: it was counted offered and
    /// "stopped unfinished".
    @Test func aRequestNotYetArrivedAtASignalIsNotOffered() throws {
        let lines = [#"{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [1]}"#,
                     #"{"timestamp": 3600000, "input_length": 10, "output_length": 5, "hash_ids": [2]}"#]
        let trace = try TraceWorkloadTests.file(lines.joined(separator: "\n") + "\n")
        defer { try? FileManager.default.removeItem(atPath: trace) }
        let child = try Child(["load", "--trace", trace, "--trace-speed", "1", "--json"] + Self.shape)
        var waited = 0
        while !child.catches(SIGINT) && child.process.isRunning && waited < 1000 {
            usleep(10_000)
            waited += 1
        }
        usleep(500_000)  // the first request completes, the second is claimed
        kill(child.process.processIdentifier, SIGINT)
        #expect(child.wait() == 128 + SIGINT)
        let requests = try #require((try JSONSerialization.jsonObject(with: child.stdout) as? [String: Any])?["requests"] as? [String: Any])
        #expect((requests["offered"] as? NSNumber)?.intValue == 1 && (requests["completed"] as? NSNumber)?.intValue == 1, "\(requests)")
    }

    /// SIGINT (SIGTERM alike) stops a run's workers and prints the report of what completed,
    /// marked interrupted, then exits with 128 + the signal; it used to end the process with
    /// no output. The run is a closed loop of a minute's worth of requests.
    @Test(arguments: [(SIGINT, true), (SIGTERM, false)])
    func aSignalStopsTheRunAndReportsWhatCompleted(signal: Int32, json: Bool) throws {
        let child = try Child(["load", "--duration", "60", "--threads", "2", "--batch", "4", "--prompt-mean", "64", "--prompt-max", "256",
                               "--output-mean", "8", "--output-max", "32"] + (json ? ["--json"] : []) + Self.shape)
        var waited = 0
        while !child.catches(signal) && child.process.isRunning && waited < 1000 {
            usleep(10_000)
            waited += 1
        }
        #expect(child.catches(signal), "kvcache load does not catch signal \(signal)")
        usleep(500_000)  // some requests complete
        #expect(child.process.isRunning, "it ended before the signal")
        kill(child.process.processIdentifier, signal)
        #expect(child.wait(seconds: 20) == 128 + signal)
        let text = String(decoding: child.stdout, as: UTF8.self)
        if json {
            let top = try #require(try JSONSerialization.jsonObject(with: child.stdout) as? [String: Any], "\(text)")
            #expect(top["interrupted"] as? Bool == true)
            let requests = try #require(top["requests"] as? [String: Any])
            let completed = try #require((requests["completed"] as? NSNumber)?.intValue)
            let offered = try #require((requests["offered"] as? NSNumber)?.intValue)
            #expect(completed > 0 && offered >= completed && offered < 1_000_000, "offered \(offered), completed \(completed)")
            // The sequences live at the stop are freed then, timed as every other free: one
            // free per successful create (their frees were untimed, the free row short of them).
            let operations = try #require(top["operations"] as? [String: Any])
            let creates = try #require(((operations["create"] as? [String: Any])?["count"] as? NSNumber)?.intValue)
            let frees = try #require(((operations["free"] as? [String: Any])?["count"] as? NSNumber)?.intValue)
            #expect(frees == creates, "\(frees) frees, \(creates) creates")
            let freedAtStop = try #require((requests["freed_at_stop"] as? NSNumber)?.intValue, "\(requests)")
            #expect(freedAtStop >= 1 && freedAtStop <= 8, "2 threads x 4 live sequences, busy at the signal: \(freedAtStop)")
            #expect(offered - completed >= freedAtStop)
        } else {
            #expect(text.hasPrefix("kvcache-cli load: "), "\(text)")
            #expect(text.contains("\ninterrupted by SIGTERM after "), "\(text)")
            #expect(text.contains(" of them live and freed at the stop (timed in the free row)\n"), "\(text)")
            #expect(text.contains("\nmemory "), "the whole table: \(text)")
        }
    }

    /// SIGTERM during a modelled prefill (30 tokens at 1 token/s) ends the run within a
    /// fraction of a second: the prefill was one sleep, so the signal waited up to 30 s. The
    /// unfinished prefill records no time to first token, no decode step follows the stop, and
    /// the created sequence is freed at it.
    @Test func aSignalEndsAModelledPrefill() throws {
        let child = try Child(["load", "--requests", "4", "--threads", "1", "--batch", "1", "--prefill-tokens-per-s", "1",
                               "--prompt-dist", "fixed", "--prompt-mean", "30", "--prompt-max", "30", "--output-dist", "fixed",
                               "--output-mean", "2", "--output-max", "2", "--shared-prefix-ratio", "0", "--json"] + Self.shape)
        var waited = 0
        while !child.catches(SIGTERM) && child.process.isRunning && waited < 1000 {
            usleep(10_000)
            waited += 1
        }
        usleep(2_000_000)  // into the first prefill, created (a busy machine is slow to start), 28 s before its end
        #expect(child.process.isRunning, "it ended before the signal")
        let signalled = Date()
        kill(child.process.processIdentifier, SIGTERM)
        #expect(child.wait(seconds: 20) == 128 + SIGTERM)
        let took = Date().timeIntervalSince(signalled)
        #expect(took < 2, "exited \(took) s after the signal")
        let top = try #require(try JSONSerialization.jsonObject(with: child.stdout) as? [String: Any],
                               "\(String(decoding: child.stdout, as: UTF8.self))")
        let operations = try #require(top["operations"] as? [String: Any])
        func count(_ name: String) -> Int? { ((operations[name] as? [String: Any])?["count"] as? NSNumber)?.intValue }
        #expect(count("create") == 1 && count("free") == 1, "\(operations)")
        #expect((count("append") ?? 0) == 0 && (count("ttft") ?? 0) == 0, "\(operations)")
        let requests = try #require(top["requests"] as? [String: Any])
        #expect((requests["freed_at_stop"] as? NSNumber)?.intValue == 1, "\(requests)")
    }

    /// The progress line (on a terminal only) of a run bounded by --duration alone shows the
    /// time against the duration and the requests done: it showed "N/100000000", the cap a
    /// closed loop's workload gets, as if it were the run's length. With --requests too (the
    /// run ends at whichever comes first) it shows the count as well.
    @Test(arguments: [(["--duration", "1.5"], "s of 1.5 s] ", false),
                      (["--duration", "1.5", "--rate", "200"], "s of 1.5 s] ", false),
                      (["--duration", "30", "--requests", "300"], "s of 30.0 s] ", true)])
    func theProgressLineOfADurationShowsTheTime(options: [String], time: String, counted: Bool) throws {
        let terminal = try Terminal()
        let child = try Child(["load", "--threads", "1", "--batch", "2", "--prompt-mean", "64", "--prompt-max", "128",
                               "--output-mean", "64", "--output-max", "128"] + options + Self.shape, standardError: terminal.follower)
        var shown = Data()
        while child.process.isRunning {
            shown += terminal.read()
            usleep(20_000)
        }
        #expect(child.wait() == 0)
        shown += terminal.read()
        let text = String(decoding: shown, as: UTF8.self)
        // Lines rewritten in place: "\r ESC[2K [1.2 s of 1.5 s] 5 done, ...".
        let lines = text.components(separatedBy: "\u{1B}[2K").filter { $0.hasPrefix("[") }
        try #require(!lines.isEmpty, "no progress line on the terminal: \(text.debugDescription)")
        for line in lines {
            #expect(line.contains(time) || line.contains(", admission ended at "), "\(line)")
            #expect(!line.contains("/100000000") && !line.contains("/1600 "), "a cap shown as the run's length: \(line)")
            let done = try #require(line.split(separator: "]").dropFirst().first, "\(line)")
            #expect(done.contains("/300 done") == counted, "\(line)")
        }
    }
}

/// A pseudo-terminal: `follower` (its slave side) for a child's standard error, `read` what
/// the child wrote there.
final class Terminal {
    private let leader: Int32
    let follower: FileHandle

    init() throws {
        // Glibc's module leaves out the X/Open calls (posix_openpt opens /dev/ptmx, as here);
        // the C library has them.
        typealias Call = @convention(c) (Int32) -> Int32
        typealias Name = @convention(c) (Int32) -> UnsafeMutablePointer<CChar>?
        let grantpt = unsafeBitCast(try #require(dlsym(nil, "grantpt")), to: Call.self)
        let unlockpt = unsafeBitCast(try #require(dlsym(nil, "unlockpt")), to: Call.self)
        let ptsname = unsafeBitCast(try #require(dlsym(nil, "ptsname")), to: Name.self)
        leader = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
        try #require(leader >= 0 && grantpt(leader) == 0 && unlockpt(leader) == 0, "no pseudo-terminal: \(String(cString: strerror(errno)))")
        let name = String(cString: try #require(ptsname(leader)))
        let fd = open(name, O_RDWR | O_NOCTTY)
        try #require(fd >= 0, "cannot open \(name)")
        follower = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    }

    deinit { close(leader) }

    /// What the terminal holds now (without waiting).
    func read() -> Data {
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = Glibc.read(leader, &buffer, buffer.count)
            if n <= 0 { break }
            data.append(contentsOf: buffer[0..<n])
        }
        return data
    }
}
