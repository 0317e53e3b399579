/*
 * abi_client — drives libkvcache.so through include/kvcache.h the way an inference server
 * does, in both layouts: create a sequence from a prompt, write its K/V where the engine
 * points, decode (append), reuse the prompt's prefix from a second sequence, fork, drain
 * events, read stats, free, trim; then feed every kind of bad input and check that the
 * sequences that existed keep their bytes.
 *
 *   abi_client          run every check; prints "abi_client: N passed, M failed" last and
 *                       exits 1 if any failed
 *   abi_client hashes   print kvc_hash_tokens of a fixed token sequence, one hash per line
 *                       (run in two processes and compare: the hash must not depend on the
 *                       process)
 *
 * Build: gcc -std=c11 -Wall -Wextra -Werror -I include tools/abi_client.c -L$BIN -lkvcache
 */
#define _GNU_SOURCE /* mkdtemp, for the disk tier's scratch directory; dladdr */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvcache.h"
#include "tier_dir.h"

/* The header's layout is part of the ABI: pin it. */
_Static_assert(sizeof(kvc_event) == 24, "kvc_event is 24 bytes");
/* The library's KVEvent has this layout (EventABITests.aKVEventIsLaidOutAsAKVCEvent): drains copy. */
_Static_assert(offsetof(kvc_event, tier) == 4 && offsetof(kvc_event, block_hash) == 8 &&
               offsetof(kvc_event, parent_hash) == 16 && _Alignof(kvc_event) == 8, "kvc_event's layout");
_Static_assert(offsetof(kvc_config, memory_bytes) == 40, "kvc_config.memory_bytes at 40");
_Static_assert(offsetof(kvc_config, numa_node) == 56, "kvc_config.numa_node at 56");
_Static_assert(offsetof(kvc_config, offload_dir) == 64, "kvc_config.offload_dir at 64");
_Static_assert(offsetof(kvc_config, offload_bytes) == 72, "kvc_config.offload_bytes at 72");
_Static_assert(offsetof(kvc_config, eviction_policy) == 80, "kvc_config.eviction_policy at 80");
_Static_assert(offsetof(kvc_config, episode_seed) == 112, "kvc_config.episode_seed at 112");
_Static_assert(offsetof(kvc_config, index_on_schedule) == 124, "kvc_config.index_on_schedule at 124 (was padding)");
_Static_assert(offsetof(kvc_config, offload_queue_depth) == 128, "kvc_config.offload_queue_depth at 128 (appended)");
_Static_assert(offsetof(kvc_config, peer_offload_dirs) == 136, "kvc_config.peer_offload_dirs at 136 (appended)");
_Static_assert(offsetof(kvc_config, model_tag) == 144, "kvc_config.model_tag at 144 (appended)");
_Static_assert(offsetof(kvc_config, prefill_tokens_per_s) == 152, "kvc_config.prefill_tokens_per_s at 152 (appended)");
_Static_assert(offsetof(kvc_config, offload_writeback) == 160, "kvc_config.offload_writeback at 160 (appended)");
_Static_assert(offsetof(kvc_config, reserved_36) == 36 && offsetof(kvc_config, reserved_132) == 132,
               "kvc_config's reserved fields where its padding was");
_Static_assert(offsetof(kvc_config, event_capacity) == 164, "kvc_config.event_capacity at 164 (was reserved_164)");
_Static_assert(sizeof(kvc_config) == 168, "kvc_config is 168 bytes");
_Static_assert(KVC_CONFIG_MIN_SIZE == 60, "KVC_CONFIG_MIN_SIZE");
_Static_assert(offsetof(kvc_stats, budget_bytes) == 8, "kvc_stats.budget_bytes at 8");
_Static_assert(KVC_STATS_MIN_SIZE == 72, "KVC_STATS_MIN_SIZE");
_Static_assert(offsetof(kvc_stats, tokens_lost) == 216, "kvc_stats.tokens_lost at 216");
_Static_assert(offsetof(kvc_stats, swap_outs_started) == 224, "kvc_stats.swap_outs_started at 224 (appended)");
_Static_assert(offsetof(kvc_stats, tokens_in_open_records) == 256, "kvc_stats.tokens_in_open_records at 256");
_Static_assert(offsetof(kvc_stats, huge_pages) == 264, "kvc_stats.huge_pages at 264");
_Static_assert(offsetof(kvc_stats, spills_skipped) == 272, "kvc_stats.spills_skipped at 272 (appended)");
_Static_assert(offsetof(kvc_stats, peer_hits) == 280, "kvc_stats.peer_hits at 280 (appended)");
_Static_assert(offsetof(kvc_stats, peer_stale) == 288, "kvc_stats.peer_stale at 288 (appended)");
_Static_assert(offsetof(kvc_stats, peer_hit_tokens) == 296, "kvc_stats.peer_hit_tokens at 296 (appended)");
_Static_assert(offsetof(kvc_stats, disk_recovered_blocks) == 304, "kvc_stats.disk_recovered_blocks at 304 (appended)");
_Static_assert(offsetof(kvc_stats, disk_journal_dropped) == 312, "kvc_stats.disk_journal_dropped at 312 (appended)");
_Static_assert(offsetof(kvc_stats, disk_declined_hit_tokens) == 320, "kvc_stats.disk_declined_hit_tokens at 320 (appended)");
_Static_assert(offsetof(kvc_stats, disk_blocks_written_ahead) == 328, "kvc_stats.disk_blocks_written_ahead at 328 (appended)");
_Static_assert(offsetof(kvc_stats, disk_spills_failed) == 336, "kvc_stats.disk_spills_failed at 336 (appended)");
_Static_assert(offsetof(kvc_stats, disk_io_mode) == 344, "kvc_stats.disk_io_mode at 344 (appended)");
_Static_assert(sizeof(kvc_stats) == 352, "kvc_stats is 352 bytes");

/* ---- checks ------------------------------------------------------------------------- */

static int passed, failed;

/* Counts one check; on failure prints where and why (with this thread's kvc_last_error). */
__attribute__((format(printf, 3, 4))) static int check(int ok, int line, const char *fmt, ...) {
    if (ok) {
        passed++;
        return 1;
    }
    failed++;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "abi_client: FAILED at line %d: ", line);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (last error: \"%s\")\n", kvc_last_error());
    return 0;
}

_Noreturn static void summary_and_exit(void) {
    printf("abi_client: %d passed, %d failed\n", passed, failed);
    exit(failed ? 1 : 0);
}

#define CHECK(cond, ...) check((cond), __LINE__, __VA_ARGS__)
/* A prerequisite: later checks would be meaningless (or crash) without it. */
#define REQUIRE(cond, ...)                                                                  \
    do {                                                                                    \
        if (!check((cond), __LINE__, __VA_ARGS__)) {                                        \
            fprintf(stderr, "abi_client: stopping: a prerequisite failed\n");              \
            summary_and_exit();                                                             \
        }                                                                                   \
    } while (0)

/* Expects `call` (a kvc_ function's call) to fail with `want` and leave a message that names
 * that function first (as every message does: kvcache.h, CONVENTIONS) and mentions `word`. A
 * message left by an earlier failure of another function does not pass for this one's. */
#define EXPECT_STATUS(want, word, call)                                                      \
    do {                                                                                    \
        kvc_status rc_ = (call);                                                            \
        const char *msg_ = kvc_last_error(), *call_ = #call;                                \
        size_t fn_ = strcspn(call_, "(");                                                   \
        CHECK(rc_ == (want) && strncmp(msg_, call_, fn_) == 0 && strstr(msg_, (word)) != NULL, \
              "%s: got %s, want %s with a message naming the call and mentioning \"%s\" (\"%s\")", \
              call_, kvc_status_name(rc_), kvc_status_name(want), (word), msg_);            \
    } while (0)

static kvc_status must(kvc_status rc, int line, const char *what) {
    if (rc != KVC_OK) {
        check(0, line, "%s returned %s", what, kvc_status_name(rc));
        fprintf(stderr, "abi_client: stopping: a prerequisite failed\n");
        summary_and_exit();
    }
    return rc;
}
#define MUST(call) must((call), __LINE__, #call)

/* An internal invariant of this client (not counted as a check): stops when it does not hold. */
#define INVARIANT(cond, ...)                                                                \
    do {                                                                                    \
        if (!(cond)) REQUIRE(0, __VA_ARGS__);                                               \
    } while (0)

/* ---- the block hash, reimplemented from the header's documentation ------------------ */

static uint64_t fmix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return h;
}

static size_t reference_hashes(const int32_t *tokens, size_t n, uint32_t block_tokens, uint64_t *out) {
    const uint64_t seed = 0x6b76636163686531ull, p1 = 0x9E3779B185EBCA87ull, p2 = 0xC2B2AE3D27D4EB4Full;
    uint64_t parent = 0;
    size_t full = n / block_tokens;
    for (size_t b = 0; b < full; b++) {
        uint64_t h = parent ^ seed ^ ((uint64_t)block_tokens * p1);
        for (size_t i = 0; i < block_tokens; i++) {
            uint64_t x = h ^ ((uint64_t)(uint32_t)tokens[b * block_tokens + i] * p2);
            h = ((x << 31) | (x >> 33)) * p1;
        }
        parent = fmix64(h);
        if (parent == 0) parent = seed; /* never 0: 0 is salt 0's root */
        out[b] = parent;
    }
    return full;
}

/* ---- writing and reading K/V where the engine points -------------------------------- */

enum { MAX_BLOCKS = 1024, MAX_TOKEN_BYTES = 4096 };

typedef struct {
    kvc_engine *e;
    int paged;
    uint32_t layers, block_tokens;
    size_t token_bytes;
    int32_t table[MAX_BLOCKS]; /* block table of the sequence being accessed (paged) */
    size_t n_table;
} engine_view;

/* Byte `byte` of token `token` of tensor (0 K, 1 V) of `layer`, for K/V "computed" under `salt`. */
static uint8_t pattern(uint32_t salt, uint32_t layer, uint32_t tensor, size_t token, size_t byte) {
    uint64_t x = salt * 0x9E3779B1ull ^ layer * 0x85EBCA87ull ^ tensor * 0xC2B2AE3Dull ^ token * 0x27D4EB4Full ^
                 byte * 0x165667B1ull;
    x ^= x >> 29;
    return (uint8_t)((x * 0xBF58476D1CE4E5B9ull) >> 56);
}

static void load_table(engine_view *v, uint64_t seq) {
    if (!v->paged) return;
    MUST(kvc_seq_block_table(v->e, seq, v->table, MAX_BLOCKS, &v->n_table));
}

/* Address of `token` of `seq` in (layer, tensor); the block table must be loaded (paged). */
static uint8_t *token_address(engine_view *v, uint64_t seq, uint32_t layer, uint32_t tensor, size_t token) {
    void *k = NULL, *val = NULL;
    if (v->paged) {
        INVARIANT(token / v->block_tokens < v->n_table, "token %zu beyond the block table (%zu blocks)", token, v->n_table);
        MUST(kvc_block_kv(v->e, v->table[token / v->block_tokens], layer, &k, &val));
        return (uint8_t *)(tensor == 0 ? k : val) + (token % v->block_tokens) * v->token_bytes;
    }
    MUST(kvc_seq_kv(v->e, seq, layer, &k, &val));
    return (uint8_t *)(tensor == 0 ? k : val) + token * v->token_bytes;
}

/* Writes the K/V of tokens [from, to) of `seq` in every layer, as the server's forward pass would. */
static void write_kv(engine_view *v, uint64_t seq, uint32_t salt, size_t from, size_t to) {
    uint8_t buf[MAX_TOKEN_BYTES];
    load_table(v, seq);
    for (uint32_t layer = 0; layer < v->layers; layer++)
        for (uint32_t tensor = 0; tensor < 2; tensor++)
            for (size_t t = from; t < to; t++) {
                for (size_t b = 0; b < v->token_bytes; b++) buf[b] = pattern(salt, layer, tensor, t, b);
                memcpy(token_address(v, seq, layer, tensor, t), buf, v->token_bytes);
            }
}

/* True when tokens [from, to) of `seq` hold the K/V written under `salt`. */
static int kv_matches(engine_view *v, uint64_t seq, uint32_t salt, size_t from, size_t to) {
    uint8_t buf[MAX_TOKEN_BYTES];
    load_table(v, seq);
    for (uint32_t layer = 0; layer < v->layers; layer++)
        for (uint32_t tensor = 0; tensor < 2; tensor++)
            for (size_t t = from; t < to; t++) {
                for (size_t b = 0; b < v->token_bytes; b++) buf[b] = pattern(salt, layer, tensor, t, b);
                if (memcmp(token_address(v, seq, layer, tensor, t), buf, v->token_bytes) != 0) {
                    fprintf(stderr, "abi_client: seq %" PRIu64 " layer %u %c token %zu differs\n", seq, layer,
                            tensor ? 'V' : 'K', t);
                    return 0;
                }
            }
    return 1;
}

static kvc_stats stats_of(kvc_engine *e) {
    kvc_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    MUST(kvc_engine_stats(e, &s));
    return s;
}

static size_t length_of(kvc_engine *e, uint64_t seq) {
    size_t n = 0;
    MUST(kvc_seq_length(e, seq, &n));
    return n;
}

/* ---- the server scenario ------------------------------------------------------------ */

enum { PROMPT = 100, DECODE = 20, BLOCK = 16 };

static void small_config(kvc_config *cfg, uint32_t layout, uint64_t memory_bytes) {
    kvc_config_init(cfg);
    cfg->num_layers = 4;
    cfg->num_kv_heads = 2;
    cfg->head_dim = 16;
    cfg->dtype_bytes = 2; /* token_bytes = 64 */
    cfg->block_tokens = BLOCK;
    cfg->layout = layout;
    cfg->max_seqs = 16;
    cfg->max_seq_tokens = 2048;
    cfg->memory_bytes = memory_bytes;
    cfg->page_bytes = 4096;
}

/* A scenario's engine: small_config with 16 MiB of memory, once the scenario says what it checks. */
static kvc_engine *open_small(uint32_t layout, const char *what, kvc_config *cfg, const char **name) {
    *name = layout == KVC_LAYOUT_PAGED ? "paged" : "contiguous";
    printf("abi_client: %s layout%s%s\n", *name, *what ? ", " : "", what);
    small_config(cfg, layout, 16u << 20);
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(cfg, &e));
    return e;
}

/* small_config with 16 MiB of memory and a 64 MiB disk tier in `dir`. */
static void disk_config(kvc_config *cfg, uint32_t layout, char *dir) {
    small_config(cfg, layout, 16u << 20);
    cfg->offload_dir = dir;
    cfg->offload_bytes = 64u << 20;
}

/* A fresh disk-tier directory: `dir` is a TIER_DIR template, filled in by mkdtemp. */
#define TIER_DIR "/tmp/kvcache-abi-client-XXXXXX"
static void new_tier_dir(char *dir) { REQUIRE(mkdtemp(dir) != NULL, "mkdtemp %s: %s", dir, strerror(errno)); }

/* A disk-tier scenario's start: says what it checks (as open_small does), makes its tier
 * directory in `dir` (new_tier_dir) and returns the name its checks report under. */
static const char *disk_scenario(uint32_t layout, const char *what, char *dir) {
    printf("abi_client: %s layout with a disk tier: %s\n", layout == KVC_LAYOUT_PAGED ? "paged" : "contiguous", what);
    new_tier_dir(dir);
    return layout == KVC_LAYOUT_PAGED ? "paged+disk" : "contiguous+disk";
}

static engine_view view_of(kvc_engine *e, const kvc_config *cfg) {
    engine_view v;
    memset(&v, 0, sizeof v);
    v.e = e;
    v.paged = cfg->layout == KVC_LAYOUT_PAGED;
    v.layers = cfg->num_layers;
    v.block_tokens = cfg->block_tokens;
    v.token_bytes = (size_t)cfg->num_kv_heads * cfg->head_dim * cfg->dtype_bytes;
    return v;
}

/* Drains a new engine's first event alone; true when it is ALL_CLEARED of KVC_TIER_MEMORY with
 * both hashes 0 (the memory index starts empty: a router that missed a restart of the
 * instance forgets what the previous engine announced). */
static int first_event_clears_memory(kvc_engine *e) {
    kvc_event ev;
    memset(&ev, 0xAB, sizeof ev);
    size_t n = 0;
    MUST(kvc_drain_events(e, &ev, 1, &n));
    return n == 1 && ev.kind == KVC_EVENT_ALL_CLEARED && ev.tier == KVC_TIER_MEMORY && ev.block_hash == 0 && ev.parent_hash == 0;
}

static void serve(uint32_t layout) {
    const char *name;
    kvc_config cfg;
    kvc_engine *e = open_small(layout, "", &cfg, &name);
    REQUIRE(e != NULL, "kvc_engine_create gave a handle");
    CHECK(first_event_clears_memory(e), "%s: the engine's first event is ALL_CLEARED of KVC_TIER_MEMORY", name);
    CHECK(stats_of(e).events_dropped == 0, "%s: it counts as no dropped event", name);
    engine_view v = view_of(e, &cfg);

    int32_t tokens[PROMPT + DECODE];
    for (size_t i = 0; i < PROMPT + DECODE; i++) tokens[i] = (int32_t)(i * 7919 % 50000) - 1000;

    /* Prefill: sequence 1 from the prompt; K/V for every token not already cached. */
    size_t cached = 12345;
    MUST(kvc_seq_create(e, 1, tokens, PROMPT, &cached));
    CHECK(cached == 0, "%s: first sequence has nothing cached (got %zu)", name, cached);
    write_kv(&v, 1, 1, cached, PROMPT);

    /* Decode: one token per step, its K/V written after the append. */
    for (size_t i = PROMPT; i < PROMPT + DECODE; i++) {
        MUST(kvc_seq_append(e, 1, &tokens[i], 1));
        write_kv(&v, 1, 1, i, i + 1);
    }
    CHECK(length_of(e, 1) == PROMPT + DECODE, "%s: length after decode", name);
    CHECK(kvc_seq_append(e, 1, NULL, 0) == KVC_OK, "%s: appending 0 tokens is a no-op", name);
    CHECK(length_of(e, 1) == PROMPT + DECODE, "%s: length after an empty append", name);
    CHECK(kv_matches(&v, 1, 1, 0, PROMPT + DECODE), "%s: sequence 1 reads back its K/V", name);

    /* Prefix reuse: the same prompt again. */
    MUST(kvc_seq_create(e, 2, tokens, PROMPT, &cached));
    CHECK(cached == PROMPT / BLOCK * BLOCK, "%s: second sequence reuses %d cached tokens (got %zu)", name,
          PROMPT / BLOCK * BLOCK, cached);
    CHECK(kv_matches(&v, 2, 1, 0, cached), "%s: cached tokens read the first sequence's K/V", name);
    write_kv(&v, 2, 1, cached, PROMPT);
    CHECK(kv_matches(&v, 1, 1, 0, PROMPT + DECODE), "%s: writing the second sequence left the first intact", name);

    /* Fork: the child sees the parent's tokens; then both diverge without touching each other. */
    MUST(kvc_seq_fork(e, 1, 3));
    CHECK(length_of(e, 3) == PROMPT + DECODE, "%s: fork has the parent's length", name);
    CHECK(kv_matches(&v, 3, 1, 0, PROMPT + DECODE), "%s: fork reads the parent's K/V", name);
    int32_t child_tokens[10], parent_tokens[5];
    for (int i = 0; i < 10; i++) child_tokens[i] = 90000 + i;
    for (int i = 0; i < 5; i++) parent_tokens[i] = 80000 + i;
    MUST(kvc_seq_append(e, 3, child_tokens, 10));
    write_kv(&v, 3, 3, PROMPT + DECODE, PROMPT + DECODE + 10);
    MUST(kvc_seq_append(e, 1, parent_tokens, 5));
    write_kv(&v, 1, 1, PROMPT + DECODE, PROMPT + DECODE + 5);
    CHECK(kv_matches(&v, 1, 1, 0, PROMPT + DECODE + 5), "%s: parent intact after the child wrote", name);
    CHECK(kv_matches(&v, 3, 1, 0, PROMPT + DECODE) && kv_matches(&v, 3, 3, PROMPT + DECODE, PROMPT + DECODE + 10),
          "%s: child intact after the parent wrote", name);

    /* Events: the prompt's full blocks were stored with the chained hashes of kvc_hash_tokens. */
    uint64_t hashes[PROMPT / BLOCK], reference[PROMPT / BLOCK];
    size_t n_hashes = 0;
    MUST(kvc_hash_tokens(tokens, PROMPT, BLOCK, hashes, PROMPT / BLOCK, &n_hashes));
    CHECK(n_hashes == PROMPT / BLOCK, "%s: %d prompt hashes (got %zu)", name, PROMPT / BLOCK, n_hashes);
    CHECK(reference_hashes(tokens, PROMPT, BLOCK, reference) == n_hashes &&
              memcmp(hashes, reference, sizeof hashes) == 0,
          "%s: kvc_hash_tokens equals the header's algorithm reimplemented in C", name);
    kvc_event events[256];
    size_t n_events = 0;
    MUST(kvc_drain_events(e, events, 256, &n_events));
    int stored_ok = n_events >= n_hashes;
    for (size_t i = 0; stored_ok && i < n_hashes; i++)
        stored_ok = events[i].kind == KVC_EVENT_BLOCK_STORED && events[i].tier == KVC_TIER_MEMORY &&
                    events[i].block_hash == hashes[i] && events[i].parent_hash == (i ? hashes[i - 1] : 0);
    CHECK(stored_ok, "%s: the first %zu events are BLOCK_STORED of the prompt's hash chain", name, n_hashes);
    size_t n_again = 99;
    MUST(kvc_drain_events(e, events, 256, &n_again));
    CHECK(n_again == 0, "%s: drained events are gone", name);

    /* Stats. */
    kvc_stats s = stats_of(e);
    CHECK(s.sequences == 3 && s.sequences_created == 3, "%s: 3 live sequences (got %" PRIu64 ")", name, s.sequences);
    CHECK(s.budget_bytes == cfg.memory_bytes, "%s: budget is memory_bytes", name);
    CHECK(s.committed_bytes > 0 && s.committed_bytes <= s.budget_bytes, "%s: 0 < committed <= budget", name);
    CHECK(s.prefix_query_tokens == 2 * PROMPT && s.prefix_hit_tokens == PROMPT / BLOCK * BLOCK,
          "%s: prefix counters (query %" PRIu64 ", hit %" PRIu64 ")", name, s.prefix_query_tokens, s.prefix_hit_tokens);
    CHECK(s.blocks_used + s.blocks_cached <= s.blocks_total && s.blocks_used > 0, "%s: block counts consistent", name);
    CHECK(layout == KVC_LAYOUT_PAGED ? s.mappings == 0 : s.mappings > 0, "%s: mappings %" PRIu64, name, s.mappings);
    CHECK(s.huge_pages == 0, "%s: %llu KiB pages are not huge pages", name, (unsigned long long)(cfg.page_bytes >> 10));
    kvc_stats old;
    memset(&old, 0xAB, sizeof old);
    old.struct_size = KVC_STATS_MIN_SIZE;
    MUST(kvc_engine_stats(e, &old));
    CHECK(old.sequences == 3 && old.sequences_created == 0xABABABABABABABABull,
          "%s: an older, smaller kvc_stats gets only the fields that fit", name);

    /* Free and trim: full blocks stay cached until trim drops them and returns the memory. */
    MUST(kvc_seq_free(e, 2));
    MUST(kvc_seq_free(e, 3));
    MUST(kvc_seq_free(e, 1));
    s = stats_of(e);
    CHECK(s.sequences == 0 && s.blocks_used == 0 && s.blocks_cached > 0,
          "%s: after free: nothing used, full blocks cached (%" PRIu64 ")", name, s.blocks_cached);
    MUST(kvc_seq_create(e, 4, tokens, PROMPT, &cached));
    CHECK(cached == PROMPT / BLOCK * BLOCK, "%s: a freed sequence's prefix is still served (%zu)", name, cached);
    CHECK(kv_matches(&v, 4, 1, 0, cached), "%s: ...with its K/V", name);
    MUST(kvc_seq_free(e, 4));
    uint64_t committed_before_trim = stats_of(e).committed_bytes;
    MUST(kvc_drain_events(e, events, 256, &n_events));
    MUST(kvc_engine_trim(e));
    s = stats_of(e);
    CHECK(s.blocks_cached == 0 && s.committed_bytes < committed_before_trim,
          "%s: trim drops cached blocks and returns memory (%" PRIu64 " -> %" PRIu64 " bytes)", name,
          committed_before_trim, s.committed_bytes);
    MUST(kvc_drain_events(e, events, 256, &n_events));
    int removed_ok = n_events > 0;
    for (size_t i = 0; i < n_events; i++)
        removed_ok &= events[i].kind == KVC_EVENT_BLOCK_REMOVED || events[i].kind == KVC_EVENT_ALL_CLEARED;
    CHECK(removed_ok, "%s: trim reported the cached blocks leaving (%zu events)", name, n_events);
    MUST(kvc_seq_create(e, 5, tokens, PROMPT, &cached));
    CHECK(cached == 0, "%s: after trim the prompt misses (%zu)", name, cached);
    MUST(kvc_seq_free(e, 5));

    uint64_t reserved = 0;
    MUST(kvc_engine_reserve(e, cfg.memory_bytes / 2, &reserved));
    CHECK(reserved >= cfg.memory_bytes / 2 && reserved <= cfg.memory_bytes && reserved == stats_of(e).committed_bytes,
          "%s: reserve commits half the budget ahead of need (%" PRIu64 " bytes)", name, reserved);
    MUST(kvc_engine_trim(e));
    CHECK(stats_of(e).committed_bytes == 0, "%s: trim gives the reserve back", name);

    kvc_engine_destroy(e);
}

