import TestSupport
import Testing
@testable import KVCache

/// The disk tier's staging buffers are bound to `numa_node` as the K/V memory is: the copies
/// between them and the K/V stay on one node. Before, they took the default policy whatever
/// numa_node said. Checked by the kernel's word (numa_maps: `bind:0`; unbound, `default`) on
/// a one-node machine, where what this catches is a bind dropped or made to the wrong node.
@Suite("Staging buffers follow numa_node")
struct StagingNumaTests {
    @Test(arguments: [Layout.paged, .contiguous], [Int32(-1), 0])
    func theStagingBuffersAreBoundToTheEnginesNode(layout: Layout, node: Int32) throws {
        let dir = ScratchDir("stagingnuma")
        defer { dir.remove() }
        var c = offloadConfig(layout, dir: dir.path)
        c.numaNode = node
        let e = try Engine(c)
        let tier = try #require(e.offload?.tier)
        let mapping = try #require(KernelMapping(containing: tier.spillPayload(0)))
        #expect(mapping.policy == (node < 0 ? "default" : "bind:\(node)"))
        #expect(mapping.pagesByNode.count == 1, "every staging page is on one node: \(mapping.pagesByNode)")
        if node >= 0 { #expect(mapping.pagesByNode[Int(node)] != nil, "\(mapping.pagesByNode)") }
    }
}
