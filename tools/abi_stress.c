/*
 * abi_stress — several server threads drive one engine through include/kvcache.h at once,
 * with the memory budget far below the working set and a disk tier, and check every byte
 * they read back. Built for ThreadSanitizer (tools/run_abi_stress_tsan.sh), which then also
 * checks that the engine's own locking leaves no data race on these paths.
 *
 * Each thread is a small server with its own prompt families (so that no thread reads a
 * prefix block another thread has not written yet: see WRITING K/V in kvcache.h). Threads
 * meet in the engine: one prefix index, one LRU, one budget (a create evicts and spills
 * other threads' cached blocks) and one disk tier (their blocks come back from it). A
 * request: create (retried while the budget is taken), wait for kvc_seq_ready, check the
 * cached tokens' K/V, write the rest, decode with appends, sometimes fork a child or swap
 * out (synchronously or not) and back in, check every token, for every third request evict
 * (episodic, to the disk tier, per layer or per head: compact, then focus) and check every slot
 * against its position, free. K/V bytes are a function of
 * (token, position, layer, K|V, byte), so any block reached through the prefix cache,
 * from memory or disk, must hold exactly them. A monitor thread polls, drains events,
 * checks the swap-out counters' identity meanwhile, and every ~10 ms trims the engine (every
 * cached block spilled to disk, in steps that wait for the device without the engine's lock,
 * while the servers' calls go on).
 *
 * Prints how many checks it made and failed, then "abi_stress: 1 passed, 0 failed" (the run is
 * one test in tools/test.sh's count) or "0 passed, 1 failed"; exits 1 when anything failed.
 * Build: cc -std=c11 -pthread -I include tools/abi_stress.c -L$BIN -lkvcache -Wl,-rpath,$BIN
 */
#define _DEFAULT_SOURCE /* mkdtemp, usleep */
#define STRESS_NAME "abi_stress"
#include <pthread.h>
#include <stdlib.h>

#include "stress_kv.h"
#include "tier_dir.h"

enum {
    THREADS = 4,
    REQUESTS = 100,    /* per thread and layout */
    FAMILIES = 4,      /* prompt families per thread */
    FAMILY_TOKENS = 160,
    DECODE = 24,
};

static atomic_int workers_running;

typedef struct {
    kvc_engine *e;
    int paged;
    uint32_t thread;
    uint64_t creates_retried, cached_tokens, requests_dropped;
} worker;

/* 1 when every slot of `seq` holds the bytes of the original position kvc_seq_positions gives
 * it (per KV head: each head's slice its own position). */
static int kv_at_positions(worker *w, uint64_t seq, const int32_t *tokens) {
    int32_t table[MAX_BLOCKS], pos[HEADS * MAX_TOKENS];
    size_t n = 0, len = 0;
    if (w->paged && kvc_seq_block_table(w->e, seq, table, MAX_BLOCKS, &n) != KVC_OK) return 0;
    for (uint32_t layer = 0; layer < LAYERS; layer++) {
        if (kvc_seq_layer_length(w->e, seq, layer, &len) != KVC_OK ||
            kvc_seq_positions(w->e, seq, layer, pos, HEADS * MAX_TOKENS, &n) != KVC_OK || (n != len && n != HEADS * len))
            return 0;
        for (uint32_t tensor = 0; tensor < 2; tensor++)
            for (size_t t = 0; t < len; t++) {
                const uint8_t *p = token_address(w->e, w->paged, seq, table, layer, tensor, t);
                if (!p) return 0;
                for (size_t b = 0; b < TOKEN_BYTES; b++) {
                    int32_t at = n == len ? pos[t] : pos[b / HEAD_BYTES * len + t];
                    if (p[b] != pattern(0, tokens[at], (size_t)at, layer, tensor, b)) return 0;
                }
            }
    }
    return 1;
}

/* Reports attention that favours the first (half 0) or second half of `seq`'s `length` tokens. */
static void observe_half(worker *w, uint64_t seq, size_t length, int half) {
    float scores[HEADS * MAX_TOKENS];
    for (uint32_t layer = 0; layer < LAYERS; layer++) {
        for (size_t i = 0; i < HEADS * length; i++) scores[i] = ((i % length) < length / 2) == (half == 0) ? 1.0f : 0.01f;
        CHECK(kvc_seq_observe(w->e, seq, layer, scores, HEADS, length) == KVC_OK, "thread %u: observe", w->thread);
    }
}