/* ---- no allocation after creation ---------------------------------------------------- */

/* AddressSanitizer's own malloc must stay the process's (its free would not take glibc's
 * blocks): under it the count is not made (tools/run_sanitized.sh runs this client so). */
#if defined(__SANITIZE_ADDRESS__)
#define COUNTS_MALLOCS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define COUNTS_MALLOCS 0
#endif
#endif
#ifndef COUNTS_MALLOCS
#define COUNTS_MALLOCS 1
#endif

#if COUNTS_MALLOCS
/* This process's malloc: counts the calling thread's calls, then is glibc's (whose free frees
 * what it returns). Every library's malloc binds to it (interposition), libkvcache's and the
 * Swift runtime's (its objects and arrays) included; calloc and the aligned allocators are
 * not counted. */
extern void *__libc_malloc(size_t size);
static __thread unsigned long thread_mallocs;
void *malloc(size_t size) {
    thread_mallocs++;
    return __libc_malloc(size);
}

/* The mallocs of 200 decode steps of an episodic sequence on an engine with a disk tier, after
 * 200 steps of warm-up: append a token, observe every layer, compact to 128 tokens (each step
 * evicts a token per row into the sequence's open record; every 16 steps per layer, 2 per head,
 * the full record is written to a disk slot), read every layer's positions, ask kvc_seq_ready
 * (which processes the writes' and restores' completions); every 10th step also focuses, the
 * two segments' episodes in turn (no segment added: no re-clustering), restoring the tokens the
 * other episode ranks higher. docs/token-eviction.md: "Observing and compacting then allocate
 * nothing" (the offloading compaction made a few per step, and each completion one, until
 * epialloc's fix); kvcache.h allows a focus to allocate only when it re-clusters (a focus made
 * about ten per call until focusalloc's fix). The focus calls' mallocs go to *focus_mallocs. */
static kvc_status wait_ready(kvc_engine *e, uint64_t seq);

static unsigned long episodic_offload_decode_mallocs(uint32_t layout, uint32_t per_head, unsigned long *focus_mallocs) {
    enum { PROMPT_TOKENS = 256, KEEP = 128, WARM = 200, STEPS = 200 };
    char dir[] = TIER_DIR;
    new_tier_dir(dir);
    kvc_config cfg;
    disk_config(&cfg, layout, dir);
    cfg.eviction_policy = KVC_EVICTION_EPISODIC;
    cfg.eviction_per_head = per_head;
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    int32_t prompt[PROMPT_TOKENS], pos[PROMPT_TOKENS + 1];
    for (int i = 0; i < PROMPT_TOKENS; i++) prompt[i] = 7000 + i;
    size_t cached = 0, len = 0, n = 0;
    MUST(kvc_seq_create(e, 1, prompt, PROMPT_TOKENS, &cached));
    const float embedding[2][2] = {{1, 0}, {0, 1}};
    uint32_t episode = 0;
    static float scores[2 * (PROMPT_TOKENS + 1)];
    /* Two turns, each a segment whose attention went to its own half of the prompt: episode
     * 0's heavy hitters are the first half, episode 1's the second. Each focus here clusters
     * (segments changed), which may allocate. */
    for (int turn = 0; turn < 2; turn++) {
        MUST(kvc_seq_add_segment(e, 1, (size_t)turn * PROMPT_TOKENS / 2, (size_t)(turn + 1) * PROMPT_TOKENS / 2, embedding[turn], 2));
        for (size_t i = 0; i < 2 * PROMPT_TOKENS; i++)
            scores[i] = (int)(i % PROMPT_TOKENS) / (PROMPT_TOKENS / 2) == turn ? 2.0f / PROMPT_TOKENS : 0;
        for (uint32_t l = 0; l < cfg.num_layers; l++) MUST(kvc_seq_observe(e, 1, l, scores, 2, PROMPT_TOKENS));
        MUST(kvc_seq_focus(e, 1, embedding[turn], 2, &episode));
    }
    unsigned long before = 0, restored = 0;
    uint32_t episodes_seen = 0;
    *focus_mallocs = 0;
    for (int step = 0; step < WARM + STEPS; step++) {
        if (step == WARM) {
            before = thread_mallocs;
            restored = stats_of(e).tokens_restored;
        }
        if (step % 10 == 5) {
            unsigned long at = thread_mallocs;
            MUST(kvc_seq_focus(e, 1, embedding[(step / 10) % 2], 2, &episode));
            before += thread_mallocs - at; /* may grow the table of offloaded tokens: below */
            episodes_seen |= 1u << episode;
        }
        int32_t token = 20000 + step;
        MUST(kvc_seq_append(e, 1, &token, 1));
        MUST(kvc_seq_layer_length(e, 1, 0, &len));
        for (size_t i = 0; i < 2 * len; i++) scores[i] = (float)((i * 7 + (size_t)step) % 11) / 64.0f;
        for (uint32_t l = 0; l < cfg.num_layers; l++) MUST(kvc_seq_observe(e, 1, l, scores, 2, len));
        MUST(kvc_seq_compact(e, 1, KEEP));
        for (uint32_t l = 0; l < cfg.num_layers; l++) MUST(kvc_seq_positions(e, 1, l, pos, PROMPT_TOKENS + 1, &n));
        int ready = 0;
        MUST(kvc_seq_ready(e, 1, &ready)); /* processes the record writes' completions */
    }
    unsigned long mallocs = thread_mallocs - before;
    /* Focus calls alone, the episodes in turn, each waited for: after 10 rounds the table of
     * offloaded tokens holds as many records as these switches keep partly live (kvcache.h,
     * TOKEN EVICTION: it grows, amortised, only while that number rises), and a focus itself
     * allocates nothing. */
    *focus_mallocs = 0;
    for (int i = 0; i < 30; i++) {
        unsigned long at = thread_mallocs;
        MUST(kvc_seq_focus(e, 1, embedding[i % 2], 2, &episode));
        MUST(wait_ready(e, 1));
        if (i >= 10) *focus_mallocs += thread_mallocs - at;
    }
    kvc_stats s = stats_of(e);
    CHECK(s.tokens_offloaded > s.tokens_in_open_records, "episodic decode: records of evicted tokens went to the disk tier");
    CHECK(__builtin_popcount(episodes_seen) == 2, "episodic decode: the focus alternates between two episodes");
    CHECK(s.tokens_restored > restored, "episodic decode: the measured focus calls restored offloaded tokens");
    kvc_engine_destroy(e);
    remove_tier_dir(dir);
    return mallocs;
}

/* The mallocs of 20 warm rounds of swapping two sequences out and in, one asynchronously and
 * one synchronously while the other's may be pending, on an engine with a disk tier: none
 * (kvcache.h, kvc_seq_swap_out, Allocation: a buffer set per pending swap-out, one allocated
 * at create, more kept once made; until serverdocs' fix each swap-out made six or seven
 * mallocs). Sequences over several blocks, one sharing the other's prompt (blocks on disk
 * already from an earlier round: pinned, not copied). */
static unsigned long swap_mallocs(uint32_t layout) {
    enum { TOKENS = 300 };
    char dir[] = TIER_DIR;
    const char *name = disk_scenario(layout, "swapping out and in does not allocate", dir);
    kvc_config cfg;
    disk_config(&cfg, layout, dir);
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    int32_t tokens[TOKENS];
    for (size_t i = 0; i < TOKENS; i++) tokens[i] = (int32_t)(i * 7919 % 50000) + 11;
    unsigned long before = 0;
    uint64_t swap_outs = stats_of(e).swap_outs;
    for (int round = 0; round <= 20; round++) {
        if (round == 1) before = thread_mallocs;
        size_t cached;
        MUST(kvc_seq_create(e, 1, tokens, TOKENS, &cached));
        MUST(kvc_seq_create(e, 2, tokens, TOKENS - 40, &cached));
        MUST(wait_ready(e, 1));
        MUST(wait_ready(e, 2));
        for (size_t i = 0; i < 20; i++) MUST(kvc_seq_append(e, 2, &tokens[i], 1));
        MUST(kvc_seq_swap_out_async(e, 2));
        MUST(kvc_seq_swap_out(e, 1)); /* while 2's may be pending: a second buffer set, kept */
        MUST(kvc_engine_sync(e));
        MUST(kvc_seq_swap_in(e, 1));
        MUST(kvc_seq_swap_in(e, 2));
        MUST(wait_ready(e, 1));
        MUST(wait_ready(e, 2));
        for (uint64_t seq = 1; seq <= 2; seq++) MUST(kvc_seq_free(e, seq));
    }
    unsigned long mallocs = thread_mallocs - before;
    CHECK(stats_of(e).swap_outs - swap_outs == 42, "%s: 42 swap-outs completed, %llu did", name,
          (unsigned long long)(stats_of(e).swap_outs - swap_outs));
    kvc_engine_destroy(e);
    remove_tier_dir(dir);
    return mallocs;
}

/* kvcache.h (kvc_engine_create): "successful calls do not allocate afterwards". Rounds of what a
 * server does per request: a prompt over several pages, the same prompt again (a prefix hit), a
 * fork whose boundary page is copied, decode appends, a truncation into the page the fork
 * shares (copied), the K/V lookups, stats and events, the frees; after a first round, none of
 * it mallocs (the truncation's copy made one until helper-178 found it). */
static void no_allocation(uint32_t layout) {
    enum { TOKENS = 300 }; /* 300 x 64 bytes: 4.7 pages, the fork copies the fifth */
    const char *name;
    kvc_config cfg;
    unsigned long at_create = thread_mallocs;
    kvc_engine *e = open_small(layout, "successful calls do not allocate", &cfg, &name);
    REQUIRE(thread_mallocs > at_create, "%s: the count sees the library's mallocs (kvc_engine_create's)", name);
    int32_t tokens[TOKENS], table[64];
    for (size_t i = 0; i < TOKENS; i++) tokens[i] = (int32_t)(i * 7919 % 50000) + 11;
    kvc_event events[64];
    kvc_stats s;
    unsigned long before = 0;
    for (int round = 0; round <= 20; round++) {
        if (round == 1) before = thread_mallocs;
        size_t cached, n;
        void *k, *v;
        MUST(kvc_seq_create(e, 1, tokens, TOKENS, &cached));
        MUST(kvc_seq_create(e, 2, tokens, TOKENS, &cached));
        MUST(kvc_seq_fork(e, 2, 3));
        for (size_t i = 0; i < 8; i++) MUST(kvc_seq_append(e, 3, &tokens[i], 1));
        MUST(kvc_seq_truncate(e, 2, 200)); /* a speculative rollback into a page the fork shares */
        MUST(kvc_seq_append(e, 2, &tokens[0], 1));
        const uint64_t step[3] = {1, 2, 3}; /* a decode step through the batched calls (KVC_1.3) */
        kvc_status statuses[3];
        MUST(kvc_seq_append_batch(e, step, &tokens[8], 3, statuses));
        if (layout == KVC_LAYOUT_PAGED) {
            static int32_t rows[3][64];
            size_t counts[3];
            MUST(kvc_seq_block_tables(e, step, 3, &rows[0][0], 64, counts, statuses));
            MUST(kvc_seq_block_table(e, 3, table, 64, &n));
            MUST(kvc_block_kv(e, table[n - 1], cfg.num_layers - 1, &k, &v));
        } else {
            MUST(kvc_seq_kv(e, 3, cfg.num_layers - 1, &k, &v));
        }
        s.struct_size = sizeof s;
        MUST(kvc_engine_stats(e, &s));
        MUST(kvc_drain_events(e, events, 64, &n));
        for (uint64_t seq = 1; seq <= 3; seq++) MUST(kvc_seq_free(e, seq));
    }
    unsigned long mallocs = thread_mallocs - before;
    CHECK(mallocs == 0, "%s: 20 rounds of create, create (prefix hit), fork, append, truncate, batched appends and tables, K/V "
          "lookup, stats, drain, free "
          "made %lu mallocs, want 0", name, mallocs);
    kvc_engine_destroy(e);
    mallocs = swap_mallocs(layout);
    CHECK(mallocs == 0, "%s: 20 rounds of create, swap out, swap out async, sync, swap in, ready, free with a disk tier "
          "made %lu mallocs, want 0", name, mallocs);
    for (uint32_t per_head = 0; per_head <= 1; per_head++) {
        unsigned long focus_mallocs;
        mallocs = episodic_offload_decode_mallocs(layout, per_head, &focus_mallocs);
        CHECK(mallocs == 0, "%s: episodic offload %s, 200 warm decode steps of append, observe, compact (evicted tokens to "
              "disk), positions, ready made %lu mallocs, want 0", name, per_head ? "per head" : "per layer", mallocs);
        CHECK(focus_mallocs == 0, "%s: episodic offload %s, 20 focus calls switching episodes (no re-clustering) made %lu "
              "mallocs, want 0", name, per_head ? "per head" : "per layer", focus_mallocs);
    }
}
#else
static void no_allocation(uint32_t layout) { (void)layout; }
#endif

/* ---- a paged layer's blocks as arrays (KVC_1.2) ---------------------------------------- */

/* kvc_layer_kv_layout against kvc_block_kv for every block of every layer: sequences of
 * max_seq_tokens fill the memory (every block id held), on `page_bytes` pages with tokens of
 * `heads` x 16 dims fp16. Returns the layout call's status (KVC_OK: every address agreed). */
static kvc_status layer_arrays_agree(uint32_t heads, uint64_t page_bytes, uint64_t *stride) {
    kvc_config cfg;
    small_config(&cfg, KVC_LAYOUT_PAGED, 2u << 20);
    cfg.num_kv_heads = heads;
    cfg.page_bytes = page_bytes;
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    void *k0 = NULL, *v0 = NULL;
    kvc_status st = kvc_layer_kv_layout(e, 0, &k0, &v0, stride);
    if (st == KVC_OK) {
        static int32_t tokens[2048], table[2048 / BLOCK];
        size_t cached, n, held = 0, bad = 0;
        for (uint64_t seq = 1; held < stats_of(e).blocks_total; seq++) {
            for (size_t i = 0; i < 2048; i++) tokens[i] = (int32_t)(seq * 100000 + i);
            size_t want = stats_of(e).blocks_total - held < 2048 / BLOCK ? (stats_of(e).blocks_total - held) * BLOCK : 2048;
            MUST(kvc_seq_create(e, seq, tokens, want, &cached));
            MUST(kvc_seq_block_table(e, seq, table, 2048 / BLOCK, &n));
            for (uint32_t l = 0; l < cfg.num_layers; l++) {
                void *kb, *vb, *k, *v;
                uint64_t s;
                MUST(kvc_layer_kv_layout(e, l, &kb, &vb, &s));
                for (size_t i = 0; i < n; i++) {
                    MUST(kvc_block_kv(e, table[i], l, &k, &v));
                    bad += k != (char *)kb + (uint64_t)table[i] * s || v != (char *)vb + (uint64_t)table[i] * s || s != *stride;
                }
            }
            held += n;
        }
        CHECK(bad == 0 && held == stats_of(e).blocks_total, "paged, %u heads on %llu-byte pages: %zu of %zu blocks x %u "
              "layers at kvc_layer_kv_layout's base + id x stride, want all", heads, (unsigned long long)page_bytes,
              held * cfg.num_layers - bad, held, cfg.num_layers);
    }
    kvc_engine_destroy(e);
    return st;
}

static void layer_arrays(void) {
    printf("abi_client: paged layout, a layer's blocks as arrays (kvc_layer_kv_layout)\n");
    uint64_t stride = 0;
    /* 16 tokens x 64 bytes: 1 KiB blocks filling 4 KiB pages; 4 KiB blocks, one per 4 KiB page;
     * 6 KiB blocks padded to two 4 KiB pages. */
    CHECK(layer_arrays_agree(2, 4096, &stride) == KVC_OK && stride == 1024, "1 KiB blocks: stride %llu, want 1024",
          (unsigned long long)stride);
    CHECK(layer_arrays_agree(8, 4096, &stride) == KVC_OK && stride == 4096, "4 KiB blocks: stride %llu, want 4096",
          (unsigned long long)stride);
    CHECK(layer_arrays_agree(12, 4096, &stride) == KVC_OK && stride == 8192, "6 KiB blocks: stride %llu, want 8192 (two pages)",
          (unsigned long long)stride);
    /* 16 tokens x 96 bytes: 1.5 KiB blocks, two to a 4 KiB page, padded: no single stride. */
    kvc_config cfg;
    small_config(&cfg, KVC_LAYOUT_PAGED, 2u << 20);
    cfg.num_kv_heads = 3;
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    void *k, *v;
    EXPECT_STATUS(KVC_ERR_UNSUPPORTED, "padded", kvc_layer_kv_layout(e, 0, &k, &v, &stride));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "block_stride", kvc_layer_kv_layout(e, 0, &k, &v, NULL));
    kvc_engine_destroy(e);
    small_config(&cfg, KVC_LAYOUT_PAGED, 2u << 20);
    MUST(kvc_engine_create(&cfg, &e));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "layer", kvc_layer_kv_layout(e, cfg.num_layers, &k, &v, &stride));
    kvc_engine_destroy(e);
    small_config(&cfg, KVC_LAYOUT_CONTIGUOUS, 2u << 20);
    MUST(kvc_engine_create(&cfg, &e));
    EXPECT_STATUS(KVC_ERR_UNSUPPORTED, "paged", kvc_layer_kv_layout(e, 0, &k, &v, &stride));
    kvc_engine_destroy(e);
}

/* ---- batched decode-step calls (KVC_1.3) ------------------------------------------------ */

/* A server's decode steps for 8 sequences twice, on twin engines: one with kvc_seq_append and
 * kvc_seq_block_table per sequence, one with kvc_seq_append_batch and kvc_seq_block_tables per
 * step; every entry's status, length and block table must be the single call's. Entry 8 names
 * a sequence that is not live: NOT_FOUND there, the others unaffected. */
static void batched(uint32_t layout) {
    enum { N = 9, STEPS = 40, ROW = 2048 / BLOCK };
    const char *name;
    kvc_config cfg;
    kvc_engine *single = open_small(layout, "batched appends and block tables", &cfg, &name);
    kvc_engine *batch = NULL;
    MUST(kvc_engine_create(&cfg, &batch));
    uint64_t seqs[N];
    int32_t tokens[N], prompt[PROMPT];
    size_t cached;
    for (int i = 0; i < N; i++) {
        seqs[i] = 500 + (uint64_t)i;
        for (int t = 0; t < PROMPT; t++) prompt[t] = (int32_t)(seqs[i] * 1000 + (uint64_t)t);
        if (i == N - 1) break; /* not live */
        MUST(kvc_seq_create(single, seqs[i], prompt, (size_t)(PROMPT - 7 * i), &cached));
        MUST(kvc_seq_create(batch, seqs[i], prompt, (size_t)(PROMPT - 7 * i), &cached));
    }
    static int32_t tables[N][ROW], row[ROW];
    size_t counts[N], count, bad = 0;
    kvc_status statuses[N];
    for (int step = 0; step < STEPS; step++) {
        for (int i = 0; i < N; i++) tokens[i] = step * 100 + i;
        EXPECT_STATUS(KVC_ERR_NOT_FOUND, "entry 8", kvc_seq_append_batch(batch, seqs, tokens, N, statuses));
        for (int i = 0; i < N; i++) bad += statuses[i] != kvc_seq_append(single, seqs[i], &tokens[i], 1);
        if (layout != KVC_LAYOUT_PAGED) continue;
        EXPECT_STATUS(KVC_ERR_NOT_FOUND, "seq 508", kvc_seq_block_tables(batch, seqs, N, &tables[0][0], ROW, counts, statuses));
        for (int i = 0; i < N; i++) {
            kvc_status st = kvc_seq_block_table(single, seqs[i], row, ROW, &count);
            bad += statuses[i] != st || (st == KVC_OK && (counts[i] != count || memcmp(tables[i], row, count * 4) != 0));
        }
    }
    for (int i = 0; i < N - 1; i++) bad += length_of(batch, seqs[i]) != length_of(single, seqs[i]);
    CHECK(bad == 0, "%s: %zu batched entries in %d decode steps differ from the single calls", name, bad, STEPS);
    CHECK(statuses[N - 1] == KVC_ERR_NOT_FOUND, "%s: the entry of a sequence that is not live: %s", name,
          kvc_status_name(statuses[N - 1]));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "seqs is NULL", kvc_seq_append_batch(batch, NULL, tokens, N, statuses));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "max_seqs", kvc_seq_append_batch(batch, seqs, tokens, 17, statuses));
    if (layout != KVC_LAYOUT_PAGED)
        EXPECT_STATUS(KVC_ERR_UNSUPPORTED, "paged", kvc_seq_block_tables(batch, seqs, N, &tables[0][0], ROW, counts, statuses));
    kvc_engine_destroy(batch);
    kvc_engine_destroy(single);
}

/* ---- admission's dry run (KVC_1.4) ------------------------------------------------------ */

