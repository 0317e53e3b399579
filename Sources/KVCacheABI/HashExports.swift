import KVCache

/// `kvc_hash_tokens`: `BlockHash.chain` over the full blocks of `tokens`, without a salt.
/// `*n_hashes` gets the full count even when it exceeds `capacity` (then the first `capacity`
/// hashes are written and the status is `KVC_ERR_BUFFER_TOO_SMALL`).
@c public func kvc_hash_tokens(
    _ tokens: UnsafePointer<Int32>?, _ nTokens: Int, _ blockTokens: UInt32,
    _ hashes: UnsafeMutablePointer<UInt64>?, _ capacity: Int, _ nHashes: UnsafeMutablePointer<Int>?
) -> kvc_status {
    status("kvc_hash_tokens") { () throws(KVError) in
        try hash(tokens, nTokens, blockTokens, salt: 0, hashes, capacity, nHashes)
    }
}

/// `kvc_hash_tokens_salted`: `kvc_hash_tokens` under `salt` (`BlockHash.root`).
@c public func kvc_hash_tokens_salted(
    _ tokens: UnsafePointer<Int32>?, _ nTokens: Int, _ blockTokens: UInt32, _ salt: UInt64,
    _ hashes: UnsafeMutablePointer<UInt64>?, _ capacity: Int, _ nHashes: UnsafeMutablePointer<Int>?
) -> kvc_status {
    status("kvc_hash_tokens_salted", "salt \(salt)") { () throws(KVError) in
        try hash(tokens, nTokens, blockTokens, salt: salt, hashes, capacity, nHashes)
    }
}

/// The checks and the chain both hash calls share.
private func hash(
    _ tokens: UnsafePointer<Int32>?, _ nTokens: Int, _ blockTokens: UInt32, salt: UInt64,
    _ hashes: UnsafeMutablePointer<UInt64>?, _ capacity: Int, _ nHashes: UnsafeMutablePointer<Int>?
) throws(KVError) {
    let nHashes = try required(nHashes, "n_hashes")
    let input = try buffer(tokens, nTokens, "tokens", "n_tokens")
    let output = try buffer(hashes, capacity, "hashes", "capacity")
    guard blockTokens > 0 else { throw KVError(.invalidArgument, "block_tokens is 0") }
    let total = BlockHash.chain(input, blockTokens: Int(blockTokens), salt: salt, into: output)
    nHashes.pointee = total
    guard total <= output.count else {
        throw KVError(.bufferTooSmall,
                      "capacity \(output.count) is less than the \(total) full blocks of \(blockTokens) tokens; "
                      + "the first \(output.count) hashes were written")
    }
}
