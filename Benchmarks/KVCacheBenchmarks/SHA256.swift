/// SHA-256 as FIPS 180-4 defines it (sections 4.1.2, 4.2.2, 5.1.1, 5.3.3 and 6.2), written from
/// the standard for `VLLMBlockPool`'s `.sha256` block naming, vLLM's default
/// `prefix_caching_hash_algo`. Neither Foundation on Linux nor the toolchain brings one (no
/// CryptoKit), and the project adds no package for a benchmark.
///
/// Portable scalar code, no SHA extensions: on a CPU that has them (this project's machines do)
/// the OpenSSL behind Python's `hashlib`, which vLLM calls, compresses faster, so a lookup with
/// this hash is slower than vLLM's hashing alone would be (docs/benchmarks.md measures both).
/// `selfTestFailure()` checks it against the standard's examples; the benchmark runs it first.
///
/// Costs: one compression (64 rounds) per 64 bytes of padded message, `(n + 72) / 64` of them
/// for n bytes; nothing allocated (the message schedule and the padded tail are on the stack).
enum SHA256 {
    /// A digest: the final hash value's words H0...H7. Its 32 bytes are the words in order,
    /// each big-endian.
    typealias Digest = SIMD8<UInt32>

    /// The initial hash value H(0) (section 5.3.3).
    private static let initial = Digest(0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a,
                                        0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19)

    /// The constants K0...K63 (section 4.2.2).
    private static let roundConstants: [UInt32] = [
        0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
        0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
        0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
        0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
        0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
        0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
        0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
        0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
    ]

    /// The digest of `message`.
    static func hash(_ message: UnsafeRawBufferPointer) -> Digest {
        var h = initial
        roundConstants.withUnsafeBufferPointer { k in
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { w in
                let count = message.count
                let whole = count / 64 * 64
                var offset = 0
                while offset < whole {
                    compress(&h, message.baseAddress! + offset, w.baseAddress!, k.baseAddress!)
                    offset += 64
                }
                // Padding (5.1.1): the remaining bytes, 0x80, zeros, then the length in bits as
                // a 64-bit big-endian integer, ending the first 64-byte chunk it fits in.
                withUnsafeTemporaryAllocation(byteCount: 128, alignment: 8) { tail in
                    let rest = count - whole
                    tail.initializeMemory(as: UInt8.self, repeating: 0)
                    if rest > 0 { tail.baseAddress!.copyMemory(from: message.baseAddress! + whole, byteCount: rest) }
                    tail[rest] = 0x80
                    let chunks = rest + 9 <= 64 ? 1 : 2
                    tail.storeBytes(of: (UInt64(count) &* 8).bigEndian, toByteOffset: chunks * 64 - 8, as: UInt64.self)
                    for c in 0..<chunks { compress(&h, UnsafeRawPointer(tail.baseAddress! + c * 64), w.baseAddress!, k.baseAddress!) }
                }
            }
        }
        return h
    }

    /// The digest's first 64 bits: its first 8 bytes as a big-endian integer.
    static func prefix64(_ digest: Digest) -> UInt64 { UInt64(digest[0]) << 32 | UInt64(digest[1]) }

    /// Nil when `hash` gives the digests of FIPS 180-4's examples (the one-chunk "abc", the
    /// two-chunk 448-bit message, and the 896-bit one, which also has a whole chunk before its
    /// padding) and of the empty message; else what differs. O(1).
    static func selfTestFailure() -> String? {
        let examples: [(String, Digest)] = [
            ("abc", Digest(0xba78_16bf, 0x8f01_cfea, 0x4141_40de, 0x5dae_2223,
                           0xb003_61a3, 0x9617_7a9c, 0xb410_ff61, 0xf200_15ad)),
            ("", Digest(0xe3b0_c442, 0x98fc_1c14, 0x9afb_f4c8, 0x996f_b924,
                        0x27ae_41e4, 0x649b_934c, 0xa495_991b, 0x7852_b855)),
            ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
             Digest(0x248d_6a61, 0xd206_38b8, 0xe5c0_2693, 0x0c3e_6039,
                    0xa33c_e459, 0x64ff_2167, 0xf6ec_edd4, 0x19db_06c1)),
            ("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
             Digest(0xcf5b_16a7, 0x78af_8380, 0x036c_e59e, 0x7b04_9237,
                    0x0b24_9b11, 0xe8f0_7a51, 0xafac_4503, 0x7afe_e9d1)),
        ]
        for (message, expected) in examples {
            let digest = Array(message.utf8).withUnsafeBytes { hash($0) }
            if digest != expected {
                let shown = message.count > 8 ? message.prefix(8) + "..." : message
                return "SHA-256 of the \(message.utf8.count)-byte message \"\(shown)\" is \(hex(digest)), FIPS 180-4 gives \(hex(expected))"
            }
        }
        return nil
    }

    /// The digest's 32 bytes in hexadecimal.
    static func hex(_ digest: Digest) -> String {
        (0..<8).map { i in
            let word = String(digest[i], radix: 16)
            return String(repeating: "0", count: 8 - word.count) + word
        }.joined()
    }

    /// One compression of the 64-byte `chunk` into `h` (6.2.2), with `w` for the message
    /// schedule (64 words) and `k` the round constants.
    @inline(__always)
    private static func compress(_ h: inout Digest, _ chunk: UnsafeRawPointer, _ w: UnsafeMutablePointer<UInt32>,
                                 _ k: UnsafePointer<UInt32>) {
        for t in 0..<16 { w[t] = UInt32(bigEndian: chunk.loadUnaligned(fromByteOffset: 4 * t, as: UInt32.self)) }
        for t in 16..<64 {
            let s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
            let s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
            w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
        }
        var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7]
        for t in 0..<64 {
            let t1 = hh &+ (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) &+ ((e & f) ^ (~e & g)) &+ k[t] &+ w[t]
            let t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) &+ ((a & b) ^ (a & c) ^ (b & c))
            hh = g
            g = f
            f = e
            e = d &+ t1
            d = c
            c = b
            b = a
            a = t1 &+ t2
        }
        h &+= Digest(a, b, c, d, e, f, g, hh)
    }

    @inline(__always)
    private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { x >> n | x << (32 - n) }
}