/* A scheduler's admission loop over a 32-block (paged) or 8-page-group (contiguous) engine,
 * with or without a disk tier: before each create, kvc_prefix_admit with the same arguments;
 * its status must be the create's and, admitted, its cached tokens the create's. Prompts share
 * prefixes of 4 families (hits in memory and, with a tier, on disk); most creates are later
 * freed, so memory churns between full and not. Then bad input: refused, nothing written. */
static void admission(uint32_t layout, int disk) {
    enum { STEPS = 300, LONGEST = 200 };
    char dir[] = TIER_DIR;
    const char *name;
    kvc_config cfg;
    if (disk) {
        name = disk_scenario(layout, "admission's dry run against the create", dir);
        disk_config(&cfg, layout, dir);
    } else {
        name = layout == KVC_LAYOUT_PAGED ? "paged" : "contiguous";
        printf("abi_client: %s layout, admission's dry run against the create\n", name);
        small_config(&cfg, layout, 0);
    }
    cfg.memory_bytes = 256u << 10;
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    uint64_t live[STEPS], rng = 0x5EED;
    size_t n_live = 0, differ = 0, admitted = 0, refused = 0;
    int32_t prompt[LONGEST];
    for (int step = 0; step < STEPS; step++) {
        rng = rng * 6364136223846793005u + 1442695040888963407u;
        uint32_t r = (uint32_t)(rng >> 33);
        size_t n = 1 + r % LONGEST, shared = (r >> 8) % 129, family = (r >> 16) % 4;
        size_t commit = (r >> 18) % 3 == 0 ? 1 + (r >> 20) % 64 : n;
        for (size_t i = 0; i < n; i++) prompt[i] = (int32_t)(i < shared ? family * 1000 + i : 100000 + step * 1000 + i);
        size_t cached = 99, short_tokens = 99, created_cached = 98, held = 0;
        kvc_status answer = kvc_prefix_admit(e, prompt, n, 0, commit, 0, &cached, &short_tokens);
        kvc_status got = kvc_seq_create_chunked(e, 1 + (uint64_t)step, prompt, n, 0, commit, &created_cached, &held);
        differ += answer != got || (got == KVC_OK && (cached != created_cached || short_tokens != 0)) ||
                  (got == KVC_ERR_OUT_OF_MEMORY && short_tokens == 0 && n_live < cfg.max_seqs);
        if (got == KVC_OK) {
            admitted++;
            live[n_live++] = 1 + (uint64_t)step;
        } else {
            refused++;
        }
        if (n_live > 0 && (r >> 24) % 3 != 0) {
            size_t victim = (r >> 26) % n_live;
            MUST(kvc_seq_free(e, live[victim]));
            live[victim] = live[--n_live];
        }
    }
    CHECK(differ == 0, "%s: %zu of %d dry runs differ from the create after them", name, differ, STEPS);
    CHECK(admitted > 30 && refused > 30, "%s: both answers frequent (%zu admitted, %zu refused)", name, admitted, refused);
    size_t cached = 7, short_tokens = 7;
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "tokens", kvc_prefix_admit(e, NULL, 4, 0, 1, 0, &cached, &short_tokens));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "n_tokens is 0", kvc_prefix_admit(e, prompt, 0, 0, 1, 0, &cached, &short_tokens));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "commit_tokens is 0", kvc_prefix_admit(e, prompt, 4, 0, 0, 0, &cached, &short_tokens));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "short_tokens", kvc_prefix_admit(e, prompt, 4, 0, 1, 0, &cached, NULL));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "max_seq_tokens", kvc_prefix_admit(e, prompt, 4, 0, 4, 2045, &cached, &short_tokens));
    CHECK(cached == 7 && short_tokens == 7, "%s: a refused kvc_prefix_admit wrote its outputs", name);
    kvc_engine_destroy(e);
    if (disk) remove_tier_dir(dir);
}

/* ---- bad input ---------------------------------------------------------------------- */

static void bad_input(uint32_t layout) {
    const char *name;
    kvc_config cfg;
    kvc_engine *e = open_small(layout, "bad input", &cfg, &name);
    engine_view v = view_of(e, &cfg);

    /* A witness sequence whose bytes every failure below must leave alone. */
    int32_t w[50];
    for (int i = 0; i < 50; i++) w[i] = 60000 + i;
    size_t cached = 0;
    MUST(kvc_seq_create(e, 10, w, 50, &cached));
    write_kv(&v, 10, 10, 0, 50);
    kvc_stats before = stats_of(e);

    int32_t t[4] = {1, 2, 3, 4};
    int32_t big_len = (int32_t)cfg.max_seq_tokens + 1;
    int32_t *big = calloc((size_t)big_len, sizeof *big);
    INVARIANT(big != NULL, "calloc");
    size_t n = 0;
    void *k = NULL, *vv = NULL;
    int32_t blocks[2];
    kvc_event events[4];
    kvc_stats s;

    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "engine is NULL", kvc_seq_create(NULL, 11, t, 4, &cached));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "tokens is NULL", kvc_seq_create(e, 11, NULL, 4, &cached));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "n_tokens is 0", kvc_seq_create(e, 11, t, 0, &cached));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "cached_tokens is NULL", kvc_seq_create(e, 11, t, 4, NULL));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "max_seq_tokens", kvc_seq_create(e, 11, big, (size_t)big_len, &cached));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "PTRDIFF_MAX", kvc_seq_create(e, 11, t, SIZE_MAX, &cached));
    EXPECT_STATUS(KVC_ERR_EXISTS, "10", kvc_seq_create(e, 10, t, 4, &cached));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "11", kvc_seq_append(e, 11, t, 4));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "tokens is NULL", kvc_seq_append(e, 10, NULL, 4));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "10", kvc_seq_append(e, 10, big, (size_t)big_len - 50));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "11", kvc_seq_fork(e, 11, 12));
    EXPECT_STATUS(KVC_ERR_EXISTS, "10", kvc_seq_fork(e, 10, 10));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "11", kvc_seq_free(e, 11));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "11", kvc_seq_length(e, 11, &n));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "n_tokens is NULL", kvc_seq_length(e, 10, NULL));
    if (layout == KVC_LAYOUT_PAGED) {
        EXPECT_STATUS(KVC_ERR_UNSUPPORTED, "kvc_seq_kv", kvc_seq_kv(e, 10, 0, &k, &vv));
        EXPECT_STATUS(KVC_ERR_BUFFER_TOO_SMALL, "capacity", kvc_seq_block_table(e, 10, blocks, 2, &n));
        CHECK(n == 4, "%s: BUFFER_TOO_SMALL still reports the full count (got %zu)", name, n);
        EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "blocks is NULL", kvc_seq_block_table(e, 10, NULL, 2, &n));
        EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "block", kvc_block_kv(e, -1, 0, &k, &vv));
        EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "block", kvc_block_kv(e, (int32_t)before.blocks_total, 0, &k, &vv));
        EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "layer", kvc_block_kv(e, 0, cfg.num_layers, &k, &vv));
        EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "k is NULL", kvc_block_kv(e, 0, 0, NULL, &vv));
    } else {
        EXPECT_STATUS(KVC_ERR_UNSUPPORTED, "kvc_seq_block_table", kvc_seq_block_table(e, 10, blocks, 2, &n));
        EXPECT_STATUS(KVC_ERR_UNSUPPORTED, "kvc_block_kv", kvc_block_kv(e, 0, 0, &k, &vv));
        EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "layer", kvc_seq_kv(e, 10, cfg.num_layers, &k, &vv));
        EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "v is NULL", kvc_seq_kv(e, 10, 0, &k, NULL));
        EXPECT_STATUS(KVC_ERR_NOT_FOUND, "11", kvc_seq_kv(e, 11, 0, &k, &vv));
    }
    memset(&s, 0, sizeof s);
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "struct_size", kvc_engine_stats(e, &s));
    s.struct_size = KVC_STATS_MIN_SIZE - 1;
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "struct_size", kvc_engine_stats(e, &s));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "out is NULL", kvc_engine_stats(e, NULL));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "out is NULL", kvc_drain_events(e, NULL, 4, &n));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "n_events is NULL", kvc_drain_events(e, events, 4, NULL));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "engine is NULL", kvc_engine_trim(NULL));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "engine is NULL", kvc_engine_reserve(NULL, 1, NULL));

    /* Double free of a real sequence. */
    MUST(kvc_seq_create(e, 11, t, 4, &cached));
    MUST(kvc_seq_free(e, 11));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "11", kvc_seq_free(e, 11));

    kvc_stats after = stats_of(e);
    CHECK(after.sequences == before.sequences && after.blocks_used == before.blocks_used,
          "%s: failures left the live sequences and used blocks as they were", name);
    CHECK(length_of(e, 10) == 50 && kv_matches(&v, 10, 10, 0, 50), "%s: witness bytes intact after bad input", name);
    free(big);
    kvc_engine_destroy(e);
}

/* kvc_config_init (the macro) writes this header's struct; the symbol of the same name, which
   binaries built against the first header call, writes exactly that header's 128 bytes. */
static void config_init_sizes(void) {
    union {
        kvc_config cfg;
        unsigned char bytes[sizeof(kvc_config) + 16];
    } u;
    memset(u.bytes, 0xAB, sizeof u.bytes);
    kvc_config_init(&u.cfg);
    int tail_kept = 1;
    for (size_t i = sizeof(kvc_config); i < sizeof u.bytes; i++) tail_kept &= u.bytes[i] == 0xAB;
    CHECK(u.cfg.struct_size == sizeof(kvc_config) && u.cfg.offload_queue_depth == 32 && u.cfg.model_tag == 0 && tail_kept,
          "kvc_config_init writes sizeof(kvc_config) = %zu bytes and no more (struct_size %u)", sizeof(kvc_config),
          u.cfg.struct_size);
    memset(u.bytes, 0xAB, sizeof u.bytes);
    (kvc_config_init)(&u.cfg);
    tail_kept = 1;
    for (size_t i = 128; i < sizeof u.bytes; i++) tail_kept &= u.bytes[i] == 0xAB;
    CHECK(u.cfg.struct_size == 128 && u.cfg.num_layers == 32 && tail_kept,
          "the symbol kvc_config_init writes the first version's 128 bytes and no more (struct_size %u)",
          u.cfg.struct_size);
    u.cfg.num_layers = 4;
    u.cfg.num_kv_heads = 2;
    u.cfg.head_dim = 16;
    u.cfg.max_seq_tokens = 2048;
    u.cfg.memory_bytes = 16u << 20;
    u.cfg.page_bytes = 4096;
    kvc_engine *e = NULL;
    CHECK(kvc_engine_create(&u.cfg, &e) == KVC_OK, "a 128-byte config from the old symbol creates an engine: %s",
          kvc_last_error());
    kvc_engine_destroy(e);
}

/* Linked at start-up, the library leaves this host's fatal-signal dispositions alone: its
 * constructor undid the Swift runtime's crash handler (kvcache.h, LOADING; a host that dlopens
 * it later: tools/abi_signals.c). So no handler of these lies in the Swift runtime (found by
 * swift_retain; or inside libkvcache.so, built with -static-stdlib). A sanitizer's handlers
 * may be there. Not under SWIFT_BACKTRACE, which keeps the runtime's. */
static void host_signals(void) {
    if (getenv("SWIFT_BACKTRACE") != NULL) return;
    Dl_info library, runtime, handler;
    REQUIRE(dladdr((void *)kvc_abi_version, &library) != 0, "dladdr(kvc_abi_version)");
    void *swift_retain = dlsym(RTLD_DEFAULT, "swift_retain");
    if (swift_retain == NULL || dladdr(swift_retain, &runtime) == 0) runtime = library;
    const int fatal[] = {SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) {
        struct sigaction current;
        sigaction(fatal[i], NULL, &current);
        void *f = (current.sa_flags & SA_SIGINFO) ? (void *)current.sa_sigaction : (void *)current.sa_handler;
        int swift = f != (void *)SIG_DFL && f != (void *)SIG_IGN && dladdr(f, &handler) != 0 &&
                    (handler.dli_fbase == runtime.dli_fbase || handler.dli_fbase == library.dli_fbase);
        CHECK(!swift, "signal %d's handler is the Swift runtime's (%s) after loading the library", fatal[i],
              handler.dli_fname);
    }
}

static void bad_config(void) {
    printf("abi_client: bad configs\n");
    config_init_sizes();
    kvc_config cfg;
    kvc_engine *e = (kvc_engine *)&cfg; /* must be reset to NULL on failure */
    small_config(&cfg, KVC_LAYOUT_PAGED, 16u << 20);
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "cfg is NULL", kvc_engine_create(NULL, &e));
    CHECK(e == NULL, "a failed create sets *out to NULL");
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "out is NULL", kvc_engine_create(&cfg, NULL));
    cfg.struct_size = 0;
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "struct_size", kvc_engine_create(&cfg, &e));
    small_config(&cfg, KVC_LAYOUT_PAGED, 16u << 20);
    cfg.num_layers = 0;
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "num_layers", kvc_engine_create(&cfg, &e));
    small_config(&cfg, 9, 16u << 20);
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "layout", kvc_engine_create(&cfg, &e));
    small_config(&cfg, KVC_LAYOUT_PAGED, 0);
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "memory_bytes", kvc_engine_create(&cfg, &e));
    /* Half a disk tier: a directory without a size, a size without a directory. */
    small_config(&cfg, KVC_LAYOUT_PAGED, 16u << 20);
    cfg.offload_dir = "/tmp";
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "is set but offload_bytes is 0", kvc_engine_create(&cfg, &e));
    cfg.offload_dir = NULL;
    cfg.offload_bytes = 64u << 20;
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "is set but offload_dir is not", kvc_engine_create(&cfg, &e));
    CHECK(e == NULL, "a refused half disk tier sets *out to NULL");

    /* An older caller's struct (ends at numa_node): the rest takes defaults. */
    small_config(&cfg, KVC_LAYOUT_PAGED, 16u << 20);
    cfg.struct_size = KVC_CONFIG_MIN_SIZE;
    cfg.metadata_only = 1; /* past struct_size: ignored */
    MUST(kvc_engine_create(&cfg, &e));
    int32_t t[20] = {0};
    size_t cached, n_blocks;
    int32_t blocks[2];
    void *k, *v;
    MUST(kvc_seq_create(e, 1, t, 20, &cached));
    MUST(kvc_seq_block_table(e, 1, blocks, 2, &n_blocks));
    CHECK(kvc_block_kv(e, blocks[0], 0, &k, &v) == KVC_OK, "an older kvc_config gets metadata_only = 0");
    kvc_engine_destroy(e);
    kvc_engine_destroy(NULL);
}

/* Out of memory, with and without a disk tier: a failed create adds no sequence, decoding stops
 * at the budget with the sequence's tokens and bytes intact, and a failed append changes no
 * statistic. With the tier, a freed prompt's cached blocks are spilled as the decode evicts them
 * and their writes complete on the device before that append: an allocation with no swap-out
 * pending leaves them to a later call (kvcache.h, CONVENTIONS), so it changes no counter
 * either; then kvc_engine_sync processes them and the prompt is read back byte-identical. */
static kvc_status wait_ready(kvc_engine *e, uint64_t seq);

static void out_of_memory(uint32_t layout, int with_tier) {
    const char *name = layout == KVC_LAYOUT_PAGED ? "paged" : "contiguous";
    char dir[] = TIER_DIR;
    if (with_tier) name = disk_scenario(layout, "out of memory", dir);
    else printf("abi_client: %s layout, out of memory\n", name);
    kvc_config cfg;
    small_config(&cfg, layout, 128u << 10); /* 32 pages of 4 KiB over 8 tensors */
    if (with_tier) cfg.offload_dir = dir, cfg.offload_bytes = 64u << 20;
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    engine_view v = view_of(e, &cfg);
    int32_t *tokens = calloc(cfg.max_seq_tokens, sizeof *tokens);
    INVARIANT(tokens != NULL, "calloc");
    for (uint32_t i = 0; i < cfg.max_seq_tokens; i++) tokens[i] = (int32_t)(70000 + i);
    int32_t freed[2 * BLOCK + 1];
    for (size_t i = 0; i < 2 * BLOCK + 1; i++) freed[i] = (int32_t)(90000 + i);
    size_t cached;
    MUST(kvc_seq_create(e, 3, freed, 2 * BLOCK + 1, &cached));
    write_kv(&v, 3, 5, 0, 2 * BLOCK + 1);
    MUST(kvc_seq_free(e, 3)); /* two cached blocks, evicted by the decode below */
    MUST(kvc_seq_create(e, 1, tokens, 40, &cached));
    write_kv(&v, 1, 7, 0, 40);
    kvc_stats before = stats_of(e);
    EXPECT_STATUS(KVC_ERR_OUT_OF_MEMORY, "kvc_seq_create", kvc_seq_create(e, 2, tokens + 100, cfg.max_seq_tokens - 100, &cached));
    /* Decode until the budget runs out: the last append fails and appends nothing. */
    size_t length = 40;
    kvc_status rc = KVC_OK;
    while (rc == KVC_OK && length + 1 < cfg.max_seq_tokens) {
        rc = kvc_seq_append(e, 1, tokens + length, 1);
        if (rc == KVC_OK) write_kv(&v, 1, 7, length, length + 1), length++;
    }
    CHECK(rc == KVC_ERR_OUT_OF_MEMORY, "%s: decoding past the budget is OUT_OF_MEMORY (got %s after %zu tokens)", name,
          kvc_status_name(rc), length);
    CHECK(length_of(e, 1) == length && kv_matches(&v, 1, 7, 0, length),
          "%s: the sequence keeps its tokens and bytes after OUT_OF_MEMORY", name);
    kvc_stats after = stats_of(e);
    CHECK(after.committed_bytes <= after.budget_bytes, "%s: never committed beyond the budget", name);
    CHECK(before.sequences == 1 && after.sequences == 1,
          "%s: the failed create added no sequence", name);
    if (with_tier) {
        CHECK(after.blocks_spilled == 2, "%s: the decode spilled the freed prompt's 2 blocks (got %" PRIu64 ")", name,
              after.blocks_spilled);
        usleep(100 * 1000); /* their writes complete on the device meanwhile (unprocessed) */
    }
    kvc_stats retried = stats_of(e);
    EXPECT_STATUS(KVC_ERR_OUT_OF_MEMORY, "kvc_seq_append", kvc_seq_append(e, 1, tokens + length, 1));
    kvc_stats refused = stats_of(e);
    CHECK(memcmp(&retried, &refused, sizeof retried) == 0, "%s: an append refused for want of memory changes no statistic", name);
    if (with_tier) {
        MUST(kvc_engine_sync(e));
        kvc_stats synced = stats_of(e);
        CHECK(synced.disk_stored_bytes > 0 && synced.disk_stored_bytes == synced.disk_bytes_written,
              "%s: kvc_engine_sync stores the spilled blocks (stored %" PRIu64 ", written %" PRIu64 " bytes)", name,
              synced.disk_stored_bytes, synced.disk_bytes_written);
        MUST(kvc_seq_free(e, 1));
        MUST(kvc_seq_create(e, 3, freed, 2 * BLOCK + 1, &cached));
        CHECK(cached == 2 * BLOCK && wait_ready(e, 3) == KVC_OK && kv_matches(&v, 3, 5, 0, cached),
              "%s: the freed prompt's blocks are read back from disk byte-identical (%zu cached)", name, cached);
    }
    free(tokens);
    kvc_engine_destroy(e);
    if (with_tier) remove_tier_dir(dir);
}

static void print_hashes(void) {
    enum { N = 1000, BT = 16 };
    int32_t tokens[N];
    for (int i = 0; i < N; i++) tokens[i] = (i % 3 == 0) ? -i * 31 : i * 7919;
    uint64_t hashes[N / BT];
    size_t n = 0;
    kvc_status rc = kvc_hash_tokens(tokens, N, BT, hashes, N / BT, &n);
    if (rc != KVC_OK) {
        fprintf(stderr, "abi_client: kvc_hash_tokens: %s: %s\n", kvc_status_name(rc), kvc_last_error());
        exit(1);
    }
    for (size_t i = 0; i < n; i++) printf("%016" PRIx64 "\n", hashes[i]);
    /* The same tokens under a salt (kvc_hash_tokens_salted), after a separator line. */
    rc = kvc_hash_tokens_salted(tokens, N, BT, 0x5A17u, hashes, N / BT, &n);
    if (rc != KVC_OK) {
        fprintf(stderr, "abi_client: kvc_hash_tokens_salted: %s: %s\n", kvc_status_name(rc), kvc_last_error());
        exit(1);
    }
    printf("salt 0x5a17\n");
    for (size_t i = 0; i < n; i++) printf("%016" PRIx64 "\n", hashes[i]);
}

/* ---- salted prompts (per LoRA adapter or tenant) ------------------------------------ */

/* kvc_seq_create_salted: blocks are shared only within one salt, and the events carry the
   salted chain kvc_hash_tokens_salted computes (a chain's first block with parent 0). */
static void salted(uint32_t layout) {
    const char *name;
    kvc_config cfg;
    kvc_engine *e = open_small(layout, "salted prompts", &cfg, &name);
    CHECK(first_event_clears_memory(e), "%s: the engine's first event is ALL_CLEARED of KVC_TIER_MEMORY", name);
    int32_t tokens[PROMPT];
    for (int i = 0; i < PROMPT; i++) tokens[i] = 9000 + i;
    size_t cached = 99;
    MUST(kvc_seq_create_salted(e, 1, tokens, PROMPT, 0xA11CE, &cached));
    CHECK(cached == 0, "%s: a first salted prompt has nothing cached (got %zu)", name, cached);
    uint64_t hashes[PROMPT / BLOCK];
    size_t n_hashes = 0;
    MUST(kvc_hash_tokens_salted(tokens, PROMPT, BLOCK, 0xA11CE, hashes, PROMPT / BLOCK, &n_hashes));
    kvc_event events[64];
    size_t n_events = 0;
    MUST(kvc_drain_events(e, events, 64, &n_events));
    int chain_ok = n_events == n_hashes;
    for (size_t i = 0; chain_ok && i < n_events; i++) {
        chain_ok = events[i].kind == KVC_EVENT_BLOCK_STORED && events[i].block_hash == hashes[i] &&
                   events[i].parent_hash == (i == 0 ? 0 : hashes[i - 1]);
    }
    CHECK(chain_ok, "%s: the events carry kvc_hash_tokens_salted's chain, the first block with parent 0", name);
    MUST(kvc_seq_create(e, 2, tokens, PROMPT, &cached));
    CHECK(cached == 0, "%s: kvc_seq_create (no salt) shares nothing with salt 0xA11CE (got %zu)", name, cached);
    MUST(kvc_seq_create_salted(e, 3, tokens, PROMPT, 0xB0B, &cached));
    CHECK(cached == 0, "%s: another salt shares nothing (got %zu)", name, cached);
    MUST(kvc_seq_create_salted(e, 4, tokens, PROMPT, 0xA11CE, &cached));
    CHECK(cached == PROMPT / BLOCK * BLOCK, "%s: the same salt shares every full block (got %zu)", name, cached);
    kvc_engine_destroy(e);
}

/* ---- speculative decoding: drafts appended, the rejected ones rolled back ------------ */

