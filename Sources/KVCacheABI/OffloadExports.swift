import KVCache

/// `kvc_seq_ready`: `Engine.ready`; writes 1 (resident) or 0 to `*ready`.
@c public func kvc_seq_ready(_ e: OpaquePointer?, _ seq: UInt64, _ ready: UnsafeMutablePointer<Int32>?) -> kvc_status {
    status("kvc_seq_ready", "seq \(seq)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in
            let ready = try required(ready, "ready")
            ready.pointee = try engine.ready(seq) ? 1 : 0
        }
    }
}

/// `kvc_engine_poll`: `Engine.poll`.
@c public func kvc_engine_poll(_ e: OpaquePointer?, _ timeoutMicroseconds: UInt32) -> kvc_status {
    status("kvc_engine_poll", "timeout_us \(timeoutMicroseconds)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in _ = try engine.poll(timeoutMicroseconds: timeoutMicroseconds) }
    }
}

/// `kvc_seq_swap_out`: `Engine.swapOut`.
@c public func kvc_seq_swap_out(_ e: OpaquePointer?, _ seq: UInt64) -> kvc_status {
    status("kvc_seq_swap_out", "seq \(seq)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in try engine.swapOut(seq) }
    }
}

/// `kvc_seq_swap_out_async`: `Engine.swapOutAsync`.
@c public func kvc_seq_swap_out_async(_ e: OpaquePointer?, _ seq: UInt64) -> kvc_status {
    status("kvc_seq_swap_out_async", "seq \(seq)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in try engine.swapOutAsync(seq) }
    }
}

/// `kvc_seq_swap_in`: `Engine.swapIn`.
@c public func kvc_seq_swap_in(_ e: OpaquePointer?, _ seq: UInt64) -> kvc_status {
    status("kvc_seq_swap_in", "seq \(seq)") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in try engine.swapIn(seq) }
    }
}

/// `kvc_engine_sync`: `Engine.syncOffload`.
@c public func kvc_engine_sync(_ e: OpaquePointer?) -> kvc_status {
    status("kvc_engine_sync") { () throws(KVError) in
        try withEngine(e) { (engine) throws(KVError) in try engine.syncOffload() }
    }
}
