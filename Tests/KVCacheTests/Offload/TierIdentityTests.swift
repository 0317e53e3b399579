import Foundation
import TestSupport
import Testing
@testable import KVCache

/// The bytes of every file in `dir`, by name.
private func contents(_ dir: String) -> [String: Data] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
    return Dictionary(uniqueKeysWithValues: names.map { ($0, FileManager.default.contents(atPath: dir + "/" + $0) ?? Data()) })
}

@Suite("Tier identity: a disk tier serves only the model and shape that wrote it", .serialized)
struct TierIdentityTests {
    @Test func aRestartWithAnotherModelTagIsRefusedAndTheTierStaysWholeForItsOwnModel() throws {
        let dir = ScratchDir("identity")
        defer { dir.remove() }
        var config = offloadConfig(.paged, dir: dir.path)
        config.modelTag = 0xA1
        let prompt = tokens(203, seed: 11)
        do {
            let e = try Engine(config)
            try spillPrompt(e, 1, prompt)
        }
        let before = contents(dir.path)
        #expect(before.keys.sorted() == ["kvcache.identity", "kvcache.journal", "kvcache.slab"])

        var other = config
        other.modelTag = 0xB2
        let e = refusal(other)
        #expect(e?.code == .invalidArgument && e!.message.contains("model_tag 0xb2 here, 0xa1 there"), "\(e?.message ?? "opened")")
        #expect(contents(dir.path) == before, "the refused engine changed nothing in the directory (journal not compacted)")

        let again = try Engine(config)
        #expect(try again.createSequence(1, tokens: prompt) == 200, "its own model still finds every spilled block")
        try waitReady(again, 1)
        #expect(try kvDifferences(again, 1, count: 200) { prompt[$0] } == 0)
    }

    /// A refused engine asking for a smaller tier (or one of larger slots) cut its owner's slab
    /// to its own size before the identity refused it (helper-133): the owner's restart then
    /// dropped every block past the cut. The cut waits for the claim now.
    @Test(arguments: [false, true])
    func aRefusedEngineOfASmallerTierLeavesTheOwnersSlabWhole(largerSlots: Bool) throws {
        let dir = ScratchDir("identitySmaller")
        defer { dir.remove() }
        var config = offloadConfig(.paged, dir: dir.path)
        config.modelTag = 0xA1
        let prompt = tokens(203, seed: 13)
        do {
            let e = try Engine(config)
            try spillPrompt(e, 1, prompt)
        }
        let before = contents(dir.path)
        #expect(before["kvcache.slab"]!.count > 2 * 8192, "the owner's slab holds more than the refused engine's tier")

        var other = config
        if largerSlots {
            other.headDim *= 8  // another shape, of larger slots
        } else {
            other.modelTag = 0xB2
        }
        // One slot of the other engine's: far below the owner's slab.
        other.offloadBytes = UInt64((4096 + other.tensors * other.blockBytes + 4095) / 4096 * 4096)
        let e = refusal(other)
        #expect(e?.code == .invalidArgument && e!.message.contains("another model or shape"), "\(e?.message ?? "opened")")
        #expect(contents(dir.path) == before, "the refused engine changed nothing in the directory (its slab not cut)")

        let again = try Engine(config)
        #expect(try again.createSequence(1, tokens: prompt) == 200, "its own model still finds every spilled block")
        try waitReady(again, 1)
        #expect(try kvDifferences(again, 1, count: 200) { prompt[$0] } == 0)
    }