static void speculative(uint32_t layout) {
    const char *name;
    kvc_config cfg;
    kvc_engine *e = open_small(layout, "rejected drafts rolled back", &cfg, &name);
    engine_view v = view_of(e, &cfg);
    int32_t tokens[PROMPT];
    for (int i = 0; i < PROMPT; i++) tokens[i] = 11000 + i;
    size_t cached;
    MUST(kvc_seq_create(e, 1, tokens, PROMPT, &cached));
    write_kv(&v, 1, 6, 0, PROMPT);
    int32_t drafts[BLOCK];
    for (int i = 0; i < BLOCK; i++) drafts[i] = 12000 + i;
    MUST(kvc_seq_append(e, 1, drafts, BLOCK)); /* fills the prompt's last block and starts another */
    write_kv(&v, 1, 7, PROMPT, PROMPT + BLOCK);
    MUST(kvc_seq_truncate(e, 1, PROMPT + 3)); /* 3 drafts accepted */
    CHECK(length_of(e, 1) == PROMPT + 3, "%s: truncated to %d tokens (got %zu)", name, PROMPT + 3, length_of(e, 1));
    CHECK(kv_matches(&v, 1, 6, 0, PROMPT) && kv_matches(&v, 1, 7, PROMPT, PROMPT + 3),
          "%s: the prompt's and the accepted drafts' K/V stay", name);
    MUST(kvc_seq_append(e, 1, drafts, 2));
    CHECK(length_of(e, 1) == PROMPT + 5, "%s: appends continue from the cut", name);
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "n_tokens", kvc_seq_truncate(e, 1, PROMPT + 6));
    CHECK(length_of(e, 1) == PROMPT + 5, "%s: a refused truncation changes nothing", name);
    kvc_engine_destroy(e);
}

/* ---- a request cancelled before its prefill finished ---------------------------------- */

/* kvc_seq_abort: only the computed blocks stay in the prefix index. */
static void cancelled(uint32_t layout) {
    const char *name;
    kvc_config cfg;
    kvc_engine *e = open_small(layout, "a request cancelled mid-prefill", &cfg, &name);
    engine_view v = view_of(e, &cfg);
    int32_t tokens[PROMPT];
    for (size_t i = 0; i < PROMPT; i++) tokens[i] = (int32_t)(i * 31 % 9000) + 50000;
    size_t cached = 0;
    MUST(kvc_seq_create(e, 1, tokens, PROMPT, &cached));
    write_kv(&v, 1, 4, 0, 40); /* the first prefill chunk: 40 of PROMPT tokens */
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "computed_tokens", kvc_seq_abort(e, 1, PROMPT + 1));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "PTRDIFF_MAX", kvc_seq_abort(e, 1, SIZE_MAX));
    CHECK(length_of(e, 1) == PROMPT, "%s: a rejected abort leaves the sequence", name);
    MUST(kvc_seq_abort(e, 1, 40));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "kvc_seq_length", kvc_seq_length(e, 1, &cached));
    MUST(kvc_seq_create(e, 2, tokens, PROMPT, &cached));
    CHECK(cached == 40 / BLOCK * BLOCK, "%s: the next prompt hits only computed blocks (%zu cached)", name, cached);
    CHECK(kv_matches(&v, 2, 4, 0, cached), "%s: and reads their bytes", name);
    kvc_engine_destroy(e);
}

/* ---- chunked prefill with index_on_schedule ------------------------------------------- */

/* True when events[0 .. n-1] are exactly BLOCK_STORED (KVC_TIER_MEMORY) of blocks
 * from .. to-1 of the chain `hashes`, in order, each with its parent's hash. */
static int stored_blocks(const kvc_event *events, size_t n, const uint64_t *hashes, size_t from, size_t to) {
    if (n != to - from) return 0;
    for (size_t i = from; i < to; i++) {
        const kvc_event *ev = &events[i - from];
        if (ev->kind != KVC_EVENT_BLOCK_STORED || ev->tier != KVC_TIER_MEMORY || ev->block_hash != hashes[i] ||
            ev->parent_hash != (i ? hashes[i - 1] : 0))
            return 0;
    }
    return 1;
}

/* A long prompt computed in two forward passes: a second request for it hits only the blocks
 * scheduled so far; kvc_seq_schedule's bad input changes nothing; a decode step indexes the
 * rest of the prompt. */
static void chunked(uint32_t layout) {
    const char *name = layout == KVC_LAYOUT_PAGED ? "paged" : "contiguous";
    printf("abi_client: %s layout, chunked prefill indexed as scheduled\n", name);
    kvc_config cfg;
    small_config(&cfg, layout, 16u << 20);
    cfg.index_on_schedule = 1;
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    CHECK(first_event_clears_memory(e), "%s: the engine's first event is ALL_CLEARED of KVC_TIER_MEMORY", name);
    engine_view v = view_of(e, &cfg);
    int32_t tokens[PROMPT + 1];
    for (size_t i = 0; i <= PROMPT; i++) tokens[i] = (int32_t)(i * 17 % 7000) + 70000;
    uint64_t hashes[(PROMPT + 1) / BLOCK];
    size_t n_hashes = 0;
    MUST(kvc_hash_tokens(tokens, PROMPT, BLOCK, hashes, PROMPT / BLOCK, &n_hashes));
    kvc_event events[64];
    size_t n = 0, cached = 99;
    MUST(kvc_seq_create(e, 1, tokens, PROMPT, &cached));
    MUST(kvc_drain_events(e, events, 64, &n));
    CHECK(cached == 0 && n == 0, "%s: create indexes none of the prompt (%zu events)", name, n);
    MUST(kvc_seq_create(e, 2, tokens, PROMPT, &cached));
    CHECK(cached == 0, "%s: nothing scheduled, nothing hit (%zu cached)", name, cached);
    MUST(kvc_seq_free(e, 2));

    write_kv(&v, 1, 6, 0, 40); /* the first pass: tokens 0 .. 39 */
    MUST(kvc_seq_schedule(e, 1, 40));
    MUST(kvc_drain_events(e, events, 64, &n));
    CHECK(stored_blocks(events, n, hashes, 0, 40 / BLOCK), "%s: schedule(40) stores blocks 0 and 1 (%zu events)", name, n);
    MUST(kvc_seq_create(e, 3, tokens, PROMPT, &cached));
    CHECK(cached == 40 / BLOCK * BLOCK, "%s: the next prompt hits the scheduled blocks (%zu cached)", name, cached);
    CHECK(kv_matches(&v, 3, 6, 0, cached), "%s: and reads their bytes", name);
    MUST(kvc_seq_free(e, 3));
    MUST(kvc_drain_events(e, events, 64, &n));

    kvc_stats before = stats_of(e);
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "tokens", kvc_seq_schedule(e, 1, PROMPT + 1));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "PTRDIFF_MAX", kvc_seq_schedule(e, 1, SIZE_MAX));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "engine is NULL", kvc_seq_schedule(NULL, 1, 0));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "77", kvc_seq_schedule(e, 77, 0));
    MUST(kvc_seq_schedule(e, 1, 20)); /* below the last call: nothing more */
    kvc_stats after = stats_of(e);
    MUST(kvc_drain_events(e, events, 64, &n));
    CHECK(n == 0 && memcmp(&before, &after, sizeof before) == 0, "%s: refused and smaller schedules change nothing", name);

    write_kv(&v, 1, 6, 40, PROMPT); /* the second pass */
    MUST(kvc_seq_append(e, 1, &tokens[PROMPT], 1)); /* decoding: the whole prompt was scheduled */
    MUST(kvc_drain_events(e, events, 64, &n));
    CHECK(stored_blocks(events, n, hashes, 40 / BLOCK, PROMPT / BLOCK), "%s: the append stores blocks 2 .. %d (%zu events)",
          name, PROMPT / BLOCK - 1, n);
    MUST(kvc_seq_create(e, 4, tokens, PROMPT, &cached));
    CHECK(cached == PROMPT / BLOCK * BLOCK, "%s: the whole prompt hits now (%zu cached)", name, cached);
    CHECK(kv_matches(&v, 4, 6, 0, cached), "%s: and reads its bytes", name);
    kvc_engine_destroy(e);
}

/* Chunked admission (revserver's chunk.c): 384 blocks; prompt P (1024 tokens, 64 blocks)
 * computed and freed, so cached; fillers hold 300 blocks; Q = P + 600 tokens (102 blocks, 64
 * cached). 20 blocks are free: kvc_seq_create(Q) needs 38 and is refused; kvc_prefix_lookup
 * sees the 1024 cached tokens allocating nothing; kvc_seq_create_chunked shares P's blocks and
 * allocates the first 256-token chunk's 16; appends bring the rest, indexed under Q's chain.
 * Paged: the contiguous layout's budget is in pages per sequence, not blocks. */
static void chunked_admission(void) {
    printf("abi_client: paged layout, chunked admission of a prompt longer than the free memory\n");
    kvc_config cfg;
    small_config(&cfg, KVC_LAYOUT_PAGED, 384u * 8 * BLOCK * 64);
    cfg.index_on_schedule = 1;
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    enum { P = 1024, Q = 1624, FILLER = 1600, CHUNK = 256 };
    static int32_t q[Q], filler[FILLER];
    for (size_t i = 0; i < Q; i++) q[i] = (int32_t)i + 7;
    size_t cached = 0, held = 0, memory = 9, disk = 9, peer = 9;
    MUST(kvc_seq_create(e, 1, q, P, &cached));
    MUST(kvc_seq_schedule(e, 1, P));
    int32_t p_blocks[P / BLOCK], q_blocks[Q / BLOCK + 1];
    size_t n = 0;
    MUST(kvc_seq_block_table(e, 1, p_blocks, P / BLOCK, &n));
    MUST(kvc_seq_free(e, 1));
    for (uint64_t f = 0; f < 3; f++) {
        for (size_t i = 0; i < FILLER; i++) filler[i] = (int32_t)(100000 * (f + 1) + i);
        MUST(kvc_seq_create(e, 10 + f, filler, FILLER, &cached)); /* 100 blocks each */
    }
    kvc_stats before = stats_of(e);
    CHECK(before.blocks_used == 300 && before.blocks_cached == 64, "P cached, fillers hold 300 (%llu used, %llu cached)",
          (unsigned long long)before.blocks_used, (unsigned long long)before.blocks_cached);
    MUST(kvc_prefix_lookup(e, q, Q, 0, &memory, &disk, &peer));
    kvc_stats after = stats_of(e);
    CHECK(memory == P && disk == 0 && peer == 0, "the lookup sees P's %d tokens (%zu, %zu, %zu)", P, memory, disk, peer);
    CHECK(memcmp(&before, &after, sizeof before) == 0, "the lookup changes no counter");
    EXPECT_STATUS(KVC_ERR_OUT_OF_MEMORY, "38 blocks", kvc_seq_create(e, 2, q, Q, &cached));
    MUST(kvc_seq_create_chunked(e, 2, q, Q, 0, CHUNK, &cached, &held));
    CHECK(cached == P && held == P + CHUNK, "admitted: cached %zu, held %zu", cached, held);
    after = stats_of(e);
    CHECK(after.blocks_used == 380 && after.blocks_cached == 0 && after.blocks_evicted == 0,
          "P's 64 blocks shared, 16 allocated, none evicted (%llu used, %llu cached, %llu evicted)",
          (unsigned long long)after.blocks_used, (unsigned long long)after.blocks_cached,
          (unsigned long long)after.blocks_evicted);
    MUST(kvc_seq_block_table(e, 2, q_blocks, Q / BLOCK + 1, &n));
    CHECK(n == (P + CHUNK) / BLOCK && memcmp(q_blocks, p_blocks, sizeof p_blocks) == 0, "Q's first 64 blocks are P's");
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "commit_tokens is 0", kvc_seq_create_chunked(e, 3, q, Q, 0, 0, &cached, &held));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "held_tokens is NULL", kvc_seq_create_chunked(e, 3, q, Q, 0, CHUNK, &cached, NULL));
    EXPECT_STATUS(KVC_ERR_EXISTS, "already exists", kvc_seq_create_chunked(e, 2, q, Q, 0, CHUNK, &cached, &held));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "n_tokens is 0", kvc_prefix_lookup(e, q, 0, 0, &memory, &disk, &peer));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "peer_tokens is NULL", kvc_prefix_lookup(e, q, Q, 0, &memory, &disk, NULL));
    MUST(kvc_seq_schedule(e, 2, held));
    MUST(kvc_seq_free(e, 10)); /* the next passes need its room */
    for (size_t done = held; done < Q; done += CHUNK) MUST(kvc_seq_append(e, 2, q + done, Q - done < CHUNK ? Q - done : CHUNK));
    after = stats_of(e);
    CHECK(length_of(e, 2) == Q && after.blocks_used == 302 && after.blocks_evicted == 0,
          "the rest appended in chunks (%llu used, %llu evicted)", (unsigned long long)after.blocks_used,
          (unsigned long long)after.blocks_evicted);
    MUST(kvc_seq_free(e, 2));
    MUST(kvc_prefix_lookup(e, q, Q, 0, &memory, &disk, &peer));
    CHECK(memory == (Q - 1) / BLOCK * BLOCK, "Q's blocks were indexed under its chain (%zu cached)", memory);
    kvc_engine_destroy(e);
}

/* ---- token eviction: observe, compact, positions, and bad input ----------------------- */

/* Whether every slot of `seq` holding a position below `below` (kvc_seq_positions, per layer)
 * has exactly the bytes write_kv wrote for that position with `salt`, in every layer. */
static int slots_exact(engine_view *v, kvc_engine *e, uint64_t seq, uint32_t salt, size_t below) {
    int32_t pos[256];
    size_t n = 0;
    int exact = 1;
    load_table(v, seq);
    for (uint32_t l = 0; l < v->layers; l++) {
        if (kvc_seq_positions(e, seq, l, pos, 256, &n) != KVC_OK || n > 256) return 0;
        for (size_t slot = 0; slot < n; slot++)
            for (uint32_t tensor = 0; tensor < 2 && (size_t)pos[slot] < below; tensor++) {
                const uint8_t *p = token_address(v, seq, l, tensor, slot);
                for (size_t b = 0; b < v->token_bytes; b++) exact &= p[b] == pattern(salt, l, tensor, (size_t)pos[slot], b);
            }
    }
    return exact;
}

static void evict(uint32_t layout) {
    kvc_config cfg;
    small_config(&cfg, layout, 16u << 20);
    cfg.eviction_policy = KVC_EVICTION_HEAVY_HITTER;
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    engine_view v = view_of(e, &cfg);
    enum { N = 64, KEEP = 20 };
    int32_t prompt[N];
    for (int i = 0; i < N; i++) prompt[i] = 7000 + i;
    size_t cached = 0;
    MUST(kvc_seq_create(e, 1, prompt, N, &cached));
    write_kv(&v, 1, 77, 0, N);
    float scores[2 * N];
    for (int i = 0; i < 2 * N; i++) scores[i] = 0.001f;
    const int heavy[] = {0, 9, 21, 30, 44};
    for (size_t j = 0; j < sizeof heavy / sizeof heavy[0]; j++) scores[heavy[j]] = scores[N + heavy[j]] = 1.0f;
    for (uint32_t l = 0; l < cfg.num_layers; l++) MUST(kvc_seq_observe(e, 1, l, scores, 2, N));
    kvc_stats before = stats_of(e);
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "n_heads", kvc_seq_observe(e, 1, 0, scores, 3, N));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "budget_tokens", kvc_seq_compact(e, 1, 0));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "99", kvc_seq_compact(e, 99, 4));
    MUST(kvc_seq_compact(e, 1, KEEP));
    size_t n = 0;
    MUST(kvc_seq_layer_length(e, 1, 2, &n));
    CHECK(n == KEEP, "layer length %zu after compacting to %d", n, KEEP);
    CHECK(length_of(e, 1) == KEEP, "sequence length after compaction");
    int32_t pos[N];
    MUST(kvc_seq_positions(e, 1, 0, pos, N, &n));
    int found = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < sizeof heavy / sizeof heavy[0]; j++) found += pos[i] == heavy[j];
    CHECK(n == KEEP && found == 5, "the heavy hitters stay (%d of 5)", found);
    CHECK(slots_exact(&v, e, 1, 77, N), "compacted K/V bytes are exact");
    CHECK(stats_of(e).committed_bytes <= before.committed_bytes, "committed bytes do not grow");
    int32_t next = 9999;
    MUST(kvc_seq_append(e, 1, &next, 1));
    MUST(kvc_seq_positions(e, 1, 3, pos, N, &n));
    CHECK(n == KEEP + 1 && pos[KEEP] == N, "an append continues after the kept tokens (position %d)", pos[n - 1]);
    /* Speculative decoding on the compacted sequence: 7 drafts (positions N+1 .. N+7), 2 kept:
     * n_tokens counts positions, and every layer keeps those below it. */
    int32_t drafts[7] = {1, 2, 3, 4, 5, 6, 7};
    MUST(kvc_seq_append(e, 1, drafts, 7));
    MUST(kvc_seq_truncate(e, 1, N + 3));
    MUST(kvc_seq_positions(e, 1, 1, pos, N, &n));
    CHECK(n == KEEP + 3 && pos[KEEP] == N && pos[KEEP + 2] == N + 2 && length_of(e, 1) == KEEP + 3,
          "a compacted sequence truncated to position %d holds %zu slots, the last at %d", N + 3, n, pos[n - 1]);
    CHECK(slots_exact(&v, e, 1, 77, N), "the compacted K/V bytes stay exact after the truncation");
    /* Refused, changing nothing: a cut that leaves a layer no token (sequence 2 kept none below 4). */
    MUST(kvc_seq_create(e, 2, prompt, 16, &cached));
    for (int i = 0; i < 2 * 16; i++) scores[i] = i % 16 == 8 ? 1.0f : 0.001f;
    for (uint32_t l = 0; l < cfg.num_layers; l++) MUST(kvc_seq_observe(e, 2, l, scores, 2, 16));
    MUST(kvc_seq_compact(e, 2, 2)); /* token 8 and the recent window's 15 */
    kvc_stats held = stats_of(e);
    EXPECT_STATUS(KVC_ERR_UNSUPPORTED, "no token below position 4", kvc_seq_truncate(e, 2, 4));
    kvc_stats after = stats_of(e);
    CHECK(length_of(e, 2) == 2 && length_of(e, 1) == KEEP + 3 && slots_exact(&v, e, 1, 77, N) &&
              after.blocks_used == held.blocks_used && after.committed_bytes == held.committed_bytes,
          "a refused truncation changes nothing");
    kvc_engine_destroy(e);
}

/* ---- the disk tier -------------------------------------------------------------------- */

/* Polls kvc_seq_ready until the sequence is resident; returns the last status. */
static kvc_status wait_ready(kvc_engine *e, uint64_t seq) {
    for (int i = 0; i < 100000; i++) {
        int ready = 0;
        kvc_status s = kvc_seq_ready(e, seq, &ready);
        if (s != KVC_OK || ready) return s;
        MUST(kvc_engine_poll(e, 100));
    }
    return KVC_ERR_INTERNAL;
}

/* Polls until the asynchronous swap-out started when kvc_stats.swap_outs read `before`
 * completed (at most 100,000 polls of 100 us); true when exactly it did. */
static int poll_swap_out(kvc_engine *e, uint64_t before) {
    for (int i = 0; i < 100000 && stats_of(e).swap_outs == before; i++) MUST(kvc_engine_poll(e, 100));
    return stats_of(e).swap_outs == before + 1;
}

/* A server with a disk tier: a trimmed prefix comes back from disk, a preempted sequence
 * swaps out and in (synchronously, then asynchronously), and a restarted engine on the same directory finds the prefix again. */
static void offload(uint32_t layout) {
    char dir[] = TIER_DIR;
    const char *name = disk_scenario(layout, "spill, reload, swap, restart", dir);
    kvc_config cfg;
    disk_config(&cfg, layout, dir);
    int32_t tokens[PROMPT];
    for (size_t i = 0; i < PROMPT; i++) tokens[i] = (int32_t)(i * 104729 % 70000) + 7;
    size_t cached = 0;
    for (int run = 0; run < 2; run++) {
        kvc_engine *e = NULL;
        MUST(kvc_engine_create(&cfg, &e));
        engine_view v = view_of(e, &cfg);
        if (run == 0) {
            MUST(kvc_seq_create(e, 1, tokens, PROMPT, &cached));
            write_kv(&v, 1, 9, 0, PROMPT);
            MUST(kvc_seq_free(e, 1));
            MUST(kvc_engine_trim(e));
            kvc_stats s = stats_of(e);
            CHECK(s.blocks_cached == 0 && s.blocks_spilled == PROMPT / BLOCK, "%s: trim spills %d blocks (got %" PRIu64 ")",
                  name, PROMPT / BLOCK, s.blocks_spilled);
            CHECK(s.spills_skipped == 0, "%s: a trim skips no spill (it waits for staging buffers instead; got %" PRIu64 ")",
                  name, s.spills_skipped);
        }
        kvc_stats start = stats_of(e);
        CHECK(start.disk_recovered_blocks == (run == 0 ? 0u : PROMPT / BLOCK) && start.disk_journal_dropped == 0,
              "%s run %d: disk_recovered_blocks %" PRIu64 " (want %d), disk_journal_dropped %" PRIu64, name, run,
              start.disk_recovered_blocks, run == 0 ? 0 : PROMPT / BLOCK, start.disk_journal_dropped);
        MUST(kvc_seq_create(e, 2, tokens, PROMPT, &cached));
        CHECK(cached == PROMPT / BLOCK * BLOCK, "%s run %d: the prefix is found on disk (%zu cached)", name, run, cached);
        CHECK(wait_ready(e, 2) == KVC_OK, "%s run %d: the prefix becomes ready", name, run);
        CHECK(kv_matches(&v, 2, 9, 0, cached), "%s run %d: the prefix read back from disk is byte-identical", name, run);
        write_kv(&v, 2, 9, cached, PROMPT);
        MUST(kvc_seq_swap_out(e, 2));
        int ready = 1;
        MUST(kvc_seq_ready(e, 2, &ready));
        CHECK(ready == 0, "%s run %d: a swapped-out sequence is not ready", name, run);
        MUST(kvc_seq_swap_in(e, 2));
        CHECK(wait_ready(e, 2) == KVC_OK, "%s run %d: swapped back in", name, run);
        CHECK(kv_matches(&v, 2, 9, 0, PROMPT), "%s run %d: swap-out/swap-in is byte-identical", name, run);
        /* Asynchronous: returns with the writes submitted; kvc_engine_poll releases the memory
         * once they completed. */
        uint64_t swap_outs = stats_of(e).swap_outs;
        MUST(kvc_seq_swap_out_async(e, 2));
        MUST(kvc_seq_ready(e, 2, &ready));
        CHECK(ready == 0, "%s run %d: an asynchronously swapped-out sequence is not ready", name, run);
        CHECK(poll_swap_out(e, swap_outs), "%s run %d: kvc_engine_poll completes the asynchronous swap-out", name, run);
        MUST(kvc_seq_swap_in(e, 2));
        CHECK(wait_ready(e, 2) == KVC_OK, "%s run %d: swapped back in after the asynchronous swap-out", name, run);
        CHECK(kv_matches(&v, 2, 9, 0, PROMPT), "%s run %d: asynchronous swap-out/swap-in is byte-identical", name, run);
        MUST(kvc_engine_sync(e));
        kvc_stats s = stats_of(e);
        CHECK(s.swap_outs_started == 2 && s.swap_outs == 2 && s.swap_ins == 2 && s.swap_outs_cancelled == 0
                  && s.swap_outs_failed == 0 && s.swap_outs_pending == 0,
              "%s run %d: two swap-outs started, both completed (started %" PRIu64 ", completed %" PRIu64 ", cancelled %" PRIu64
              ", failed %" PRIu64 ", pending %" PRIu64 ")", name, run, s.swap_outs_started, s.swap_outs, s.swap_outs_cancelled,
              s.swap_outs_failed, s.swap_outs_pending);
        kvc_engine_destroy(e);
    }
    remove_tier_dir(dir);
}

