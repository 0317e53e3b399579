import Foundation
import TestSupport
import Testing
@testable import KVCache

/// The user nobody: the owner of files another local user planted.
private let otherUser: uid_t = 65534

/// `path`'s permission bits, owner and link count (of the link itself, not what it names).
private func status(_ path: String) -> (mode: mode_t, uid: uid_t, links: Int)? {
    var st = stat()
    guard lstat(path, &st) == 0 else { return nil }
    return (st.st_mode & 0o7777, st.st_uid, Int(st.st_nlink))
}

/// A file outside the tier whose bytes a planted link must never change.
private func victim(_ dir: ScratchDir) -> (path: String, bytes: Data) {
    let path = dir.path + "/precious", bytes = Data("precious root data\n".utf8)
    #expect(FileManager.default.createFile(atPath: path, contents: bytes))
    return (path, bytes)
}

/// Writes `text` to `path` with `mode` (whatever the umask), owned by `owner`.
private func plant(_ path: String, _ text: String, mode: mode_t, owner: uid_t = geteuid()) {
    #expect(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
    #expect(chmod(path, mode) == 0 && chown(path, owner, gid_t(owner == geteuid() ? getegid() : owner)) == 0)
}

/// The disk tier's files in a directory other users can reach (helper-203's findings 2, 3A,
/// 3B): the slab holds tenants' K/V, the journal their salted block hashes, the identity the
/// key whose holder crafts fingerprint collisions. The engine creates them for its user alone
/// (0600), opens none through a symbolic link or a second hard link, and refuses (KVC_ERR_IO,
/// naming the file and what is wrong) one another user owns or could have written, changing
/// nothing anywhere. The tests run as root (chown needs it) and skip otherwise.
@Suite("Disk tier files: private to the engine's user, never through a link", .serialized,
       .enabled(if: geteuid() == 0, "planting files of another owner needs root"))
