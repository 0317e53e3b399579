import KVCache

/// One simulated serving instance: a real metadata-only `Engine` (prefix index, LRU, block
/// capacity) and a continuous-batching scheduler's state: the waiting queue (FCFS), the
/// running sequences in admission order, and the step in progress.
///
/// Storage is flat and reused (`ContiguousArray`s keep their capacity), so a step allocates
/// nothing.
final class Instance {
    let engine: Engine
    /// Requests routed here, not admitted yet, oldest first (from `waitingHead`).
    var waiting = ContiguousArray<Int32>()
    var waitingHead = 0
    /// Admitted requests (prefilling or decoding), in admission order.
    var running = ContiguousArray<Int32>()
    /// The step in progress: (request, prefill chunk tokens; 0 = one decode token).
    var stepRequests = ContiguousArray<Int32>()
    var stepChunks = ContiguousArray<Int32>()
    var stepPrefillTokens = 0
    var stepMilliseconds = 0.0
    /// What the step's prefill adds to it: `stepMilliseconds` less the same step's decode work
    /// alone (all of it when nothing decodes); the router is told this, not the whole step.
    var stepPrefillMilliseconds = 0.0
    /// Shared-tier loads of the requests admitted by the step in progress (part of its time).
    var stepLoadMilliseconds = 0.0
    /// A request was preempted in the scheduling of the next step (since the last step ended:
    /// by a decode append or a prefill chunk that found no room). vLLM's scheduler then admits
    /// no waiting request in that step (`if not preempted_reqs`), so neither does this one.
    var preemptedThisStep = false
    /// End of the step in progress; `.infinity` when idle. An idle instance's step is empty
    /// (no requests, no prefill tokens), so ending it changes nothing but starts the next.
    var stepEnd = Double.infinity
    /// Sum of step durations.
    var busyMilliseconds = 0.0
    /// Prompt tokens computed in all (every prefill chunk, recomputes after preemption
    /// included): the instance's prefill work, which busy time hides under decode steps.
    var prefillTokensComputed = 0
    /// Prefill tokens not computed yet: remaining tokens of admitted requests plus the
    /// routing-time estimate of waiting ones.
    var pendingPrefillTokens = 0
    /// Blocks of the engine.
    let capacityBlocks: Int
    /// The engine's `eventsDropped` when its events were last drained into the router.
    var eventsDropped: UInt64 = 0

    init(engine: Engine) {
        self.engine = engine
        capacityBlocks = Int(engine.stats().blocksTotal)
        waiting.reserveCapacity(1024)
        running.reserveCapacity(256)
        stepRequests.reserveCapacity(256)
        stepChunks.reserveCapacity(256)
    }

    var waitingCount: Int { waiting.count - waitingHead }
    var isIdle: Bool { stepEnd == .infinity }

    /// The oldest waiting request, or -1.
    var firstWaiting: Int { waitingHead < waiting.count ? Int(waiting[waitingHead]) : -1 }

    func popWaiting() {
        waitingHead += 1
        if waitingHead > 512 && waitingHead * 2 > waiting.count {
            waiting.removeFirst(waitingHead)
            waitingHead = 0
        }
    }

    /// Puts `r` back at the head of the queue (a preempted request goes first).
    func pushFrontWaiting(_ r: Int32) {
        if waitingHead > 0 {
            waitingHead -= 1
            waiting[waitingHead] = r
        } else {
            waiting.insert(r, at: 0)
        }
    }

    /// Removes waiting request `r`; returns whether it was there. O(queue).
    func removeWaiting(_ r: Int32) -> Bool {
        guard let i = waiting[waitingHead...].firstIndex(of: r) else { return false }
        waiting.remove(at: i)
        return true
    }
}
