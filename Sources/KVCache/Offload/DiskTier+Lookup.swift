import CKVMemory
#if canImport(Glibc)
import Glibc
#endif

/// The disk tier's lookups: which slot holds a block, by hash and fingerprint.
extension DiskTier {
    /// The slot holding block `hash` (stored, or still being written) whose fingerprint is
    /// `fingerprint` (0: the hash's first slot, whatever its fingerprint, for a prompt known by
    /// its hashes alone; as `BlockPool.lookup`), or -1. Moves it to the LRU's young end. O(1)
    /// expected (`HashChains.find`).
    func lookup(_ hash: UInt64, fingerprint: UInt64) -> Int32 {
        let slot = index.find(hash, fingerprint: fingerprint)
        if slot >= 0 { lru.touch(slot) }
        return slot
    }

    /// True when the tier holds block `hash` with fingerprint `fingerprint` (as `lookup`, no
    /// LRU change). O(1).
    func contains(_ hash: UInt64, fingerprint: UInt64) -> Bool { index.find(hash, fingerprint: fingerprint) >= 0 }

    /// Block hash, parent hash and fingerprint of a slot (0 for a swapped-out sequence's own slot).
    func hash(of slot: Int32) -> UInt64 { hashes[Int(slot)] }
    func parent(of slot: Int32) -> UInt64 { parents[Int(slot)] }
    func fingerprint(of slot: Int32) -> UInt64 { fingerprints[Int(slot)] }

    /// Holds `slot` against reuse (a swapped-out sequence refers to it, or a read is pending).
    func pin(_ slot: Int32) {
        pins[Int(slot)] += 1
        lru.remove(slot)
    }

    /// Releases a pin; an unpinned hashed stored slot rejoins the LRU, an unpinned slot
    /// without a hash (a swapped sequence's own) is freed.
    func unpin(_ slot: Int32) {
        let s = Int(slot)
        precondition(pins[s] > 0, "unpin of an unpinned slot")
        pins[s] -= 1
        guard pins[s] == 0 else { return }
        if hashes[s] == 0 {
            if state[s] == DiskTier.stored { release(slot) }
        } else if state[s] == DiskTier.stored {
            lru.append(slot)
        }
    }
}