struct TierFilePermissionTests {
    /// Finding 3A: in an operator-made 0755 directory the slab and journal were created 0644,
    /// readable by every local user. A tier an older build left so is narrowed at its next open.
    @Test func theTierFilesAreReadableByTheirOwnerAloneAndOldOnesAreNarrowed() throws {
        let dir = ScratchDir("perm0755")
        defer { dir.remove() }
        #expect(chmod(dir.path, 0o755) == 0)
        let config = offloadConfig(.paged, dir: dir.path)
        let prompt = tokens(203, seed: 21)
        do {
            let e = try Engine(config)
            try spillPrompt(e, 1, prompt)
        }
        for name in ["kvcache.slab", "kvcache.journal", "kvcache.identity"] {
            #expect(status(dir.path + "/" + name)?.mode == 0o600, "\(name): \(String(status(dir.path + "/" + name)?.mode ?? 0, radix: 8))")
        }
        for name in ["kvcache.slab", "kvcache.journal"] { #expect(chmod(dir.path + "/" + name, 0o644) == 0) }
        let again = try Engine(config)
        for name in ["kvcache.slab", "kvcache.journal"] {
            #expect(status(dir.path + "/" + name)?.mode == 0o600, "\(name) narrowed at the open")
        }
        #expect(try again.createSequence(1, tokens: prompt) == 200, "the tier kept its blocks")
    }

    /// Finding 3B: a planted `kvcache.slab` (or journal, or a compaction's `kvcache.journal.new`)
    /// link to a file elsewhere made the engine overwrite that file. A symbolic link is refused
    /// at create; the compaction's temporary file is created anew (the link removed, its target
    /// untouched) and the engine opens.
    @Test(arguments: ["kvcache.slab", "kvcache.journal", "kvcache.journal.new"])
    func aSymbolicLinkPlantedForATierFileIsNeverWrittenThrough(name: String) throws {
        let dir = ScratchDir("permLink"), elsewhere = ScratchDir("permVictim")
        defer { dir.remove(); elsewhere.remove() }
        let config = offloadConfig(.paged, dir: dir.path)
        do {
            let e = try Engine(config)
            try spillPrompt(e, 1, tokens(203, seed: 22))
        }
        let target = victim(elsewhere), path = dir.path + "/" + name
        unlink(path)
        #expect(symlink(target.path, path) == 0)
        if name.hasSuffix(".new") {
            let e = try Engine(config)  // its open compacts the journal
            #expect(e.stats().disk.recoveredSlots == 50)
            #expect(status(path) == nil, "the planted link was removed, the rewritten journal renamed over")
        } else {
            let e = refusal(config)
            #expect(e?.code == .io && e!.message.contains("'\(path)' is a symbolic link"), "\(e?.message ?? "opened")")
        }
        #expect(FileManager.default.contents(atPath: target.path) == target.bytes, "the link's target is unchanged")
    }

    /// A second hard link (possible where fs.protected_hardlinks is 0) names a file elsewhere
    /// just as a symbolic link does; the engine's own files have one link.
    @Test func aSlabWithASecondHardLinkIsRefused() throws {
        let dir = ScratchDir("permHardLink"), elsewhere = ScratchDir("permHardVictim")
        defer { dir.remove(); elsewhere.remove() }
        let target = victim(elsewhere), path = dir.path + "/kvcache.slab"
        #expect(link(target.path, path) == 0)
        let e = refusal(offloadConfig(.paged, dir: dir.path))
        #expect(e?.code == .io && e!.message.contains("'\(path)' has 2 links"), "\(e?.message ?? "opened")")
        #expect(FileManager.default.contents(atPath: target.path) == target.bytes)
    }

    /// A slab or journal another user owns: it could have written any bytes there, and reads
    /// what the engine writes.
    @Test(arguments: ["kvcache.slab", "kvcache.journal"])
    func aSlabOrJournalOfAnotherUserIsRefused(name: String) throws {
        let dir = ScratchDir("permOwner")
        defer { dir.remove() }
        let config = offloadConfig(.paged, dir: dir.path)
        do {
            let e = try Engine(config)
            try spillPrompt(e, 1, tokens(203, seed: 23))
        }
        let path = dir.path + "/" + name
        #expect(chown(path, otherUser, gid_t(otherUser)) == 0)
        let before = FileManager.default.contents(atPath: path)
        let e = refusal(config)
        #expect(e?.code == .io && e!.message.contains("'\(path)' is owned by uid 65534"), "\(e?.message ?? "opened")")
        #expect(FileManager.default.contents(atPath: path) == before && status(path)?.uid == otherUser)
    }

    /// Finding 2: user nobody wrote `kvcache.identity` (0644, a key it chose) into a new
    /// world-writable directory; the engine adopted it, so nobody knew the key of every
    /// fingerprint the tier recorded. An identity the engine's user does not own, one others
    /// can read or write (its key is no secret), or a link is refused, and left as it is.
    @Test(arguments: [("nobody", mode_t(0o600)), ("root", 0o644), ("root", 0o620), ("link", 0o600)])
    func aPlantedOrExposedIdentityIsRefused(owner: String, mode: mode_t) throws {
        let dir = ScratchDir("permIdentity"), elsewhere = ScratchDir("permIdentityTarget")
        defer { dir.remove(); elsewhere.remove() }
        #expect(chmod(dir.path, 0o1777) == 0)
        let config = offloadConfig(.paged, dir: dir.path)
        let path = dir.path + "/" + TierIdentity.fileName, text = TierIdentity(config).text
        if owner == "link" {
            plant(elsewhere.path + "/identity", text, mode: mode)
            #expect(symlink(elsewhere.path + "/identity", path) == 0)
        } else {
            plant(path, text, mode: mode, owner: owner == "root" ? geteuid() : otherUser)
        }
        let e = refusal(config)
        let why = owner == "link" ? "is a symbolic link" : owner == "nobody" ? "is owned by uid 65534" : "is readable or writable by group or others"
        #expect(e?.code == .io && e!.message.contains("'\(path)' \(why)"), "\(e?.message ?? "opened")")
        #expect(String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self) == text)
        if owner != "link" { #expect(status(path)?.mode == mode, "left as it is") }
    }

    /// A directory every user may write without the sticky bit lets any of them rename or
    /// remove the tier's files under the engine (and plant others): refused. With the sticky
    /// bit (as /tmp) only a file's owner and the directory's may: the tier works in such a
    /// directory of its user's (or root's), and is refused in another user's.
    @Test func aWorldWritableDirectoryIsRefusedWithoutTheStickyBit() throws {
        let dir = ScratchDir("permDir")
        defer { dir.remove() }
        let config = offloadConfig(.paged, dir: dir.path)
        #expect(chmod(dir.path, 0o777) == 0)
        let e = refusal(config)
        #expect(e?.code == .io && e!.message.contains("offload_dir '\(dir.path)' is writable by every user without the sticky bit"),
                "\(e?.message ?? "opened")")
        #expect(listing(dir.path).isEmpty, "nothing was created there")
        #expect(chmod(dir.path, 0o1777) == 0)
        let prompt = tokens(203, seed: 24)
        do {
            let e = try Engine(config)
            try spillPrompt(e, 1, prompt)
        }
        #expect(try Engine(config).createSequence(1, tokens: prompt) == 200)
        // The sticky bit binds all but the directory's owner: one of another user is refused
        // (helper-208: its owner renamed the journal away and planted its own).
        #expect(chown(dir.path, otherUser, gid_t(otherUser)) == 0)
        let owned = refusal(config)
        #expect(owned?.code == .io && owned!.message.contains("is writable by every user and owned by uid \(otherUser)"),
                "\(owned?.message ?? "opened")")
    }

