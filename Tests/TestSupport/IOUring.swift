import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// Whether an I/O queue (`kvm_io_create`) here runs on io_uring, not on the thread fallback a
/// sandbox or a kernel without io_uring gets: the condition of the tests of the hand-over to
/// the kernel. Probed once, with a depth-1 queue on /dev/null.
public let ioUringWorks: Bool = {
    let fd = open("/dev/null", O_RDWR | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    guard let io = ioQueue(on: fd, depth: 1) else { return false }
    defer { kvm_io_destroy(io) }
    return kvm_io_backend(io) == Int32(KVM_IO_URING)
}()

/// A `kvm_io_create` queue of `depth` entries over the one file `fd`, or nil when it fails.
/// The caller destroys it (`kvm_io_destroy`).
public func ioQueue(on fd: Int32, depth: UInt32) -> OpaquePointer? {
    var files = [fd]
    var cfg = kvm_io_config()
    cfg.depth = depth
    cfg.n_files = 1
    var io: OpaquePointer?
    let rc = files.withUnsafeMutableBufferPointer { f in
        cfg.files = UnsafePointer(f.baseAddress)
        return kvm_io_create(&cfg, &io)
    }
    return rc == 0 ? io : nil
}
