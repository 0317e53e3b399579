import TestSupport
import Testing
@testable import KVCache

/// The open records' buffers (episodic offload) are bound to `numa_node` as the staging
/// buffers are (`StagingNumaTests`): the copies between them and the K/V stay on one node.
/// Before, each buffer came from the heap with the default policy whatever numa_node said.
/// Checked by the kernel's word (numa_maps: `bind:0`; unbound, `default`) on a one-node
/// machine, where what this catches is a bind dropped or made to the wrong node.
extension EpisodicOffloadTests {
    @Test(arguments: layouts, [Int32(-1), 0])
    func theOpenRecordBuffersAreBoundToTheEnginesNode(layout: Layout, node: Int32) throws {
        let dir = ScratchDir("openrecordnuma")
        defer { dir.remove() }
        let e = try engine(layout, dir: dir.path) { $0.numaNode = node }
        let toks = tokens(16, seed: 1)
        try e.createSequence(1, tokens: toks)
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
