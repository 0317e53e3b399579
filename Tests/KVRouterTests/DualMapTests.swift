import KVCache
import Testing
@testable import KVRouter

@Suite struct DualMapTests {
    @Test func theTwoCandidatesAreAlwaysDistinct() throws {
        for n in [2, 3, 8, 64] {
            let r = try makeRouter(.dualMap, instances: n)
            var agreed = 0
            for k in 0..<10_000 {
                let key = BlockHash.finalize(UInt64(k) &+ 12345)
                let (a, b) = r.candidates(key)
                #expect(a >= 0 && b >= 0 && a != b, "key \(k) with \(n) instances gave \(a), \(b)")
                if r.ring1.lookup(key) == r.ring2.lookup(key) { agreed += 1 }
            }
            // The rings are independent: they agree on about 1/n of the keys, which then take
            // the next distinct instance on ring 2.
            #expect(Double(agreed) / 10_000 < 2.0 / Double(n) + 0.02)
        }
    }

    @Test func oneInstanceHasOneCandidate() throws {
        let r = try makeRouter(.dualMap, instances: 1)
        #expect(r.candidates(42) == (0, -1))
        #expect(try r.routeSlot([42], tokens: 16) == 0)
    }

    @Test func theAffinityCandidateWinsUpToTheThresholdAndTheLessLoadedOneJustAbove() throws {
        // Threshold = 0.5 x 1000 ms = 500 ms at 0.1 ms per token: 5000 tokens.
        let r = try makeRouter(.dualMap, instances: 8) { $0.ttftSLOMilliseconds = 1000; $0.prefillMillisecondsPerToken = 0.1 }
        let hashes = chain(7, count: 4)  // 64 tokens of 16-token blocks
        let (a, b) = r.candidates(r.key(of: hashes.withUnsafeBufferPointer { $0 }))
        try r.store(hashes, at: r.id(ofSlot: a))  // a caches the whole prompt: 0 uncached tokens

        // a's estimated TTFT = pending x 0.1 ms; exactly at the threshold it keeps affinity.
        r.report(slot: a, load: InstanceLoad(pendingPrefillTokens: 5000))
        r.report(slot: b, load: InstanceLoad(pendingPrefillTokens: 0))
        #expect(try r.routeSlot(hashes, tokens: 64) == a)
        #expect(r.sloSwitches == 0)

        // One token more and it switches to the candidate with the lower estimate.
        r.report(slot: a, load: InstanceLoad(pendingPrefillTokens: 5001))
        r.report(slot: b, load: InstanceLoad(pendingPrefillTokens: 0))
        #expect(try r.routeSlot(hashes, tokens: 64) == b)
        #expect(r.sloSwitches == 1)

        // Over the threshold but the other candidate is worse: affinity stays.
        r.report(slot: a, load: InstanceLoad(pendingPrefillTokens: 6000))
        r.report(slot: b, load: InstanceLoad(pendingPrefillTokens: 7000))
        #expect(try r.routeSlot(hashes, tokens: 64) == a)
    }

    @Test func equalAffinityGoesToFewerRunningBlocks() throws {
        let r = try makeRouter(.dualMap, instances: 8)
        let hashes = chain(9, count: 2)
        let (a, b) = r.candidates(r.key(of: hashes.withUnsafeBufferPointer { $0 }))
        r.report(slot: a, load: InstanceLoad(runningBlocks: 100))
        r.report(slot: b, load: InstanceLoad(runningBlocks: 10))
        #expect(try r.routeSlot(hashes, tokens: 32) == b)
    }

    /// The documented last tie-break (step 2): equal affinity and equal running blocks go to
    /// the ring-1 candidate, whichever instance that is for the key (cold caches, idle loads).
    @Test func aFullTieGoesToTheRing1Candidate() throws {
        let r = try makeRouter(.dualMap, instances: 2)
        var firsts = Set<Int>()
        for request in 0..<16 as Range<UInt64> {
            let hashes = chain(100 + request, count: 2)
            let (a, _) = r.candidates(r.key(of: hashes.withUnsafeBufferPointer { $0 }))
            firsts.insert(a)
            for slot in 0..<2 { r.report(slot: slot, load: InstanceLoad()) }  // routing commits load: reset
            #expect(try r.routeSlot(hashes, tokens: 32) == a, "request \(request)")
        }
        #expect(firsts == [0, 1], "both instances are some key's ring-1 candidate")
    }

    @Test func theKeyIsTheHashOfTheFirstKeyBlocks() throws {
        let r = try makeRouter(.dualMap, instances: 8)
        let long = chain(3, count: 10), short = Array(long.prefix(2)), one = Array(long.prefix(1))
        #expect(r.key(of: long.withUnsafeBufferPointer { $0 }) == long[1])
        #expect(r.key(of: short.withUnsafeBufferPointer { $0 }) == long[1])
        #expect(r.key(of: one.withUnsafeBufferPointer { $0 }) == long[0])
    }

    @Test func addingANinthInstanceRemapsAboutOneNinthOfTheKeys() throws {
        let r = try makeRouter(.dualMap, instances: 8)
        let keys = (0..<10_000).map { BlockHash.finalize(UInt64($0) &* 0x9E37_79B9 &+ 1) }
        let before1 = keys.map { r.ring1.lookup($0) }
        let before2 = keys.map { r.candidates($0) }
        try r.addInstance(8)
        var moved1 = 0, movedPair = 0
        for (i, k) in keys.enumerated() {
            if r.ring1.lookup(k) != before1[i] { moved1 += 1 }
            if r.candidates(k) != before2[i] { movedPair += 1 }
            // A key only ever moves to the new instance on ring 1.
            if r.ring1.lookup(k) != before1[i] { #expect(r.id(ofSlot: r.ring1.lookup(k)) == 8) }
        }
        let fraction = Double(moved1) / 10_000
        #expect(fraction >= 0.05 && fraction <= 0.20, "ring 1 remapped \(fraction)")
        // Either candidate may change; still about 2/9, far from a full reshuffle.
        #expect(Double(movedPair) / 10_000 <= 0.40, "candidate pairs changed for \(movedPair)")
    }
}
