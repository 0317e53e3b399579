import CKVMemory
import Synchronization
import TestSupport
@testable import KVCache

#if canImport(Glibc)
import Glibc
#endif

/// A test hook for the engine's paths that leave its lock for slow work (a swap-out's copy,
/// a sync's fdatasyncs): each run checks that the lock is free (a `trylock`, which fails for
/// the lock's own holder, the hooked thread, when nobody else calls), and the first run, when
/// it is free, has another thread run `during` and waits for it (on code that held the lock
/// those calls would wait for ever, so they run only when it is free). `hook` is what the
/// engine's `set...Hook` takes; `seen` what the runs saw.
final class LockFreeProbe: Sendable {
    /// What the runs saw: how many, whether the lock was free on the first and on every one,
    /// and what `during` returned ("failed: ..." when it threw).
    struct Seen {
        var runs = 0
        var lockFree = false
        var everyRunLockFree = true
        var otherCalls: String? = nil
    }

    private let engine: Engine
    private let during: @Sendable () throws(KVError) -> String
    private let state = Mutex(Seen())

    init(_ engine: Engine, during: @escaping @Sendable () throws(KVError) -> String) {
        self.engine = engine
        self.during = during
    }

    /// The hook to install.
    var hook: @Sendable () -> Void { { self.run() } }

    /// What the runs so far saw.
    var seen: Seen { state.withLock { $0 } }

    private func run() {
        let mutex = kvm_lock_mutex(engine.mutex)!
        let free = pthread_mutex_trylock(mutex) == 0
        if free { pthread_mutex_unlock(mutex) }
        let first = state.withLock { s in
            s.runs += 1
            s.everyRunLockFree = s.everyRunLockFree && free
            if s.runs == 1 { s.lockFree = free }
            return s.runs == 1
        }
        guard first && free else { return }
        let other = TestThread {
            let result: String
            do throws(KVError) { result = try self.during() } catch { result = "failed: \(error)" }
            self.state.withLock { $0.otherCalls = result }
        }
        other.join()
    }
}
