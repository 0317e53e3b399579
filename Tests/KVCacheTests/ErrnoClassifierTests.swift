import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import KVCache

/// The one errno classifier (`KVError.errno`) keeps the statuses the two it replaced gave:
/// `check`'s for memory calls, `KVError.file`'s for file calls.
@Suite("errno -> KVError, memory and file calls")
struct ErrnoClassifierTests {
    @Test func memoryCallsKeepCheckStatuses() {
        let expected: [(Int32, KVError.Code)] = [
            (EINVAL, .invalidArgument), (ENOMEM, .outOfMemory), (ENOSPC, .outOfMemory),
            (EFBIG, .outOfMemory), (EMFILE, .outOfMemory), (ENFILE, .outOfMemory),
            (EPERM, .unsupported), (EACCES, .unsupported), (EIO, .internal), (ENOENT, .internal),
        ]
        for (err, code) in expected {
            #expect(KVError.errno(err, "m", .memory).code == code, "errno \(err)")
        }
        #expect(KVError.errno(EPERM, "m", .memory).message
                == "m (the environment refuses it: a seccomp profile or a missing capability)")
        #expect(KVError.errno(EIO, "m", .memory).message == "m")
    }

    @Test func fileCallsKeepFileStatuses() {
        let expected: [(Int32, KVError.Code)] = [
            (EMFILE, .outOfMemory), (ENFILE, .outOfMemory), (ENOMEM, .outOfMemory),
            (EINVAL, .io), (ENOSPC, .io), (EFBIG, .io), (EPERM, .io), (EACCES, .io), (ENOENT, .io),
        ]
        for (err, code) in expected {
            #expect(KVError.errno(err, "f", .file(otherwise: .io)).code == code, "errno \(err)")
            #expect(KVError.errno(err, "f", .file(otherwise: .io)).message == "f")
        }
        #expect(KVError.errno(EINVAL, "f", .file(otherwise: .invalidArgument)).code == .invalidArgument)
        #expect(KVError.errno(EMFILE, "f", .file(otherwise: .invalidArgument)).code == .outOfMemory)
    }
}
