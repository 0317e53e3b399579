#if canImport(Glibc)
import Glibc
#endif

/// Resynchronising a KV-event consumer that lost events. The event queue is bounded
/// (`EngineConfig.eventCapacity`, 65,536) and drops its oldest events when the consumer falls
/// behind (`EngineStats.eventsDropped`); a view built from what is left misses blocks stored
/// and keeps blocks removed in the gap. vLLM's consumers must then rebuild externally; Dynamo's
/// KV router recovers a gap from a dump of the worker's tree. This is that dump.
extension Engine {
    /// The memory tier's prefix index as events: one `allCleared` of the memory tier, then a
    /// `blockStored` (hash, parent) per indexed block. A consumer that sees `eventsDropped`
    /// grow drains and applies the pending events as usual, then applies these: its view of
    /// the memory tier is then exactly the index, and later drains continue from there (an
    /// event it drains after this call and that the dump already reflects changes nothing when
    /// applied again, as events are applied in order). Changes nothing in the engine.
    /// Cost: O(blocks) under the lock and an array of 24 bytes per indexed block: a recovery
    /// path, not a per-request one.
    public func memoryIndexEvents() -> [KVEvent] {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        var out = [KVEvent(kind: .allCleared, tier: KVEvent.memoryTier, blockHash: 0, parentHash: 0)]
        out.reserveCapacity(1 + blocks.usedCount + blocks.cachedCount)
        blocks.appendIndexed(to: &out)
        return out
    }
}