/* Forks a child that does nothing (no exec) until the parent ends it (`end_waiting_child`):
 * a preforked worker that holds whatever the fork gave it. *release is the pipe end whose
 * close lets it exit. */
static pid_t fork_waiting_child(int *release) {
    int done[2];
    REQUIRE(pipe(done) == 0, "pipe");
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {  /* waits for the parent's word (or its end), then exits */
        char c;
        close(done[1]);
        ssize_t n = read(done[0], &c, 1);
        _exit(n >= 0 ? 0 : 1);
    }
    close(done[0]);
    *release = done[1];
    return pid;
}

/* Lets the child of `fork_waiting_child` exit and checks that it exited cleanly. */
static void end_waiting_child(pid_t pid, int release, const char *name) {
    close(release);
    int status = -1;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: the child exited (status %d)", name, status);
}

/* A server process that forks (a subprocess spawned without posix_spawn, a worker pool)
 * keeps serving: while a child that inherited the engine's memfd, io_uring ring and tier
 * files lives, and after it exited, the parent completes an asynchronous swap-out that was
 * in flight at the fork, swaps in and reads its K/V back byte-identical. The child calls
 * nothing (kvcache.h, PROCESSES); it holds the inherited descriptors until the parent is
 * done, then exits. */
static void forked(uint32_t layout) {
    char dir[] = TIER_DIR;
    const char *name = disk_scenario(layout, "the server forks while a swap-out is in flight", dir);
    kvc_config cfg;
    disk_config(&cfg, layout, dir);
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    engine_view v = view_of(e, &cfg);
    int32_t tokens[PROMPT];
    for (size_t i = 0; i < PROMPT; i++) tokens[i] = (int32_t)(i * 7919 % 50000) + 3;
    size_t cached = 0;
    MUST(kvc_seq_create(e, 1, tokens, PROMPT, &cached));
    write_kv(&v, 1, 5, 0, PROMPT);
    MUST(kvc_seq_swap_out_async(e, 1));
    int release_child;
    pid_t pid = fork_waiting_child(&release_child);
    uint64_t swap_outs = stats_of(e).swap_outs;
    CHECK(poll_swap_out(e, swap_outs), "%s: the swap-out in flight at the fork completes in the parent", name);
    MUST(kvc_seq_swap_in(e, 1));
    CHECK(wait_ready(e, 1) == KVC_OK && kv_matches(&v, 1, 5, 0, PROMPT), "%s: swapped back in byte-identical while the child lives", name);
    end_waiting_child(pid, release_child, name);
    MUST(kvc_seq_swap_out(e, 1));
    MUST(kvc_seq_swap_in(e, 1));
    CHECK(wait_ready(e, 1) == KVC_OK && kv_matches(&v, 1, 5, 0, PROMPT), "%s: and again after the child exited", name);
    MUST(kvc_seq_free(e, 1));
    kvc_engine_destroy(e);
    remove_tier_dir(dir);
}

/* Bytes allocated to the K/V memory file ("memfd:kvcache-kv") that process `pid` has open,
 * summed over its descriptors of it; 0 when it has none. */
static long long kv_file_bytes(pid_t pid) {
    char dir[64], link[384], target[256];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    REQUIRE(d != NULL, "opendir %s: %s", dir, strerror(errno));
    long long bytes = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        snprintf(link, sizeof link, "%s/%s", dir, de->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = 0;
        struct stat st;
        if (strstr(target, "memfd:kvcache-kv") && stat(link, &st) == 0) bytes += (long long)st.st_blocks * 512;
    }
    closedir(d);
    return bytes;
}

/* A server that forked a worker without exec (a preforked pool) and then destroys its engine:
 * the memory goes at once, though the child still has the K/V file's descriptor and shared
 * mappings (kvcache.h, PROCESSES). Before, the whole reserved budget stayed allocated until
 * the child exited. */
static void forked_then_destroyed(uint32_t layout) {
    kvc_config cfg;
    const char *name;
    kvc_engine *e = open_small(layout, "the server forks a worker, then destroys the engine", &cfg, &name);
    uint64_t reserved = 0;
    MUST(kvc_engine_reserve(e, cfg.memory_bytes, &reserved));
    int release_child;
    pid_t pid = fork_waiting_child(&release_child);
    long long before = kv_file_bytes(pid);
    CHECK(before >= (long long)reserved && reserved > 0, "%s: the child inherited the K/V file with the %llu reserved bytes (%lld allocated)",
          name, (unsigned long long)reserved, before);
    kvc_engine_destroy(e);
    long long after = kv_file_bytes(pid);
    CHECK(after == 0, "%s: after kvc_engine_destroy the child's K/V file holds %lld bytes, not 0", name, after);
    end_waiting_child(pid, release_child, name);
}

/* A server whose file-size limit (`ulimit -f`, RLIMIT_FSIZE, here lowered after the engine
 * was created: the pool's memfd obeys it too) is below what its swap-out writes: the kernel
 * ends a process writing past the limit (SIGXFSZ, default action), so the tier grows its file
 * up to the limit and no further. In a child (the limit, and the signal before this was
 * handled, stay there): the swap-out fails with KVC_ERR_IO naming the limit, the sequence
 * stays resident and byte-identical, another one too, and both still append; the child exits
 * by itself with every check passed. kvc_engine_create under a limit below memory_bytes is
 * KVC_ERR_OUT_OF_MEMORY naming the limit, not the end of the process. */
static void file_size_limit(uint32_t layout) {
    char dir[] = TIER_DIR;
    const char *name = disk_scenario(layout, "a file-size limit below what a swap-out writes", dir);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        kvc_config cfg;
        disk_config(&cfg, layout, dir);
        /* A slot is a 4096-byte header and a block of every layer's K and V, in 4 KiB units:
         * three slots fit, the prompt's seven blocks do not (nor in the two slots a cached
         * prefix holds and the one the slab can still grow by). */
        size_t slot = (4096 + (size_t)BLOCK * 64 * 4 * 2 + 4095) / 4096 * 4096;
        kvc_engine *e = NULL;
        MUST(kvc_engine_create(&cfg, &e));  /* first: the pool's memfd obeys the limit too */
        struct rlimit limit;
        REQUIRE(getrlimit(RLIMIT_FSIZE, &limit) == 0, "getrlimit");
        limit.rlim_cur = 3 * slot;
        REQUIRE(setrlimit(RLIMIT_FSIZE, &limit) == 0, "setrlimit RLIMIT_FSIZE: %s", strerror(errno));
        engine_view v = view_of(e, &cfg);
        int32_t tokens[PROMPT];
        for (size_t i = 0; i < PROMPT; i++) tokens[i] = (int32_t)(i * 7919 % 50000) + 3;
        size_t cached = 0;
        MUST(kvc_seq_create(e, 1, tokens, PROMPT, &cached));
        write_kv(&v, 1, 5, 0, PROMPT);
        tokens[0] = 1;  /* another chain */
        MUST(kvc_seq_create(e, 2, tokens, PROMPT, &cached));
        write_kv(&v, 2, 6, 0, PROMPT);
        int32_t prefix[2 * BLOCK + 1];  /* a cached prefix of two blocks on disk, in the tier's LRU */
        for (size_t i = 0; i <= 2 * BLOCK; i++) prefix[i] = (int32_t)(i * 104729 % 60000) + 5;
        MUST(kvc_seq_create(e, 3, prefix, 2 * BLOCK, &cached));
        write_kv(&v, 3, 7, 0, 2 * BLOCK);
        MUST(kvc_seq_free(e, 3));
        MUST(kvc_engine_trim(e));
        MUST(kvc_engine_sync(e));
        uint64_t stored = stats_of(e).disk_stored_bytes;
        CHECK(stored == 2 * slot, "%s: the freed prefix's two blocks are on disk (%llu bytes)", name, (unsigned long long)stored);
        EXPECT_STATUS(KVC_ERR_IO, "file-size limit", kvc_seq_swap_out(e, 1));
        CHECK(strstr(kvc_last_error(), "within the process's file-size limit (RLIMIT_FSIZE)") != NULL,
              "%s: the refusal names the bound that stops the slab's growth: %s", name, kvc_last_error());
        CHECK(length_of(e, 1) == PROMPT && kv_matches(&v, 1, 5, 0, PROMPT) && kv_matches(&v, 2, 6, 0, PROMPT),
              "%s: after the refused swap-out both sequences are resident and byte-identical", name);
        CHECK(stats_of(e).disk_stored_bytes == stored, "%s: the refused swap-out dropped no cached block from disk", name);
        MUST(kvc_seq_create(e, 4, prefix, 2 * BLOCK + 1, &cached));  /* a prompt the prefix begins */
        CHECK(cached == 2 * BLOCK && wait_ready(e, 4) == KVC_OK && kv_matches(&v, 4, 7, 0, 2 * BLOCK),
              "%s: the cached prefix is still found on disk, byte-identical (%zu cached)", name, cached);
        MUST(kvc_seq_free(e, 4));
        int32_t next = 42;
        MUST(kvc_seq_append(e, 1, &next, 1));
        MUST(kvc_seq_append(e, 2, &next, 1));
        CHECK(length_of(e, 1) == PROMPT + 1 && length_of(e, 2) == PROMPT + 1, "%s: both sequences still append", name);
        kvc_engine_destroy(e);
        e = NULL;
        EXPECT_STATUS(KVC_ERR_OUT_OF_MEMORY, "file-size limit", kvc_engine_create(&cfg, &e));
        CHECK(e == NULL, "%s: no engine under a file-size limit below memory_bytes", name);
        printf("abi_client: %s: the child under a file-size limit of %zu bytes: %d passed, %d failed\n", name, 3 * slot, passed, failed);
        fflush(stdout);
        fflush(stderr);
        _exit(failed == 0 ? 0 : 1);
    }
    int status = -1;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: the child under a file-size limit exited by itself, its checks passed (%s %d)", name,
          WIFSIGNALED(status) ? "killed by signal" : "exit status", WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    remove_tier_dir(dir);
}

/* A prefix of more disk blocks than staging buffers: 1 MiB slots give 32 buffers, and a
 * 64-block prefix takes them all with its first reads and queues the rest, so kvc_seq_create
 * returns without waiting for the device. The sequence is not ready until the queued reads
 * were submitted (by kvc_seq_ready and kvc_engine_poll, as completions free buffers) and
 * landed; then every block is byte-identical. */
static void queued_reads(uint32_t layout) {
    enum { BLOCKS = 64, TOKENS = BLOCKS * BLOCK + 1 };
    char dir[] = TIER_DIR;
    const char *name = disk_scenario(layout, "prefix reads queued for staging buffers", dir);
    kvc_config cfg;
    small_config(&cfg, layout, 128u << 20);
    cfg.num_layers = 16;
    cfg.num_kv_heads = 8;
    cfg.head_dim = 128; /* token_bytes 2048: a slot is 16 layers x K,V x 16 tokens + header, ~1 MiB */
    cfg.max_seq_tokens = 2 * TOKENS;
    cfg.offload_dir = dir;
    cfg.offload_bytes = 128u << 20;
    cfg.offload_queue_depth = 32; /* 32 staging buffers */
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    engine_view v = view_of(e, &cfg);
    static int32_t tokens[TOKENS];
    for (size_t i = 0; i < TOKENS; i++) tokens[i] = (int32_t)(i * 7919 % 90000) + 11;
    size_t cached = 0;
    MUST(kvc_seq_create(e, 1, tokens, TOKENS, &cached));
    write_kv(&v, 1, 13, 0, TOKENS);
    MUST(kvc_seq_free(e, 1));
    MUST(kvc_engine_trim(e));
    MUST(kvc_engine_sync(e));
    kvc_stats before = stats_of(e);
    MUST(kvc_seq_create(e, 2, tokens, TOKENS, &cached));
    CHECK(cached == BLOCKS * BLOCK, "%s: the %d-block prefix is found on disk (%zu cached)", name, BLOCKS, cached);
    CHECK(stats_of(e).blocks_loaded == before.blocks_loaded,
          "%s: the create returned without waiting for a read to complete (it would have, for a staging buffer)", name);
    int ready = 1;
    MUST(kvc_seq_ready(e, 2, &ready));
    CHECK(ready == 0, "%s: not ready while reads beyond the 32 staging buffers are queued", name);
    CHECK(wait_ready(e, 2) == KVC_OK, "%s: the queued reads are submitted and land", name);
    MUST(kvc_seq_ready(e, 2, &ready));
    CHECK(ready == 1, "%s: ready once every read landed", name);
    CHECK(kv_matches(&v, 2, 13, 0, cached), "%s: every block read back, queued or not, is byte-identical", name);
    kvc_stats after = stats_of(e);
    CHECK(after.blocks_loaded == before.blocks_loaded + BLOCKS, "%s: %d blocks loaded (got %" PRIu64 ")", name, BLOCKS,
          after.blocks_loaded - before.blocks_loaded);
    MUST(kvc_seq_free(e, 2));
    /* A free right after such a create never waits for its reads in flight: the sequence is
     * gone at once (its id reusable), its memory held until the reads landed and a call
     * processed them (here kvc_engine_sync), then back. */
    MUST(kvc_engine_trim(e));
    MUST(kvc_engine_sync(e));
    kvc_stats idle = stats_of(e);
    MUST(kvc_seq_create(e, 4, tokens, TOKENS, &cached));
    MUST(kvc_seq_free(e, 4));
    CHECK(kvc_seq_ready(e, 4, &ready) == KVC_ERR_NOT_FOUND, "%s: a freed sequence is gone at once", name);
    CHECK(stats_of(e).sequences == 0, "%s: a freed sequence is not counted live while its reads land", name);
    MUST(kvc_seq_create(e, 4, tokens, TOKENS, &cached));
    CHECK(cached == BLOCKS * BLOCK, "%s: the id is reusable at once, the prefix still found (%zu cached)", name, cached);
    CHECK(wait_ready(e, 4) == KVC_OK, "%s: the re-created sequence's reads land", name);
    CHECK(kv_matches(&v, 4, 13, 0, cached), "%s: the re-created sequence is byte-identical", name);
    MUST(kvc_seq_free(e, 4));
    MUST(kvc_engine_sync(e));
    kvc_stats end = stats_of(e);
    CHECK(end.blocks_used == idle.blocks_used && end.sequences == 0,
          "%s: the freed sequences' memory is back once their reads landed (%" PRIu64 " blocks used, %" PRIu64 " before)", name,
          end.blocks_used, idle.blocks_used);
    kvc_engine_destroy(e);
    remove_tier_dir(dir);
}

/* ---- KV events of the disk tier (KVC_TIER_DISK) ----------------------------------------- */

enum { EV_PROMPTS = 8, EV_BLOCKS = PROMPT / BLOCK, EV_SLOTS = 12 };

/* A router's view of one engine, from its events: per tier (KVC_TIER_MEMORY, KVC_TIER_DISK)
 * the hashes stored minus removed, and counts of what it saw. */
typedef struct {
    uint64_t held[2][EV_PROMPTS * EV_BLOCKS];
    size_t n[2];
    uint64_t stored[2], removed[2], cleared[2], contradictions, unknown;
} router_view;

static size_t view_find(const router_view *rv, int tier, uint64_t h) {
    size_t i = 0;
    while (i < rv->n[tier] && rv->held[tier][i] != h) i++;
    return i;
}
static int view_holds(const router_view *rv, int tier, uint64_t h) { return view_find(rv, tier, h) < rv->n[tier]; }

/* Applies events ev[0 .. n-1] to `rv`, counting those that contradict it (a store of a block
 * held, a removal of one not held) and stored blocks that are not block b of a prompt of
 * `chains` with block b - 1 (or 0) as parent. */
static void view_apply(router_view *rv, const kvc_event *ev, size_t n, const uint64_t chains[][EV_BLOCKS]) {
    for (size_t i = 0; i < n; i++) {
        INVARIANT(ev[i].tier == KVC_TIER_MEMORY || ev[i].tier == KVC_TIER_DISK, "tier %u is memory or disk", ev[i].tier);
        int t = (int)ev[i].tier;
        size_t at = view_find(rv, t, ev[i].block_hash);
        if (ev[i].kind == KVC_EVENT_ALL_CLEARED) {
            rv->cleared[t]++;
            rv->n[t] = 0;
        } else if (ev[i].kind == KVC_EVENT_BLOCK_STORED) {
            rv->stored[t]++;
            int known = 0;
            for (int p = 0; p < EV_PROMPTS; p++)
                for (int b = 0; b < EV_BLOCKS; b++)
                    known |= chains[p][b] == ev[i].block_hash && ev[i].parent_hash == (b ? chains[p][b - 1] : 0);
            rv->unknown += !known;
            if (at < rv->n[t]) rv->contradictions++;
            else if (rv->n[t] < EV_PROMPTS * EV_BLOCKS) rv->held[t][rv->n[t]++] = ev[i].block_hash;
        } else {
            rv->removed[t]++;
            if (at == rv->n[t]) rv->contradictions++;
            else rv->held[t][at] = rv->held[t][--rv->n[t]];
        }
    }
}

/* Drains every pending event and applies it to `rv` (view_apply). */
static void view_drain(kvc_engine *e, router_view *rv, const uint64_t chains[][EV_BLOCKS]) {
    kvc_event ev[64];
    size_t n = 0;
    do {
        MUST(kvc_drain_events(e, ev, 64, &n));
        view_apply(rv, ev, n, chains);
    } while (n == 64);
}

/* kvc_engine_index_events as a router that lost events would call it: asks the count with
 * capacity 0 (KVC_ERR_BUFFER_TOO_SMALL), then dumps into a buffer of that many, and applies
 * the dump to a fresh view. True when that view holds exactly `rv`'s blocks in both tiers, the
 * dump opens each tier with its ALL_CLEARED (memory first, then disk) and every disk block
 * comes after its parent when the tier holds that. */
static int dump_equals_view(kvc_engine *e, const router_view *rv, const uint64_t chains[][EV_BLOCKS]) {
    static router_view fresh;
    static kvc_event dump[2 + 2 * EV_PROMPTS * EV_BLOCKS];
    size_t n = 0, again = 0;
    EXPECT_STATUS(KVC_ERR_BUFFER_TOO_SMALL, "capacity 0", kvc_engine_index_events(e, NULL, 0, &n));
    INVARIANT(n >= 2 && n <= sizeof dump / sizeof dump[0], "a dump of %zu events fits", n);
    MUST(kvc_engine_index_events(e, dump, n, &again));
    memset(&fresh, 0, sizeof fresh);
    view_apply(&fresh, dump, again, chains);
    size_t disk_at = 1;
    while (disk_at < again && dump[disk_at].tier == KVC_TIER_MEMORY && dump[disk_at].kind == KVC_EVENT_BLOCK_STORED) disk_at++;
    int ok = again == n && dump[0].kind == KVC_EVENT_ALL_CLEARED && dump[0].tier == KVC_TIER_MEMORY && disk_at < again &&
             dump[disk_at].kind == KVC_EVENT_ALL_CLEARED && dump[disk_at].tier == KVC_TIER_DISK && fresh.contradictions == 0 &&
             fresh.unknown == 0 && fresh.cleared[0] == 1 && fresh.cleared[1] == 1;
    for (size_t i = disk_at + 1; i < again; i++) {
        ok &= dump[i].kind == KVC_EVENT_BLOCK_STORED && dump[i].tier == KVC_TIER_DISK;
        int parent_held = view_holds(&fresh, KVC_TIER_DISK, dump[i].parent_hash), parent_before = 0;
        for (size_t j = disk_at + 1; j < i; j++) parent_before |= dump[j].block_hash == dump[i].parent_hash;
        ok &= !parent_held || parent_before;
    }
    for (int t = 0; t < 2; t++) {
        ok &= fresh.n[t] == rv->n[t];
        for (size_t i = 0; i < rv->n[t]; i++) ok &= view_holds(&fresh, t, rv->held[t][i]);
    }
    return ok;
}

/* True when ev[0 .. n-1] are exactly a create's two resets: ALL_CLEARED of KVC_TIER_MEMORY,
 * then of KVC_TIER_DISK, hashes 0. */
static int creation_resets(const kvc_event *ev, size_t n) {
    return n == 2 && ev[0].kind == KVC_EVENT_ALL_CLEARED && ev[0].tier == KVC_TIER_MEMORY && ev[0].block_hash == 0 &&
           ev[1].kind == KVC_EVENT_ALL_CLEARED && ev[1].tier == KVC_TIER_DISK && ev[1].block_hash == 0;
}

/* A server with a disk tier of 12 slots and memory for two prompts: creates evict cached
 * blocks, which spill (KVC_EVENT_BLOCK_STORED, KVC_TIER_DISK, each with its parent's hash),
 * and the full tier drops its oldest (KVC_EVENT_BLOCK_REMOVED, KVC_TIER_DISK); a router
 * following the events holds exactly the blocks the tier stores, and predicts what each
 * create finds in memory and on disk. A restarted engine announces KVC_EVENT_ALL_CLEARED of
 * its memory, then of its tier, then every block its journal lists, so the router's view,
 * kept across the restart (it need not notice it), is exact again in both tiers. A refused
 * kvc_drain_events loses no event. */
