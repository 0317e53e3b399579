import TestSupport
import Testing
@testable import KVCache

/// The open records' buffers (episodic offload) are bound to `numa_node` as the staging
/// buffers are (`StagingNumaTests`): the copies between them and the K/V stay on one node.
/// Before, each buffer came from the heap with the default policy whatever numa_node said.
/// Checked by the kernel's word (numa_maps: `bind:0`; unbound, `default`) on a one-node
/// machine, where what this catches is a bind dropped or made to the wrong node.
/// So are those a sequence made episodic maps on an engine of another policy (mapped then,
/// `OpenRecordReservationTests`).
extension EpisodicOffloadTests {
    @Test(arguments: layouts, [Int32(-1), 0])
    func theOpenRecordBuffersAreBoundToTheEnginesNode(layout: Layout, node: Int32) throws {
        try expectOpenRecordBound(layout, node: node, madeEpisodic: false)
    }

    @Test(arguments: layouts, [Int32(-1), 0])
    func theOpenRecordBuffersASequenceMadeEpisodicMapsAreBoundToTheEnginesNode(layout: Layout, node: Int32) throws {
        try expectOpenRecordBound(layout, node: node, madeEpisodic: true)
    }

    /// Sequence 1 compacted by one token per layer into its open record, on an engine bound to
    /// `node` whose policy is episodic, or none with sequence 1 made episodic (`madeEpisodic`):
    /// its buffer is bound to that node.
    private func expectOpenRecordBound(_ layout: Layout, node: Int32, madeEpisodic: Bool) throws {
        let dir = ScratchDir("openrecordnuma")
        defer { dir.remove() }
        var episodic = EvictionConfig(.none)
        let e = try engine(layout, dir: dir.path) {
            $0.numaNode = node
            if madeEpisodic { (episodic, $0.eviction) = ($0.eviction, episodic) }
        }
        let toks = tokens(16, seed: 1)
        try e.createSequence(1, tokens: toks)
        #expect(e.offload!.openRecords.isReserved == !madeEpisodic)
        if madeEpisodic { try e.setEviction(1, episodic) }
        try writeKV(e, 1, tokens: toks, from: 0)
        try observeAll(e, 1, scores(e, n: 16, heavy: [1, 9]), n: 16)
        #expect(try e.compact(1, budgetTokens: 15) == 15)  // one token per layer to the open record
        let buffer = try #require(e.offload!.openRecords.buffer(of: e.sequences.slot(of: 1)))
        let mapping = try #require(KernelMapping(containing: buffer))
        #expect(mapping.policy == (node < 0 ? "default" : "bind:\(node)"))
        #expect(mapping.pagesByNode.count == 1, "every page of the buffer is on one node: \(mapping.pagesByNode)")
        if node >= 0 { #expect(mapping.pagesByNode[Int(node)] != nil, "\(mapping.pagesByNode)") }
    }
}