    /// A peer's identity is read, never written, and may belong to the peer's engine of
    /// another user; but one that others could write may carry a key they chose (under which
    /// they could make their own bytes verify), so it is refused, as a link is.
    @Test(arguments: ["group-writable", "link"])
    func aPeersIdentityOthersCouldHaveWrittenIsRefused(how: String) throws {
        let dirA = ScratchDir("permPeerA"), dirB = ScratchDir("permPeerB"), elsewhere = ScratchDir("permPeerTarget")
        defer { dirA.remove(); dirB.remove(); elsewhere.remove() }
        do {
            let a = try Engine(offloadConfig(.paged, dir: dirA.path))
            try spillPrompt(a, 1, tokens(203, seed: 25))
        }
        let path = dirA.path + "/" + TierIdentity.fileName
        let config = peerConfig(.paged, dir: dirB.path, peers: [dirA.path])
        #expect(chown(path, otherUser, gid_t(otherUser)) == 0 && chmod(path, 0o644) == 0)
        _ = try Engine(config)  // another user's engine, its file readable: fine for a reader
        if how == "link" {
            #expect(rename(path, elsewhere.path + "/identity") == 0 && symlink(elsewhere.path + "/identity", path) == 0)
        } else {
            #expect(chmod(path, 0o664) == 0)
        }
        let e = refusal(config)
        let why = how == "link" ? "is a symbolic link" : "is writable by group or others"
        #expect(e?.code == .io && e!.message.contains("'\(path)' \(why)"), "\(e?.message ?? "opened")")
        #expect(e?.message.contains("leave it out of peer_offload_dirs") == true, "a peer's file is not this engine's to remove")
    }