static void disk_events(uint32_t layout) {
    char dir[] = TIER_DIR;
    const char *name = disk_scenario(layout, "its KV events", dir);
    kvc_config cfg;
    small_config(&cfg, layout, 128u << 10);
    cfg.offload_dir = dir;
    /* A slot: a 4096-byte header and 4 layers x K,V x 16 tokens x 64 bytes, in 4 KiB pages. */
    const uint64_t slot_bytes = (4096 + 4 * 2 * BLOCK * 64 + 4095) / 4096 * 4096;
    cfg.offload_bytes = EV_SLOTS * slot_bytes;
    static uint64_t chains[EV_PROMPTS][EV_BLOCKS];
    static int32_t tokens[EV_PROMPTS][PROMPT];
    for (int p = 0; p < EV_PROMPTS; p++) {
        for (size_t i = 0; i < PROMPT; i++) tokens[p][i] = (int32_t)(p * 1000 + i) + 50000;
        size_t nh = 0;
        MUST(kvc_hash_tokens(tokens[p], PROMPT, BLOCK, chains[p], EV_BLOCKS, &nh));
        INVARIANT(nh == EV_BLOCKS, "%d blocks per prompt", EV_BLOCKS);
    }
    static router_view rv;
    memset(&rv, 0, sizeof rv);
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    kvc_event first[3];
    size_t n = 0;
    MUST(kvc_drain_events(e, first, 3, &n));
    CHECK(creation_resets(first, n), "%s: a new engine on a new tier announces ALL_CLEARED of KVC_TIER_MEMORY, then of "
                                     "KVC_TIER_DISK, and nothing else (%zu events)", name, n);
    view_apply(&rv, first, n, chains);
    engine_view v = view_of(e, &cfg);
    for (int p = 0; p < EV_PROMPTS; p++) {
        size_t cached = 0;
        MUST(kvc_seq_create(e, 1, tokens[p], PROMPT, &cached));
        write_kv(&v, 1, 21, 0, PROMPT);
        MUST(kvc_seq_free(e, 1));
        /* The spills' writes complete: a full tier drops only written blocks (one whose write
         * is in flight is held), so the next create's spills find room. */
        MUST(kvc_engine_sync(e));
    }
    kvc_stats s = stats_of(e);
    view_drain(e, &rv, chains);
    REQUIRE(s.blocks_evicted > 0 && s.blocks_spilled > EV_SLOTS,
            "%s: creates evicted cached blocks and spilled more than the tier holds (%" PRIu64 " evicted, %" PRIu64 " spilled)",
            name, s.blocks_evicted, s.blocks_spilled);
    CHECK(rv.stored[KVC_TIER_DISK] == s.blocks_spilled && rv.unknown == 0,
          "%s: one BLOCK_STORED of KVC_TIER_DISK per spilled block, each a prompt block with its parent (%" PRIu64
          " stored, %" PRIu64 " spilled, %" PRIu64 " unknown)", name, rv.stored[KVC_TIER_DISK], s.blocks_spilled, rv.unknown);
    CHECK(rv.removed[KVC_TIER_DISK] == s.blocks_spilled - EV_SLOTS,
          "%s: the full tier's drops are BLOCK_REMOVED of KVC_TIER_DISK (%" PRIu64 " removed, %" PRIu64 " spilled into %d slots)",
          name, rv.removed[KVC_TIER_DISK], s.blocks_spilled, EV_SLOTS);
    CHECK(rv.contradictions == 0 && rv.n[KVC_TIER_DISK] == EV_SLOTS && s.disk_stored_bytes == EV_SLOTS * slot_bytes,
          "%s: the events give the %d blocks the tier stores (view %zu, %" PRIu64 " contradictions, %" PRIu64 " bytes stored)", name,
          EV_SLOTS, rv.n[KVC_TIER_DISK], rv.contradictions, s.disk_stored_bytes);
    CHECK(rv.n[KVC_TIER_MEMORY] == s.blocks_cached, "%s: and the %" PRIu64 " blocks memory caches (view %zu)", name,
          s.blocks_cached, rv.n[KVC_TIER_MEMORY]);
    /* From the views, the router predicts each create: the leading blocks memory holds, then
     * those the disk tier holds (newest prompt first: the last ones are in memory, the two
     * before on disk, the older ones dropped). */
    int predicted = 0, from_disk = 0;
    for (int p = EV_PROMPTS - 1; p >= 0; p--) {
        size_t m = 0, d = 0, cached = 0;
        while (m < EV_BLOCKS && view_holds(&rv, KVC_TIER_MEMORY, chains[p][m])) m++;
        while (m + d < EV_BLOCKS && view_holds(&rv, KVC_TIER_DISK, chains[p][m + d])) d++;
        uint64_t disk_hits = stats_of(e).disk_hit_tokens;
        MUST(kvc_seq_create(e, 1, tokens[p], PROMPT, &cached));
        uint64_t disk_tokens = stats_of(e).disk_hit_tokens - disk_hits;
        CHECK(wait_ready(e, 1) == KVC_OK && kv_matches(&v, 1, 21, 0, cached), "%s: prompt %d read back", name, p);
        predicted += cached == (m + d) * BLOCK && disk_tokens == d * BLOCK;
        if (cached != (m + d) * BLOCK || disk_tokens != d * BLOCK)
            fprintf(stderr, "abi_client: %s prompt %d: predicted %zu + %zu blocks, found %zu tokens, %" PRIu64 " on disk\n", name,
                    p, m, d, cached, disk_tokens);
        from_disk += d > 0;
        MUST(kvc_seq_free(e, 1));
        view_drain(e, &rv, chains);
    }
    CHECK(predicted == EV_PROMPTS && from_disk > 0 && rv.contradictions == 0,
          "%s: the events predicted what all %d creates found (%d right, %d with disk hits)", name, EV_PROMPTS, predicted, from_disk);
    CHECK(dump_equals_view(e, &rv, chains), "%s: kvc_engine_index_events gives a fresh router the same view of both tiers "
                                            "(%zu memory, %zu disk blocks), each tier opened by its ALL_CLEARED, parents first",
          name, rv.n[KVC_TIER_MEMORY], rv.n[KVC_TIER_DISK]);
    kvc_engine_destroy(e);

    MUST(kvc_engine_create(&cfg, &e));
    s = stats_of(e);
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "NULL", kvc_drain_events(e, NULL, 4, &n));
#if COUNTS_MALLOCS
    unsigned long at_drain = thread_mallocs;
#endif
    MUST(kvc_drain_events(e, first, 2, &n));
    CHECK(creation_resets(first, n),
          "%s: a restarted engine announces ALL_CLEARED of KVC_TIER_MEMORY, then of KVC_TIER_DISK, after a refused drain too", name);
    uint64_t before = rv.stored[KVC_TIER_DISK];
    size_t memory_before = rv.n[KVC_TIER_MEMORY]; /* the stopped engine's memory, still in the view */
    view_apply(&rv, first, n, chains);
    view_drain(e, &rv, chains);
#if COUNTS_MALLOCS
    /* The first drain leaves no more pending events than the queue's base holds: they move back
     * into it and the restart's burst buffer is freed (a free, no malloc). */
    unsigned long drain_mallocs = thread_mallocs - at_drain;
    CHECK(drain_mallocs == 0, "%s: draining the restart's events (freeing the queue's burst room) made %lu mallocs, want 0",
          name, drain_mallocs);
#endif
    CHECK(memory_before > 0 && rv.n[KVC_TIER_MEMORY] == 0 && s.blocks_cached == 0 && s.blocks_used == 0,
          "%s: the view's memory tier (%zu blocks of the stopped engine) is empty, as the new engine's memory", name, memory_before);
    uint64_t stored = s.disk_stored_bytes / slot_bytes;
    CHECK(stored > 0 && rv.stored[KVC_TIER_DISK] - before == stored && rv.n[KVC_TIER_DISK] == stored && rv.contradictions == 0 &&
              rv.unknown == 0,
          "%s: then one BLOCK_STORED per block its journal lists (%" PRIu64 " of %" PRIu64 ")", name,
          rv.stored[KVC_TIER_DISK] - before, stored);
    CHECK(dump_equals_view(e, &rv, chains), "%s: the restarted engine's kvc_engine_index_events lists the %zu blocks its journal "
                                            "listed", name, rv.n[KVC_TIER_DISK]);
    kvc_engine_destroy(e);
    remove_tier_dir(dir);
}

/* Peers: engine B names engine A's offload_dir in peer_offload_dirs and is served the blocks A
 * spilled, byte-identical, counted in peer_hits; bad peers are refused at create. */
static void peer_tier(void) {
    const char *name = "paged+peer";
    printf("abi_client: paged layout reading a peer's disk tier\n");
    char dir_a[] = TIER_DIR, dir_b[] = TIER_DIR;
    new_tier_dir(dir_a);
    new_tier_dir(dir_b);
    kvc_config cfg;
    disk_config(&cfg, KVC_LAYOUT_PAGED, dir_a);
    cfg.model_tag = 0xA1; /* sharing a tier needs a model named */
    int32_t tokens[PROMPT];
    for (size_t i = 0; i < PROMPT; i++) tokens[i] = (int32_t)(i * 7919 % 50000) + 11;
    size_t cached = 0;
    kvc_engine *a = NULL, *b = NULL;
    MUST(kvc_engine_create(&cfg, &a));
    engine_view va = view_of(a, &cfg);
    MUST(kvc_seq_create(a, 1, tokens, PROMPT, &cached));
    write_kv(&va, 1, 21, 0, PROMPT);
    MUST(kvc_seq_free(a, 1));
    MUST(kvc_engine_trim(a));
    MUST(kvc_engine_sync(a));

    /* One engine per directory: a second one on A's is refused while A holds it. */
    CHECK(kvc_engine_create(&cfg, &b) == KVC_ERR_IO && b == NULL && strstr(kvc_last_error(), "in use by another engine"),
          "%s: a second engine on a held offload_dir is KVC_ERR_IO (%s)", name, kvc_last_error());

    cfg.offload_dir = dir_b;
    cfg.peer_offload_dirs = dir_b;
    CHECK(kvc_engine_create(&cfg, &b) == KVC_ERR_INVALID_ARGUMENT && b == NULL && strstr(kvc_last_error(), "own offload_dir"),
          "%s: the own offload_dir as a peer is INVALID_ARGUMENT", name);
    cfg.peer_offload_dirs = "/nonexistent/kvcache-peer";
    CHECK(kvc_engine_create(&cfg, &b) == KVC_ERR_IO && b == NULL && strstr(kvc_last_error(), "/nonexistent/kvcache-peer"),
          "%s: a missing peer directory is KVC_ERR_IO naming it", name);
    cfg.peer_offload_dirs = dir_a;
    cfg.model_tag = 0;
    CHECK(kvc_engine_create(&cfg, &b) == KVC_ERR_INVALID_ARGUMENT && b == NULL &&
              strstr(kvc_last_error(), "peer_offload_dirs needs a model_tag other than 0"),
          "%s: peers without a model_tag are INVALID_ARGUMENT (%s)", name, kvc_last_error());
    cfg.model_tag = 0xA1;
    MUST(kvc_engine_create(&cfg, &b));
    engine_view vb = view_of(b, &cfg);
    MUST(kvc_seq_create(b, 1, tokens, PROMPT, &cached));
    CHECK(cached == PROMPT / BLOCK * BLOCK, "%s: the peer's blocks count as cached (%zu)", name, cached);
    CHECK(wait_ready(b, 1) == KVC_OK, "%s: the peer's blocks become ready", name);
    CHECK(kv_matches(&vb, 1, 21, 0, cached), "%s: the peer's blocks are byte-identical", name);
    kvc_stats s = stats_of(b);
    CHECK(s.peer_hits == PROMPT / BLOCK && s.peer_stale == 0 && s.disk_hit_tokens == 0,
          "%s: peer_hits %" PRIu64 " (want %d), peer_stale %" PRIu64, name, s.peer_hits, PROMPT / BLOCK, s.peer_stale);
    CHECK(s.peer_hit_tokens == (uint64_t)cached, "%s: peer_hit_tokens %" PRIu64 " (want %zu)", name, s.peer_hit_tokens, cached);
    kvc_engine_destroy(b);

    /* model_tag: a peer of another model is refused, and so is a restart on a directory of
     * another model (its blocks stay for the right one). */
    char dir_c[] = TIER_DIR;
    new_tier_dir(dir_c);
    cfg.offload_dir = dir_c;
    cfg.model_tag = 7;
    b = NULL;
    CHECK(kvc_engine_create(&cfg, &b) == KVC_ERR_INVALID_ARGUMENT && b == NULL && strstr(kvc_last_error(), "model_tag 0x7 here, 0xa1 there"),
          "%s: a peer of another model_tag is INVALID_ARGUMENT naming both tags (%s)", name, kvc_last_error());
    kvc_engine_destroy(a);
    cfg.offload_dir = dir_a;
    cfg.peer_offload_dirs = NULL;
    CHECK(kvc_engine_create(&cfg, &a) == KVC_ERR_INVALID_ARGUMENT && a == NULL && strstr(kvc_last_error(), "another model"),
          "%s: reopening a tier of another model_tag is INVALID_ARGUMENT", name);
    cfg.model_tag = 0xA1;
    MUST(kvc_engine_create(&cfg, &a));
    va = view_of(a, &cfg);
    MUST(kvc_seq_create(a, 1, tokens, PROMPT, &cached));
    CHECK(cached == PROMPT / BLOCK * BLOCK && wait_ready(a, 1) == KVC_OK && kv_matches(&va, 1, 21, 0, cached),
          "%s: the refused reopen left the tier whole for its own model (%zu cached)", name, cached);
    kvc_engine_destroy(a);
    remove_tier_dir(dir_c);
    remove_tier_dir(dir_b);
    remove_tier_dir(dir_a);
}

/* Chunked prefill preempted between two passes: with index_on_schedule the swap-out keeps
 * the blocks not scheduled yet out of the index (and the disk tier), and after the swap-in
 * the server resumes the prefill and kvc_seq_schedule indexes them. */
static void chunked_swap(uint32_t layout) {
    char dir[] = TIER_DIR;
    const char *name = disk_scenario(layout, "chunked prefill swapped out between two passes", dir);
    kvc_config cfg;
    disk_config(&cfg, layout, dir);
    cfg.index_on_schedule = 1;
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    engine_view v = view_of(e, &cfg);
    int32_t tokens[PROMPT];
    for (size_t i = 0; i < PROMPT; i++) tokens[i] = (int32_t)(i * 31 % 9000) + 90000;
    size_t cached = 99;
    MUST(kvc_seq_create(e, 1, tokens, PROMPT, &cached));
    MUST(kvc_seq_schedule(e, 1, 40)); /* the first pass: tokens 0 .. 39 */
    write_kv(&v, 1, 12, 0, 40);
    MUST(kvc_seq_swap_out(e, 1));
    MUST(kvc_seq_swap_in(e, 1));
    CHECK(wait_ready(e, 1) == KVC_OK, "%s: swapped back in", name);
    MUST(kvc_seq_create(e, 2, tokens, PROMPT, &cached));
    CHECK(cached == 40 / BLOCK * BLOCK, "%s: after the swap-in only the first pass's blocks hit (%zu cached)", name, cached);
    MUST(kvc_seq_free(e, 2));
    MUST(kvc_seq_schedule(e, 1, PROMPT)); /* the second pass, after the swap-in */
    write_kv(&v, 1, 12, 40, PROMPT);
    MUST(kvc_seq_create(e, 3, tokens, PROMPT, &cached));
    CHECK(cached == (PROMPT - 1) / BLOCK * BLOCK, "%s: the second pass's blocks hit once scheduled (%zu cached)", name, cached);
    CHECK(wait_ready(e, 3) == KVC_OK && kv_matches(&v, 3, 12, 0, cached), "%s: and read their bytes", name);
    kvc_engine_destroy(e);
    remove_tier_dir(dir);
}

/* Sequence 1 of an episodic engine with a disk tier in `dir` (configured in *cfg): N tokens
 * whose K/V are written with salt 31, two topics whose turns attended to their own HEAVY
 * tokens, focused on topic A and compacted to KEEP tokens per layer (the rest offloaded). */
enum { EPISODIC_N = 64, EPISODIC_KEEP = 6, EPISODIC_HEAVY = 4 };
static const int episodic_heavy[2][EPISODIC_HEAVY] = {{3, 9, 15, 21}, {35, 41, 47, 53}};
static const float episodic_embedding[2][2] = {{1, 0}, {0, 1}};

static kvc_engine *episodic_compacted(uint32_t layout, char *dir, kvc_config *cfg) {
    enum { N = EPISODIC_N };
    disk_config(cfg, layout, dir);
    cfg->eviction_policy = KVC_EVICTION_EPISODIC;
    cfg->episodes = 2;
    cfg->recent_tokens = 2;
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(cfg, &e));
    engine_view v = view_of(e, cfg);
    int32_t prompt[N];
    for (int i = 0; i < N; i++) prompt[i] = 9000 + i;
    size_t cached = 0;
    MUST(kvc_seq_create(e, 1, prompt, N, &cached));
    write_kv(&v, 1, 31, 0, N);
    uint32_t episode = 0;
    for (int topic = 0; topic < 2; topic++) { /* each turn: a segment, its attention, a focus on topic A */
        MUST(kvc_seq_add_segment(e, 1, (size_t)topic * N / 2, (size_t)(topic + 1) * N / 2, episodic_embedding[topic], 2));
        float scores[2 * N];
        for (int i = 0; i < 2 * N; i++) scores[i] = 0.01f;
        for (int j = 0; j < EPISODIC_HEAVY; j++) scores[episodic_heavy[topic][j]] = scores[N + episodic_heavy[topic][j]] = 1.0f;
        for (uint32_t l = 0; l < cfg->num_layers; l++) MUST(kvc_seq_observe(e, 1, l, scores, 2, N));
        MUST(kvc_seq_focus(e, 1, episodic_embedding[0], 2, &episode));
    }
    MUST(kvc_seq_compact(e, 1, EPISODIC_KEEP));
    return e;
}

/* Episodic offload: a compaction writes the tokens outside the focused episode to the disk
 * tier, a focus on the other episode reads its tokens back byte-identical, and freeing the
 * sequence frees their disk slots. */
static void episodic_offload(uint32_t layout) {
    enum { N = EPISODIC_N, KEEP = EPISODIC_KEEP, HEAVY = EPISODIC_HEAVY };
    char dir[] = TIER_DIR;
    const char *name = disk_scenario(layout, "episodic offload: a focus restores the other episode", dir);
    kvc_config cfg;
    kvc_engine *e = episodic_compacted(layout, dir, &cfg);
    engine_view v = view_of(e, &cfg);
    uint32_t episode = 0;
    MUST(kvc_engine_sync(e));
    kvc_stats compacted = stats_of(e);
    CHECK(compacted.disk_stored_bytes > 0, "%s: the evicted tokens are on disk", name);
    MUST(kvc_seq_focus(e, 1, episodic_embedding[1], 2, &episode));
    CHECK(wait_ready(e, 1) == KVC_OK, "%s: the restored tokens become ready", name);
    CHECK(stats_of(e).disk_bytes_read > compacted.disk_bytes_read, "%s: the focus read from disk", name);
    load_table(&v, 1);
    int exact = 1, topic_b = 1;
    for (uint32_t l = 0; l < cfg.num_layers; l++) {
        int32_t pos[N];
        size_t n = 0;
        MUST(kvc_seq_positions(e, 1, l, pos, N, &n));
        int found = 0;
        for (size_t slot = 0; slot < n; slot++) {
            for (int j = 0; j < HEAVY; j++) found += pos[slot] == episodic_heavy[1][j];
            for (uint32_t tensor = 0; tensor < 2; tensor++) {
                const uint8_t *p = token_address(&v, 1, l, tensor, slot);
                for (size_t b = 0; b < v.token_bytes; b++) exact &= p[b] == pattern(31, l, tensor, (size_t)pos[slot], b);
            }
        }
        topic_b &= n == KEEP && found == HEAVY;
    }
    CHECK(topic_b, "%s: every layer holds topic B's heavy hitters after the focus", name);
    CHECK(exact, "%s: the restored K/V bytes are exact", name);
    MUST(kvc_seq_free(e, 1));
    MUST(kvc_engine_sync(e));
    CHECK(stats_of(e).disk_stored_bytes == 0, "%s: freeing the sequence frees its disk slots", name);
    kvc_engine_destroy(e);
    remove_tier_dir(dir);
}

/* Episodic offload whose record writes fail on the device (KVCACHE_OFFLOAD_FAULT): the
 * tokens are counted lost as soon as kvc_engine_sync has processed the failures, and
 * kvc_seq_ready reports them once. */
static void episodic_write_failure(uint32_t layout) {
    char dir[] = TIER_DIR;
    const char *name = disk_scenario(layout, "episodic offload whose writes fail", dir);
    char fault[64];
    snprintf(fault, sizeof fault, "write:0@%s", dir);
    REQUIRE(setenv("KVCACHE_OFFLOAD_FAULT", fault, 1) == 0, "setenv");
    kvc_config cfg;
    kvc_engine *e = episodic_compacted(layout, dir, &cfg);
    unsetenv("KVCACHE_OFFLOAD_FAULT");
    MUST(kvc_engine_sync(e));
    kvc_stats s = stats_of(e);
    CHECK(s.tokens_offloaded > s.tokens_in_open_records && s.tokens_lost == s.tokens_offloaded - s.tokens_in_open_records &&
              s.token_records == 0 && s.tokens_on_disk == 0,
          "%s: tokens of records whose write failed are lost once the failure is processed (offloaded %" PRIu64 ", lost %" PRIu64
          ", in open records %" PRIu64 ", records %" PRIu64 ")", name, s.tokens_offloaded, s.tokens_lost, s.tokens_in_open_records,
          s.token_records);
    int ready = 0;
    EXPECT_STATUS(KVC_ERR_IO, "stays usable", kvc_seq_ready(e, 1, &ready));
    CHECK(kvc_seq_ready(e, 1, &ready) == KVC_OK && ready == 1, "%s: the loss is reported once", name);
    kvc_engine_destroy(e);
    remove_tier_dir(dir);
}

/* A prefix read that fails on the device (KVCACHE_OFFLOAD_FAULT) spoils the sequence:
 * kvc_seq_ready says KVC_ERR_IO, and so does every call that would reach or change its K/V,
 * changing nothing, until the server frees it; the prompt created again recomputes the
 * unreadable blocks, and another sequence serves on throughout. */
static void spoiled_by_a_failed_read(uint32_t layout) {
    char dir[] = TIER_DIR;
    const char *name = disk_scenario(layout, "a prefix read fails", dir);
    char fault[64];
    snprintf(fault, sizeof fault, "read:0@%s", dir);
    REQUIRE(setenv("KVCACHE_OFFLOAD_FAULT", fault, 1) == 0, "setenv");
    kvc_config cfg;
    disk_config(&cfg, layout, dir);
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    unsetenv("KVCACHE_OFFLOAD_FAULT");
    engine_view v = view_of(e, &cfg);
    int32_t tokens[PROMPT], other[BLOCK + 3];
    for (size_t i = 0; i < PROMPT; i++) tokens[i] = (int32_t)(i * 104729 % 70000) + 7;
    for (size_t i = 0; i < BLOCK + 3; i++) other[i] = (int32_t)i + 90001;
    size_t cached = 0, n = 0;
    MUST(kvc_seq_create(e, 3, other, BLOCK + 3, &cached));
    write_kv(&v, 3, 4, 0, BLOCK + 3);
    MUST(kvc_seq_create(e, 1, tokens, PROMPT, &cached));
    write_kv(&v, 1, 9, 0, PROMPT);
    MUST(kvc_seq_free(e, 1));
    MUST(kvc_engine_trim(e));
    MUST(kvc_engine_sync(e));
    MUST(kvc_seq_create(e, 2, tokens, PROMPT, &cached));
    CHECK(cached == PROMPT / BLOCK * BLOCK, "%s: the prefix is found on disk (%zu cached)", name, cached);
    CHECK(wait_ready(e, 2) == KVC_ERR_IO && strstr(kvc_last_error(), "Input/output error"),
          "%s: kvc_seq_ready reports the failed read (%s)", name, kvc_last_error());
    kvc_stats before = stats_of(e);
    void *k = NULL, *vv = NULL;
    int32_t table[64];
    const int32_t one = 5;
    EXPECT_STATUS(KVC_ERR_IO, "free it and create it again", kvc_seq_append(e, 2, &one, 1));
    EXPECT_STATUS(KVC_ERR_IO, "free it and create it again", kvc_seq_fork(e, 2, 4));
    EXPECT_STATUS(KVC_ERR_IO, "free it and create it again", kvc_seq_truncate(e, 2, BLOCK));
    EXPECT_STATUS(KVC_ERR_IO, "free it and create it again", kvc_seq_schedule(e, 2, BLOCK));
    EXPECT_STATUS(KVC_ERR_IO, "free it and create it again", kvc_seq_compact(e, 2, BLOCK));
    EXPECT_STATUS(KVC_ERR_IO, "free it and create it again", kvc_seq_swap_out(e, 2));
    EXPECT_STATUS(KVC_ERR_IO, "free it and create it again", kvc_seq_swap_out_async(e, 2));
    if (layout == KVC_LAYOUT_PAGED)
        EXPECT_STATUS(KVC_ERR_IO, "free it and create it again", kvc_seq_block_table(e, 2, table, 64, &n));
    else
        EXPECT_STATUS(KVC_ERR_IO, "free it and create it again", kvc_seq_kv(e, 2, 0, &k, &vv));
    kvc_stats after = stats_of(e);
    CHECK(memcmp(&before, &after, sizeof before) == 0, "%s: the refused calls change no counter", name);
    CHECK(kvc_seq_length(e, 2, &n) == KVC_OK && n == PROMPT, "%s: nor the sequence (length %zu)", name, n);
    CHECK(kvc_seq_length(e, 4, &n) == KVC_ERR_NOT_FOUND, "%s: the refused fork made no child", name);
    CHECK(kv_matches(&v, 3, 4, 0, BLOCK + 3), "%s: another sequence's K/V is intact", name);
    MUST(kvc_seq_append(e, 3, &one, 1));
    MUST(kvc_seq_free(e, 2));
    MUST(kvc_seq_create(e, 2, tokens, PROMPT, &cached));
    CHECK(cached == 0, "%s: the prompt created again recomputes the unreadable blocks (%zu cached)", name, cached);
    CHECK(kvc_seq_append(e, 2, &one, 1) == KVC_OK && wait_ready(e, 2) == KVC_OK, "%s: the new sequence serves", name);
    kvc_engine_destroy(e);
    remove_tier_dir(dir);
}

