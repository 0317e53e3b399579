/*
 * abi_churn — the calls around serving, made concurrently on one engine with a disk tier while
 * requests churn through it, each thread checking what it can know. tools/abi_stress.c covers
 * the serving path itself (create, append, fork, swaps, token eviction); this client covers
 * what a scheduler, a cancel, a speculative decoder, a router and a housekeeping thread do
 * meanwhile. Built for ThreadSanitizer (and AddressSanitizer) by tools/run_sanitized.sh.
 *
 * Threads, per phase (one engine, memory far below the working set, a disk tier):
 *   - three servers with one cache salt each (server 0 unsalted: kvc_seq_create; the others
 *     kvc_seq_create_salted), all on the same prompt families, so the same tokens are cached
 *     under several salts at once. K/V bytes are a function of (salt, token, position, layer,
 *     K|V, byte), so a block shared across salts, or served after an abort or a truncation
 *     made it stale, reads wrong. A server's first prompt of a family must hit nothing though
 *     the other salts cache those tokens. It prefills in chunks, kvc_seq_schedule before
 *     each (index_on_schedule in the paged phase): a probe create of the same prompt must then
 *     hit every scheduled block and, mid-prefill, no unscheduled block of the request's own
 *     tail. Some requests are cancelled mid-prefill (kvc_seq_abort with the tokens computed: a
 *     probe then hits none of the uncomputed blocks); others end by kvc_seq_abort while a
 *     kvc_seq_swap_out_async is pending or while a swap-in's reads are in flight, or by a
 *     swap-out cancelled by a swap-in; probes check the bytes of every block a later prompt
 *     is served.
 *   - a speculative decoder (its own salt): appends drafts, kvc_seq_truncate to the accepted
 *     ones, appends the target model's token, checks every byte and the length; a probe of
 *     the rejected chain must not be served the rewritten block.
 *   - a housekeeping thread: kvc_engine_trim (racing the truncations and frees),
 *     kvc_engine_reserve, kvc_engine_sync, kvc_engine_poll, kvc_engine_stats invariants.
 *   - an event consumer (a router's feed): drains KV events, checks each is well formed and
 *     carries a chain kvc_hash_tokens(_salted) computed (block and parent hash), applies them
 *     to a view of both tiers in which every block alternates stored and removed, feeds them
 *     to the router as instance 0, and rebuilds from kvc_engine_index_events now and then: the
 *     dump plus the events drained after it must give the same view.
 *   - a router thread: churns instances 2..9 (add, remove, report, observe events), reports
 *     instance 1's load, calibrates the prefill estimate, and checks that every route picks a
 *     live instance; the consumer routes too, checking the pick was live at some point of
 *     its call.
 * At the end of a phase the view must equal the engine's index, its memory tier the cached
 * blocks and its disk tier the stored slots; the engine is then reopened on its directory,
 * whose journal must announce exactly the view's disk tier.
 * Phases: paged with index_on_schedule and offload_writeback (router DualMap), contiguous
 * without either (router llm-d).
 *
 *   abi_churn [SECONDS]   seconds per phase (default 5; the run takes about twice that)
 *
 * Prints how many checks it made and failed, then "abi_churn: 1 passed, 0 failed" (the run is
 * one test in tools/test.sh's count) or "0 passed, 1 failed"; exits 1 when anything failed.
 */
#define _DEFAULT_SOURCE /* mkdtemp, usleep */
#define STRESS_NAME "abi_churn"
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "stress_kv.h"
#include "tier_dir.h"

enum {
    SERVERS = 3,
    DECODER = SERVERS, /* the decoder's thread number */
    FAMILIES = 3,
    FAMILY_TOKENS = 96, /* whole blocks: a request's own tail starts at a block */
    CHUNK = 32,         /* prefill tokens per forward pass */
    DECODE = 16,
    DRAFTS = 4,
    DECODER_STEPS = 10,
    INSTANCES = 10, /* 0: the engine's events; 1: reported; 2..9: churned */
    CHURNED = 2,
    REGISTRY = 1 << 17,
    SLOT_BYTES = 4096 + 2 * LAYERS * BLOCK * TOKEN_BYTES,
};

static uint64_t salt_of(uint32_t thread) { return thread == 0 ? 0 : 0x5A17000000ull + thread; }

/* ---- the chains the threads hash, and the consumer's views of the engine's tiers ---------- */

/* A block hash some thread computed, with its parent, and in which tiers each view holds it:
 * views[v][tier] == gens[v][tier] (a tier's ALL_CLEARED bumps its generation). */
typedef struct {
    uint64_t hash, parent;
    uint32_t held[2][2];
} entry;

typedef struct {
    uint32_t gen[2];
    size_t held[2];
} view;

static entry registry[REGISTRY];
static size_t registered;
static view views[2]; /* 0: every event in order; 1: rebuilt from a dump */
static uint64_t contradictions;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;

/* The entry of `hash` (registry_lock held); inserted when `insert`, else NULL when unknown. */
static entry *lookup(uint64_t hash, int insert) {
    for (size_t i = hash & (REGISTRY - 1), probes = 0; probes < REGISTRY; i = (i + 1) & (REGISTRY - 1), probes++) {
        if (registry[i].hash == hash) return &registry[i];
        if (registry[i].hash == 0) {
            if (!insert || registered >= REGISTRY / 2) return NULL;
            registered++;
            registry[i].hash = hash;
            return &registry[i];
        }
    }
    return NULL;
}

/* Hashes tokens[0 .. n-1] under `salt` and registers every block's hash with its parent;
 * checks the hash queries agree: salt 0 with kvc_hash_tokens, a short buffer with the full
 * answer's prefix, and a salt with no other salt's chain. */
