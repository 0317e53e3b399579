import Testing
@testable import KVCache

@Suite("Open-addressing table")
struct U64TableTests {
    /// Random inserts and removes agree with a Dictionary at every step (backward-shift
    /// deletion must never lose a displaced key).
    @Test func agreesWithADictionaryUnderRandomOperations() {
        let table = U64Table(maxEntries: 512)
        var model: [UInt64: Int32] = [:]
        var state: UInt64 = 12345
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }
        for step in 0..<50_000 {
            let key = next() % 700  // small key space: many collisions and removals
            if next() % 3 == 0 {
                #expect(table.remove(key) == (model.removeValue(forKey: key) ?? -1))
            } else if model.count < 512 {
                let stored = table.insert(key, Int32(step % 1000))
                #expect(stored == (model[key] == nil))
                if stored { model[key] = Int32(step % 1000) }
            }
            if step % 997 == 0 {
                for k in 0..<700 { #expect(table.find(UInt64(k)) == (model[UInt64(k)] ?? -1)) }
            }
        }
        #expect(table.count == model.count)
    }

    @Test func refusesInsertsBeyondItsLimit() {
        let table = U64Table(maxEntries: 4)
        for k in 0..<4 { #expect(table.insert(UInt64(k), 1)) }
        #expect(!table.insert(99, 1))
        #expect(table.find(99) == -1)
    }
}