/* kvc_seq_prefix_sources: a create's cached tokens by where they came from. The first create
 * of a prompt has none; a second while the first lives finds all 96 in memory; once the prompt
 * is trimmed to the disk tier a create reads all 96 from there, and its fork child reports the
 * same. NULL arguments are INVALID_ARGUMENT and an unknown or freed sequence NOT_FOUND, each
 * with a message and nothing written. */
static void prefix_sources(uint32_t layout) {
    char dir[] = TIER_DIR;
    const char *name = disk_scenario(layout, "where each create's cached tokens came from", dir);
    kvc_config cfg;
    disk_config(&cfg, layout, dir);
    kvc_engine *e = NULL;
    MUST(kvc_engine_create(&cfg, &e));
    engine_view v = view_of(e, &cfg);
    int32_t tokens[PROMPT];
    for (size_t i = 0; i < PROMPT; i++) tokens[i] = (int32_t)(i * 6143 % 40000) + 13;
    const size_t prefix = PROMPT / BLOCK * BLOCK;
    size_t cached = 0, mem = 7, disk = 7, peer = 7;
    MUST(kvc_seq_create(e, 1, tokens, PROMPT, &cached));
    CHECK(kvc_seq_prefix_sources(e, 1, &mem, &disk, &peer) == KVC_OK && mem == 0 && disk == 0 && peer == 0,
          "%s: a first create has no cached source (memory %zu, disk %zu, peer %zu)", name, mem, disk, peer);
    write_kv(&v, 1, 4, 0, PROMPT);
    MUST(kvc_seq_create(e, 2, tokens, PROMPT, &cached));
    CHECK(cached == prefix && kvc_seq_prefix_sources(e, 2, &mem, &disk, &peer) == KVC_OK && mem == prefix && disk == 0 &&
              peer == 0,
          "%s: a memory hit (cached %zu: memory %zu, disk %zu, peer %zu)", name, cached, mem, disk, peer);
    MUST(kvc_seq_free(e, 1));
    MUST(kvc_seq_free(e, 2));
    MUST(kvc_engine_trim(e));
    MUST(kvc_engine_sync(e));
    MUST(kvc_seq_create(e, 3, tokens, PROMPT, &cached));
    CHECK(cached == prefix && kvc_seq_prefix_sources(e, 3, &mem, &disk, &peer) == KVC_OK && mem == 0 && disk == prefix &&
              peer == 0,
          "%s: read from the disk tier (cached %zu: memory %zu, disk %zu, peer %zu)", name, cached, mem, disk, peer);
    CHECK(wait_ready(e, 3) == KVC_OK && kv_matches(&v, 3, 4, 0, prefix), "%s: and served byte for byte", name);
    MUST(kvc_seq_fork(e, 3, 4));
    CHECK(kvc_seq_prefix_sources(e, 4, &mem, &disk, &peer) == KVC_OK && mem == 0 && disk == prefix && peer == 0,
          "%s: a fork child reports its parent's create (memory %zu, disk %zu, peer %zu)", name, mem, disk, peer);

    mem = disk = peer = 7;
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "engine", kvc_seq_prefix_sources(NULL, 3, &mem, &disk, &peer));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "memory_tokens", kvc_seq_prefix_sources(e, 3, NULL, &disk, &peer));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "disk_tokens", kvc_seq_prefix_sources(e, 3, &mem, NULL, &peer));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "peer_tokens", kvc_seq_prefix_sources(e, 3, &mem, &disk, NULL));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "sequence 99", kvc_seq_prefix_sources(e, 99, &mem, &disk, &peer));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "sequence 2 does not exist", kvc_seq_prefix_sources(e, 2, &mem, &disk, &peer));
    CHECK(mem == 7 && disk == 7 && peer == 7, "%s: a refused query writes nothing (memory %zu, disk %zu, peer %zu)", name,
          mem, disk, peer);
    kvc_engine_destroy(e);
    remove_tier_dir(dir);
}

/* kvc_config.prefill_tokens_per_s: with a prefill far faster than any disk, the first create
 * reads its prefix (no read timed yet), the next leaves it to the server: cached 0, ready at
 * once, the tokens counted in disk_declined_hit_tokens; the server computes them and the
 * sequence serves. A bad speed is INVALID_ARGUMENT and creates nothing. */
static void read_or_recompute(uint32_t layout) {
    char dir[] = TIER_DIR;
    const char *name = disk_scenario(layout, "a prefill faster than the disk is left the prefix", dir);
    kvc_config cfg;
    disk_config(&cfg, layout, dir);
    kvc_engine *e = NULL;
    const double bad[] = {-1.0, NAN, INFINITY};
    for (size_t i = 0; i < 3; i++) {
        cfg.prefill_tokens_per_s = bad[i];
        EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "prefill_tokens_per_s", kvc_engine_create(&cfg, &e));
        CHECK(e == NULL, "%s: a refused config creates no engine", name);
    }
    cfg.prefill_tokens_per_s = 1e15;
    MUST(kvc_engine_create(&cfg, &e));
    engine_view v = view_of(e, &cfg);
    int32_t tokens[PROMPT];
    for (size_t i = 0; i < PROMPT; i++) tokens[i] = (int32_t)(i * 7919 % 50000) + 11;
    size_t cached = 0, n = 0;
    MUST(kvc_seq_create(e, 1, tokens, PROMPT, &cached));
    write_kv(&v, 1, 6, 0, PROMPT);
    MUST(kvc_seq_free(e, 1));
    MUST(kvc_engine_trim(e));
    MUST(kvc_engine_sync(e));
    MUST(kvc_seq_create(e, 2, tokens, PROMPT, &cached));
    CHECK(cached == PROMPT / BLOCK * BLOCK, "%s: no read timed yet, the prefix is read (%zu cached)", name, cached);
    CHECK(wait_ready(e, 2) == KVC_OK && kv_matches(&v, 2, 6, 0, cached), "%s: and served byte for byte", name);
    MUST(kvc_seq_free(e, 2));
    MUST(kvc_engine_trim(e));
    MUST(kvc_seq_create(e, 3, tokens, PROMPT, &cached));
    int ready = 0;
    CHECK(cached == 0 && kvc_seq_ready(e, 3, &ready) == KVC_OK && ready == 1,
          "%s: the prefill computes it sooner: nothing cached, ready at once (%zu cached)", name, cached);
    kvc_stats s = stats_of(e);
    CHECK(s.disk_declined_hit_tokens == PROMPT / BLOCK * BLOCK, "%s: disk_declined_hit_tokens %" PRIu64, name,
          s.disk_declined_hit_tokens);
    write_kv(&v, 3, 7, 0, PROMPT);
    const int32_t one = 5;
    MUST(kvc_seq_append(e, 3, &one, 1));
    CHECK(kvc_seq_length(e, 3, &n) == KVC_OK && n == PROMPT + 1 && kv_matches(&v, 3, 7, 0, PROMPT),
          "%s: the computed sequence serves (length %zu)", name, n);
    kvc_engine_destroy(e);
    remove_tier_dir(dir);
}

/* kvc_config.offload_writeback: the engine's thread writes a freed prompt's 62 cached blocks
 * ahead of their eviction (disk_blocks_written_ahead); a create that needs all 128 blocks of
 * 1 MiB evicts them and copies nothing (blocks_spilled stays at the 62 written ahead, none
 * skipped); the prompt comes back from disk byte for byte. A value other than 0 or 1, or the
 * flag without a disk tier, is INVALID_ARGUMENT and creates nothing. */
static void writeback(uint32_t layout) {
    char dir[] = TIER_DIR;
    const char *name = disk_scenario(layout, "cold blocks are written ahead of their eviction", dir);
    kvc_config cfg;
    small_config(&cfg, layout, 1u << 20);
    kvc_engine *e = NULL;
    cfg.offload_writeback = 1;
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "offload_writeback", kvc_engine_create(&cfg, &e));
    CHECK(e == NULL, "%s: writeback without a disk tier creates no engine", name);
    cfg.offload_dir = dir;
    cfg.offload_bytes = 64u << 20;
    cfg.offload_writeback = 2;
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "offload_writeback", kvc_engine_create(&cfg, &e));
    CHECK(e == NULL, "%s: offload_writeback 2 creates no engine", name);
    cfg.offload_writeback = 1;
    MUST(kvc_engine_create(&cfg, &e));
    engine_view v = view_of(e, &cfg);
    enum { A = 62 * BLOCK + 3, B = 2040 };
    static int32_t a[A], b[B];
    for (size_t i = 0; i < A; i++) a[i] = (int32_t)(i * 7919 % 50000) + 3;
    for (size_t i = 0; i < B; i++) b[i] = (int32_t)(i * 104729 % 50000) + 50001;
    size_t cached = 0;
    MUST(kvc_seq_create(e, 1, a, A, &cached));
    write_kv(&v, 1, 8, 0, A);
    MUST(kvc_seq_free(e, 1));
    kvc_stats s = stats_of(e);
    for (int i = 0; i < 30000 && s.disk_blocks_written_ahead < 62; i++) {
        usleep(1000);
        s = stats_of(e);
    }
    CHECK(s.disk_blocks_written_ahead == 62 && s.blocks_spilled == 62 && s.blocks_cached == 62,
          "%s: the 62 cached blocks are written ahead (%" PRIu64 " of %" PRIu64 " spilled, %" PRIu64 " cached)", name,
          s.disk_blocks_written_ahead, s.blocks_spilled, s.blocks_cached);
    MUST(kvc_seq_create(e, 2, b, B, &cached));
    s = stats_of(e);
    CHECK(s.blocks_cached == 0 && s.blocks_spilled == 62 && s.spills_skipped == 0,
          "%s: evicting them copied nothing (%" PRIu64 " cached, %" PRIu64 " spilled, %" PRIu64 " skipped)", name,
          s.blocks_cached, s.blocks_spilled, s.spills_skipped);
    write_kv(&v, 2, 9, 0, B);
    MUST(kvc_seq_free(e, 2));
    MUST(kvc_seq_create(e, 3, a, A, &cached));
    CHECK(cached == 62 * BLOCK, "%s: the prompt is found on disk (%zu cached)", name, cached);
    CHECK(wait_ready(e, 3) == KVC_OK && kv_matches(&v, 3, 8, 0, cached), "%s: and read back byte for byte", name);
    kvc_engine_destroy(e);
    remove_tier_dir(dir);
}

/* The router: an engine's KV events steer the router to the instance that caches the prompt,
 * and bad input gets a status and a message. Offsets are the ones the library decodes. */
_Static_assert(offsetof(kvc_router_config, ttft_slo_ms) == 16 && offsetof(kvc_router_config, block_tokens) == 32 &&
                   offsetof(kvc_router_config, view) == 36 && sizeof(kvc_router_config) == 40,
               "kvc_router_config layout");
_Static_assert(offsetof(kvc_instance_load, pending_prefill_tokens) == 8 && offsetof(kvc_instance_load, active_requests) == 32 &&
                   offsetof(kvc_instance_load, waiting_requests) == 40 && sizeof(kvc_instance_load) == 48 &&
                   KVC_ROUTER_CONFIG_MIN_SIZE == 32 && KVC_INSTANCE_LOAD_MIN_SIZE == 32,
               "kvc_instance_load layout");

static void route(void) {
    printf("abi_client: router\n");
    kvc_config cfg;
    small_config(&cfg, KVC_LAYOUT_PAGED, 1 << 20);
    kvc_engine *e;
    MUST(kvc_engine_create(&cfg, &e));
    CHECK(first_event_clears_memory(e), "router: the engine's first event is ALL_CLEARED of KVC_TIER_MEMORY");
    kvc_router_config rc;
    kvc_router_config_init(&rc);
    rc.block_tokens = cfg.block_tokens;
    kvc_router *r;
    MUST(kvc_router_create(&rc, &r));
    uint64_t hashes[64];
    size_t n_hashes;
    int32_t tokens[PROMPT];
    for (int i = 0; i < PROMPT; i++) tokens[i] = 7000 + i;
    MUST(kvc_hash_tokens(tokens, PROMPT, cfg.block_tokens, hashes, 64, &n_hashes));
    uint32_t chosen = 99;
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "no instance", kvc_router_route(r, hashes, n_hashes, PROMPT, &chosen));
    CHECK(chosen == 99, "router: a failed route leaves *instance untouched");
    MUST(kvc_router_add_instance(r, 10, 1.0));
    MUST(kvc_router_add_instance(r, 20, 1.0));
    EXPECT_STATUS(KVC_ERR_EXISTS, "already", kvc_router_add_instance(r, 20, 1.0));
    /* Instance 20 serves the prompt; its events tell the router. */
    size_t cached;
    MUST(kvc_seq_create(e, 1, tokens, PROMPT, &cached));
    kvc_event events[256];
    size_t n_events;
    MUST(kvc_drain_events(e, events, 256, &n_events));
    CHECK(n_events == n_hashes, "router: one BLOCK_STORED per full block (%zu)", n_events);
    MUST(kvc_router_observe_events(r, 20, events, n_events));
    int all20 = 1;
    for (int k = 0; k < 8; k++) {
        MUST(kvc_router_route(r, hashes, n_hashes, PROMPT, &chosen));
        all20 &= chosen == 20;
    }
    CHECK(all20, "router: DualMap sends the prompt to the instance caching it (2 instances: both are candidates)");
    /* Overloaded beyond the SLO threshold (2500 ms at 0.1 ms/token), the other candidate wins. */
    kvc_instance_load load = {.struct_size = sizeof load, .pending_prefill_tokens = 1000000};
    MUST(kvc_router_report(r, 20, &load));
    MUST(kvc_router_route(r, hashes, n_hashes, PROMPT, &chosen));
    CHECK(chosen == 10, "router: an overloaded affinity candidate gives way (got %u)", chosen);
    /* llm-d's profile: the caching instance wins (prefix score 3) until its queue and KV usage
       cost more: 3 + 2 x 0.1 + 0 against 0 + 2 + 2. */
    kvc_router_config lc;
    kvc_router_config_init(&lc);
    lc.block_tokens = cfg.block_tokens;
    lc.policy = KVC_ROUTER_LLM_D;
    kvc_router *llmd;
    MUST(kvc_router_create(&lc, &llmd));
    MUST(kvc_router_add_instance(llmd, 10, 1.0));
    MUST(kvc_router_add_instance(llmd, 20, 1.0));
    MUST(kvc_router_observe_events(llmd, 20, events, n_events));
    kvc_instance_load idle_load = {.struct_size = sizeof idle_load, .free_blocks = 100};
    MUST(kvc_router_report(llmd, 10, &idle_load));
    MUST(kvc_router_report(llmd, 20, &idle_load));
    MUST(kvc_router_route(llmd, hashes, n_hashes, PROMPT, &chosen));
    CHECK(chosen == 20, "router: llm-d sends the prompt to the instance caching it (got %u)", chosen);
    kvc_instance_load busy = {.struct_size = sizeof busy, .running_blocks = 90, .free_blocks = 10, .active_requests = 60,
                              .waiting_requests = 50};
    MUST(kvc_router_report(llmd, 10, &idle_load));
    MUST(kvc_router_report(llmd, 20, &busy));
    MUST(kvc_router_route(llmd, hashes, n_hashes, PROMPT, &chosen));
    CHECK(chosen == 10, "router: llm-d leaves a caching instance whose queue and KV usage outweigh the prefix (got %u)",
          chosen);
    kvc_router_destroy(llmd);
    /* Dynamo's overlap cost: a prompt whose blocks an unfinished request routed to 20 holds
       adds no active block there (0 prefill + n active + 0 new against n + 0 + n), until
       kvc_router_finish; a finish names hashes routed to the instance and not finished. */
    kvc_router_config oc;
    kvc_router_config_init(&oc);
    oc.block_tokens = cfg.block_tokens;
    oc.policy = KVC_ROUTER_OVERLAP_COST;
    kvc_router *dyn;
    MUST(kvc_router_create(&oc, &dyn));
    MUST(kvc_router_add_instance(dyn, 10, 1.0));
    MUST(kvc_router_add_instance(dyn, 20, 1.0));
    MUST(kvc_router_observe_events(dyn, 20, events, n_events));
    MUST(kvc_router_route(dyn, hashes, n_hashes, PROMPT, &chosen));
    CHECK(chosen == 20, "router: overlap cost sends the prompt to the instance caching it (got %u)", chosen);
    MUST(kvc_router_route(dyn, hashes, n_hashes, PROMPT, &chosen));
    CHECK(chosen == 20, "router: overlap cost charges no block a routed, unfinished request holds (got %u)", chosen);
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "not active at instance 10", kvc_router_finish(dyn, 10, hashes, n_hashes));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "instance 30", kvc_router_finish(dyn, 30, hashes, n_hashes));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "block_hashes is NULL", kvc_router_finish(dyn, 20, NULL, n_hashes));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "block hash", kvc_router_finish(dyn, 20, hashes, 0));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "router is NULL", kvc_router_finish(NULL, 20, hashes, n_hashes));
    MUST(kvc_router_finish(dyn, 20, hashes, n_hashes));
    MUST(kvc_router_finish(dyn, 20, hashes, n_hashes));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "not active at instance 20", kvc_router_finish(dyn, 20, hashes, n_hashes));
    kvc_router_destroy(dyn);
    MUST(kvc_router_finish(r, 10, hashes, n_hashes)); /* DualMap keeps no active blocks */
    MUST(kvc_router_observe_prefill(r, 1000, 100.0));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "n_tokens is 0", kvc_router_observe_prefill(r, 0, 1.0));
    /* Bad input. */
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "block hash", kvc_router_route(r, hashes, 0, PROMPT, &chosen));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "block_hashes is NULL", kvc_router_route(r, NULL, 3, PROMPT, &chosen));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "instance is NULL", kvc_router_route(r, hashes, n_hashes, PROMPT, NULL));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "router is NULL", kvc_router_route(NULL, hashes, n_hashes, PROMPT, &chosen));
    /* More hashes than the tokens fill (the last block may be partial, not missing). */
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "n_blocks", kvc_router_route(r, hashes, n_hashes, (n_hashes - 1) * BLOCK, &chosen));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "instance 30", kvc_router_report(r, 30, &load));
    load.struct_size = 4;
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "struct_size", kvc_router_report(r, 20, &load));
    MUST(kvc_router_remove_instance(r, 20));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "instance 20", kvc_router_remove_instance(r, 20));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "instance 20", kvc_router_observe_events(r, 20, events, n_events));
    MUST(kvc_router_route(r, hashes, n_hashes, PROMPT, &chosen));
    CHECK(chosen == 10, "router: a removed instance is never chosen");
    /* Any load is a valid report; the router's own advance saturates instead of wrapping. */
    kvc_instance_load huge = {.struct_size = sizeof huge, .pending_prefill_tokens = UINT64_MAX,
                              .running_blocks = UINT64_MAX, .free_blocks = UINT64_MAX, .active_requests = UINT64_MAX};
    MUST(kvc_router_report(r, 10, &huge));
    MUST(kvc_router_route(r, hashes, n_hashes, PROMPT, &chosen));
    MUST(kvc_router_route(r, hashes, 1, (size_t)INT64_MAX, &chosen));
    /* Each observation valid alone, the second would make the estimate infinite: refused. */
    MUST(kvc_router_observe_prefill(r, 1, DBL_MAX));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "infinite or 0", kvc_router_observe_prefill(r, 1, DBL_MAX));
    rc.struct_size = 0;
    kvc_router *bad = (kvc_router *)1;
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "struct_size", kvc_router_create(&rc, &bad));
    CHECK(bad == NULL, "router: a failed create sets *out to NULL");
    kvc_router_destroy(NULL);
    kvc_router_destroy(r);
    kvc_engine_destroy(e);
}

/* Applies every pending event of `e` to `instance` of `r`; returns how many of them store a
 * block in KVC_TIER_DISK. */
static size_t observe_all(kvc_router *r, uint32_t instance, kvc_engine *e) {
    kvc_event ev[64];
    size_t n = 0, disk_stored = 0;
    do {
        MUST(kvc_drain_events(e, ev, 64, &n));
        MUST(kvc_router_observe_events(r, instance, ev, n));
        for (size_t i = 0; i < n; i++) disk_stored += ev[i].kind == KVC_EVENT_BLOCK_STORED && ev[i].tier == KVC_TIER_DISK;
    } while (n == 64);
    return disk_stored;
}

/* Where `r` sends a prompt of PROMPT tokens with block hashes h[0 .. n-1], both instances'
 * loads reported idle first (so the cache decides). */
static uint32_t route_idle(kvc_router *r, const uint64_t *h, size_t n) {
    kvc_instance_load idle = {.struct_size = sizeof idle};
    MUST(kvc_router_report(r, 10, &idle));
    MUST(kvc_router_report(r, 20, &idle));
    uint32_t chosen = 0;
    MUST(kvc_router_route(r, h, n, PROMPT, &chosen));
    return chosen;
}

/* A router that is not told of an instance's restart (no remove and add). Instance 10's
 * engine caches prompt P in memory and prompt Q on its disk tier; instance 20's holds P's
 * first block. DualMap (2 instances: both are candidates) sends P to 10, the longer match.
 * Then 10's engine stops and a new one starts on its directory; the router applies the new
 * engine's events to instance 10 as before. The new engine's memory is empty, so the
 * router's view of 10 must be: P goes to 20 (a stale view would send it to 10, which would
 * compute all of it). Q's blocks, found on disk, are announced in KVC_TIER_DISK (the router
 * scores KVC_TIER_MEMORY only). Once the new engine has served P, P goes to 10 again. */
/* Every policy with the extremes a caller may pass: SLOs and per-token estimates from the
 * smallest positive double to the largest, load reports of 0 to UINT64_MAX in every field,
 * prefill observations of 1 to SIZE_MAX tokens in DBL_MIN to DBL_MAX ms. Every route succeeds
 * with a live instance; an observation is taken or refused with a message, never a trap. */