    /// Two shapes with the same bytes per block (2 heads of 8 against 1 head of 16): every slot
    /// check (size, header, hash, generation, checksum) would pass, so only the identity stops
    /// the other shape from being served these bytes.
    @Test func anotherShapeWithTheSameBytesPerBlockIsRefused() throws {
        let dir = ScratchDir("identityShape")
        defer { dir.remove() }
        let config = offloadConfig(.paged, dir: dir.path)
        do {
            let e = try Engine(config)
            try spillPrompt(e, 1, tokens(203, seed: 12))
        }
        var other = config
        other.numKVHeads = 1
        other.headDim = 16
        #expect(other.tokenBytes == config.tokenBytes)
        let e = refusal(other)
        #expect(e?.code == .invalidArgument
                && e!.message.contains("num_kv_heads 1 here, 2 there; head_dim 16 here, 8 there"), "\(e?.message ?? "opened")")
    }

    /// A directory without an identity (written before identities, or the file lost) is
    /// adopted and gets one with a new fingerprint key: its journal's blocks, fingerprinted
    /// under a key now gone, are misses (never served unchecked); blocks it takes after are
    /// hits again.
    @Test func aTierWithoutAnIdentityIsAdoptedAndGetsOneWithANewKey() throws {
        let dir = ScratchDir("identityLegacy")
        defer { dir.remove() }
        var config = offloadConfig(.contiguous, dir: dir.path)
        config.modelTag = 5
        let prompt = tokens(203, seed: 13)
        do {
            let e = try Engine(config)
            try spillPrompt(e, 1, prompt)
        }
        // As a directory written before identities existed, or whose identity was lost.
        #expect(unlink(dir.path + "/" + TierIdentity.fileName) == 0)
        do {
            let e = try Engine(config)
            #expect(try e.createSequence(1, tokens: prompt) == 0, "fingerprints under the lost key do not match")
            #expect(e.stats().disk.journalRecordsDropped == 50 && e.stats().disk.recoveredSlots == 0, "the lost key's blocks are dropped at the open")
            #expect(e.indexEvents().filter { $0.tier == KVEvent.diskTier && $0.kind == .blockStored }.isEmpty)
        }
        // The same prompt is cached again under the new key (the lost key's blocks, kept,
        // held its hashes: it could never be written again).
        do { try spillPrompt(try Engine(config), 1, prompt) }
        let e = try Engine(config)
        #expect(try e.createSequence(1, tokens: prompt) == 200, "blocks written under the new key, after a restart")
        try waitReady(e, 1)
        #expect(try kvDifferences(e, 1, count: 200) { prompt[$0] } == 0)
        let text = String(decoding: FileManager.default.contents(atPath: dir.path + "/kvcache.identity") ?? Data(), as: UTF8.self)
        let key = try #require(text.split(separator: "\n").last)
        #expect(key.hasPrefix("fingerprint_key 0x") && key.count == 18 + 32)
        #expect(text == """
            kvcache tier identity 3
            model_tag 0x0000000000000005
            num_layers 2
            num_kv_heads 2
            head_dim 8
            dtype_bytes 2
            block_tokens 4
            \(key)

            """)
        var st = stat()
        #expect(stat(dir.path + "/kvcache.identity", &st) == 0 && st.st_mode & 0o777 == 0o600, "the key is a secret")
    }

    @Test func anIdentityFileThatIsNotOneIsRefusedAndLeftAlone() throws {
        let dir = ScratchDir("identityGarbage")
        defer { dir.remove() }
        let path = dir.path + "/kvcache.identity"
        let garbage = Data("kvcache tier identity 3\nmodel_tag 12\n".utf8)
        #expect(FileManager.default.createFile(atPath: path, contents: garbage))
        #expect(chmod(path, 0o600) == 0, "as the engine writes it (else refused for its mode before it is read)")
        let e = refusal(offloadConfig(.paged, dir: dir.path))
        #expect(e?.code == .invalidArgument && e!.message.contains("is not a kvcache tier identity"), "\(e?.message ?? "opened")")
        #expect(FileManager.default.contents(atPath: path) == garbage)
    }

    /// A directory of tier format 1 (payload checksums before the position key: every slot
    /// would fail verification) or 2 (journal records without fingerprints, before
    /// 2026-11-25): the engine is refused, naming the format and the files to remove, and
    /// nothing there changes.
    @Test(arguments: [1, 2])
    func aDirectoryOfAFormerFormatIsRefusedNamingItsFiles(format: Int) throws {
        let dir = ScratchDir("identityFormat1")
        defer { dir.remove() }
        let config = offloadConfig(.paged, dir: dir.path)
        do {
            let e = try Engine(config)
            try spillPrompt(e, 1, tokens(203, seed: 13))
        }
        let path = dir.path + "/kvcache.identity"
        let former = Data(String(decoding: FileManager.default.contents(atPath: path)!, as: UTF8.self)
            .replacingOccurrences(of: "identity 3\n", with: "identity \(format)\n").utf8)
        #expect(FileManager.default.createFile(atPath: path, contents: former))
        #expect(chmod(path, 0o600) == 0, "as the engine writes it (else refused for its mode before it is read)")
        let slab = FileManager.default.contents(atPath: dir.path + "/kvcache.slab")
        let e = refusal(config)
        #expect(e?.code == .invalidArgument && e!.message.contains("tier format \(format)")
                && e!.message.contains("once kvcache.slab, kvcache.journal, kvcache.identity are removed"), "\(e?.message ?? "opened")")
        #expect(FileManager.default.contents(atPath: path) == former)
        #expect(FileManager.default.contents(atPath: dir.path + "/kvcache.slab") == slab)
    }

    @Test func theTextRoundTripsAndEveryFieldCounts() throws {
        var config = smallConfig(.paged)
        config.modelTag = 0xFFFF_FFFF_FFFF_FFFF
        let identity = TierIdentity(config)
        #expect(TierIdentity(text: identity.text) == identity)
        #expect(identity.differences(from: identity).isEmpty)
        for change in [{ (c: inout EngineConfig) in c.numLayers = 3 }, { $0.numKVHeads = 4 }, { $0.headDim = 4 },
                       { $0.dtypeBytes = 4 }, { $0.blockTokens = 8 }, { $0.modelTag = 1 }] {
            var other = config
            change(&other)
            #expect(!TierIdentity(other).differences(from: identity).isEmpty)
        }
        #expect(TierIdentity(text: identity.text.replacingOccurrences(of: "head_dim 8\n", with: "")) == nil, "a field missing")
        #expect(TierIdentity(text: identity.text + "head_dim 8\n") == nil, "a field twice")
        #expect(TierIdentity(text: identity.text.replacingOccurrences(of: "identity 3", with: "identity 4")) == nil, "another version")
    }

    @Test func aPeerOfAnotherModelIsRefusedAndAPeerWithoutAnIdentityIsIO() throws {
        let dirA = ScratchDir("identityPeerA"), dirB = ScratchDir("identityPeerB")
        defer { dirA.remove(); dirB.remove() }
        var config = offloadConfig(.paged, dir: dirA.path)
        config.modelTag = 1
        let a = try Engine(config)
        try spillPrompt(a, 1, tokens(203, seed: 14))
        var b = peerConfig(.paged, dir: dirB.path, peers: [dirA.path])
        b.modelTag = 2
        var e = refusal(b)
        #expect(e?.code == .invalidArgument && e!.message.contains("model_tag 0x2 here, 0x1 there"), "\(e?.message ?? "opened")")
        #expect(listing(dirB.path).isEmpty, "the refused engine created nothing in its own directory")

        #expect(unlink(dirA.path + "/" + TierIdentity.fileName) == 0)
        b.modelTag = 1
        e = refusal(b)
        #expect(e?.code == .io && e!.message.contains("has no kvcache.identity"), "\(e?.message ?? "opened")")
    }
}
