import Testing
@testable import KVRouter

/// `RouterConfig.ringSeed` moves every instance's virtual nodes: a replay can be repeated
/// over other ring placements. 0 keeps the fixed seeds.
@Suite struct RingSeedTests {
    static func router(ringSeed: UInt64) throws -> Router {
        var c = RouterConfig(policy: .consistentHash)
        c.ringSeed = ringSeed
        let r = try Router(c)
        for i in 0..<8 { try r.addInstance(UInt32(i)) }
        return r
    }

    @Test func theDefaultSeedsAreTheFixedOnes() throws {
        let r = try Self.router(ringSeed: 0)
        #expect(r.ring1.seed == 0x6475_616C_6D61_7031 && r.ring2.seed == 0x6475_616C_6D61_7032)
    }

    /// Another seed sends about 7/8 of 1,000 keys elsewhere on 8 instances, on both rings.
    @Test func anotherSeedPlacesTheInstancesElsewhere() throws {
        let a = try Self.router(ringSeed: 0), b = try Self.router(ringSeed: 7)
        #expect(b.ring1.seed == a.ring1.seed ^ 7 && b.ring2.seed == a.ring2.seed ^ 7)
        let keys = (1...1000).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 }
        let moved1 = keys.filter { a.ring1.lookup($0) != b.ring1.lookup($0) }.count
        let moved2 = keys.filter { a.ring2.lookup($0) != b.ring2.lookup($0) }.count
        #expect((700...950).contains(moved1) && (700...950).contains(moved2), "\(moved1) \(moved2)")
    }
}