/* Token eviction on a finished request, while other threads run theirs, as a conversation
 * that returns to its first topic: episodic with the disk tier, per layer or per head. Two
 * segments, each focused while its half draws the attention; a compaction keeps the second
 * topic's tokens and writes the rest to disk; a focus on the first topic restores them. After
 * each step every slot must hold its position's bytes. */
static void evict(worker *w, uint64_t seq, const int32_t *tokens, size_t length, int per_head) {
    CHECK(kvc_seq_set_eviction(w->e, seq, KVC_EVICTION_EPISODIC, (uint32_t)per_head) == KVC_OK, "thread %u: episodic", w->thread);
    const float first[4] = {1, 0, 0, 0}, second[4] = {0, 1, 0, 0};
    uint32_t episode = 0;
    kvc_status rc;
    observe_half(w, seq, length, 0);
    CHECK(kvc_seq_add_segment(w->e, seq, 0, length / 2, first, 4) == KVC_OK, "thread %u: segment", w->thread);
    CHECK(kvc_seq_focus(w->e, seq, first, 4, &episode) == KVC_OK, "thread %u: focus the first topic", w->thread);
    observe_half(w, seq, length, 1);
    CHECK(kvc_seq_add_segment(w->e, seq, length / 2, length, second, 4) == KVC_OK, "thread %u: segment", w->thread);
    CHECK(kvc_seq_focus(w->e, seq, second, 4, &episode) == KVC_OK, "thread %u: focus the second topic", w->thread);
    RETRY_OOM(w->creates_retried, rc, kvc_seq_compact(w->e, seq, length / 2));
    CHECK(rc == KVC_OK, "thread %u: compact %" PRIu64 " (status %d)", w->thread, seq, rc);
    CHECK(wait_ready(w->e, seq) && kv_at_positions(w, seq, tokens), "thread %u: compacted seq %" PRIu64 "'s slots hold their positions' K/V",
          w->thread, seq);
    RETRY_OOM(w->creates_retried, rc, kvc_seq_focus(w->e, seq, first, 4, &episode));
    CHECK(rc == KVC_OK, "thread %u: focus %" PRIu64 " on the first topic again (status %d)", w->thread, seq, rc);
    CHECK(wait_ready(w->e, seq) && kv_at_positions(w, seq, tokens), "thread %u: refocused seq %" PRIu64 "'s slots hold their positions' K/V",
          w->thread, seq);
}

