#if canImport(Glibc)
import Glibc
#endif

/// A pthread running `body` from its creation: `join` waits for it, `signal` sends it a signal
/// (to interrupt a blocking call it is in). For tests of what one thread's call does while
/// another's is in progress.
public final class TestThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: () -> Void

    public init(_ body: @escaping () -> Void) {
        self.body = body
        let me = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { raw in
            let me = Unmanaged<TestThread>.fromOpaque(raw!).takeRetainedValue()
            me.body()
            return nil
        }, me)
    }

    /// Waits for the thread to end.
    public func join() { pthread_join(thread, nil) }

    /// Sends the thread signal `number` (`pthread_kill`).
    public func signal(_ number: Int32) { pthread_kill(thread, number) }
}
