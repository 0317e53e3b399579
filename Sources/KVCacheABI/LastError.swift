#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The calling thread's message for its most recent failed `kvc_*` call.
///
/// Each thread owns one buffer of `capacity` bytes, allocated on its first failure and freed
/// by the thread-specific-data destructor when the thread exits; a failure overwrites it in
/// place, so the pointer `kvc_last_error` returns stays valid until the thread's next failure.
/// Successful calls never touch it (no thread-local access on the fast path).
enum LastError {
    /// Bytes of a thread's buffer, including the terminating NUL; longer messages are cut at
    /// a UTF-8 character boundary.
    static let capacity = 512

    /// The thread-specific-data key of the buffers; nil if the process ran out of keys, in
    /// which case messages are dropped (statuses still say what failed).
    private static let key: pthread_key_t? = {
        var key = pthread_key_t()
        // libc's free itself, not a closure compiled into this library, so that a thread
        // exiting after the library was unloaded does not call into unmapped code.
        guard pthread_key_create(&key, free) == 0 else { return nil }
        return key
    }()

    /// The "" returned to threads that have not failed yet. Immortal, never written.
    nonisolated(unsafe) private static let empty: UnsafePointer<CChar> = {
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: 1)
        p.initialize(to: 0)
        return UnsafePointer(p)
    }()

    /// This thread's message, or "" when it has none. Never nil.
    static var message: UnsafePointer<CChar> {
        guard let key, let buffer = pthread_getspecific(key) else { return empty }
        return UnsafePointer(buffer.assumingMemoryBound(to: CChar.self))
    }

    /// Replaces this thread's message with `text`, cut to `capacity - 1` bytes.
    static func set(_ text: String) {
        guard let buffer = threadBuffer() else { return }
        var text = text
        text.withUTF8 { utf8 in
            var n = min(utf8.count, capacity - 1)
            // Never cut inside a multi-byte character: back up over continuation bytes.
            while n > 0 && n < utf8.count && utf8[n] & 0xC0 == 0x80 { n -= 1 }
            if n > 0 { memcpy(buffer, utf8.baseAddress!, n) }
            buffer[n] = 0
        }
    }

    /// Forgets this thread's message (tests use it to tell a fresh message from a stale one).
    static func clear() {
        guard let key, let buffer = pthread_getspecific(key) else { return }
        buffer.assumingMemoryBound(to: CChar.self).pointee = 0
    }

    /// This thread's buffer, allocated on first use; nil if allocation failed.
    private static func threadBuffer() -> UnsafeMutablePointer<CChar>? {
        guard let key else { return nil }
        if let buffer = pthread_getspecific(key) { return buffer.assumingMemoryBound(to: CChar.self) }
        guard let buffer = malloc(capacity) else { return nil }
        guard pthread_setspecific(key, buffer) == 0 else {
            free(buffer)
            return nil
        }
        return buffer.assumingMemoryBound(to: CChar.self)
    }
}

/// `kvc_last_error`: this thread's last failure message, "" if none. Never NULL.
@c public func kvc_last_error() -> UnsafePointer<CChar> {
    LastError.message
}
