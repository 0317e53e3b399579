import CKVMemory

#if canImport(Glibc)
import Glibc
#endif

/// Resynchronising a KV-event consumer that lost events. The event queue is bounded
/// (`EngineConfig.eventCapacity`, default 65536) and drops its oldest events when the consumer falls
/// behind (`EngineStats.eventsDropped`); a view built from what is left misses blocks stored
/// and keeps blocks removed in the gap, in either tier. vLLM's consumers must then rebuild
/// externally; Dynamo's KV router recovers a gap from a dump of the worker's tree. This is that
/// dump, of both tiers the engine announces.
extension Engine {
    /// Both tiers' indexes as events: one `allCleared` of the memory tier, then a `blockStored`
    /// (hash, parent) per block of the memory index (used or cached), each after its parent
    /// when the memory index holds that parent (`BlockPool.appendIndexed`; a block whose parent
    /// it lacks starts a run: the parent is in the disk part, after, or in no index); then,
    /// with a disk tier of its own, one `allCleared` of the disk tier and a `blockStored` per
    /// block the tier's index holds (stored, or still being written: what a lookup finds), each
    /// after its ancestors the tier holds (`DiskTier.appendIndexed`). Without a disk tier the
    /// dump has no tier-1 event (none was ever announced); peers' blocks are never listed.
    ///
    /// Exactness: every change to either index pushes its event in the same locked step as
    /// the change, and the dump is taken under that same lock, so it sits at one point of the
    /// event stream: every event pushed before it is reflected in it, none after. A consumer
    /// that sees `eventsDropped` grow drains and applies the pending events as usual, then
    /// applies these (each `allCleared` discards what it held of that tier, gap included): its
    /// view of each tier is then exactly the index at the dump's point. The events it drains
    /// later were pushed either after the dump (they apply to exactly the dumped state) or
    /// before it, pending when it was taken: a run of changes the dump already reflects, and
    /// applying such a run again changes nothing (per block, a run leaves the state its last
    /// event touching that block says, an `allCleared` touching every block of its tier, and
    /// keeps the rest: twice is once). The consumer may then see a `blockStored` of a block it
    /// holds or a `blockRemoved` of one it does not, both no-ops in a set view. Changes nothing
    /// in the engine (statistics, pending events, LRU order).
    ///
    /// Cost: O(memory blocks + disk slots) under the engine's lock (every other call waits;
    /// two independent hash lookups per indexed block or slot, `HashChains.forEachParentsFirst`),
    /// an array of 24 bytes per listed block and 8 bytes per block and per slot of scratch: a
    /// recovery path, not a per-request one.
    public func indexEvents() -> [KVEvent] { numberedIndexEvents().events }

    /// `indexEvents`, with its position in the event stream (`eventEpoch`): `nextSequence` is
    /// the number of the first event pushed after the dump (`drainNumberedEvents`), so the
    /// dump reflects exactly events 1 ..< nextSequence. A consumer applying the dump in place
    /// of its view continues with the batch holding event `nextSequence`, skipping the earlier
    /// ones still pending (`kvc_router_resync_instance`). Cost: `indexEvents`'.
    public func numberedIndexEvents() -> (events: [KVEvent], nextSequence: UInt64) {
        kvm_lock_acquire(mutex)
        defer { kvm_lock_release(mutex) }
        var out = [KVEvent(kind: .allCleared, tier: KVEvent.memoryTier, blockHash: 0, parentHash: 0)]
        out.reserveCapacity(1 + blocks.usedCount + blocks.cachedCount)
        blocks.appendIndexed(to: &out)
        offload?.tier.appendIndexed(to: &out)
        return (out, blocks.events.pushed + 1)
    }
}
