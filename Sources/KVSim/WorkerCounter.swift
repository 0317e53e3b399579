#if canImport(Glibc)
import Glibc
#endif

/// A shared counter handing out work indexes to worker threads (each index once).
/// The mutex lives at a fixed address (allocated), as pthreads requires.
final class WorkerCounter: @unchecked Sendable {
    private var value = 0
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// The next index: 0, 1, 2, ...
    func take() -> Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        value += 1
        return value - 1
    }
}