static void request(worker *w, uint32_t r) {
    int32_t tokens[MAX_TOKENS];
    uint32_t family = r % FAMILIES, tail = 1 + r * 7 % 40;
    size_t prompt = FAMILY_TOKENS + tail, total = prompt + DECODE;
    for (size_t i = 0; i < total; i++)
        tokens[i] = i < FAMILY_TOKENS ? (int32_t)(w->thread * 100000 + family * 1000 + i)
                                      : (int32_t)(1000000 + w->thread * 100000 + r * 100 + i);
    uint64_t seq = (uint64_t)w->thread * 1000000 + r * 10, child = seq + 1;
    size_t cached = 0;
    kvc_status rc;
    RETRY_OOM(w->creates_retried, rc, kvc_seq_create(w->e, seq, tokens, prompt, &cached));
    if (rc == KVC_ERR_OUT_OF_MEMORY) {
        w->requests_dropped++; /* the budget stayed taken: a server would queue it */
        return;
    }
    CHECK(rc == KVC_OK, "thread %u: create %" PRIu64 " (status %d)", w->thread, seq, rc);
    if (rc != KVC_OK) return;
    w->cached_tokens += cached;
    CHECK(wait_ready(w->e, seq), "thread %u: seq %" PRIu64 " becomes ready", w->thread, seq);
    CHECK(kv(w->e, w->paged, 0, seq, tokens, 0, cached, 1), "thread %u: seq %" PRIu64 "'s %zu cached tokens hold their K/V", w->thread, seq, cached);
    CHECK(kv(w->e, w->paged, 0, seq, tokens, cached, prompt, 0), "thread %u: write seq %" PRIu64, w->thread, seq);
    size_t length = prompt;
    for (; length < total; length++) {
        RETRY_OOM(w->creates_retried, rc, kvc_seq_append(w->e, seq, &tokens[length], 1));
        if (rc != KVC_OK) break;
        CHECK(kv(w->e, w->paged, 0, seq, tokens, length, length + 1, 0), "thread %u: write a decoded token", w->thread);
    }
    CHECK(rc == KVC_OK || rc == KVC_ERR_OUT_OF_MEMORY, "thread %u: append (status %d)", w->thread, rc);
    if (r % 4 == 1) { /* a fork (beam search): shares everything, diverges, goes away */
        RETRY_OOM(w->creates_retried, rc, kvc_seq_fork(w->e, seq, child));
        if (rc == KVC_OK) {
            int32_t own[MAX_TOKENS];
            memcpy(own, tokens, length * sizeof *own);
            for (size_t i = length; i < length + 4; i++) own[i] = (int32_t)(2000000 + w->thread * 1000 + i);
            RETRY_OOM(w->creates_retried, rc, kvc_seq_append(w->e, child, &own[length], 4));
            if (rc == KVC_OK) {
                CHECK(kv(w->e, w->paged, 0, child, own, length, length + 4, 0), "thread %u: write the child", w->thread);
                CHECK(kv(w->e, w->paged, 0, child, own, 0, length + 4, 1), "thread %u: the child reads its parent's and its own K/V", w->thread);
            }
            CHECK(kvc_seq_free(w->e, child) == KVC_OK, "thread %u: free the child", w->thread);
        }
        CHECK(rc == KVC_OK || rc == KVC_ERR_OUT_OF_MEMORY, "thread %u: fork (status %d)", w->thread, rc);
    }
    if (r % 5 == 2) { /* preemption: swap out (every other time asynchronously) and back in */
        rc = r % 10 == 2 ? kvc_seq_swap_out_async(w->e, seq) : kvc_seq_swap_out(w->e, seq);
        CHECK(rc == KVC_OK || rc == KVC_ERR_OUT_OF_MEMORY, "thread %u: swap out (status %d)", w->thread, rc);
        if (rc == KVC_OK) {
            RETRY_OOM(w->creates_retried, rc, kvc_seq_swap_in(w->e, seq));
            CHECK(rc == KVC_OK, "thread %u: swap in (status %d)", w->thread, rc);
            CHECK(rc == KVC_OK && wait_ready(w->e, seq), "thread %u: the swapped-in sequence becomes ready", w->thread);
        }
    }
    CHECK(kv(w->e, w->paged, 0, seq, tokens, 0, length, 1), "thread %u: seq %" PRIu64 " holds all %zu tokens' K/V", w->thread, seq, length);
    if (r % 3 == 0) evict(w, seq, tokens, length, r % 2);
    CHECK(kvc_seq_free(w->e, seq) == KVC_OK, "thread %u: free %" PRIu64, w->thread, seq);
}

static void *serve(void *arg) {
    worker *w = arg;
    for (uint32_t r = 0; r < REQUESTS; r++) request(w, r);
    atomic_fetch_sub(&workers_running, 1);
    return NULL;
}

/* Trims the monitor made (all layouts). */
static atomic_uint_fast64_t trims;

/* The server's housekeeping thread: completions, events, statistics, and now and then a trim
 * (a server giving memory back). */
static void *monitor(void *arg) {
    kvc_engine *e = arg;
    kvc_event events[256];
    uint64_t snapshots = 0, bad = 0;
    while (atomic_load(&workers_running) > 0) {
        if (snapshots % 10 == 9) {
            CHECK(kvc_engine_trim(e) == KVC_OK, "monitor: trim: %s", kvc_last_error());
            atomic_fetch_add(&trims, 1);
        }
        size_t n = 0;
        kvc_stats s;
        memset(&s, 0, sizeof s);
        s.struct_size = sizeof s;
        if (kvc_drain_events(e, events, 256, &n) != KVC_OK || kvc_engine_stats(e, &s) != KVC_OK ||
            s.swap_outs_started != s.swap_outs + s.swap_outs_cancelled + s.swap_outs_failed + s.swap_outs_pending ||
            s.committed_bytes > s.budget_bytes)
            bad++;
        snapshots++;
        kvc_engine_poll(e, 2000);
        usleep(1000);
    }
    CHECK(bad == 0, "monitor: %" PRIu64 " of %" PRIu64 " snapshots broke an invariant (swap-outs started = ended + pending, "
                    "committed <= budget) or failed", bad, snapshots);
    return NULL;
}

