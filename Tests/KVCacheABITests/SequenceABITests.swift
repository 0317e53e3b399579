import Testing
@testable import KVCacheABI

@Suite struct SequenceABITests {
    /// kvc_seq_abort frees a sequence whose K/V was computed only in part: the blocks past
    /// that leave the prefix index, so a later prompt hits only computed ones.
    @Test(arguments: bothLayouts)
    func abortTakesTheUncomputedBlocksOutOfThePrefixIndex(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        let prompt = f.uniqueTokens(1, count: 24)
        _ = try f.create(1, tokens: prompt)
        try f.write(1, salt: 5, from: 0, to: 9)
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_abort", "computed_tokens", "25"]) { kvc_seq_abort($0, 1, 25) }
        // SIZE_MAX (an underflowed count) is named as the caller passed it, like every size_t.
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["computed_tokens 18446744073709551615", "PTRDIFF_MAX"]) {
            kvc_seq_abort($0, 1, -1)
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_abort", "engine", "NULL"]) { _ in kvc_seq_abort(nil, 1, 0) }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_abort", "77"]) { kvc_seq_abort($0, 77, 0) }
        #expect(kvc_seq_abort(f.handle, 1, 9) == KVC_OK)
        #expect(try f.create(2, tokens: prompt) == 8, "blocks 0 and 1 were computed; 2 (half) and later left the index")
        #expect(try f.firstMismatch(2, salt: 5, to: 8) == nil)
    }

    /// kvc_seq_create_salted: one salt's prompts share blocks, another salt's do not, salt 0
    /// is kvc_seq_create; bad input is refused as kvc_seq_create's, changing nothing.
    @Test(arguments: bothLayouts)
    func saltedCreatesShareOnlyWithinTheirSalt(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        let prompt = f.uniqueTokens(1, count: 13)
        func create(_ seq: UInt64, salt: UInt64) throws -> Int {
            var cached = -1
            let rc = kvc_seq_create_salted(f.handle, seq, prompt, prompt.count, salt, &cached)
            try #require(rc == KVC_OK, "kvc_seq_create_salted(\(seq)): \(String(cString: kvc_last_error()))")
            return cached
        }
        #expect(try create(1, salt: 21) == 0)
        try f.write(1, salt: 3, from: 0, to: 13)
        #expect(try create(2, salt: 22) == 0)
        #expect(try create(3, salt: 21) == 12)
        #expect(try f.firstMismatch(3, salt: 3, to: 12) == nil)
        #expect(try f.create(4, tokens: prompt) == 0, "kvc_seq_create: unsalted")
        #expect(try create(5, salt: 0) == 12, "salt 0 shares with kvc_seq_create")
        var cached = 0
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_create_salted", "salt 21", "cached_tokens"]) {
            kvc_seq_create_salted($0, 6, prompt, prompt.count, 21, nil)
        }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_create_salted", "n_tokens is 0"]) {
            kvc_seq_create_salted($0, 6, prompt, 0, 21, &cached)
        }
        try f.expectFailure(KVC_ERR_EXISTS, mentioning: ["kvc_seq_create_salted", "1"]) {
            kvc_seq_create_salted($0, 1, prompt, prompt.count, 21, &cached)
        }
        #expect(try f.firstMismatch(1, salt: 3, to: 13) == nil, "the refused calls left sequence 1 intact")
    }

    /// kvc_seq_truncate: the kept tokens' K/V stay, appends continue from the cut; bad input
    /// is refused with its status and changes nothing.
    @Test(arguments: bothLayouts)
    func truncateRollsBackTheLastTokens(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        let prompt = f.uniqueTokens(1, count: 20)
        _ = try f.create(1, tokens: prompt)
        try f.write(1, salt: 4, from: 0, to: 20)
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_truncate", "n_tokens 0"]) { kvc_seq_truncate($0, 1, 0) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_truncate", "21"]) { kvc_seq_truncate($0, 1, 21) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_tokens 18446744073709551615", "PTRDIFF_MAX"]) {
            kvc_seq_truncate($0, 1, -1)
        }
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_truncate", "9"]) { kvc_seq_truncate($0, 9, 3) }
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_truncate", "engine", "NULL"]) { _ in kvc_seq_truncate(nil, 1, 3) }
        #expect(kvc_seq_truncate(f.handle, 1, 13) == KVC_OK)
        #expect(try f.length(1) == 13)
        #expect(try f.firstMismatch(1, salt: 4, to: 13) == nil)
        try f.append(1, tokens: f.uniqueTokens(2, count: 5))
        #expect(try f.length(1) == 18)
        #expect(try f.firstMismatch(1, salt: 4, to: 13) == nil)
    }

    @Test(arguments: bothLayouts)
    func createWithNullEngineIsInvalid(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        var cached = 0
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_create", "engine", "NULL"]) { _ in
            kvc_seq_create(nil, 1, [1, 2, 3], 3, &cached)
        }
    }

    @Test(arguments: bothLayouts)
    func createWithNullTokensIsInvalid(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        var cached = 0
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["tokens", "NULL"]) { kvc_seq_create($0, 1, nil, 3, &cached) }
    }

    @Test(arguments: bothLayouts)
    func createWithNullCachedTokensIsInvalid(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["cached_tokens", "NULL"]) {
            kvc_seq_create($0, 1, [1, 2, 3], 3, nil)
        }
    }

    @Test(arguments: bothLayouts)
    func createWithZeroTokensIsInvalid(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        var cached = 0
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_tokens", "0"]) {
            kvc_seq_create($0, 1, [1, 2, 3], 0, &cached)
        }
    }

    @Test(arguments: bothLayouts)
    func createBeyondMaxSeqTokensIsInvalid(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        let tokens = f.uniqueTokens(1, count: Int(f.config.maxSeqTokens) + 1)
        var cached = 0
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["\(tokens.count)", "max_seq_tokens"]) {
            kvc_seq_create($0, 1, tokens, tokens.count, &cached)
        }
    }

    @Test(arguments: bothLayouts)
    func createWithACountAbovePtrdiffMaxIsInvalid(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        var cached = 0
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_tokens", "\(UInt.max)"]) {
            kvc_seq_create($0, 1, [1, 2, 3], -1, &cached)  // SIZE_MAX as C passes it
        }
    }

    @Test(arguments: bothLayouts)
    func createOfALiveSequenceIsExists(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        var cached = 0
        try f.expectFailure(KVC_ERR_EXISTS, mentioning: ["kvc_seq_create", "sequence 1001 already exists"]) {
            kvc_seq_create($0, 1001, [7, 8, 9], 3, &cached)
        }
    }

    @Test(arguments: bothLayouts)
    func appendToAnUnknownSequenceIsNotFound(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_append", "sequence 77 does not exist"]) { kvc_seq_append($0, 77, [1], 1) }
    }

    @Test(arguments: bothLayouts)
    func appendWithNullEngineIsInvalid(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["engine", "NULL"]) { _ in kvc_seq_append(nil, 1001, [1], 1) }
    }

    @Test(arguments: bothLayouts)
    func appendWithNullTokensIsInvalid(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["tokens", "NULL"]) { kvc_seq_append($0, 1001, nil, 2) }
    }

    @Test(arguments: bothLayouts)
    func appendOfZeroTokensIsANoOp(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        let before = try f.stats()
        #expect(kvc_seq_append(f.handle, 1001, nil, 0) == KVC_OK)
        #expect(try f.length(1001) == f.witnesses[1001]!.tokens.count)
        #expect(try f.stats() == before)
        try f.expectWitnessesIntact()
    }

    @Test(arguments: bothLayouts)
    func appendPastMaxSeqTokensIsInvalidAndAppendsNothing(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        let room = Int(f.config.maxSeqTokens) - f.witnesses[1001]!.tokens.count
        let tokens = [Int32](repeating: 5, count: room + 1)
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["kvc_seq_append", "1001"]) {
            kvc_seq_append($0, 1001, tokens, tokens.count)
        }
    }

    @Test(arguments: bothLayouts)
    func forkFromAnUnknownParentIsNotFound(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_fork", "sequence 55 does not exist"]) { kvc_seq_fork($0, 55, 56) }
    }

    @Test(arguments: bothLayouts)
    func forkToALiveChildIsExists(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        try f.expectFailure(KVC_ERR_EXISTS, mentioning: ["kvc_seq_fork", "sequence 1002 already exists"]) { kvc_seq_fork($0, 1001, 1002) }
    }

    @Test(arguments: bothLayouts)
    func forkOntoItselfIsExists(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        try f.expectFailure(KVC_ERR_EXISTS, mentioning: ["kvc_seq_fork", "sequence 1001 already exists"]) { kvc_seq_fork($0, 1001, 1001) }
    }

    @Test(arguments: bothLayouts)
    func forkWithNullEngineIsInvalid(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["engine", "NULL"]) { _ in kvc_seq_fork(nil, 1001, 3) }
    }

    @Test(arguments: bothLayouts)
    func freeOfAnUnknownSequenceIsNotFound(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_free", "sequence 404 does not exist"]) { kvc_seq_free($0, 404) }
    }

    @Test(arguments: bothLayouts)
    func doubleFreeIsNotFound(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        try f.create(9, tokens: f.uniqueTokens(9, count: 6))
        #expect(kvc_seq_free(f.handle, 9) == KVC_OK)
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_free", "sequence 9 does not exist"]) { kvc_seq_free($0, 9) }
    }

    @Test(arguments: bothLayouts)
    func freeWithNullEngineIsInvalid(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["engine", "NULL"]) { _ in kvc_seq_free(nil, 1001) }
    }

    @Test(arguments: bothLayouts)
    func aFreedIdCanBeCreatedAgain(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        try f.create(9, tokens: f.uniqueTokens(9, count: 6))
        #expect(kvc_seq_free(f.handle, 9) == KVC_OK)
        try f.create(9, tokens: f.uniqueTokens(10, count: 3))
        #expect(try f.length(9) == 3)
    }

    @Test(arguments: bothLayouts)
    func lengthOfAnUnknownSequenceIsNotFound(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        var n = 0
        try f.expectFailure(KVC_ERR_NOT_FOUND, mentioning: ["kvc_seq_length", "sequence 31 does not exist"]) { kvc_seq_length($0, 31, &n) }
    }

    @Test(arguments: bothLayouts)
    func lengthWithNullOutputIsInvalid(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["n_tokens", "NULL"]) { kvc_seq_length($0, 1001, nil) }
    }

    @Test(arguments: bothLayouts)
    func lengthWithNullEngineIsInvalid(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        var n = 0
        try f.expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["engine", "NULL"]) { _ in kvc_seq_length(nil, 1001, &n) }
    }

    @Test(arguments: bothLayouts)
    func moreThanMaxSeqsLiveSequencesIsAStatus(layout: UInt32) throws {
        let f = try ABIFixture(layout: layout)
        let live = Int(try f.stats().sequences)
        for seq in live..<Int(f.config.maxSeqs) {
            try f.create(UInt64(seq), tokens: f.uniqueTokens(UInt64(seq), count: 2))
        }
        var cached = 0
        try f.expectFailure(KVC_ERR_OUT_OF_MEMORY, mentioning: ["kvc_seq_create", "\(f.config.maxSeqs)"]) {
            kvc_seq_create($0, 99, [1, 2], 2, &cached)
        }
    }
}