    /// A FIFO planted under a tier file's name is refused at once (KVC_ERR_IO, "not a regular
    /// file"), never waited on: an open of a FIFO for reading blocks until a writer comes, and
    /// it happened inside the fork bracket (`kvm_fork_close_hold`), so every fork() of the
    /// process waited with it (helper-208: create, a peer's refresh in kvc_seq_create under
    /// the engine's lock, and a fork from another thread all hung). Each case runs in an exit
    /// test's process under an alarm: a hang ends it by SIGALRM instead of stopping the runner.
    @Test func aFifoPlantedForATierFileIsRefusedNotWaitedOn() async {
        ExitReport.expectNothingReported(Self.fifoPrefix, await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            Self.exitAfterPlantingAFifo(own: "kvcache.slab")
        })
        ExitReport.expectNothingReported(Self.fifoPrefix, await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            Self.exitAfterPlantingAFifo(own: "kvcache.journal")
        })
        ExitReport.expectNothingReported(Self.fifoPrefix, await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            Self.exitAfterPlantingAFifo(own: "kvcache.identity")
        })
        ExitReport.expectNothingReported(Self.fifoPrefix, await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            Self.exitAfterPlantingAFifo(peer: "kvcache.slab", whileOpen: false)
        })
        ExitReport.expectNothingReported(Self.fifoPrefix, await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            Self.exitAfterPlantingAFifo(peer: "kvcache.journal", whileOpen: false)
        })
        ExitReport.expectNothingReported(Self.fifoPrefix, await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            Self.exitAfterPlantingAFifo(peer: "kvcache.journal", whileOpen: true)
        })
    }

    static let fifoPrefix = "tier FIFO: "

    /// In an exit test's process: a FIFO as `own` in a fresh offload_dir; the create must be
    /// refused naming it, and a fork afterwards must return.
    static func exitAfterPlantingAFifo(own name: String) -> Never {
        alarm(60)
        let dir = ScratchDir("permFifo")
        let path = dir.path + "/" + name
        var problems: [String] = []
        if mkfifo(path, 0o600) != 0 { problems.append("mkfifo: \(String(cString: strerror(errno)))") }
        let e = refusal(offloadConfig(.paged, dir: dir.path))
        if !(e?.code == .io && e!.message.contains("'\(path)' is not a regular file")) {
            problems.append("\(name): \(e.map { "\($0)" } ?? "opened")")
        }
        problems += forkReturns()
        dir.remove()
        ExitReport.exit(fifoPrefix, problems)
    }

    /// In an exit test's process: a peer whose `name` is a FIFO, planted before the reader's
    /// create (refused, naming it) or, `whileOpen`, after it, found by the peer's refresh in a
    /// later create (a miss, the peer unavailable); then a fork must return.
    static func exitAfterPlantingAFifo(peer name: String, whileOpen: Bool) -> Never {
        alarm(60)
        let dirA = ScratchDir("permFifoPeerA"), dirB = ScratchDir("permFifoPeerB")
        let path = dirA.path + "/" + name, prompt = tokens(203, seed: 26)
        var problems: [String] = []
        do {
            do { try spillPrompt(try Engine(offloadConfig(.paged, dir: dirA.path)), 1, prompt) }
            let config = peerConfig(.paged, dir: dirB.path, peers: [dirA.path])
            let reader = whileOpen ? try Engine(config) : nil
            if rename(path, path + ".moved") != 0 || mkfifo(path, 0o600) != 0 {
                problems.append("planting: \(String(cString: strerror(errno)))")
            }
            if let reader {
                let hit = try reader.createSequence(1, tokens: prompt)
                if hit != 0 { problems.append("the peer's blocks hit (\(hit) tokens) with its journal a FIFO") }
            } else {
                let e = refusal(config)
                if !(e?.code == .io && e!.message.contains("'\(path)' is not a regular file")) {
                    problems.append("peer \(name): \(e.map { "\($0)" } ?? "opened")")
                }
            }
        } catch {
            problems.append("\(error)")
        }
        problems += forkReturns()
        dirA.remove()
        dirB.remove()
        ExitReport.exit(fifoPrefix, problems)
    }

    /// A fork() of this process returns (its child exits at once): what an open left waiting
    /// inside the fork bracket would block. Problems, if any.
    static func forkReturns() -> [String] {
        let child = fork()
        if child == 0 { _exit(0) }
        if child < 0 { return ["fork: \(String(cString: strerror(errno)))"] }
        var status: Int32 = 0
        return waitpid(child, &status, 0) == child ? [] : ["waitpid: \(String(cString: strerror(errno)))"]
    }
}
