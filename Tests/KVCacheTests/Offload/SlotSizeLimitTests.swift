import Foundation
import Glibc
import TestSupport
import Testing
@testable import KVCache

/// A config of one K/V shape with a disk tier in `dir` of `offloadBytes`.
private func slotShapeConfig(layers: Int, heads: Int, headDim: Int, dtypeBytes: Int, blockTokens: Int, layout: Layout,
                memoryBytes: UInt64, pageBytes: UInt64, dir: String, offloadBytes: UInt64) -> EngineConfig {
    var c = EngineConfig()
    c.numLayers = layers
    c.numKVHeads = heads
    c.headDim = headDim
    c.dtypeBytes = dtypeBytes
    c.blockTokens = blockTokens
    c.layout = layout
    c.maxSeqs = 1
    c.maxSeqTokens = blockTokens
    c.memoryBytes = memoryBytes
    c.pageBytes = pageBytes
    c.offloadDir = dir
    c.offloadBytes = offloadBytes
    c.modelTag = testModelTag
    return c
}

/// Why `config` was not refused with `invalidArgument` naming a slot of `slotBytes` and the
/// I/O limit, leaving each of `untouched` with the files it had; nil when it was.
private func slotRefusalFailure(_ config: EngineConfig, slotBytes: Int, untouched: [String]) -> String? {
    let before = untouched.map(listing)
    do {
        _ = try Engine(config)
        return "an engine with a slot of \(slotBytes) bytes was created"
    } catch {
        let named = "a slot of \(slotBytes) bytes (a block of every layer's K and V plus a 4096-byte header) is more than the 2147418112 bytes"
        let after = untouched.map(listing)
        guard error.code == .invalidArgument, error.message.contains(named), after == before else {
            return "\(error.code): \(error.message); files \(before) -> \(after)"
        }
        return nil
    }
}

/// In an exit test's child: says `failure` on stderr and exits 1, or returns.
private func exitOnFailure(_ failure: String?) {
    guard let failure else { return }
    FileHandle.standardError.write(Data((failure + "\n").utf8))
    exit(1)
}

/// A disk tier moves a slot with one read or write, whose length the I/O path holds in 32 bits
/// (`kvm_io_req.len`, the slot header's `payload_bytes`) and Linux caps at 2^31 less a page:
/// a shape whose slot is larger is refused at create, before anything is reserved, created or
/// read (before, it trapped: an overflow, or a `UInt32` conversion, in the process).
@Suite("Disk tier: slots larger than one I/O request")
struct SlotSizeLimitTests {
    /// 1024 layers, 1024 heads, head_dim 4096, block_tokens 1024: a slot of 2^43 + 4096 bytes,
    /// with offload_bytes 2^44. `UInt64(maxSlots) * UInt64(slotBytes)` overflowed (SIGILL).
    @Test func aSlotOfEightTebibytesIsRefusedNamingItsSize() async {
        await #expect(processExitsWith: .success) {
            let dir = ScratchDir("bigslot")
            let c = slotShapeConfig(layers: 1024, heads: 1024, headDim: 4096, dtypeBytes: 1, blockTokens: 1024, layout: .paged,
                               memoryBytes: 1 << 43, pageBytes: 65536, dir: dir.path, offloadBytes: 1 << 44)
            let failure = slotRefusalFailure(c, slotBytes: (1 << 43) + 4096, untouched: [dir.path])
            dir.remove()
            exitOnFailure(failure)
        }
    }

    /// 1 layer, 1 head, head_dim 4096, dtype 8, block_tokens 65536: a payload of 2^32 bytes,
    /// which `UInt32(payloadBytes)` and `UInt32(slotBytes)` cannot hold. Before, the tier
    /// created its files and then failed mapping 32 staging buffers of 4 GiB (or, with RAM for
    /// them, trapped at the first write).
    @Test func aSlotOfFourGibibytesIsRefusedBeforeTheTierIsCreated() async {
        await #expect(processExitsWith: .success) {
            let dir = ScratchDir("slot4g")
            let c = slotShapeConfig(layers: 1, heads: 1, headDim: 4096, dtypeBytes: 8, blockTokens: 65536, layout: .contiguous,
                               memoryBytes: 1 << 32, pageBytes: 4096, dir: dir.path, offloadBytes: 3 << 32)
            let failure = slotRefusalFailure(c, slotBytes: (1 << 32) + 4096, untouched: [dir.path])
            dir.remove()
            exitOnFailure(failure)
        }
    }

    /// The largest slot the limit allows (2^31 - 64 KiB: a payload of 2^31 - 68 KiB) passes
    /// validation, and one 4 KiB larger does not: the limit is the slot's, header included.
    @Test func theLimitIsTheSlotHeaderIncluded() throws {
        var c = slotShapeConfig(layers: 1, heads: 1, headDim: 1, dtypeBytes: 1, blockTokens: 1, layout: .paged,
                           memoryBytes: 1 << 20, pageBytes: 4096, dir: "/nonexistent", offloadBytes: 1 << 40)
        // 2 tensors x block_tokens x token_bytes: token_bytes 17 x 4096 x 8 = 557056, so a
        // tensor's block of 1927 tokens is 1073446912 bytes, a payload of 2146893824, and
        // a slot (plus 4096, rounded up) of 2146897920 bytes, under 2147418112.
        c.numKVHeads = 17
        c.headDim = 4096
        c.dtypeBytes = 8
        c.blockTokens = 1927
        try c.validate()
        c.blockTokens = 1928  // + 2 x 557056: a slot of 2148012032 bytes
        #expect(throws: KVError.self) { try c.validate() }
        do { try c.validate() } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("a slot of 2148012032 bytes"))
        }
    }

    /// A peer tier of that shape (its identity says block_tokens 65536, its journal holds a
    /// block): the engine reading it trapped in `PeerTier.apply` (`UInt32(payloadBytes)`)
    /// while opening it. Now it is refused before the peer is read, and neither directory
    /// changes.
    @Test func aPeerOfAFourGibibyteSlotShapeIsRefusedBeforeItIsRead() async {
        await #expect(processExitsWith: .success) {
            let peer = ScratchDir("peer4g"), own = ScratchDir("own4g")
            var small = slotShapeConfig(layers: 1, heads: 1, headDim: 4096, dtypeBytes: 8, blockTokens: 1, layout: .paged,
                                   memoryBytes: 1 << 20, pageBytes: 65536, dir: peer.path, offloadBytes: 1 << 20)
            small.maxSeqTokens = 64
            do {
                let e = try Engine(small)
                try spillPrompt(e, 1, [7])
                guard e.stats().disk.blocksSpilled == 1 else { exit(3) }
            } catch { exit(2) }
            var identity = TierIdentity(small)
            identity.blockTokens = 65536
            guard (try? identity.write(dir: peer.path)) != nil,
                  truncate(peer.path + "/kvcache.slab", off_t((1 << 32) + 4096)) == 0 else { exit(4) }
            var c = slotShapeConfig(layers: 1, heads: 1, headDim: 4096, dtypeBytes: 8, blockTokens: 65536, layout: .contiguous,
                               memoryBytes: 1 << 32, pageBytes: 4096, dir: own.path, offloadBytes: 3 << 32)
            c.peerOffloadDirs = [peer.path]
            let failure = slotRefusalFailure(c, slotBytes: (1 << 32) + 4096, untouched: [peer.path, own.path])
            peer.remove()
            own.remove()
            exitOnFailure(failure)
        }
    }
}
