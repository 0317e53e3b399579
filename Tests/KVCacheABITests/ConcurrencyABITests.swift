import Dispatch
import Testing
@testable import KVCacheABI

@Suite struct ConcurrencyABITests {
    @Test(arguments: bothLayouts)
    func threadsWorkingOnDistinctSequencesKeepEachOthersBytes(layout: UInt32) throws {
        // The fixture's helpers only read its state after set-up, so sharing it is safe.
        nonisolated(unsafe) let f = try ABIFixture(layout: layout)
        let threads = 4, rounds = 25
        nonisolated(unsafe) var problems = [String?](repeating: nil, count: threads)
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            do {
                for round in 0..<rounds {
                    let seq = UInt64(10_000 + thread * 1000 + round)  // clear of the witnesses (1001, 1002)
                    let prompt = f.uniqueTokens(seq, count: 5 + round % 7)
                    try f.create(seq, tokens: prompt)
                    try f.write(seq, salt: Int(seq), from: 0, to: prompt.count)
                    try f.append(seq, tokens: [1, 2, 3])
                    try f.write(seq, salt: Int(seq), from: prompt.count, to: prompt.count + 3)
                    if let bad = try f.firstMismatch(seq, salt: Int(seq), to: prompt.count + 3) {
                        problems[thread] = bad
                        return
                    }
                    // This thread's failure message is its own, whatever the others do meanwhile.
                    #expect(kvc_seq_free(f.handle, seq) == KVC_OK)
                    #expect(kvc_seq_free(f.handle, seq) == KVC_ERR_NOT_FOUND)
                    #expect(String(cString: kvc_last_error()).contains("kvc_seq_free(seq \(seq))"))
                }
            } catch {
                problems[thread] = "\(error)"
            }
        }
        #expect(problems.allSatisfy { $0 == nil }, "\(problems)")
        #expect(try f.stats().sequences == 2)
        try f.expectWitnessesIntact()
    }
}
