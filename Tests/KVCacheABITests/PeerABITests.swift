import Foundation
import Testing
@testable import KVCacheABI
@testable import KVCache

/// `kvc_config.peer_offload_dirs` (offset 136) and `kvc_stats.peer_hits` / `peer_stale`
/// (offsets 280, 288) through the C ABI.
@Suite("Peer disk tiers through the C ABI", .serialized)
struct PeerABITests {
    static func config() -> CConfig {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.offloadBytes = 16 << 20
        c.modelTag = 0xA1  // peers need a model named
        return c
    }

    @Test func aPeersSpilledBlocksAreServedAndCountedAtTheHeadersOffsets() throws {
        let dirA = scratchDir(), dirB = scratchDir()
        defer { try? FileManager.default.removeItem(atPath: dirA); try? FileManager.default.removeItem(atPath: dirB) }
        let a = try ABIFixture(PeerABITests.config(), offloadDir: dirA)
        let bt = a.blockTokens
        let prompt = a.uniqueTokens(7, count: 5 * bt + 1)
        #expect(try a.create(7, tokens: prompt) == 0)
        try a.write(7, salt: 7, from: 0, to: prompt.count)
        #expect(kvc_seq_free(a.handle, 7) == KVC_OK)
        #expect(kvc_engine_trim(a.handle) == KVC_OK)
        #expect(kvc_engine_sync(a.handle) == KVC_OK)

        // Empty entries of the ':'-separated list name nothing.
        let b = try ABIFixture(PeerABITests.config(), offloadDir: dirB, peers: ":" + dirA + "::")
        #expect(try b.create(1, tokens: prompt) == 5 * bt)
        #expect(waitReady(b, 1) == KVC_OK)
        #expect(try b.firstMismatch(1, salt: 7, to: 5 * bt) == nil, "the peer's bytes, unchanged")
        let s = try b.stats()
        #expect(s.peerHits == 5)
        #expect(s.peerStale == 0)
        #expect(s.peerHitTokens == UInt64(5 * bt), "the served blocks' tokens")
        #expect(s.prefixHitTokens == UInt64(5 * bt))
        #expect(s.diskHitTokens == 0, "disk_hit_tokens counts the own tier only")
    }

