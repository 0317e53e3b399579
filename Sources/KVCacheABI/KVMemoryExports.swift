import KVCache

/// `kvc_seq_kv` (contiguous layout): `Engine.kv`.
@c public func kvc_seq_kv(
    _ e: OpaquePointer?, _ seq: UInt64, _ layer: UInt32,
    _ k: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ v: UnsafeMutablePointer<UnsafeMutableRawPointer?>?
) -> kvc_status {
    status("kvc_seq_kv", "seq \(seq), layer \(layer)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let k = try required(k, "k")
            let v = try required(v, "v")
            let base = try engine.kv(seq, layer: Int(layer))
            k.pointee = base.k
            v.pointee = base.v
        }
    }
}

/// `kvc_seq_block_table` (paged layout): `blockTable(_:_:into:count:)` into `blocks`.
@c public func kvc_seq_block_table(
    _ e: OpaquePointer?, _ seq: UInt64, _ blocks: UnsafeMutablePointer<Int32>?, _ capacity: Int,
    _ nBlocks: UnsafeMutablePointer<Int>?
) -> kvc_status {
    status("kvc_seq_block_table", "seq \(seq)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let nBlocks = try required(nBlocks, "n_blocks")
            try blockTable(engine, seq, into: try buffer(blocks, capacity, "blocks", "capacity"), count: nBlocks)
        }
    }
}

/// `Engine.blockTable` of `seq` into `table`, for `kvc_seq_block_table` and each entry of
/// `kvc_seq_block_tables`: `*count` gets the full count even when it exceeds `table.count`
/// (then the first `table.count` ids are written and it throws `bufferTooSmall`); on any other
/// failure nothing is written.
@inline(__always)
func blockTable(_ engine: Engine, _ seq: UInt64, into table: UnsafeMutableBufferPointer<Int32>,
                count: UnsafeMutablePointer<Int>) throws(KVError) {
    let total = try engine.blockTable(seq, into: table)
    count.pointee = total
    guard total <= table.count else {
        throw KVError(.bufferTooSmall,
                      "capacity \(table.count) is less than the sequence's \(total) blocks; "
                      + "the first \(table.count) were written")
    }
}

/// `kvc_layer_kv_layout` (paged layout): `Engine.layerKVLayout`.
@c public func kvc_layer_kv_layout(
    _ e: OpaquePointer?, _ layer: UInt32, _ kBase: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
    _ vBase: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ blockStride: UnsafeMutablePointer<UInt64>?
) -> kvc_status {
    status("kvc_layer_kv_layout", "layer \(layer)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let k = try required(kBase, "k_base")
            let v = try required(vBase, "v_base")
            let stride = try required(blockStride, "block_stride")
            let layout = try engine.layerKVLayout(layer: Int(layer))
            k.pointee = layout.k
            v.pointee = layout.v
            stride.pointee = UInt64(layout.stride)
        }
    }
}

/// `kvc_block_kv` (paged layout): `Engine.blockKV`.
@c public func kvc_block_kv(
    _ e: OpaquePointer?, _ block: Int32, _ layer: UInt32,
    _ k: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ v: UnsafeMutablePointer<UnsafeMutableRawPointer?>?
) -> kvc_status {
    status("kvc_block_kv", "block \(block), layer \(layer)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let k = try required(k, "k")
            let v = try required(v, "v")
            let base = try engine.blockKV(block, layer: Int(layer))
            k.pointee = base.k
            v.pointee = base.v
        }
    }
}