/* One engine of `layout` under the threads; `writeback`: its writeback thread copies cold
 * blocks to disk outside the engine's lock while the servers evict, hit and compact them and
 * the monitor trims (offload_writeback). */
static void run(uint32_t layout, int writeback) {
    const char *name = layout == KVC_LAYOUT_PAGED ? (writeback ? "paged, writeback" : "paged")
                                                  : (writeback ? "contiguous, writeback" : "contiguous");
    char dir[] = "/tmp/kvcache-abi-stress-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("abi_stress: mkdtemp");
        exit(1);
    }
    kvc_config cfg;
    kvc_config_init(&cfg);
    stress_shape(&cfg, layout);
    cfg.max_seqs = 16;
    cfg.memory_bytes = 3u << 19; /* ~13 requests' K/V, while the threads' families alone take 1.25 MiB */
    cfg.offload_dir = dir;
    cfg.offload_bytes = 64u << 20;
    cfg.offload_writeback = (uint32_t)writeback;
    kvc_engine *e = NULL;
    if (kvc_engine_create(&cfg, &e) != KVC_OK) {
        fprintf(stderr, "abi_stress: kvc_engine_create: %s\n", kvc_last_error());
        exit(1);
    }
    worker workers[THREADS];
    pthread_t threads[THREADS], housekeeping;
    atomic_store(&workers_running, THREADS);
    for (uint32_t t = 0; t < THREADS; t++) {
        workers[t] = (worker){.e = e, .paged = layout == KVC_LAYOUT_PAGED, .thread = t};
        pthread_create(&threads[t], NULL, serve, &workers[t]);
    }
    pthread_create(&housekeeping, NULL, monitor, e);
    uint64_t retried = 0, cached = 0, dropped = 0;
    for (uint32_t t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        retried += workers[t].creates_retried;
        cached += workers[t].cached_tokens;
        dropped += workers[t].requests_dropped;
    }
    pthread_join(housekeeping, NULL);
    kvc_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    CHECK(kvc_engine_stats(e, &s) == KVC_OK, "%s: final stats", name);
    CHECK(s.sequences == 0, "%s: every sequence freed (%" PRIu64 " live)", name, s.sequences);
    CHECK(dropped < THREADS * REQUESTS / 10, "%s: the budget admits most requests (%" PRIu64 " dropped)", name, dropped);
    CHECK(s.blocks_spilled > 0 && s.blocks_loaded > 0 && s.disk_hit_tokens > 0,
          "%s: the run spilled and reloaded prefix blocks (%" PRIu64 " spilled, %" PRIu64 " loaded)", name, s.blocks_spilled,
          s.blocks_loaded);
    CHECK(s.swap_outs + s.swap_outs_cancelled > 0, "%s: the run swapped sequences out", name);
    CHECK(s.disk_errors == 0, "%s: no disk errors (%" PRIu64 ")", name, s.disk_errors);
    CHECK(writeback ? s.disk_blocks_written_ahead > 0 : s.disk_blocks_written_ahead == 0,
          "%s: %" PRIu64 " blocks written ahead", name, s.disk_blocks_written_ahead);
    printf("abi_stress: %s: %d threads x %d requests, %" PRIu64 " cached prompt tokens (%" PRIu64 " from disk), %" PRIu64
           " blocks spilled (%" PRIu64 " written ahead), %" PRIu64 " loaded, %" PRIu64 " swap-outs (%" PRIu64 " cancelled by the swap-in), %" PRIu64
           " tokens offloaded, %" PRIu64 " restored, %" PRIu64 " out-of-memory retries, %" PRIu64 " requests dropped\n",
           name, THREADS, REQUESTS, cached, s.disk_hit_tokens, s.blocks_spilled, s.disk_blocks_written_ahead, s.blocks_loaded, s.swap_outs,
           s.swap_outs_cancelled, s.tokens_offloaded, s.tokens_restored, retried, dropped);
    kvc_engine_destroy(e);
    remove_tier_dir(dir);
}

int main(void) {
    run(KVC_LAYOUT_PAGED, 0);
    run(KVC_LAYOUT_CONTIGUOUS, 0);
    run(KVC_LAYOUT_PAGED, 1);
    run(KVC_LAYOUT_CONTIGUOUS, 1);
    CHECK(atomic_load(&trims) > 0, "the monitor trimmed while the servers ran");
    printf("abi_stress: %" PRIuFAST64 " trims while serving\n", atomic_load(&trims));
    return stress_report();
}