static void register_chain(uint32_t thread, uint64_t salt, const int32_t *tokens, size_t n) {
    uint64_t hashes[MAX_BLOCKS], other[MAX_BLOCKS];
    size_t count = 0, again = 0;
    CHECK(kvc_hash_tokens_salted(tokens, n, BLOCK, salt, hashes, MAX_BLOCKS, &count) == KVC_OK && count == n / BLOCK,
          "thread %u: kvc_hash_tokens_salted of %zu tokens gives %zu hashes", thread, n, count);
    if (count == 0) return;
    kvc_status rc = salt == 0 ? kvc_hash_tokens(tokens, n, BLOCK, other, 1, &again)
                              : kvc_hash_tokens_salted(tokens, n, BLOCK, salt ^ 1, other, 1, &again);
    CHECK((count == 1 ? rc == KVC_OK : rc == KVC_ERR_BUFFER_TOO_SMALL) && again == count &&
              (salt == 0) == (other[0] == hashes[0]),
          "thread %u: a one-hash buffer gets the full count (%zu of %zu) and the first hash %s", thread, again, count,
          salt == 0 ? "kvc_hash_tokens_salted gives under salt 0" : "of no other salt");
    pthread_mutex_lock(&registry_lock);
    for (size_t b = 0; b < count; b++) {
        entry *en = lookup(hashes[b], 1);
        uint64_t parent = b ? hashes[b - 1] : 0;
        CHECK(en != NULL, "thread %u: the registry holds %zu hashes", thread, registered);
        if (!en) break;
        if (en->parent == 0) en->parent = parent;
        if (en->parent != parent) {
            CHECK(0, "thread %u: block %016" PRIx64 " has two parents", thread, hashes[b]);
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

/* Applies event `ev` to view `v` (registry_lock held). Strict: a store of a block held or a
 * removal of one not held is a contradiction; lenient (a rebuilt view replaying events its
 * dump already reflects): both are no-ops. */
static void apply(int v, const kvc_event *ev, int strict) {
    uint32_t t = ev->tier;
    if (ev->kind == KVC_EVENT_ALL_CLEARED) {
        views[v].gen[t]++;
        views[v].held[t] = 0;
        return;
    }
    entry *en = lookup(ev->block_hash, 0);
    int held = en->held[v][t] == views[v].gen[t];
    if (ev->kind == KVC_EVENT_BLOCK_STORED && !held) {
        en->held[v][t] = views[v].gen[t];
        views[v].held[t]++;
    } else if (ev->kind == KVC_EVENT_BLOCK_REMOVED && held) {
        en->held[v][t] = 0;
        views[v].held[t]--;
    } else if (strict) {
        contradictions++;
    }
}

/* 1 when `ev` is well formed: a known kind and tier, hashes 0 for ALL_CLEARED, else a
 * registered block with its registered parent (registry_lock held). */
static int well_formed(const kvc_event *ev) {
    if (ev->tier > KVC_TIER_DISK) return 0;
    if (ev->kind == KVC_EVENT_ALL_CLEARED) return ev->block_hash == 0 && ev->parent_hash == 0;
    if (ev->kind != KVC_EVENT_BLOCK_STORED && ev->kind != KVC_EVENT_BLOCK_REMOVED) return 0;
    const entry *en = ev->block_hash ? lookup(ev->block_hash, 0) : NULL;
    return en != NULL && en->parent == ev->parent_hash;
}

/* Checks events ev[0 .. n-1] are well formed, then applies them strictly to view 0 and, when
 * `rebuilt`, leniently to view 1. `what` names the source in the message. */
static void consume(const kvc_event *ev, size_t n, int rebuilt, const char *what) {
    size_t bad = 0, first_bad = 0;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < n; i++)
        if (!well_formed(&ev[i]) && bad++ == 0) first_bad = i;
    if (bad == 0)
        for (size_t i = 0; i < n; i++) {
            apply(0, &ev[i], 1);
            if (rebuilt) apply(1, &ev[i], 0);
        }
    pthread_mutex_unlock(&registry_lock);
    CHECK(bad == 0, "%s: %zu of %zu events malformed or of no chain a thread hashed, the first kind %u tier %u hash %016" PRIx64
                    " parent %016" PRIx64, what, bad, n, ev[first_bad].kind, ev[first_bad].tier, ev[first_bad].block_hash,
          ev[first_bad].parent_hash);
}

/* ---- a phase: one engine, one router, the threads ------------------------------------------ */

typedef struct {
    kvc_engine *e;
    kvc_router *router;
    int paged, scheduled;
    struct timespec deadline;
    atomic_int servers_running;
    /* Per instance, bumped before an add and after a remove returns: odd while it may be live. */
    atomic_uint epoch[INSTANCES];
    atomic_uint_fast64_t trims, reserves, syncs, rebuilds, routes, churns, aborts_swapping, aborts_cancelled, truncations,
        probes, salted_misses;
} phase;

static int past(const struct timespec *deadline) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec || (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

/* The kvc_hash_tokens_salted chain of family `family`'s first `blocks` blocks under `salt`. */
static void family_chain(uint32_t family, uint64_t salt, uint64_t *hashes, size_t blocks) {
    int32_t tokens[FAMILY_TOKENS];
    size_t n = 0;
    for (size_t i = 0; i < FAMILY_TOKENS; i++) tokens[i] = (int32_t)(family * 1000 + i);
    kvc_hash_tokens_salted(tokens, blocks * BLOCK, BLOCK, salt, hashes, blocks, &n);
}

/* Routes a family prompt; 1 when the pick was live at some point of the call (by `epoch`). */
static int route_live(phase *p, uint32_t family, uint64_t salt) {
    uint64_t hashes[FAMILY_TOKENS / BLOCK];
    family_chain(family, salt, hashes, FAMILY_TOKENS / BLOCK);
    unsigned before[INSTANCES], after[INSTANCES];
    for (int i = 0; i < INSTANCES; i++) before[i] = atomic_load(&p->epoch[i]);
    uint32_t chosen = UINT32_MAX;
    kvc_status rc = kvc_router_route(p->router, hashes, FAMILY_TOKENS / BLOCK, FAMILY_TOKENS + 8, &chosen);
    for (int i = 0; i < INSTANCES; i++) after[i] = atomic_load(&p->epoch[i]);
    atomic_fetch_add(&p->routes, 1);
    return rc == KVC_OK && chosen < INSTANCES && ((before[chosen] | after[chosen]) % 2 == 1 || before[chosen] != after[chosen]);
}

typedef struct {
    phase *p;
    uint32_t thread;
    uint64_t salt, retries, dropped;
    int seen[FAMILIES];
} worker;

/* A probe: creates `tokens[0 .. n-1]` as a new prompt of `w`'s salt, checks the bytes of every
 * token it is served and ends it, computing nothing. Returns the cached tokens, or SIZE_MAX when the budget
 * stayed taken or a check failed. */
static size_t probe(worker *w, uint64_t seq, const int32_t *tokens, size_t n) {
    kvc_engine *e = w->p->e;
    size_t cached = 0;
    kvc_status rc;
    RETRY_OOM(w->retries, rc, kvc_seq_create_salted(e, seq, tokens, n, w->salt, &cached));
    if (rc == KVC_ERR_OUT_OF_MEMORY) return SIZE_MAX;
    CHECK(rc == KVC_OK, "thread %u: probe %" PRIu64 " (status %d)", w->thread, seq, rc);
    if (rc != KVC_OK) return SIZE_MAX;
    atomic_fetch_add(&w->p->probes, 1);
    int ok = wait_ready(e, seq) && kv(e, w->p->paged, w->salt, seq, tokens, 0, cached, 1);
    CHECK(ok, "thread %u: probe %" PRIu64 " is served its %zu cached tokens' K/V of salt %" PRIx64, w->thread, seq, cached,
          w->salt);
    /* computed: only what it was served (index_on_schedule 0 indexed the rest at create) */
    CHECK(kvc_seq_abort(e, seq, cached) == KVC_OK, "thread %u: end probe %" PRIu64, w->thread, seq);
    return ok ? cached : SIZE_MAX;
}

/* A request's tokens: family `family`'s prefix, then the thread's own tail for request r. */
static void request_tokens(uint32_t thread, uint32_t r, uint32_t family, int32_t *tokens, size_t n) {
    for (size_t i = 0; i < n; i++)
        tokens[i] = i < FAMILY_TOKENS ? (int32_t)(family * 1000 + i)
                                      : (int32_t)(0x40000000u + (thread << 26) + ((r & 0xFFFFu) << 10) + (uint32_t)i);
}

/* Creates `seq` (unsalted through kvc_seq_create), waits for it and checks its cached bytes;
 * a first prompt of a family must hit nothing. 1 when created. */
static int create(worker *w, uint64_t seq, const int32_t *tokens, size_t n, uint32_t family, size_t *cached) {
    kvc_engine *e = w->p->e;
    kvc_status rc;
    RETRY_OOM(w->retries, rc, w->salt == 0 ? kvc_seq_create(e, seq, tokens, n, cached)
                                           : kvc_seq_create_salted(e, seq, tokens, n, w->salt, cached));
    if (rc == KVC_ERR_OUT_OF_MEMORY) {
        w->dropped++;
        return 0;
    }
    CHECK(rc == KVC_OK, "thread %u: create %" PRIu64 " (status %d)", w->thread, seq, rc);
    if (rc != KVC_OK) return 0;
    if (!w->seen[family]) {
        CHECK(*cached == 0, "thread %u: the first prompt of family %u under salt %" PRIx64 " hits nothing (%zu cached), though "
                            "other salts cache its tokens", w->thread, family, w->salt, *cached);
        w->seen[family] = 1;
        atomic_fetch_add(&w->p->salted_misses, 1);
    }
    CHECK(wait_ready(e, seq), "thread %u: seq %" PRIu64 " becomes ready", w->thread, seq);
    CHECK(kv(e, w->p->paged, w->salt, seq, tokens, 0, *cached, 1), "thread %u: seq %" PRIu64 "'s %zu cached tokens hold salt %" PRIx64 "'s K/V",
          w->thread, seq, *cached, w->salt);
    return 1;
}

/* Full blocks of the first n - 1 tokens: what a prompt of n tokens can hit at most. */
static size_t hittable(size_t n) { return (n - 1) / BLOCK * BLOCK; }

static void serve(worker *w, uint32_t r) {
    phase *p = w->p;
    kvc_engine *e = p->e;
    int32_t tokens[MAX_TOKENS];
    uint32_t family = r % FAMILIES;
    size_t prompt = FAMILY_TOKENS + 1 + r * 7 % 47, total = prompt + DECODE, cached = 0, length = 0;
    request_tokens(w->thread, r, family, tokens, total);
    register_chain(w->thread, w->salt, tokens, total);
    uint64_t seq = (uint64_t)(w->thread + 1) << 40 | (uint64_t)r << 2, probe_seq = seq | 1;
    if (!create(w, seq, tokens, prompt, family, &cached)) return;
    int cancel = r % 6 == 3;
    for (size_t done = cached; done < prompt;) { /* chunked prefill: schedule a pass, compute it */
        size_t next = done + CHUNK < prompt ? done + CHUNK : prompt;
        CHECK(kvc_seq_schedule(e, seq, next) == KVC_OK, "thread %u: schedule %" PRIu64 " to %zu", w->thread, seq, next);
        if (cancel && done >= FAMILY_TOKENS) { /* cancelled before the first pass over its own tail ran */
            CHECK(kvc_seq_abort(e, seq, prompt + 1) == KVC_ERR_INVALID_ARGUMENT && kvc_seq_length(e, seq, &length) == KVC_OK &&
                      length == prompt,
                  "thread %u: an abort past the length is refused and changes nothing", w->thread);
            CHECK(kvc_seq_abort(e, seq, done) == KVC_OK, "thread %u: abort %" PRIu64 " with %zu computed", w->thread, seq, done);
            atomic_fetch_add(&p->aborts_cancelled, 1);
            size_t hit = probe(w, probe_seq, tokens, prompt);
            CHECK(hit == SIZE_MAX || hit <= done,
                  "thread %u: after an abort with %zu computed a probe hits %zu tokens, none of the uncomputed blocks", w->thread,
                  done, hit);
            return;
        }
        CHECK(kv(e, p->paged, w->salt, seq, tokens, done, next, 0), "thread %u: write %" PRIu64, w->thread, seq);
        done = next;
        if (p->scheduled && r % 3 == 0 && done < prompt && done >= FAMILY_TOKENS) {
            /* mid-prefill: every scheduled block is served, no unscheduled block of the tail */
            size_t hit = probe(w, probe_seq, tokens, prompt), want = done / BLOCK * BLOCK;
            if (want > hittable(prompt)) want = hittable(prompt);
            CHECK(hit == SIZE_MAX || hit == want, "thread %u: scheduled to %zu of %zu, a probe hits %zu tokens (want %zu)",
                  w->thread, done, prompt, hit, want);
        }
    }
    size_t hit = probe(w, probe_seq, tokens, prompt);
    CHECK(hit == SIZE_MAX || hit == hittable(prompt), "thread %u: a probe of a computed prompt of %zu tokens hits %zu", w->thread,
          prompt, hit);
    kvc_status rc = KVC_OK;
    for (length = prompt; length < total; length += DECODE / 2) {
        RETRY_OOM(w->retries, rc, kvc_seq_append(e, seq, &tokens[length], DECODE / 2));
        if (rc != KVC_OK) break;
        CHECK(kv(e, p->paged, w->salt, seq, tokens, length, length + DECODE / 2, 0), "thread %u: write decoded tokens", w->thread);
    }
    CHECK(rc == KVC_OK || rc == KVC_ERR_OUT_OF_MEMORY, "thread %u: append (status %d)", w->thread, rc);
    switch (r % 4) {
    case 1: /* preempted, then cancelled while the swap-out is (likely) in flight */
    case 2: /* preempted, resumed, then cancelled while the swap-in's reads are (likely) in flight */
        rc = r % 4 == 1 ? kvc_seq_swap_out_async(e, seq) : kvc_seq_swap_out(e, seq);
        CHECK(rc == KVC_OK || rc == KVC_ERR_OUT_OF_MEMORY, "thread %u: swap out %" PRIu64 " (status %d)", w->thread, seq, rc);
        if (rc == KVC_OK && r % 4 == 2) {
            RETRY_OOM(w->retries, rc, kvc_seq_swap_in(e, seq));
            CHECK(rc == KVC_OK || rc == KVC_ERR_OUT_OF_MEMORY, "thread %u: swap in %" PRIu64 " (status %d)", w->thread, seq, rc);
        }
        CHECK(kvc_seq_abort(e, seq, length) == KVC_OK, "thread %u: abort %" PRIu64 " while swapping", w->thread, seq);
        CHECK(kvc_seq_length(e, seq, &length) == KVC_ERR_NOT_FOUND, "thread %u: an aborted sequence is gone", w->thread);
        atomic_fetch_add(&p->aborts_swapping, 1);
        probe(w, probe_seq, tokens, total);
        return;
    case 3: /* preempted, the swap-out cancelled by the swap-in */
        rc = kvc_seq_swap_out_async(e, seq);
        CHECK(rc == KVC_OK || rc == KVC_ERR_OUT_OF_MEMORY, "thread %u: swap out %" PRIu64 " (status %d)", w->thread, seq, rc);
        if (rc == KVC_OK) {
            RETRY_OOM(w->retries, rc, kvc_seq_swap_in(e, seq));
            CHECK(rc == KVC_OK && wait_ready(e, seq), "thread %u: swap %" PRIu64 " back in (status %d)", w->thread, seq, rc);
        }
        break;
    }
    CHECK(kv(e, p->paged, w->salt, seq, tokens, 0, length, 1), "thread %u: seq %" PRIu64 " holds its %zu tokens' K/V", w->thread,
          seq, length);
    CHECK(kvc_seq_free(e, seq) == KVC_OK, "thread %u: free %" PRIu64, w->thread, seq);
}

/* Speculative decoding: each step appends DRAFTS drafts, keeps step % (DRAFTS + 1) of them
 * (kvc_seq_truncate), appends the target model's token; every byte and the length checked. A
 * probe of the chain with the rejected drafts must not be served the block they filled. */
static void decode(worker *w, uint32_t r) {
    phase *p = w->p;
    kvc_engine *e = p->e;
    int32_t tokens[MAX_TOKENS], before[MAX_TOKENS];
    uint32_t family = r % FAMILIES;
    size_t prompt = FAMILY_TOKENS + 1 + r * 5 % 31, cached = 0, length = 0;
    request_tokens(w->thread, r, family, tokens, prompt);
    register_chain(w->thread, w->salt, tokens, prompt);
    uint64_t seq = (uint64_t)(w->thread + 1) << 40 | (uint64_t)r << 2, probe_seq = seq | 1;
    if (!create(w, seq, tokens, prompt, family, &cached)) return;
    CHECK(kvc_seq_schedule(e, seq, prompt) == KVC_OK, "decoder: schedule %" PRIu64, seq);
    CHECK(kv(e, p->paged, w->salt, seq, tokens, cached, prompt, 0), "decoder: write %" PRIu64, seq);
    size_t len = prompt;
    kvc_status rc = KVC_OK;
    for (uint32_t step = 0; step < DECODER_STEPS; step++) {
        for (size_t j = 0; j < DRAFTS; j++) tokens[len + j] = (int32_t)(0x20000000u + ((r & 0xFFFFu) << 12) + (step << 4) + j);
        register_chain(w->thread, w->salt, tokens, len + DRAFTS);
        RETRY_OOM(w->retries, rc, kvc_seq_append(e, seq, &tokens[len], DRAFTS));
        if (rc != KVC_OK) break;
        CHECK(kv(e, p->paged, w->salt, seq, tokens, len, len + DRAFTS, 0), "decoder: write drafts");
        size_t accepted = step % (DRAFTS + 1), keep = len + accepted, drafted = len + DRAFTS;
        memcpy(before, tokens, drafted * sizeof *tokens);
        before[drafted] = 7; /* a probe's next token, so that it can hit the last drafted block */
        if (step == 0)
            CHECK(kvc_seq_truncate(e, seq, 0) == KVC_ERR_INVALID_ARGUMENT &&
                      kvc_seq_truncate(e, seq, len + DRAFTS + 1) == KVC_ERR_INVALID_ARGUMENT &&
                      kvc_seq_length(e, seq, &length) == KVC_OK && length == len + DRAFTS,
                  "decoder: truncations to 0 and past the length are refused and change nothing");
        RETRY_OOM(w->retries, rc, kvc_seq_truncate(e, seq, keep));
        CHECK(rc == KVC_OK && kvc_seq_length(e, seq, &length) == KVC_OK && length == keep,
              "decoder: truncate %" PRIu64 " to %zu (status %d, length %zu)", seq, keep, rc, length);
        atomic_fetch_add(&p->truncations, 1);
        tokens[keep] = (int32_t)(0x30000000u + ((r & 0xFFFFu) << 12) + step);
        register_chain(w->thread, w->salt, tokens, keep + 1);
        RETRY_OOM(w->retries, rc, kvc_seq_append(e, seq, &tokens[keep], 1));
        if (rc != KVC_OK) break;
        len = keep + 1;
        CHECK(kv(e, p->paged, w->salt, seq, tokens, keep, len, 0) && kv(e, p->paged, w->salt, seq, tokens, 0, len, 1),
              "decoder: after a truncation to %zu and an append, %" PRIu64 " holds its %zu tokens' K/V", keep, seq, len);
        if (drafted / BLOCK > keep / BLOCK) { /* a rejected draft filled a block */
            register_chain(w->thread, w->salt, before, drafted + 1);
            probe(w, probe_seq, before, drafted + 1);
        }
    }
    CHECK(rc == KVC_OK || rc == KVC_ERR_OUT_OF_MEMORY, "decoder: append or truncate (status %d)", rc);
    CHECK(kvc_seq_free(e, seq) == KVC_OK, "decoder: free %" PRIu64, seq);
    probe(w, probe_seq, tokens, len);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    for (uint32_t r = 0; r < 0x10000 && !past(&w->p->deadline); r++) (w->thread == DECODER ? decode : serve)(w, r);
    atomic_fetch_sub(&w->p->servers_running, 1);
    return NULL;
}

/* Housekeeping: trims (racing truncations and frees), reserves, syncs, polls, and checks each
 * statistics snapshot's invariants. */
static void *housekeeping(void *arg) {
    phase *p = arg;
    uint64_t bad = 0, snapshots = 0;
    while (atomic_load(&p->servers_running) > 0) {
        CHECK(kvc_engine_trim(p->e) == KVC_OK, "housekeeping: trim");
        atomic_fetch_add(&p->trims, 1);
        kvc_stats s;
        memset(&s, 0, sizeof s);
        s.struct_size = sizeof s;
        if (snapshots % 4 == 1) {
            uint64_t committed = UINT64_MAX;
            CHECK(kvc_engine_reserve(p->e, (snapshots % 8 + 1) << 17, &committed) == KVC_OK && kvc_engine_stats(p->e, &s) == KVC_OK &&
                      committed <= s.budget_bytes,
                  "housekeeping: reserve (%" PRIu64 " committed)", committed);
            atomic_fetch_add(&p->reserves, 1);
        }
        if (snapshots % 8 == 3) {
            CHECK(kvc_engine_sync(p->e) == KVC_OK, "housekeeping: sync");
            atomic_fetch_add(&p->syncs, 1);
        }
        bad += kvc_engine_stats(p->e, &s) != KVC_OK || s.committed_bytes > s.budget_bytes ||
               s.blocks_used + s.blocks_cached > s.blocks_total || s.prefix_hit_tokens > s.prefix_query_tokens ||
               s.swap_outs_started != s.swap_outs + s.swap_outs_cancelled + s.swap_outs_failed + s.swap_outs_pending;
        snapshots++;
        kvc_engine_poll(p->e, 2000);
        usleep(3000);
    }
    CHECK(bad == 0, "housekeeping: %" PRIu64 " of %" PRIu64 " snapshots broke an invariant (committed <= budget, used + cached <= "
                    "total, hits <= queries, swap-outs started = ended + pending)", bad, snapshots);
    return NULL;
}

/* Rebuilds view 1 from kvc_engine_index_events, as a router that lost events does, then drains
 * until the queue is empty, applying what it drains to both views: they must then agree (the
 * dump sits at one point of the stream; events before it replayed change nothing). */
static void rebuild(phase *p) {
    size_t n = 0, got = 0;
    kvc_event *dump = NULL;
    kvc_status rc = kvc_engine_index_events(p->e, NULL, 0, &n);
    CHECK(rc == KVC_ERR_BUFFER_TOO_SMALL && n >= 2, "rebuild: the dump's size (%zu events, status %d)", n, rc);
    do {
        free(dump);
        dump = malloc((n + 64) * sizeof *dump);
        rc = kvc_engine_index_events(p->e, dump, n + 64, &got);
        n = got;
    } while (rc == KVC_ERR_BUFFER_TOO_SMALL);
    size_t disk_at = 1;
    while (disk_at < got && dump[disk_at].kind == KVC_EVENT_BLOCK_STORED && dump[disk_at].tier == KVC_TIER_MEMORY) disk_at++;
    int shaped = rc == KVC_OK && got >= 2 && dump[0].kind == KVC_EVENT_ALL_CLEARED && dump[0].tier == KVC_TIER_MEMORY &&
                 disk_at < got && dump[disk_at].kind == KVC_EVENT_ALL_CLEARED && dump[disk_at].tier == KVC_TIER_DISK;
    for (size_t i = disk_at + 1; i < got; i++) shaped &= dump[i].kind == KVC_EVENT_BLOCK_STORED && dump[i].tier == KVC_TIER_DISK;
    CHECK(shaped, "rebuild: the dump of %zu events is the memory tier's ALL_CLEARED and blocks, then the disk tier's", got);
    pthread_mutex_lock(&registry_lock);
    size_t bad = 0;
    for (size_t i = 0; i < got; i++) bad += !well_formed(&dump[i]);
    uint64_t before = contradictions;
    if (bad == 0)
        for (size_t i = 0; i < got; i++) apply(1, &dump[i], 1); /* strict: a dump holds no block twice */
    uint64_t twice = contradictions - before;
    contradictions = before;
    pthread_mutex_unlock(&registry_lock);
    CHECK(bad == 0 && twice == 0, "rebuild: the dump's %zu events are well formed (%zu not) and list no block twice (%" PRIu64 ")",
          got, bad, twice);
    CHECK(kvc_router_observe_events(p->router, 0, dump, got) == KVC_OK, "rebuild: the router takes the dump");
    free(dump);
    kvc_event ev[256];
    do {
        CHECK(kvc_drain_events(p->e, ev, 256, &n) == KVC_OK, "rebuild: drain");
        consume(ev, n, 1, "rebuild");
        CHECK(kvc_router_observe_events(p->router, 0, ev, n) == KVC_OK, "rebuild: the router takes the events");
    } while (n == 256);
    pthread_mutex_lock(&registry_lock);
    size_t differ = 0;
    for (size_t i = 0; i < REGISTRY; i++)
        for (int t = 0; t < 2; t++)
            differ += registry[i].hash && (registry[i].held[0][t] == views[0].gen[t]) != (registry[i].held[1][t] == views[1].gen[t]);
    CHECK(differ == 0 && views[0].held[0] == views[1].held[0] && views[0].held[1] == views[1].held[1],
          "rebuild: the view rebuilt from kvc_engine_index_events (%zu memory, %zu disk blocks) is the events' view (%zu, %zu); "
          "%zu blocks differ", views[1].held[0], views[1].held[1], views[0].held[0], views[0].held[1], differ);
    pthread_mutex_unlock(&registry_lock);
    atomic_fetch_add(&p->rebuilds, 1);
}

/* The router's feed: drains events, checks and applies them, passes them to the router as
 * instance 0, routes, and rebuilds now and then. */
static void *consumer(void *arg) {
    phase *p = arg;
    kvc_event ev[256];
    for (uint64_t batch = 0; atomic_load(&p->servers_running) > 0; batch++) {
        size_t n = 0;
        CHECK(kvc_drain_events(p->e, ev, 256, &n) == KVC_OK, "consumer: drain");
        consume(ev, n, 0, "consumer");
        CHECK(kvc_router_observe_events(p->router, 0, ev, n) == KVC_OK, "consumer: the router takes the events");
        CHECK(route_live(p, (uint32_t)batch % FAMILIES, salt_of((uint32_t)batch % (SERVERS + 1))),
              "consumer: a route picks an instance live during the call");
        if (batch % 16 == 15) rebuild(p);
        if (n < 256) usleep(2000);
    }
    return NULL;
}

/* Churns instances 2..9 (this thread alone adds and removes them) and checks every route picks
 * one of the live ones; reports instance 1's load; calibrates the prefill estimate. */
static void *churn(void *arg) {
    phase *p = arg;
    int live[INSTANCES] = {1, 1};
    kvc_event ev[1 + FAMILY_TOKENS / BLOCK];
    uint64_t hashes[FAMILY_TOKENS / BLOCK];
    for (uint32_t round = 0; atomic_load(&p->servers_running) > 0; round++) {
        uint32_t i = CHURNED + round * 5 % (INSTANCES - CHURNED), family = round % FAMILIES;
        kvc_instance_load load = {.struct_size = sizeof load, .pending_prefill_tokens = round * 37 % 5000,
                                  .running_blocks = round % 64, .free_blocks = 64 - round % 64, .active_requests = round % 9,
                                  .waiting_requests = round % 4};
        family_chain(family, salt_of(round % (SERVERS + 1)), hashes, FAMILY_TOKENS / BLOCK);
        ev[0] = (kvc_event){.kind = KVC_EVENT_ALL_CLEARED, .tier = KVC_TIER_MEMORY};
        for (size_t b = 0; b < FAMILY_TOKENS / BLOCK; b++)
            ev[1 + b] = (kvc_event){.kind = KVC_EVENT_BLOCK_STORED, .tier = KVC_TIER_MEMORY, .block_hash = hashes[b],
                                    .parent_hash = b ? hashes[b - 1] : 0};
        if (live[i]) {
            CHECK(kvc_router_remove_instance(p->router, i) == KVC_OK, "churn: remove instance %u", i);
            atomic_fetch_add(&p->epoch[i], 1);
            live[i] = 0;
            CHECK(kvc_router_remove_instance(p->router, i) == KVC_ERR_NOT_FOUND &&
                      kvc_router_report(p->router, i, &load) == KVC_ERR_NOT_FOUND &&
                      kvc_router_observe_events(p->router, i, ev, 1 + FAMILY_TOKENS / BLOCK) == KVC_ERR_NOT_FOUND,
                  "churn: removed instance %u is unknown to remove, report and observe", i);
        } else {
            atomic_fetch_add(&p->epoch[i], 1);
            CHECK(kvc_router_add_instance(p->router, i, 1.0 + i % 3) == KVC_OK, "churn: add instance %u", i);
            live[i] = 1;
            CHECK(kvc_router_add_instance(p->router, i, 1.0) == KVC_ERR_EXISTS &&
                      kvc_router_report(p->router, i, &load) == KVC_OK &&
                      kvc_router_observe_events(p->router, i, ev, 1 + FAMILY_TOKENS / BLOCK) == KVC_OK,
                  "churn: added instance %u is known to add, report and observe", i);
        }
        atomic_fetch_add(&p->churns, 1);
        CHECK(kvc_router_report(p->router, 1, &load) == KVC_OK, "churn: report instance 1");
        CHECK(kvc_router_observe_prefill(p->router, FAMILY_TOKENS + round % 100, 1.0 + round % 7) == KVC_OK,
              "churn: observe a prefill");
        for (uint32_t k = 0; k < 4; k++) {
            uint32_t chosen = UINT32_MAX;
            kvc_status rc = kvc_router_route(p->router, hashes, FAMILY_TOKENS / BLOCK - k, FAMILY_TOKENS, &chosen);
            atomic_fetch_add(&p->routes, 1);
            CHECK(rc == KVC_OK && chosen < INSTANCES && live[chosen], "churn: route %u picks a live instance (%u, status %d)", k,
                  chosen, rc);
        }
        usleep(1000);
    }
    return NULL;
}

static kvc_engine *open_engine(uint32_t layout, int scheduled, const char *dir) {
    kvc_config cfg;
    kvc_config_init(&cfg);
    stress_shape(&cfg, layout);
    cfg.max_seqs = 16;
    cfg.memory_bytes = 1u << 20; /* 128 blocks; the four salts' families alone take 72 */
    cfg.offload_dir = dir;
    cfg.offload_bytes = 8u << 20;
    cfg.index_on_schedule = (uint32_t)scheduled;
    cfg.offload_writeback = (uint32_t)scheduled;
    kvc_engine *e = NULL;
    if (kvc_engine_create(&cfg, &e) != KVC_OK) {
        fprintf(stderr, "abi_churn: kvc_engine_create: %s\n", kvc_last_error());
        exit(1);
    }
    return e;
}

static void run(uint32_t layout, int scheduled, uint32_t policy, double seconds) {
    const char *name = layout == KVC_LAYOUT_PAGED ? "paged, index on schedule, writeback" : "contiguous";
    char dir[] = "/tmp/kvcache-abi-churn-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("abi_churn: mkdtemp");
        exit(1);
    }
    static phase ph;
    phase *p = &ph;
    memset(p, 0, sizeof *p);
    pthread_mutex_lock(&registry_lock);
    memset(registry, 0, sizeof registry);
    views[0] = views[1] = (view){.gen = {1, 1}};
    registered = 0;
    contradictions = 0;
    pthread_mutex_unlock(&registry_lock);
    p->e = open_engine(layout, scheduled, dir);
    p->paged = layout == KVC_LAYOUT_PAGED;
    p->scheduled = scheduled;
    kvc_router_config rc;
    kvc_router_config_init(&rc);
    rc.policy = policy;
    rc.block_tokens = BLOCK;
    rc.view = KVC_ROUTER_VIEW_EXACT;
    if (kvc_router_create(&rc, &p->router) != KVC_OK || kvc_router_add_instance(p->router, 0, 1.0) != KVC_OK ||
        kvc_router_add_instance(p->router, 1, 1.0) != KVC_OK) {
        fprintf(stderr, "abi_churn: router: %s\n", kvc_last_error());
        exit(1);
    }
    atomic_store(&p->epoch[0], 1);
    atomic_store(&p->epoch[1], 1);
    clock_gettime(CLOCK_MONOTONIC, &p->deadline);
    p->deadline.tv_sec += (time_t)seconds;
    p->deadline.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (p->deadline.tv_nsec >= 1000000000L) {
        p->deadline.tv_sec++;
        p->deadline.tv_nsec -= 1000000000L;
    }
    worker workers[SERVERS + 1];
    pthread_t threads[SERVERS + 1], helpers[3];
    atomic_store(&p->servers_running, SERVERS + 1);
    for (uint32_t t = 0; t <= SERVERS; t++) {
        workers[t] = (worker){.p = p, .thread = t, .salt = salt_of(t)};
        pthread_create(&threads[t], NULL, worker_main, &workers[t]);
    }
    pthread_create(&helpers[0], NULL, housekeeping, p);
    pthread_create(&helpers[1], NULL, consumer, p);
    pthread_create(&helpers[2], NULL, churn, p);
    uint64_t retries = 0, dropped = 0;
    for (uint32_t t = 0; t <= SERVERS; t++) {
        pthread_join(threads[t], NULL);
        retries += workers[t].retries;
        dropped += workers[t].dropped;
    }
    for (int h = 0; h < 3; h++) pthread_join(helpers[h], NULL);

    /* Quiet: the view must be the engine's index, its tiers the cached blocks and stored slots. */
    CHECK(kvc_engine_sync(p->e) == KVC_OK, "%s: final sync", name);
    rebuild(p);
    kvc_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    CHECK(kvc_engine_stats(p->e, &s) == KVC_OK, "%s: final stats", name);
    CHECK(s.sequences == 0 && s.events_dropped == 0 && s.disk_errors == 0 && s.swap_outs_pending == 0,
          "%s: every sequence freed (%" PRIu64 "), no event dropped (%" PRIu64 "), no disk error (%" PRIu64 ")", name, s.sequences,
          s.events_dropped, s.disk_errors);
    CHECK(contradictions == 0, "%s: every block's events alternate stored and removed per tier (%" PRIu64 " contradictions)", name,
          contradictions);
    CHECK(!p->paged || views[0].held[KVC_TIER_MEMORY] == s.blocks_cached,
          "%s: the events' memory tier holds the %" PRIu64 " cached blocks (%zu)", name, s.blocks_cached, views[0].held[0]);
    CHECK(views[0].held[KVC_TIER_DISK] * SLOT_BYTES == s.disk_stored_bytes,
          "%s: the events' disk tier holds the %" PRIu64 " stored slots (%zu)", name, s.disk_stored_bytes / SLOT_BYTES,
          views[0].held[1]);
    CHECK(s.blocks_spilled > 0 && s.blocks_loaded > 0 && s.swap_outs + s.swap_outs_cancelled > 0,
          "%s: the run spilled (%" PRIu64 "), reloaded (%" PRIu64 ") and swapped out", name, s.blocks_spilled, s.blocks_loaded);
    CHECK(p->aborts_cancelled > 0 && p->aborts_swapping > 0 && p->truncations > 0 && p->rebuilds > 1 && p->trims > 0 &&
              p->reserves > 0 && p->syncs > 0 && p->churns > 0 && p->salted_misses > 0,
          "%s: every role ran (aborts %" PRIuFAST64 " + %" PRIuFAST64 ", truncations %" PRIuFAST64 ", rebuilds %" PRIuFAST64
          ", trims %" PRIuFAST64 ", reserves %" PRIuFAST64 ", syncs %" PRIuFAST64 ", churns %" PRIuFAST64 ")",
          name, p->aborts_cancelled, p->aborts_swapping, p->truncations, p->rebuilds, p->trims, p->reserves, p->syncs, p->churns);
    CHECK(dropped == 0, "%s: the budget admits every request (%" PRIu64 " dropped)", name, dropped);
    printf("abi_churn: %s: %zu blocks hashed, %" PRIuFAST64 " probes, %" PRIuFAST64 " aborts mid-prefill, %" PRIuFAST64
           " while swapping, %" PRIuFAST64 " truncations, %" PRIuFAST64 " trims, %" PRIuFAST64 " reserves, %" PRIuFAST64
           " syncs, %" PRIuFAST64 " rebuilds, %" PRIuFAST64 " routes, %" PRIuFAST64 " instance churns, %" PRIu64
           " blocks spilled, %" PRIu64 " loaded, %" PRIu64 " out-of-memory retries\n",
           name, registered, p->probes, p->aborts_cancelled, p->aborts_swapping, p->truncations, p->trims, p->reserves, p->syncs,
           p->rebuilds, p->routes, p->churns, s.blocks_spilled, s.blocks_loaded, retries);
    kvc_router_destroy(p->router);
    kvc_engine_destroy(p->e);

    /* Reopened, the engine announces from its journal exactly the view's disk tier. */
    kvc_engine *e = open_engine(layout, scheduled, dir);
    kvc_event ev[2 + MAX_TOKENS];
    size_t n = 0, listed = 0, known = 0;
    CHECK(kvc_drain_events(e, ev, sizeof ev / sizeof *ev, &n) == KVC_OK && n >= 2 && ev[0].kind == KVC_EVENT_ALL_CLEARED &&
              ev[0].tier == KVC_TIER_MEMORY && ev[1].kind == KVC_EVENT_ALL_CLEARED && ev[1].tier == KVC_TIER_DISK,
          "%s: a reopened engine first clears both tiers", name);
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 2; i < n; i++) {
        listed += ev[i].kind == KVC_EVENT_BLOCK_STORED && ev[i].tier == KVC_TIER_DISK;
        const entry *en = lookup(ev[i].block_hash, 0);
        known += en && en->held[0][KVC_TIER_DISK] == views[0].gen[KVC_TIER_DISK] && en->parent == ev[i].parent_hash;
    }
    CHECK(listed == n - 2 && known == listed && listed == views[0].held[KVC_TIER_DISK],
          "%s: the reopened engine announces %zu disk blocks, %zu of them in the view's %zu", name, listed, known,
          views[0].held[1]);
    pthread_mutex_unlock(&registry_lock);
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    CHECK(kvc_engine_stats(e, &s) == KVC_OK && s.disk_recovered_blocks == listed,
          "%s: the journal gave back %" PRIu64 " blocks", name, s.disk_recovered_blocks);
    kvc_engine_destroy(e);
    remove_tier_dir(dir);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 5;
    if (!(seconds > 0 && seconds < 3600)) {
        fprintf(stderr, "usage: abi_churn [SECONDS per phase, default 5]\n");
        return 2;
    }
    run(KVC_LAYOUT_PAGED, 1, KVC_ROUTER_DUALMAP, seconds);
    run(KVC_LAYOUT_CONTIGUOUS, 0, KVC_ROUTER_LLM_D, seconds);
    return stress_report();
}
