import Foundation
import TestSupport
import Testing
@testable import KVCache

/// Flips one payload byte (past the 4 KiB header) of each of `slots` in the slab file of the
/// tier in `dir`, whose slots are `slotBytes` long: each becomes torn or corrupt on disk.
func corruptSlots(dir: String, slotBytes: Int, _ slots: Range<Int>) {
    let fd = open(dir + "/kvcache.slab", O_RDWR)
    #expect(fd >= 0)
    for slot in slots {
        var byte: UInt8 = 0
        let at = off_t(slot * slotBytes + 4096 + 17)
        #expect(pread(fd, &byte, 1, at) == 1)
        byte ^= 0x5A
        #expect(pwrite(fd, &byte, 1, at) == 1)
    }
    close(fd)
}

/// The model tag of the test suite's tiers (`kvcache spill-child` uses it too): peers need
/// one other than 0 (`EngineConfig.modelTag`).
let testModelTag: UInt64 = 0x7E57

/// `smallConfig` with a disk tier in `dir` of `offloadBytes`, of model `testModelTag`.
func offloadConfig(_ layout: Layout, dir: String, memoryBytes: UInt64 = 64 << 20, offloadBytes: UInt64 = 64 << 20) -> EngineConfig {
    var c = smallConfig(layout, memoryBytes: memoryBytes)
    c.offloadDir = dir
    c.offloadBytes = offloadBytes
    c.modelTag = testModelTag
    return c
}

/// Bytes of one disk-tier slot at `config`'s shape (`DiskTier.slotBytes`): for an offload_bytes
/// of a given number of slots.
func tierSlotBytes(_ config: EngineConfig) -> UInt64 {
    UInt64(DiskTier.slotBytes(payloadBytes: config.tensors * config.blockBytes))
}

/// The error `Engine(config)` throws, or nil when it opens.
func refusal(_ config: EngineConfig) -> KVError? {
    do throws(KVError) {
        _ = try Engine(config)
        return nil
    } catch {
        return error
    }
}

/// Polls until `seq` is ready (or the disk read failed: rethrows), at most ~10 s.
func waitReady(_ e: Engine, _ seq: UInt64) throws(KVError) {
    for _ in 0..<100_000 {
        if try e.ready(seq) { return }
        e.poll(timeoutMicroseconds: 100)
    }
    throw KVError(.internal, "sequence \(seq) never became ready")
}

/// Fills every token of `seq` (positions `from..<from+count`, token value `token(p)`) in every
/// layer with the `kvByte` pattern, a token at a time (fast enough for 32k tokens).
func fillKV(_ e: Engine, _ seq: UInt64, count: Int, from: Int = 0, token: (Int) -> Int32) throws {
    let tb = e.config.tokenBytes
    var row = [UInt8](repeating: 0, count: tb)
    for layer in 0..<e.config.numLayers {
        for p in from..<(from + count) {
            let (k, v) = try tokenAddress(e, seq, layer: layer, position: p)
            for kv in 0..<2 {
                for i in 0..<tb { row[i] = kvByte(layer: layer, kv: kv, position: p, token: token(p), i: i) }
                row.withUnsafeBytes { (kv == 0 ? k : v).copyMemory(from: $0.baseAddress!, byteCount: tb) }
            }
        }
    }
}

/// Bytes of positions `from..<from+count` of `seq` that differ from `fillKV`'s pattern.
func kvDifferences(_ e: Engine, _ seq: UInt64, count: Int, from: Int = 0, token: (Int) -> Int32) throws -> Int {
    let tb = e.config.tokenBytes
    var bad = 0
    for layer in 0..<e.config.numLayers {
        for p in from..<(from + count) {
            let (k, v) = try tokenAddress(e, seq, layer: layer, position: p)
            for i in 0..<tb {
                if k.load(fromByteOffset: i, as: UInt8.self) != kvByte(layer: layer, kv: 0, position: p, token: token(p), i: i) { bad += 1 }
                if v.load(fromByteOffset: i, as: UInt8.self) != kvByte(layer: layer, kv: 1, position: p, token: token(p), i: i) { bad += 1 }
            }
        }
    }
    return bad
}

/// Mounts a tmpfs of `bytes` at a new directory (root only); nil when mounting is not allowed.
func mountTmpfs(bytes: Int, options: String = "") -> ScratchDir? {
    let dir = ScratchDir("tmpfs")
    let opts = "size=\(bytes)" + (options.isEmpty ? "" : ",\(options)")
    guard mount("tmpfs", dir.path, "tmpfs", 0, opts) == 0 else {
        dir.remove()
        return nil
    }
    return dir
}

func unmount(_ dir: ScratchDir) {
    umount2(dir.path, Int32(MNT_DETACH))
    dir.remove()
}

/// Runs `path` with `arguments`, its output discarded: true when it exits 0.
private func runTool(_ path: String, _ arguments: [String]) -> Bool {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return false }
    p.waitUntilExit()
    return p.terminationStatus == 0
}

/// A file system of `type` made by `mkfs` in an image file of `bytes` and mounted through a
/// loop device (`mount -o loop`, which frees the device with the mount) at a new directory
/// (root only); nil when any step fails. `unmountImage` undoes it.
func mountImage(type: String, mkfs: String, bytes: Int) -> (mount: ScratchDir, image: ScratchDir)? {
    let image = ScratchDir("image"), dir = ScratchDir(type)
    let file = image.path + "/fs.img"
    guard FileManager.default.createFile(atPath: file, contents: nil), truncate(file, off_t(bytes)) == 0,
          runTool(mkfs, ["-q", "-F", file]), runTool("/usr/bin/mount", ["-t", type, "-o", "loop", file, dir.path])
    else {
        dir.remove()
        image.remove()
        return nil
    }
    return (dir, image)
}

func unmountImage(_ m: (mount: ScratchDir, image: ScratchDir)) {
    unmount(m.mount)
    m.image.remove()
}

/// Holds the I/O of `e`'s disk tier (thread backend) in flight and calls `swapOutAsync(seq)`
/// on another thread: true when the call returned with its writes held (within 10 s: a guard
/// against a call that waits for the held writes, not a timing assertion). When it did not,
/// the I/O is resumed so that the call can end; the I/O is held on return either way.
func swapOutAsyncWithIOHeld(_ e: Engine, _ seq: UInt64) -> Bool {
    #expect(e.pauseOffloadIO(true))
    let order = EventLog()
    let caller = loggedCall("swap-out", order) { try e.swapOutAsync(seq) }
    let returned = waitUntil(seconds: 10) { !order.events.isEmpty }
    if !returned { _ = e.pauseOffloadIO(false) }
    caller.join()
    _ = e.pauseOffloadIO(true)
    return returned && order.events == ["swap-out returned"]
}

/// This process's descriptors whose /proc/self/fd link names `path`.
func descriptors(naming path: String) -> [Int32] {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return fds.compactMap { Int32($0) }.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)")) == path }
}
