import CKVMemory
import Testing

/// `kvm_checksum64` is the disk tier's on-disk checksum (slots, headers, journal records): its
/// values change only with a new tier format (`TierIdentity`'s version), or slabs written by
/// an earlier build of the same format (a peer's, or this engine's before a restart) read
/// back as corrupt. `kvm_copy_checksum64` copies and checksums in one
/// pass and must give exactly what a copy followed by `kvm_checksum64` gives.
@Suite("Checksum and copy")
struct ChecksumCopyTests {
    /// Bytes i * 37 + 11 (mod 256).
    static func pattern(_ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 * 37 + 11) } }

    @Test func checksumValuesAreThoseOfTheTierFormat() {
        // Computed by the implementation slabs of tier format 2 are written with (since
        // 2026-11-24: stripes keyed by position). Below 64 bytes (slot headers, journal
        // records) the values are format 1's too, of the implementation of 2026-11-22 (f146648).
        let known: [(Int, UInt64)] = [
            (0, 0xda38_6630_eb0c_cc53), (1, 0xb873_b626_d20f_a45f), (7, 0x591c_39d0_e2bf_8a31),
            (8, 0x54f7_25cd_62d0_ba9f), (63, 0x917e_a4b1_e398_8369), (64, 0x9596_c579_b997_d31e),
            (65, 0x091f_280d_dd5d_3292), (127, 0x574b_3c36_7d69_2208), (128, 0x8ade_25a0_b6bb_72a7),
            (1000, 0xbdf6_d9b6_023b_0366),
        ]
        let bytes = Self.pattern(1000)
        for (length, value) in known {
            #expect(bytes.withUnsafeBytes { kvm_checksum64($0.baseAddress, UInt64(length), 0x5eed) } == value, "length \(length)")
        }
    }

    /// Moving data within the input changes the sum: two 64-byte stripes swapped, two 4 KiB
    /// sectors swapped (a slot's payload written out of order), a stripe moved by one
    /// position. Format 1 summed the stripes of each lane in any order, so each of these
    /// checksummed the same.
    @Test func reorderedStripesChangeTheChecksum() {
        let original = Self.pattern(8192).enumerated().map { UInt8(truncatingIfNeeded: Int($0.element) ^ ($0.offset / 64) &* 131) }
        func sum(_ b: [UInt8]) -> UInt64 { b.withUnsafeBytes { kvm_checksum64($0.baseAddress, UInt64($0.count), 0x5eed) } }
        var stripes = original
        stripes.replaceSubrange(64..<128, with: original[640..<704])
        stripes.replaceSubrange(640..<704, with: original[64..<128])
        let sectors = Array(original[4096...]) + Array(original[..<4096])
        var rotated = original
        rotated.replaceSubrange(0..<128, with: original[64..<128] + original[0..<64])
        for (name, moved) in [("stripes", stripes), ("sectors", sectors), ("adjacent", rotated)] {
            #expect(moved != original && moved.sorted() == original.sorted(), "\(name): a permutation")
            #expect(sum(moved) != sum(original), "\(name)")
        }
    }

    /// Runs of every shape: multiples of 64 (the one-pass loop) and not (copy, then checksum),
    /// sources at odd addresses, none, one or several runs.
    @Test(arguments: [0, 1, 63, 64, 65, 192, 4096, 4104, 32768])
    func copyAndChecksumEqualACopyThenAChecksum(runBytes: Int) {
        var generator = SystemRandomNumberGenerator()
        for count in [0, 1, 3, 8] {
            let source = (0..<(count * runBytes + count + 1)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var destination = [UInt8](repeating: 0xAB, count: count * runBytes + 64)
            let seed = UInt64.random(in: 0...UInt64.max, using: &generator)
            let sum = source.withUnsafeBytes { (s) -> UInt64 in
                // Run i starts at byte 1 + i * (runBytes + 1): unaligned, with a byte between runs.
                let sources: [UnsafeRawPointer?] = (0..<count).map { UnsafeRawPointer(s.baseAddress! + 1 + $0 * (runBytes + 1)) }
                return destination.withUnsafeMutableBytes { kvm_copy_checksum64($0.baseAddress, sources, UInt32(count), UInt64(runBytes), seed) }
            }
            let expected = (0..<count).flatMap { source[(1 + $0 * (runBytes + 1))...].prefix(runBytes) }
            #expect(Array(destination.prefix(count * runBytes)) == expected, "run \(runBytes) x \(count)")
            #expect(destination.suffix(64) == [UInt8](repeating: 0xAB, count: 64), "wrote past the runs: \(runBytes) x \(count)")
            #expect(sum == expected.withUnsafeBytes { kvm_checksum64($0.baseAddress, UInt64($0.count), seed) }, "run \(runBytes) x \(count)")
        }
    }

    /// A slot sealed with the checksum its gather computed is the slot sealed without one,
    /// byte for byte, and verifies.
    @Test func aGatheredSlotSealsAsOneChecksummedAtTheSeal() {
        let runBytes = 4096, count = 4, header = Int(KVM_SLOT_HEADER_BYTES)
        let source = Self.pattern(runBytes * count)
        var gathered = [UInt8](repeating: 0, count: header + runBytes * count)
        let sum = source.withUnsafeBytes { (s) -> UInt64 in
            let sources: [UnsafeRawPointer?] = (0..<count).map { UnsafeRawPointer(s.baseAddress! + $0 * runBytes) }
            return gathered.withUnsafeMutableBytes { kvm_slot_gather($0.baseAddress! + header, sources, UInt32(count), UInt64(runBytes)) }
        }
        var copied = [UInt8](repeating: 0, count: header) + source
        var given = sum
        gathered.withUnsafeMutableBytes { kvm_slot_seal($0.baseAddress, 5, 0x1234, 0x99, 7, UInt32(runBytes * count), &given) }
        copied.withUnsafeMutableBytes { kvm_slot_seal($0.baseAddress, 5, 0x1234, 0x99, 7, UInt32(runBytes * count), nil) }
        #expect(gathered == copied)
        #expect(gathered.withUnsafeBytes { kvm_slot_checksum($0.baseAddress) } == sum)
        #expect(gathered.withUnsafeBytes { kvm_slot_verify($0.baseAddress, 5, 0x1234, 7, sum, UInt32(runBytes * count)) } == 0)
    }
}