    @Test func badPeersAreRefusedWithAStatusAndAMessageNamingThem() throws {
        let own = scratchDir(), empty = scratchDir()
        defer { try? FileManager.default.removeItem(atPath: own); try? FileManager.default.removeItem(atPath: empty) }
        let c = PeerABITests.config()
        var out: OpaquePointer?
        let missing = empty + "/missing"
        expectFailure(KVC_ERR_IO, mentioning: [missing]) { c.create(&out, offloadDir: own, peers: missing) }
        #expect(out == nil)
        expectFailure(KVC_ERR_IO, mentioning: [empty, "kvcache.identity"]) { c.create(&out, offloadDir: own, peers: empty) }
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["own offload_dir"]) { c.create(&out, offloadDir: own, peers: own) }
        var noTier = c
        noTier.offloadBytes = 0
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["peer_offload_dirs", "offload_dir"]) {
            noTier.create(&out, offloadDir: own, peers: empty)
        }
        var untagged = c
        untagged.modelTag = 0
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["peer_offload_dirs needs a model_tag other than 0"]) {
            untagged.create(&out, offloadDir: own, peers: empty)
        }
        // More than 16 peers, and an entry longer than a path may be.
        let seventeen = (0..<17).map { "\(empty)/p\($0)" }.joined(separator: ":")
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["17 directories", "more than 16"]) {
            c.create(&out, offloadDir: own, peers: seventeen)
        }
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["peer_offload_dirs of 4097 bytes is too long", "at most 4074 bytes"]) {
            c.create(&out, offloadDir: own, peers: "/" + String(repeating: "p", count: 4096))
        }
        #expect(out == nil)
        #expect((try FileManager.default.contentsOfDirectory(atPath: own)).isEmpty, "nothing was created")
    }

    /// A peer directory that exists but is longer than its tier files' paths allow (4080
    /// bytes; 4074 at most, as for offload_dir) is KVC_ERR_INVALID_ARGUMENT naming the field,
    /// its length and the limit, as kvcache.h says: reading its identity first failed with
    /// ENAMETOOLONG, KVC_ERR_IO, the message cut inside the path.
    @Test func aPeerDirectoryTooLongForItsFilesIsInvalidAndNamed() throws {
        let own = scratchDir(), root = scratchDir()
        defer { try? FileManager.default.removeItem(atPath: own); try? FileManager.default.removeItem(atPath: root) }
        var peer = root
        while peer.utf8.count < 4080 - 201 { peer += "/" + String(repeating: "b", count: 199) }
        peer += "/" + String(repeating: "c", count: 4080 - peer.utf8.count - 1)
        try #require(peer.utf8.count == 4080)
        try FileManager.default.createDirectory(atPath: peer, withIntermediateDirectories: true)
        var out: OpaquePointer?
        expectFailure(KVC_ERR_INVALID_ARGUMENT,
                      mentioning: ["a directory of peer_offload_dirs of 4080 bytes is too long", "PATH_MAX", "at most 4074 bytes"]) {
            PeerABITests.config().create(&out, offloadDir: own, peers: peer)
        }
        #expect(out == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: own).isEmpty, "nothing was created")
        #expect(try FileManager.default.contentsOfDirectory(atPath: peer).isEmpty)
    }

    /// A directory of tier format 1 (payload checksums before 2026-11-24's position key), as
    /// the engine's own offload_dir or as a peer: KVC_ERR_INVALID_ARGUMENT naming the format
    /// and the files whose removal starts it empty; nothing in either directory changes.
    @Test func aTierOfTheFormerFormatIsRefusedAsOwnAndAsPeer() throws {
        let old = scratchDir(), own = scratchDir()
        defer { try? FileManager.default.removeItem(atPath: old); try? FileManager.default.removeItem(atPath: own) }
        let c = PeerABITests.config()
        do {
            let a = try ABIFixture(c, offloadDir: old)
            #expect(try a.create(1, tokens: a.uniqueTokens(1, count: 3 * a.blockTokens)) == 0)
            #expect(kvc_seq_free(a.handle, 1) == KVC_OK && kvc_engine_sync(a.handle) == KVC_OK)
        }
        let identity = old + "/kvcache.identity"
        let text = String(decoding: try #require(FileManager.default.contents(atPath: identity)), as: UTF8.self)
        #expect(text.hasPrefix("kvcache tier identity 3\n"))
        let former = Data(text.replacingOccurrences(of: "identity 3\n", with: "identity 1\n").utf8)
        #expect(FileManager.default.createFile(atPath: identity, contents: former))
        #expect(chmod(identity, 0o600) == 0, "as the engine writes it (else refused for its mode before it is read)")
        let files = try FileManager.default.contentsOfDirectory(atPath: old).sorted()
        let slab = FileManager.default.contents(atPath: old + "/kvcache.slab")
        var out: OpaquePointer?
        let words = ["tier format 1", "kvcache.slab, kvcache.journal, kvcache.identity"]
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: words) { c.create(&out, offloadDir: old) }
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: words) { c.create(&out, offloadDir: own, peers: old) }
        #expect(out == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: old).sorted() == files)
        #expect(FileManager.default.contents(atPath: identity) == former)
        #expect(FileManager.default.contents(atPath: old + "/kvcache.slab") == slab)
        #expect(try FileManager.default.contentsOfDirectory(atPath: own).isEmpty, "nothing was created")
    }

    @Test func aPreviousVersionsConfigGetsNoPeers() throws {
        let own = scratchDir()
        defer { try? FileManager.default.removeItem(atPath: own) }
        var c = PeerABITests.config()
        c.structSize = 136  // ends before peer_offload_dirs: the pointer below is not read
        let f = try ABIFixture(c, offloadDir: own, peers: "/nonexistent/peer")
        #expect(try f.create(1, tokens: f.uniqueTokens(1, count: 9)) == 0)
        let decoded = try c.decoded()
        #expect(decoded.peerOffloadDirs.isEmpty)
    }
}