static void router_extremes(void) {
    printf("abi_client: router with extreme configurations, reports and observations\n");
    const double slos[] = {1e-300, 5000, DBL_MAX}, per_token[] = {DBL_MIN, 0.1, DBL_MAX};
    const uint64_t counts[] = {0, 1000, UINT64_MAX / 2, UINT64_MAX};
    const double ms[] = {DBL_MIN, 1, DBL_MAX};
    const size_t tokens[] = {1, 1000, SIZE_MAX};
    for (uint32_t policy = KVC_ROUTER_DUALMAP; policy <= KVC_ROUTER_LLM_D; policy++) {
        long routes = 0, bad_routes = 0, observed = 0, bad_refusals = 0;
        for (int a = 0; a < 3; a++) for (int b = 0; b < 3; b++) {
            kvc_router_config rc;
            kvc_router_config_init(&rc);
            rc.policy = policy;
            rc.ttft_slo_ms = slos[a];
            rc.prefill_ms_per_token = per_token[b];
            kvc_router *r = NULL;
            MUST(kvc_router_create(&rc, &r));
            for (uint32_t i = 0; i < 4; i++) MUST(kvc_router_add_instance(r, 7 * i, i == 3 ? 64.0 : 1.0 / (i + 1)));
            for (int v = 0; v < 4; v++) for (int w = 0; w < 4; w++) {
                for (uint32_t i = 0; i < 4; i++) {
                    kvc_instance_load l = {.struct_size = sizeof l, .pending_prefill_tokens = counts[(v + i) % 4],
                                           .running_blocks = counts[(w + i) % 4], .free_blocks = counts[(v + w + i) % 4],
                                           .active_requests = counts[(v * w + i) % 4], .waiting_requests = counts[(v + 2 * i) % 4] / 2};
                    MUST(kvc_router_report(r, 7 * i, &l));
                }
                for (int m = 0; m < 3; m++) for (int t = 0; t < 3; t++) {
                    kvc_status st = kvc_router_observe_prefill(r, tokens[t], ms[m]);
                    observed += st == KVC_OK;
                    bad_refusals += st != KVC_OK && (st != KVC_ERR_INVALID_ARGUMENT || kvc_last_error()[0] == '\0');
                    const uint64_t hashes[8] = {11u + v, 22u + w, 33, 44, 55, 66, 77, 88};
                    uint32_t chosen = 99;
                    st = kvc_router_route(r, hashes, 1 + (m + t) % 8, 16 * 8 + m, &chosen);
                    routes++;
                    bad_routes += st != KVC_OK || chosen % 7 != 0 || chosen > 21;
                }
            }
            kvc_router_destroy(r);
        }
        CHECK(bad_routes == 0 && routes == 9 * 16 * 9, "router policy %u: %ld of %ld routes failed or named no live instance",
              policy, bad_routes, routes);
        CHECK(bad_refusals == 0 && observed > 0, "router policy %u: %ld observations refused without a message (%ld taken)",
              policy, bad_refusals, observed);
    }
}

/* Built with AddressSanitizer (tools/run_sanitized.sh), whose instrumented library makes a
 * probe per block cost minutes over 2^31 blocks. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* A prompt of 2^31 blocks an instance caches (a 16 GiB hash array: one 2 MiB page of one
 * cached hash, mapped 8192 times): its matched-block count once trapped converting to a
 * 32-bit integer, ending the process, in the cache-aware policies (DualMap) and in the
 * others (round-robin) alike. Routed now, to the instance that caches it. An integer-width
 * check, not a memory one: skipped under AddressSanitizer (the plain run makes it). */
static void router_huge_prompt(void) {
#ifdef UNDER_ASAN
    printf("abi_client: router given a prompt of 2^31 cached blocks: skipped under AddressSanitizer (2^31 instrumented probes)\n");
    return;
#endif
    printf("abi_client: router given a prompt of 2^31 cached blocks\n");
    const uint64_t h = 0x1234567890abcdefull;
    const size_t page = 2u << 20, blocks = (size_t)1 << 31, bytes = blocks * sizeof h;
    FILE *f = tmpfile();
    REQUIRE(f != NULL && ftruncate(fileno(f), (off_t)page) == 0, "tmpfile: %s", strerror(errno));
    uint64_t *one = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fileno(f), 0);
    REQUIRE(one != MAP_FAILED, "mmap: %s", strerror(errno));
    for (size_t i = 0; i < page / sizeof h; i++) one[i] = h;
    char *all = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    REQUIRE(all != MAP_FAILED, "mmap of %zu bytes of address space: %s", bytes, strerror(errno));
    size_t at = 0;
    while (at < bytes && mmap(all + at, page, PROT_READ, MAP_SHARED | MAP_FIXED, fileno(f), 0) != MAP_FAILED) at += page;
    REQUIRE(at == bytes, "mmap of the hash page at byte %zu: %s", at, strerror(errno));
    for (uint32_t policy = KVC_ROUTER_DUALMAP; policy <= KVC_ROUTER_ROUND_ROBIN; policy++) {
        kvc_router_config rc;
        kvc_router_config_init(&rc);
        rc.policy = policy;
        kvc_router *r = NULL;
        MUST(kvc_router_create(&rc, &r));
        MUST(kvc_router_add_instance(r, 7, 1));
        MUST(kvc_router_add_instance(r, 8, 1));
        kvc_event stored = {.kind = KVC_EVENT_BLOCK_STORED, .tier = KVC_TIER_MEMORY, .block_hash = h};
        MUST(kvc_router_observe_events(r, 7, &stored, 1));
        uint32_t chosen = 99;
        kvc_status st = kvc_router_route(r, (const uint64_t *)all, blocks, blocks * 16, &chosen);
        CHECK(st == KVC_OK && (policy != KVC_ROUTER_DUALMAP || chosen == 7),
              "router policy %u: a prompt of 2^31 cached blocks is routed (%s, to %u)", policy, kvc_status_name(st), chosen);
        kvc_router_destroy(r);
    }
    munmap(all, bytes);
    munmap(one, page);
    fclose(f);
}

static void router_restart(void) {
    printf("abi_client: router across an engine restart it was not told of\n");
    char dir[] = TIER_DIR;
    new_tier_dir(dir);
    kvc_config cfg_a, cfg_b;
    disk_config(&cfg_a, KVC_LAYOUT_PAGED, dir);
    small_config(&cfg_b, KVC_LAYOUT_PAGED, 1 << 20);
    kvc_engine *a = NULL, *b = NULL;
    MUST(kvc_engine_create(&cfg_a, &a));
    MUST(kvc_engine_create(&cfg_b, &b));
    kvc_router_config rc;
    kvc_router_config_init(&rc);
    rc.block_tokens = BLOCK;
    kvc_router *r = NULL;
    MUST(kvc_router_create(&rc, &r));
    MUST(kvc_router_add_instance(r, 10, 1.0));
    MUST(kvc_router_add_instance(r, 20, 1.0));
    int32_t p[PROMPT], q[PROMPT];
    for (int i = 0; i < PROMPT; i++) {
        p[i] = 30000 + i;
        q[i] = 40000 + i;
    }
    uint64_t hp[PROMPT / BLOCK];
    size_t nh = 0, cached = 0;
    MUST(kvc_hash_tokens(p, PROMPT, BLOCK, hp, PROMPT / BLOCK, &nh));
    MUST(kvc_seq_create(a, 1, q, PROMPT, &cached)); /* Q: spilled to A's tier by the trim */
    MUST(kvc_seq_free(a, 1));
    MUST(kvc_engine_trim(a));
    MUST(kvc_engine_sync(a));
    MUST(kvc_seq_create(a, 2, p, PROMPT, &cached)); /* P: cached in A's memory */
    MUST(kvc_seq_free(a, 2));
    MUST(kvc_seq_create(b, 1, p, BLOCK + 1, &cached)); /* P's first block, cached in B's memory */
    MUST(kvc_seq_free(b, 1));
    CHECK(observe_all(r, 10, a) == PROMPT / BLOCK, "router restart: A spilled Q's %d blocks", PROMPT / BLOCK);
    observe_all(r, 20, b);
    CHECK(route_idle(r, hp, nh) == 10, "router restart: P goes to 10, whose memory caches all of it");

    kvc_engine_destroy(a);
    MUST(kvc_engine_create(&cfg_a, &a));
    kvc_stats s = stats_of(a);
    REQUIRE(s.blocks_cached == 0 && s.blocks_used == 0 && s.disk_stored_bytes > 0,
            "router restart: the new engine's memory is empty, its tier holds Q");
    CHECK(observe_all(r, 10, a) == PROMPT / BLOCK, "router restart: the new engine announces Q's %d blocks in KVC_TIER_DISK",
          PROMPT / BLOCK);
    uint32_t chosen = route_idle(r, hp, nh);
    CHECK(chosen == 20, "router restart: the view of 10 is as empty as its new memory: P goes to 20, holding its first block "
                        "(got %u)", chosen);
    MUST(kvc_seq_create(a, 1, p, PROMPT, &cached));
    CHECK(cached == 0, "router restart: the new engine computes P (%zu tokens cached)", cached);
    MUST(kvc_seq_free(a, 1));
    observe_all(r, 10, a);
    CHECK(route_idle(r, hp, nh) == 10, "router restart: once the new engine caches P, P goes to 10 again");
    kvc_router_destroy(r);
    kvc_engine_destroy(a);
    kvc_engine_destroy(b);
    remove_tier_dir(dir);
}

/* Numbered events through a bus (kvc_drain_events_seq, kvc_router_observe_events_seq,
 * kvc_router_resync_instance): a crashed engine's batch delivered after its successor's first
 * leaves no ghost, a redelivered first batch clears nothing, a lost batch is refused until a
 * resync from the numbered dump. The router's view is read through DualMap's choice between
 * two instances: a prompt no instance caches goes to x (a fresh router's choice), one the
 * view credits to the other instance y goes to y. */
typedef struct {
    kvc_event ev[256];
    size_t n;
    uint64_t epoch, first;
} numbered_batch;

static void drain_numbered(kvc_engine *e, numbered_batch *b) {
    MUST(kvc_drain_events_seq(e, b->ev, 256, &b->n, &b->epoch, &b->first));
}

static void create_prompt(kvc_engine *e, uint64_t seq, int32_t base) {
    int32_t tokens[PROMPT];
    for (int i = 0; i < PROMPT; i++) tokens[i] = base + i;
    size_t cached;
    MUST(kvc_seq_create(e, seq, tokens, PROMPT, &cached));
}

static uint32_t route_prompt(kvc_router *r, int32_t base) {
    int32_t tokens[PROMPT];
    for (int i = 0; i < PROMPT; i++) tokens[i] = base + i;
    uint64_t hashes[64];
    size_t n;
    MUST(kvc_hash_tokens(tokens, PROMPT, BLOCK, hashes, 64, &n));
    uint32_t chosen = 0;
    MUST(kvc_router_route(r, hashes, n, PROMPT, &chosen));
    return chosen;
}

static kvc_router *two_instances(void) {
    kvc_router_config rc;
    kvc_router_config_init(&rc);
    rc.block_tokens = BLOCK;
    kvc_router *r;
    MUST(kvc_router_create(&rc, &r));
    MUST(kvc_router_add_instance(r, 1, 1.0));
    MUST(kvc_router_add_instance(r, 2, 1.0));
    return r;
}

/* The router's statistics (kvc_router_get_stats, KVC_1.2), at the offsets the library writes. */
_Static_assert(offsetof(kvc_router_stats, decisions) == 8 && offsetof(kvc_router_stats, duplicate_events) == 32 &&
                   offsetof(kvc_router_stats, refused_full_batches) == 56 &&
                   offsetof(kvc_router_stats, tracked_blocks_limit) == 88 && sizeof(kvc_router_stats) == 96 &&
                   KVC_ROUTER_STATS_MIN_SIZE == 96,
               "kvc_router_stats layout");

static kvc_router_stats router_stats_of(kvc_router *r) {
    kvc_router_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    MUST(kvc_router_get_stats(r, &s));
    return s;
}

static void numbered_events(void) {
    printf("abi_client: numbered events\n");
    enum { Q = 8000, P = 9000, R = 9500 };
    kvc_router *probe = two_instances();
    uint32_t x = route_prompt(probe, Q), y = 3 - x;
    kvc_router_destroy(probe);
    kvc_router *r = two_instances();
    kvc_config cfg;
    small_config(&cfg, KVC_LAYOUT_PAGED, 1 << 20);
    kvc_engine *a, *b;
    numbered_batch a1, a2, b1, b2, b3;
    MUST(kvc_engine_create(&cfg, &a));
    drain_numbered(a, &a1);
    CHECK(a1.epoch != 0 && a1.first == 1 && a1.n == 1 && a1.ev[0].kind == KVC_EVENT_ALL_CLEARED,
          "numbered: event 1 is the creation's ALL_CLEARED, under a non-zero epoch");
    MUST(kvc_router_observe_events_seq(r, y, a1.epoch, a1.first, a1.ev, a1.n));
    create_prompt(a, 1, Q);
    drain_numbered(a, &a2); /* in flight when engine a dies */
    CHECK(a2.epoch == a1.epoch && a2.first == 2 && a2.n > 0, "numbered: the next batch continues at event 2");
    MUST(kvc_engine_create(&cfg, &b));
    drain_numbered(b, &b1);
    CHECK(b1.epoch != a1.epoch && b1.first == 1, "numbered: a new engine has a new epoch and starts again at 1");
    MUST(kvc_router_observe_events_seq(r, y, b1.epoch, b1.first, b1.ev, b1.n));
    MUST(kvc_router_observe_events_seq(r, y, a2.epoch, a2.first, a2.ev, a2.n)); /* late: stale */
    MUST(kvc_router_observe_events_seq(r, y, a1.epoch, a1.first, a1.ev, a1.n)); /* stale too */
    CHECK(route_prompt(r, Q) == x, "numbered: a crashed engine's late batch credits nothing");
    /* A lost batch: the next is refused, naming the missing events, until a resync. */
    create_prompt(b, 1, P);
    drain_numbered(b, &b2); /* lost */
    create_prompt(b, 2, R);
    drain_numbered(b, &b3);
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "are missing", kvc_router_observe_events_seq(r, y, b3.epoch, b3.first, b3.ev, b3.n));
    CHECK(strstr(kvc_last_error(), "kvc_router_resync_instance") != NULL, "numbered: a gap's message names the remedy");
    kvc_event dump[256];
    size_t n_dump;
    uint64_t epoch, next;
    MUST(kvc_engine_index_events_seq(b, dump, 256, &n_dump, &epoch, &next));
    CHECK(epoch == b1.epoch && next == b3.first + b3.n, "numbered: the dump's position is the next event's number");
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "all-cleared", kvc_router_resync_instance(r, y, epoch, next, dump + 1, n_dump - 1));
    MUST(kvc_router_resync_instance(r, y, epoch, next, dump, n_dump));
    MUST(kvc_router_observe_events_seq(r, y, b3.epoch, b3.first, b3.ev, b3.n)); /* redelivered: skipped */
    MUST(kvc_router_observe_events_seq(r, y, b1.epoch, b1.first, b1.ev, b1.n)); /* its clear too */
    CHECK(route_prompt(r, P) == y, "numbered: the resync credits the lost batch's blocks");
    /* The router counted what the bus did: engine a's late and replayed batches (stale), the
     * lost batch (a gap), the batches redelivered after the resync (duplicates). */
    kvc_router_stats rs = router_stats_of(r);
    CHECK(rs.stale_events == a2.n + a1.n && rs.refused_gaps == 1 && rs.duplicate_events == b3.n + b1.n,
          "numbered: stats count %" PRIu64 " stale events (want %zu), %" PRIu64 " gaps (1), %" PRIu64
          " duplicate events (%zu)", rs.stale_events, a2.n + a1.n, rs.refused_gaps, rs.duplicate_events, b3.n + b1.n);
    CHECK(rs.decisions == 2 && rs.slo_switches == 0 && rs.rebalance_moves == 0 && rs.refused_full_batches == 0 &&
              rs.refused_inserts == 0,
          "numbered: stats count the 2 routes and nothing refused for room");
    CHECK(rs.live_instances == 2 && rs.tracked_blocks == n_dump - 1 && rs.tracked_blocks_limit == 1u << 26,
          "numbered: the view holds the dump's %zu blocks of 2^26 (got %" PRIu64 " of %" PRIu64 ")", n_dump - 1,
          rs.tracked_blocks, rs.tracked_blocks_limit);
    /* Bad input. */
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "epoch 0", kvc_router_observe_events_seq(r, y, 0, 1, b1.ev, b1.n));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "PTRDIFF_MAX",
                  kvc_router_observe_events_seq(r, y, b1.epoch, 1, b1.ev, PTRDIFF_MAX / sizeof(kvc_event) + 1));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "PTRDIFF_MAX",
                  kvc_router_observe_events(r, y, b1.ev, PTRDIFF_MAX / sizeof(kvc_event) + 1));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "first_seq is NULL", kvc_drain_events_seq(b, dump, 256, &n_dump, &epoch, NULL));
    EXPECT_STATUS(KVC_ERR_NOT_FOUND, "instance 3", kvc_router_resync_instance(r, 3, epoch, next, dump, n_dump));
    /* The unnumbered call is unchanged: it applies the late batch, crediting its blocks. */
    MUST(kvc_router_observe_events(r, y, a2.ev, a2.n));
    CHECK(route_prompt(r, Q) == y, "numbered: the unnumbered call still credits a late batch (exactly-once delivery)");
    kvc_router_destroy(r);
    kvc_engine_destroy(a);
    kvc_engine_destroy(b);
}


/* kvc_router_get_stats' input: a fresh router counts nothing; NULL router or output and a
 * struct_size out of range are refused, writing nothing; a newer caller's larger struct gets
 * every field, the bytes past them up to its struct_size zeroed, nothing past that. */
static void router_stats(void) {
    printf("abi_client: router stats\n");
    kvc_router *r = two_instances();
    kvc_router_stats s = router_stats_of(r);
    CHECK(s.decisions == 0 && s.duplicate_events == 0 && s.stale_events == 0 && s.refused_gaps == 0 &&
              s.refused_full_batches == 0 && s.live_instances == 2 && s.tracked_blocks == 0,
          "router stats: a new router with two instances counts nothing");
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "router is NULL", kvc_router_get_stats(NULL, &s));
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "out is NULL", kvc_router_get_stats(r, NULL));
    struct {
        kvc_router_stats s;
        uint64_t newer[2], past;
    } big;
    memset(&big, 0xAB, sizeof big);
    big.s.struct_size = KVC_ROUTER_STATS_MIN_SIZE - 8;
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "struct_size 88", kvc_router_get_stats(r, &big.s));
    CHECK(big.s.decisions == 0xABABABABABABABABull, "router stats: a refused struct is not written");
    big.s.struct_size = KVC_STRUCT_SIZE_MAX + 1;
    EXPECT_STATUS(KVC_ERR_INVALID_ARGUMENT, "struct_size 4097", kvc_router_get_stats(r, &big.s));
    big.s.struct_size = sizeof big.s + sizeof big.newer;
    MUST(kvc_router_get_stats(r, &big.s));
    CHECK(big.s.live_instances == 2 && big.s.tracked_blocks_limit == 1u << 26 && big.newer[0] == 0 && big.newer[1] == 0 &&
              big.past == 0xABABABABABABABABull && big.s.struct_size == sizeof big.s + sizeof big.newer,
          "router stats: a newer, larger struct gets every field and zeroes past them, up to its struct_size");
    kvc_router_destroy(r);
}


int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "hashes") == 0) {
        print_hashes();
        return 0;
    }
    if (argc != 1) {
        fprintf(stderr, "usage: abi_client [hashes]\n");
        return 2;
    }
    CHECK(kvc_abi_version() == KVC_ABI_VERSION, "library ABI %u, header %d", kvc_abi_version(), KVC_ABI_VERSION);
    CHECK(strcmp(kvc_last_error(), "") == 0, "no message before any failure");
    CHECK(strcmp(kvc_status_name(KVC_ERR_NOT_FOUND), "KVC_ERR_NOT_FOUND") == 0 &&
              strcmp(kvc_status_name(12345), "KVC_ERR_UNKNOWN") == 0,
          "kvc_status_name");
    host_signals();
    serve(KVC_LAYOUT_PAGED);
    serve(KVC_LAYOUT_CONTIGUOUS);
    no_allocation(KVC_LAYOUT_PAGED);
    no_allocation(KVC_LAYOUT_CONTIGUOUS);
    layer_arrays();
    batched(KVC_LAYOUT_PAGED);
    batched(KVC_LAYOUT_CONTIGUOUS);
    admission(KVC_LAYOUT_PAGED, 0);
    admission(KVC_LAYOUT_CONTIGUOUS, 0);
    admission(KVC_LAYOUT_PAGED, 1);
    admission(KVC_LAYOUT_CONTIGUOUS, 1);
    bad_input(KVC_LAYOUT_PAGED);
    bad_input(KVC_LAYOUT_CONTIGUOUS);
    bad_config();
    out_of_memory(KVC_LAYOUT_PAGED, 0);
    out_of_memory(KVC_LAYOUT_CONTIGUOUS, 0);
    cancelled(KVC_LAYOUT_PAGED);
    cancelled(KVC_LAYOUT_CONTIGUOUS);
    salted(KVC_LAYOUT_PAGED);
    salted(KVC_LAYOUT_CONTIGUOUS);
    speculative(KVC_LAYOUT_PAGED);
    speculative(KVC_LAYOUT_CONTIGUOUS);
    chunked(KVC_LAYOUT_PAGED);
    chunked(KVC_LAYOUT_CONTIGUOUS);
    chunked_admission();
    evict(KVC_LAYOUT_PAGED);
    evict(KVC_LAYOUT_CONTIGUOUS);
    offload(KVC_LAYOUT_PAGED);
    offload(KVC_LAYOUT_CONTIGUOUS);
    queued_reads(KVC_LAYOUT_PAGED);
    queued_reads(KVC_LAYOUT_CONTIGUOUS);
    disk_events(KVC_LAYOUT_PAGED);
    disk_events(KVC_LAYOUT_CONTIGUOUS);
    peer_tier();
    chunked_swap(KVC_LAYOUT_PAGED);
    chunked_swap(KVC_LAYOUT_CONTIGUOUS);
    episodic_offload(KVC_LAYOUT_PAGED);
    episodic_offload(KVC_LAYOUT_CONTIGUOUS);
    episodic_write_failure(KVC_LAYOUT_PAGED);
    episodic_write_failure(KVC_LAYOUT_CONTIGUOUS);
    spoiled_by_a_failed_read(KVC_LAYOUT_PAGED);
    spoiled_by_a_failed_read(KVC_LAYOUT_CONTIGUOUS);
    read_or_recompute(KVC_LAYOUT_PAGED);
    read_or_recompute(KVC_LAYOUT_CONTIGUOUS);
    prefix_sources(KVC_LAYOUT_PAGED);
    prefix_sources(KVC_LAYOUT_CONTIGUOUS);
    writeback(KVC_LAYOUT_PAGED);
    writeback(KVC_LAYOUT_CONTIGUOUS);
    forked(KVC_LAYOUT_PAGED);
    forked(KVC_LAYOUT_CONTIGUOUS);
    forked_then_destroyed(KVC_LAYOUT_PAGED);
    forked_then_destroyed(KVC_LAYOUT_CONTIGUOUS);
    file_size_limit(KVC_LAYOUT_PAGED);
    file_size_limit(KVC_LAYOUT_CONTIGUOUS);
    out_of_memory(KVC_LAYOUT_PAGED, 1);
    out_of_memory(KVC_LAYOUT_CONTIGUOUS, 1);
    route();
    router_extremes();
    router_huge_prompt();
    router_restart();
    numbered_events();
    router_stats();
    summary_and_exit();
}
