#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import KVCacheABI

/// Runs `body` on a new pthread and waits for it (a fresh thread has no last error).
private func onNewThread(_ body: @escaping () -> Void) throws {
    final class Box { let body: () -> Void; init(_ body: @escaping () -> Void) { self.body = body } }
    var thread = pthread_t()
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    let rc = pthread_create(&thread, nil, { arg in
        let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
        box.body()
        return nil
    }, box)
    try #require(rc == 0)
    pthread_join(thread, nil)
}

@Suite struct LastErrorTests {
    @Test func aThreadThatNeverFailedSeesAnEmptyMessage() throws {
        nonisolated(unsafe) var seen: String? = nil
        try onNewThread { seen = String(cString: kvc_last_error()) }
        #expect(seen == "")
    }

    @Test func lastErrorIsPerThread() throws {
        var n = 0
        LastError.clear()
        #expect(kvc_seq_length(nil, 1, &n) == KVC_ERR_INVALID_ARGUMENT)
        let mine = String(cString: kvc_last_error())
        #expect(mine.contains("kvc_seq_length"))

        nonisolated(unsafe) var before: String? = nil
        nonisolated(unsafe) var theirs: String? = nil
        try onNewThread {
            before = String(cString: kvc_last_error())
            var hashes = [UInt64](repeating: 0, count: 1)
            var count = 0
            _ = kvc_hash_tokens(nil, 5, 4, &hashes, 1, &count)
            theirs = String(cString: kvc_last_error())
        }
        #expect(before == "", "a new thread must not see another thread's message")
        #expect(theirs?.contains("kvc_hash_tokens") == true)
        #expect(String(cString: kvc_last_error()) == mine, "another thread's failure changed this thread's message")
    }

    @Test func successDoesNotClearTheLastError() {
        var n = 0
        LastError.clear()
        _ = kvc_seq_length(nil, 7, &n)
        let message = String(cString: kvc_last_error())
        var hash: UInt64 = 0
        var count = 0
        #expect(kvc_hash_tokens([1, 2, 3, 4], 4, 4, &hash, 1, &count) == KVC_OK)
        #expect(String(cString: kvc_last_error()) == message)
    }

    @Test func longMessagesAreCutAtACharacterBoundary() {
        let text = String(repeating: "é", count: 400)  // 800 bytes of 2-byte characters
        LastError.set("x" + text)  // odd offset: the cut falls inside a character
        let message = String(cString: kvc_last_error())
        #expect(message.utf8.count <= LastError.capacity - 1)
        #expect(message.utf8.count >= LastError.capacity - 2)
        #expect(message.dropFirst().allSatisfy { $0 == "é" })
        LastError.clear()
    }
}
