/*
 * abi_model — a model-based random test of include/kvcache.h: thousands of random calls
 * (create with shared prefixes, append, fork, free or abort, observe + compact, episodic
 * segments and focus with restores from disk, swap out and in, trim, restarts on the same
 * disk tier, and bad input of every documented kind), each checked against a small model of what the engine must hold, in both layouts,
 * with a memory budget small enough that creates and appends run out of memory and cached
 * blocks spill to a disk tier.
 *
 * The model keeps, per sequence, the tokens at their original positions and, per layer, the
 * original position of every slot. K/V bytes are a function of (token, position, layer, K|V,
 * byte), so every slot's bytes are known wherever they came from (written, a prefix hit from
 * memory or disk, a fork, a compaction, a swap-in). After a call that must fail, every live
 * sequence is checked in full: its length, layer lengths, positions and every byte ("bad
 * input loses nothing"); after a call that may succeed or run out of memory, the sequence it
 * touched is, and on out of memory, that nothing changed. A compaction's choice is the
 * policy's (H2O, per layer or, for a third of the sequences, per KV head); the model checks
 * what any choice must satisfy: each layer (head) keeps min(length, budget) of the slots it
 * held, placed as kvcache.h documents (kept slots below the new length stay, the others fill
 * the holes in slot order), with their exact bytes.
 *
 *     abi_model [SEEDS] [STEPS] [FIRST]   (default 4 seeds from 1, 3000 steps per layout)
 *
 * ABI_MODEL_TRACE=1 in the environment logs every call that changed something, to replay a
 * failing seed (abi_model 1 STEPS SEED).
 *
 * The KV events are followed as a router would: each must make sense (a block is stored in a
 * tier that does not hold it, removed from one that does), and every block a create hits must
 * have been announced. An engine's first event is ALL_CLEARED of the memory tier; a restart on
 * the same directory keeps the view, which the new engine's events must reset.
 *
 * Restarts: half of them restart the engine on its own directory, half start a new instance
 * (up to three per run) on a fresh directory that reads the earlier ones' tiers as peers
 * (peer_offload_dirs): their blocks then come back as peer hits, whose bytes are checked as
 * any other, and which a router knew from the earlier instances' events.
 *
 * Seeds 1, 4, 7, ... turn on index_on_schedule: after a create wrote its K/V the model schedules
 * it in one or two steps, or leaves it to an append, so creates hit only scheduled blocks.
 *
 * Seeds 3, 7, 11, ... inject disk faults: after 50-300 requests every read and write fails. The
 * model then accepts the documented outcomes (a failed read breaks the sequence, which is only
 * freed; a failed swap-out leaves it resident and unchanged; lost offloaded tokens are reported
 * once and the positions are taken again) and still checks every byte it reads.
 *
 * Seeds 2, 7, 12, ... tell the engine a prefill speed (prefill_tokens_per_s: 10^4 to 10^7
 * tokens/s by seed, seed 2 the fastest, around what reading this tiny model's blocks takes), so creates sometimes
 * leave a prefix found on disk to the prefill: what they report cached is still checked byte
 * for byte and announced, and the rest is the model's to write.
 *
 * Even seeds run the writeback thread (offload_writeback): cold cached blocks are copied to
 * disk outside the engine's lock while the model's calls evict, hit and compact them, so which
 * blocks a create finds on disk depends on the thread's timing; every byte served is checked.
 *
 * Prints the failing seed and step on failure, then "abi_model: 1 passed, 0 failed" or
 * "0 passed, 1 failed" (one test in tools/test.sh's count); exits 1 when anything failed.
 */
#define _DEFAULT_SOURCE /* mkdtemp */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvcache.h"
#include "tier_dir.h"

enum {
    LAYERS = 2,
    HEADS = 2,
    TOKEN_BYTES = 32, /* 2 KV heads x 8 dims x 2 bytes */
    HEAD_BYTES = TOKEN_BYTES / HEADS,
    BLOCK = 8,
    MAX_TOKENS = 256,
    IDS = 12,         /* sequence ids 1 .. IDS */
    FAMILY = 48,      /* tokens of each of the three shared prompt families */
};

typedef struct {
    int live, swapped, per_head, episodic;
    int reading, broken; /* faults: a disk read may still fail it; one did (free it, says kvcache.h) */
    size_t layer_len[LAYERS];
    int32_t pos[LAYERS][HEADS][MAX_TOKENS]; /* original position of each slot, per KV head (per
                                               layer: the same for every head) */
    int32_t tok[MAX_TOKENS];         /* token at each original position */
    size_t next;                     /* next original position */
    int segments;                    /* episodic: segments registered, each clustered by the focus after it */
    size_t segment_start;            /* the highest segment start */
} model_seq;

static kvc_engine *e;
static int paged;
static model_seq m[IDS + 1];
static uint64_t rng, seed;
static int step, failures, adaptive, faulty, scheduling;
static const char *layout_name;
static struct { uint64_t spilled, loaded, swaps, offloaded, restored, uneven, disk_errors, broken, restarts, found_on_restart, schedules, instances, peer_hits, truncations, broken_refused, declined, written_ahead, spills_failed; } covered; /* what the runs reached */

#define FAIL(...)                                                                                     \
    do {                                                                                              \
        if (failures++ < 10) {                                                                        \
            fprintf(stderr, "abi_model: FAILED (%s, seed %" PRIu64 ", step %d): ", layout_name, seed, step); \
            fprintf(stderr, __VA_ARGS__);                                                             \
            fprintf(stderr, " (line %d; last error: %s)\n", __LINE__, kvc_last_error());               \
        }                                                                                             \
    } while (0)
#define EXPECT(cond, ...) \
    do {                  \
        if (!(cond)) FAIL(__VA_ARGS__); \
    } while (0)

static uint64_t events_seen;
static int tracing; /* ABI_MODEL_TRACE set: every call that changed something, on stderr */
#define TRACE(...)                                                  \
    do {                                                            \
        if (tracing) {                                              \
            fprintf(stderr, "abi_model: step %d: ", step);          \
            fprintf(stderr, __VA_ARGS__);                           \
            fputc('\n', stderr);                                    \
        }                                                           \
    } while (0)

/* What a router learns from the engine's KV events: the block hashes each tier holds
 * (open addressing, 2^16 slots; 0 and 1 mark empty and deleted: hashes are neither in
 * practice, and the model only asks about prompt blocks). Tier 2 (PEERS) holds what the
 * earlier instances' disk tiers held when they stopped: the peers' blocks. Tier 3 (UNJOURNALED)
 * holds, in a run with disk faults, the blocks the own tier removed after its disk died: the
 * journal could not record those frees and the dead disk rewrote no slot, so a later instance
 * reading the directory as a peer finds them intact and may serve them (verified bytes, but
 * the router heard them removed); they join PEERS when a new instance starts. */
enum { VIEW_SLOTS = 1 << 16, PEERS = 2, UNJOURNALED = 3, MAX_DIRS = 4 };
static uint64_t view[4][VIEW_SLOTS];
static size_t view_find(int tier, uint64_t h) {
    size_t i = (size_t)(h * 0x9E3779B97F4A7C15ull >> 48), deleted = VIEW_SLOTS;
    while (view[tier][i] != 0 && view[tier][i] != h) {
        if (view[tier][i] == 1 && deleted == VIEW_SLOTS) deleted = i;
        i = (i + 1) & (VIEW_SLOTS - 1);
    }
    return view[tier][i] == h || deleted == VIEW_SLOTS ? i : deleted;
}
static int view_has(int tier, uint64_t h) { return view[tier][view_find(tier, h)] == h; }

static uint64_t next_random(void) {
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint32_t below(uint32_t n) { return (uint32_t)(next_random() % n); }

static uint8_t pattern(int32_t token, int32_t pos, uint32_t layer, uint32_t tensor, size_t b) {
    uint64_t x = (uint64_t)(uint32_t)token * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uint32_t)pos * 0xC2B2AE3D27D4EB4Full ^
                 ((uint64_t)layer << 40) ^ ((uint64_t)tensor << 48) ^ b;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    return (uint8_t)(x >> 56);
}

/* Address of (layer, tensor) of slot `slot` of `seq`, or NULL. */
static uint8_t *slot_address(uint64_t seq, uint32_t layer, uint32_t tensor, size_t slot) {
    void *k = NULL, *v = NULL;
    if (paged) {
        int32_t table[MAX_TOKENS / BLOCK + 1];
        size_t n = 0;
        if (kvc_seq_block_table(e, seq, table, MAX_TOKENS / BLOCK + 1, &n) != KVC_OK || slot / BLOCK >= n) return NULL;
        if (kvc_block_kv(e, table[slot / BLOCK], layer, &k, &v) != KVC_OK) return NULL;
        return (uint8_t *)(tensor ? v : k) + slot % BLOCK * TOKEN_BYTES;
    }
    if (kvc_seq_kv(e, seq, layer, &k, &v) != KVC_OK) return NULL;
    return (uint8_t *)(tensor ? v : k) + slot * TOKEN_BYTES;
}

/* Writes (or, with check, compares) slots [from[l], to) of each layer l of `id` from the
 * model (from NULL: 0; `to` is capped at the layer's length). */
static int slots(uint64_t id, const size_t *from, size_t to, int check) {
    uint8_t want[TOKEN_BYTES];
    for (uint32_t l = 0; l < LAYERS; l++)
        for (size_t s = from ? from[l] : 0; s < to && s < m[id].layer_len[l]; s++)
            for (uint32_t t = 0; t < 2; t++) {
                uint8_t *p = slot_address(id, l, t, s);
                if (!p) return 0;
                for (size_t b = 0; b < TOKEN_BYTES; b++) { /* head h owns bytes h * HEAD_BYTES .. */
                    int32_t pos = m[id].pos[l][b / HEAD_BYTES][s];
                    want[b] = pattern(m[id].tok[pos], pos, l, t, b);
                }
                if (!check) memcpy(p, want, TOKEN_BYTES);
                else if (memcmp(p, want, TOKEN_BYTES) != 0) return 0;
            }
    return 1;
}

static size_t model_length(uint64_t id) {
    size_t n = 0;
    for (uint32_t l = 0; l < LAYERS; l++) n = m[id].layer_len[l] > n ? m[id].layer_len[l] : n;
    return n;
}

/* Takes `id`'s layer lengths and positions from the engine after it reported lost offloaded
 * tokens or undone restores (faults only), checking what must still hold: each row holds
 * distinct positions the sequence had, at most as many as before. */
static void resync(uint64_t id) {
    model_seq *s = &m[id];
    size_t rows = s->per_head ? HEADS : 1;
    for (uint32_t l = 0; l < LAYERS; l++) {
        int32_t pos[HEADS * MAX_TOKENS];
        size_t n = 0, len = 0;
        int ok = kvc_seq_layer_length(e, id, l, &len) == KVC_OK && len <= s->layer_len[l] &&
                 kvc_seq_positions(e, id, l, pos, HEADS * MAX_TOKENS, &n) == KVC_OK && n == rows * len;
        for (size_t h = 0; ok && h < rows; h++) {
            char seen[MAX_TOKENS] = {0};
            for (size_t i = 0; ok && i < len; i++) {
                int32_t p = pos[h * len + i];
                ok = p >= 0 && (size_t)p < s->next && !seen[p];
                if (ok) seen[p] = 1;
            }
        }
        EXPECT(ok, "seq %" PRIu64 " layer %u after a reported loss: distinct positions it had", id, l);
        if (!ok) continue;
        for (size_t h = 0; h < HEADS; h++) memcpy(s->pos[l][h], pos + (s->per_head ? h : 0) * len, len * sizeof *pos);
        s->layer_len[l] = len;
    }
    TRACE("resync %" PRIu64 " after a reported disk failure: layer lengths %zu, %zu", id, s->layer_len[0], s->layer_len[1]);
}

/* Waits until `id` is ready; 1 then. With faults (kvcache.h, kvc_seq_ready): a failed read of a
 * prefix hit or swap-in breaks the sequence (0, marked broken: only free it); a failed
 * asynchronous swap-out or lost offloaded tokens are reported once and the sequence stays
 * usable, so the model takes its positions again and waits on. 0 on any other status. */
static int wait_ready(uint64_t id) {
    for (int i = 0; i < 100000; i++) {
        int ready = 0;
        kvc_status rc = kvc_seq_ready(e, id, &ready);
        if (rc == KVC_ERR_IO && faulty) {
            /* Told apart by the message: lost tokens can be reported while a read was pending. */
            if (m[id].reading && strstr(kvc_last_error(), "free it and create it again")) {
                m[id].broken = 1;
                covered.broken++;
                TRACE("seq %" PRIu64 " broken: a disk read for it failed", id);
                return 0;
            }
            resync(id);
            continue;
        }
        if (rc != KVC_OK) return 0;
        if (ready) {
            m[id].reading = 0;
            return 1;
        }
        kvc_engine_poll(e, 200);
    }
    return 0;
}

/* Checks `id` against the model: length, layer lengths, positions, and (resident) bytes;
 * waits for it first (which, with faults, may take its positions again or break it). */
static void verify(uint64_t id) {
    size_t n = 0;
    if (m[id].broken) return;
    int ready = m[id].swapped || wait_ready(id);
    if (m[id].broken) return;
    EXPECT(ready, "seq %" PRIu64 " becomes ready", id);
    EXPECT(kvc_seq_length(e, id, &n) == KVC_OK && n == model_length(id), "seq %" PRIu64 " length %zu, model %zu", id, n,
           model_length(id));
    for (uint32_t l = 0; l < LAYERS; l++) {
        int32_t pos[HEADS * MAX_TOKENS];
        size_t len = m[id].layer_len[l], rows = m[id].per_head ? HEADS : 1;
        int same = kvc_seq_positions(e, id, l, pos, HEADS * MAX_TOKENS, &n) == KVC_OK && n == rows * len;
        for (size_t h = 0; same && h < rows; h++) same = memcmp(pos + h * len, m[id].pos[l][h], len * sizeof *pos) == 0;
        EXPECT(same, "seq %" PRIu64 " layer %u positions", id, l);
    }
    if (!m[id].swapped) EXPECT(slots(id, NULL, MAX_TOKENS, 1), "seq %" PRIu64 "'s K/V bytes", id);
}

/* After a call that must have changed nothing: every live sequence and the engine's count. */
static void verify_all(void) {
    kvc_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    uint64_t live = 0;
    for (uint64_t id = 1; id <= IDS; id++)
        if (m[id].live) {
            live++;
            verify(id);
        }
    EXPECT(kvc_engine_stats(e, &s) == KVC_OK && s.sequences == live && s.committed_bytes <= s.budget_bytes,
           "stats: %" PRIu64 " sequences (model %" PRIu64 "), committed %" PRIu64 " of %" PRIu64, s.sequences, live,
           s.committed_bytes, s.budget_bytes);
}

static uint64_t pick(int live, int swapped_ok) {
    for (int tries = 0; tries < 32; tries++) {
        uint64_t id = 1 + below(IDS);
        if (m[id].live == live && (swapped_ok || !m[id].swapped) && !m[id].broken) return id;
    }
    return 0;
}

/* Applies the pending events to the view, checking that each makes sense there: a block is
 * stored in a tier that does not hold it and removed from one that does. */
/* The disk errors the current engine has seen (0 while its disk works). */
static uint64_t disk_errors(void) {
    kvc_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    kvc_engine_stats(e, &st);
    return st.disk_errors;
}

static void drain(void) {
    kvc_event ev[512];
    size_t n = 0;
    do {
        EXPECT(kvc_drain_events(e, ev, 512, &n) == KVC_OK, "drain events");
        for (size_t i = 0; i < n; i++) {
            int tier = ev[i].tier == 1;
            uint64_t h = ev[i].block_hash;
            events_seen++;
            if (ev[i].kind == KVC_EVENT_ALL_CLEARED) {
                memset(view[tier], 0, sizeof view[tier]);
                continue;
            }
            size_t at = view_find(tier, h);
            int held = view[tier][at] == h;
            if (ev[i].kind == KVC_EVENT_BLOCK_STORED) {
                EXPECT(!held, "event: block %016" PRIx64 " stored in tier %d, which holds it", h, tier);
                view[tier][at] = h;
            } else {
                EXPECT(held, "event: block %016" PRIx64 " removed from tier %d, which does not hold it", h, tier);
                if (held) view[tier][at] = 1;
                if (tier == 1 && faulty && disk_errors() > 0) view[UNJOURNALED][view_find(UNJOURNALED, h)] = h;
            }
        }
    } while (n == 512);
}

/* The events of an engine's creation, applied to a view that may still hold what a previous
 * engine of the instance announced (a router that missed the restart): the first is
 * ALL_CLEARED of the memory tier, and once they are applied the view's memory tier holds
 * nothing, as the new engine's memory. */
static void drain_creation(void) {
    kvc_event first;
    size_t n = 0;
    EXPECT(kvc_drain_events(e, &first, 1, &n) == KVC_OK && n == 1 && first.kind == KVC_EVENT_ALL_CLEARED &&
               first.tier == KVC_TIER_MEMORY && first.block_hash == 0,
           "create: the first event is ALL_CLEARED of the memory tier (%zu events; kind %u, tier %u)", n, first.kind, first.tier);
    if (n == 1 && first.kind == KVC_EVENT_ALL_CLEARED) {
        events_seen++;
        memset(view[first.tier == 1], 0, sizeof view[0]);
    }
    drain();
    size_t held = 0;
    for (size_t i = 0; i < VIEW_SLOTS; i++) held += view[0][i] > 1;
    EXPECT(held == 0, "create: the view's memory tier holds %zu blocks after the create's events", held);
}

static void op_create(void) {
    uint64_t id = pick(0, 1);
    if (!id) return;
    int32_t tokens[MAX_TOKENS];
    uint32_t family = below(3), shared = below(FAMILY / BLOCK + 1) * BLOCK, tail = 1 + below(40);
    for (uint32_t i = 0; i < shared; i++) tokens[i] = (int32_t)(family * 1000 + i);
    for (uint32_t i = 0; i < tail; i++) tokens[shared + i] = (int32_t)(100000 + below(1000000));
    size_t n = shared + tail, cached = 0;
    drain();
    kvc_status rc = kvc_seq_create(e, id, tokens, n, &cached);
    if (rc == KVC_OK && cached > 0) { /* what it hit, a router knew was cached (in one tier or the other) */
        uint64_t hashes[MAX_TOKENS / BLOCK];
        size_t nh = 0, known = 0;
        EXPECT(kvc_hash_tokens(tokens, cached, BLOCK, hashes, MAX_TOKENS / BLOCK, &nh) == KVC_OK && nh == cached / BLOCK, "hashes");
        while (known < nh && (view_has(0, hashes[known]) || view_has(1, hashes[known]) || view_has(PEERS, hashes[known]))) known++;
        EXPECT(known == nh, "create %" PRIu64 ": %zu cached tokens, but the events announced only %zu of its blocks", id, cached, known);
    }
    drain();
    if (rc == KVC_ERR_OUT_OF_MEMORY) {
        size_t len = 0;
        EXPECT(kvc_seq_length(e, id, &len) == KVC_ERR_NOT_FOUND, "a create out of memory left seq %" PRIu64, id);
        return;
    }
    EXPECT(rc == KVC_OK, "create %" PRIu64 ": status %d", id, rc);
    if (rc != KVC_OK) return;
    model_seq *s = &m[id];
    memset(s, 0, sizeof *s);
    s->live = 1;
    memcpy(s->tok, tokens, n * sizeof *tokens);
    s->next = n;
    for (uint32_t l = 0; l < LAYERS; l++) {
        s->layer_len[l] = n;
        for (uint32_t h = 0; h < HEADS; h++)
            for (size_t i = 0; i < n; i++) s->pos[l][h][i] = (int32_t)i;
    }
    s->per_head = below(3) == 0;  /* a third of the sequences keep a set per KV head */
    s->episodic = below(3) == 0;  /* a third evict episodically, to the disk tier */
    if (adaptive && below(2)) { /* layer budgets in proportion to a sensitivity: layers differ */
        float sensitivity[LAYERS];
        for (uint32_t l = 0; l < LAYERS; l++) sensitivity[l] = 0.1f + (float)below(100) / 25.0f;
        EXPECT(kvc_seq_set_layer_sensitivity(e, id, sensitivity, LAYERS) == KVC_OK, "sensitivity of %" PRIu64, id);
    }
    if (s->per_head || s->episodic)
        EXPECT(kvc_seq_set_eviction(e, id, s->episodic ? KVC_EVICTION_EPISODIC : KVC_EVICTION_HEAVY_HITTER, (uint32_t)s->per_head) == KVC_OK,
               "eviction policy of %" PRIu64, id);
    EXPECT(cached % BLOCK == 0 && cached < n, "create %" PRIu64 ": %zu cached of %zu", id, cached, n);
    TRACE("create %" PRIu64 ": family %u, %u shared + %u tokens, %zu cached%s%s", id, family, shared, tail, cached,
          s->per_head ? ", per head" : "", s->episodic ? ", episodic" : "");
    size_t uncached[LAYERS];
    for (uint32_t l = 0; l < LAYERS; l++) uncached[l] = cached;
    s->reading = 1;
    if (!wait_ready(id)) {
        EXPECT(s->broken, "create %" PRIu64 ": becomes ready", id);
        return;
    }
    EXPECT(slots(id, NULL, cached, 1), "create %" PRIu64 ": the %zu cached tokens' bytes", id, cached);
    EXPECT(slots(id, uncached, n, 0), "create %" PRIu64 ": write", id);
    if (scheduling && below(4) != 0) { /* chunked prefill: the written tokens scheduled in one or two steps, or left to an append */
        size_t first = below((uint32_t)n + 1), second = first + below((uint32_t)(n - first) + 1);
        EXPECT(kvc_seq_schedule(e, id, first) == KVC_OK, "schedule %" PRIu64 " to %zu", id, first);
        if (below(2)) EXPECT(kvc_seq_schedule(e, id, second) == KVC_OK, "schedule %" PRIu64 " to %zu", id, second);
        covered.schedules++;
        TRACE("schedule %" PRIu64 ": to %zu, then %zu", id, first, second);
    }
}

static void op_append(void) {
    uint64_t id = pick(1, 0);
    if (!id || m[id].next + 3 > MAX_TOKENS || model_length(id) + 3 > MAX_TOKENS) return;
    uint32_t n = 1 + below(3);
    int32_t tokens[3];
    for (uint32_t i = 0; i < n; i++) tokens[i] = (int32_t)(200000 + below(1000000));
    kvc_status rc = kvc_seq_append(e, id, tokens, n);
    if (rc == KVC_ERR_OUT_OF_MEMORY) {
        verify(id);
        return;
    }
    EXPECT(rc == KVC_OK, "append to %" PRIu64 ": status %d", id, rc);
    if (rc != KVC_OK) return;
    model_seq *s = &m[id];
    size_t from[LAYERS];
    for (uint32_t l = 0; l < LAYERS; l++) {
        from[l] = s->layer_len[l];
        for (uint32_t i = 0; i < n; i++, s->layer_len[l]++)
            for (uint32_t h = 0; h < HEADS; h++) s->pos[l][h][s->layer_len[l]] = (int32_t)(s->next + i);
    }
    for (uint32_t i = 0; i < n; i++) s->tok[s->next + i] = tokens[i];
    TRACE("append %u to %" PRIu64 ": layer lengths %zu, %zu", n, id, s->layer_len[0], s->layer_len[1]);
    s->next += n;
    EXPECT(slots(id, from, MAX_TOKENS, 0), "append to %" PRIu64 ": write", id);
}

static void op_fork(void) {
    uint64_t parent = pick(1, 0), child = pick(0, 1);
    if (!parent || !child) return;
    kvc_status rc = kvc_seq_fork(e, parent, child);
    if (rc == KVC_ERR_OUT_OF_MEMORY) {
        size_t len = 0;
        EXPECT(kvc_seq_length(e, child, &len) == KVC_ERR_NOT_FOUND, "a fork out of memory left its child");
        verify(parent);
        return;
    }
    EXPECT(rc == KVC_OK, "fork %" PRIu64 " -> %" PRIu64 ": status %d", parent, child, rc);
    if (rc != KVC_OK) return;
    m[child] = m[parent];
    TRACE("fork %" PRIu64 " -> %" PRIu64, parent, child);
    verify(child);
}

static void op_free(void) {
    uint64_t id = 1 + below(IDS);
    if (!m[id].live) return;
    if (below(4) == 0) { /* as if cancelled: only a prefix counts as computed, the rest leaves the index */
        size_t computed = below((uint32_t)model_length(id) + 1);
        EXPECT(kvc_seq_abort(e, id, computed) == KVC_OK, "abort %" PRIu64 " with %zu computed", id, computed);
        TRACE("abort %" PRIu64 " with %zu computed", id, computed);
    } else {
        EXPECT(kvc_seq_free(e, id) == KVC_OK, "free %" PRIu64, id);
        TRACE("free %" PRIu64, id);
    }
    m[id].live = 0;
}

/* The documented placement of a row's kept slots after a compaction or truncation: of the
 * `len` slots `held`, those marked in `kept` (`want` of them) stay below `want` where they are,
 * and the kept ones past it fill the holes in slot order. Writes `want` positions to `out`. */
static void place_kept(const int32_t *held, size_t len, const int *kept, size_t want, int32_t *out) {
    size_t from = want;
    for (size_t i = 0; i < want; i++) {
        if (kept[i]) {
            out[i] = held[i];
            continue;
        }
        while (from < len && !kept[from]) from++;
        out[i] = from < len ? held[from++] : -1;
    }
}

/* Rolls back a live, resident sequence to its first `keep` positions (rejected drafts): every
 * row keeps exactly its tokens at positions below `keep`, placed as a compaction places kept
 * slots. Refused (UNSUPPORTED) exactly when a row of a layer would keep no token, the heads of a
 * per-head layer would keep different counts, or an episodic segment (each clustered by the
 * focus after it) starts at or past the cut; INVALID_ARGUMENT (a cut below unscheduled blocks)
 * and OUT_OF_MEMORY (a shared block or page to copy) may refuse too. A refusal changes nothing. */
static void op_truncate(void) {
    uint64_t id = pick(1, 0);
    if (!id || m[id].next < 2) return;
    model_seq *s = &m[id];
    size_t keep = 1 + below((uint32_t)(s->next - 1));
    size_t rows = s->per_head ? HEADS : 1, count[LAYERS][HEADS];
    int unsupported = s->segments && s->segment_start >= keep;
    for (uint32_t l = 0; l < LAYERS; l++)
        for (size_t h = 0; h < rows; h++) {
            count[l][h] = 0;
            for (size_t i = 0; i < s->layer_len[l]; i++) count[l][h] += (size_t)s->pos[l][h][i] < keep;
            unsupported |= count[l][h] == 0 || count[l][h] != count[l][0];
        }
    kvc_status rc = kvc_seq_truncate(e, id, keep);
    if (rc != KVC_OK) {
        EXPECT(unsupported ? rc == KVC_ERR_UNSUPPORTED : rc == KVC_ERR_INVALID_ARGUMENT || rc == KVC_ERR_OUT_OF_MEMORY,
               "truncate %" PRIu64 " to %zu: status %d (unsupported expected: %d)", id, keep, rc, unsupported);
        verify_all();
        return;
    }
    EXPECT(!unsupported, "truncate %" PRIu64 " to %zu: done, but the model expected a refusal", id, keep);
    if (unsupported) return;
    for (uint32_t l = 0; l < LAYERS; l++) {
        for (size_t h = 0; h < HEADS; h++) {
            const int32_t *held = s->pos[l][h];
            int kept[MAX_TOKENS];
            int32_t now[MAX_TOKENS];
            for (size_t i = 0; i < s->layer_len[l]; i++) kept[i] = (size_t)held[i] < keep;
            place_kept(held, s->layer_len[l], kept, count[l][0], now);
            memcpy(s->pos[l][h], now, count[l][0] * sizeof *now);
        }
        s->layer_len[l] = count[l][0];
    }
    s->next = keep;
    covered.truncations++;
    TRACE("truncate %" PRIu64 " to %zu: layer lengths %zu, %zu", id, keep, s->layer_len[0], s->layer_len[1]);
    verify(id);
}

static void observe(uint64_t id, float *scores) {
    for (uint32_t l = 0; l < LAYERS; l++) {
        size_t n = m[id].layer_len[l];
        for (size_t i = 0; i < HEADS * n; i++) scores[i] = (float)below(1000) / 1000.0f / (float)n;
        EXPECT(kvc_seq_observe(e, id, l, scores, HEADS, n) == KVC_OK, "observe %" PRIu64 " layer %u", id, l);
    }
}

static void op_compact(void) {
    uint64_t id = pick(1, 0);
    if (!id || model_length(id) < 2) return;
    float scores[HEADS * MAX_TOKENS];
    observe(id, scores);
    size_t budget = 1 + below((uint32_t)model_length(id) - 1);
    kvc_status rc = kvc_seq_compact(e, id, budget);
    if (rc == KVC_ERR_OUT_OF_MEMORY) {
        verify(id);
        return;
    }
    EXPECT(rc == KVC_OK, "compact %" PRIu64 " to %zu: status %d", id, budget, rc);
    if (rc != KVC_OK) return;
    model_seq *s = &m[id];
    size_t rows = s->per_head ? HEADS : 1, kept_total = 0, held_total = 0;
    for (uint32_t l = 0; l < LAYERS; l++) held_total += s->layer_len[l];
    if (held_total > LAYERS * budget) held_total = LAYERS * budget; /* what the budgets allow in all */
    for (uint32_t l = 0; l < LAYERS; l++) {
        int32_t pos[HEADS * MAX_TOKENS];
        size_t n = 0, len = s->layer_len[l], want = len < budget ? len : budget;
        int listed = kvc_seq_positions(e, id, l, pos, HEADS * MAX_TOKENS, &n) == KVC_OK && n % rows == 0;
        if (adaptive && listed && n / rows >= 1 && n / rows <= len) want = n / rows; /* the layer's own budget */
        EXPECT(listed && n == rows * want, "compact %" PRIu64 " layer %u keeps %zu of %zu (budget %zu)", id, l, n / rows, len, budget);
        if (n != rows * want) continue;
        kept_total += want;
        for (size_t h = 0; h < HEADS; h++) {
            const int32_t *now = pos + (s->per_head ? h : 0) * want, *held = s->pos[l][h];
            /* The kept set is the policy's; where each kept token lands is the contract: kept
             * slots below the new length stay, kept slots past it fill the holes in slot order. */
            int kept[MAX_TOKENS] = {0};
            size_t found = 0;
            for (size_t i = 0; i < want; i++)
                for (size_t k = 0; k < len; k++)
                    if (held[k] == now[i] && !kept[k]) {
                        kept[k] = 1;
                        found++;
                        break;
                    }
            int32_t expect[MAX_TOKENS];
            place_kept(held, len, kept, want, expect);
            EXPECT(found == want && memcmp(expect, now, want * sizeof *now) == 0,
                   "compact %" PRIu64 " layer %u head %zu: the kept positions are held ones, placed as documented", id, l, h);
            memcpy(s->pos[l][h], now, want * sizeof *now);
        }
        s->layer_len[l] = want;
    }
    TRACE("compact %" PRIu64 " to %zu: layer lengths %zu, %zu", id, budget, s->layer_len[0], s->layer_len[1]);
    for (uint32_t l = 1; l < LAYERS; l++) covered.uneven += s->layer_len[l] != s->layer_len[0];
    /* Adaptive budgets move tokens between layers (a short layer's surplus goes to the
     * others), keeping the mean (rounding aside). */
    EXPECT(kept_total <= held_total + LAYERS, "compact %" PRIu64 ": %zu tokens kept over the layers for a mean budget of %zu", id,
           kept_total, budget);
    verify(id);
}

/* Episodic: a segment of what the sequence holds, then a focus, which may restore offloaded
 * tokens from disk into any slots: the model checks that each row keeps its length, holds
 * distinct positions the sequence really had, and that every byte is theirs. */
static void op_focus(void) {
    uint64_t id = pick(1, 0);
    if (!id || !m[id].episodic || m[id].next < 2) return;
    model_seq *s = &m[id];
    float embedding[4], query[4];
    for (int i = 0; i < 4; i++) {
        embedding[i] = (float)below(1000) / 500.0f - 1.0f;
        query[i] = (float)below(1000) / 500.0f - 1.0f;
    }
    size_t start = below((uint32_t)s->next - 1), end = start + 1 + below((uint32_t)(s->next - start - 1)) ;
    EXPECT(kvc_seq_add_segment(e, id, start, end, embedding, 4) == KVC_OK, "segment [%zu, %zu) of %" PRIu64, start, end, id);
    if (!s->segments || start > s->segment_start) s->segment_start = start;
    s->segments = 1;
    uint32_t episode = 0;
    kvc_status rc = kvc_seq_focus(e, id, query, 4, &episode);
    if (rc == KVC_ERR_OUT_OF_MEMORY) {
        verify(id);
        return;
    }
    EXPECT(rc == KVC_OK, "focus %" PRIu64 ": status %d", id, rc);
    if (rc != KVC_OK) return;
    size_t rows = s->per_head ? HEADS : 1;
    TRACE("focus %" PRIu64 " after segment [%zu, %zu): episode %u", id, start, end, episode);
    for (uint32_t l = 0; l < LAYERS; l++) {
        int32_t pos[HEADS * MAX_TOKENS];
        size_t n = 0, len = s->layer_len[l];
        EXPECT(kvc_seq_positions(e, id, l, pos, HEADS * MAX_TOKENS, &n) == KVC_OK && n == rows * len,
               "focus %" PRIu64 " layer %u keeps its length %zu (%zu)", id, l, len, n / rows);
        if (n != rows * len) continue;
        for (size_t h = 0; h < HEADS; h++) {
            const int32_t *now = pos + (s->per_head ? h : 0) * len;
            char seen[MAX_TOKENS] = {0};
            int ok = 1;
            for (size_t i = 0; i < len; i++) {
                ok &= now[i] >= 0 && (size_t)now[i] < s->next && !seen[now[i]];
                if (now[i] >= 0 && now[i] < MAX_TOKENS) seen[now[i]] = 1;
            }
            EXPECT(ok, "focus %" PRIu64 " layer %u head %zu: distinct positions the sequence had", id, l, h);
            memcpy(s->pos[l][h], now, len * sizeof *now);
        }
    }
    verify(id);
}

static void op_swap(void) {
    uint64_t id = pick(1, 1);
    if (!id) return;
    if (!m[id].swapped) {
        kvc_status rc = below(2) ? kvc_seq_swap_out(e, id) : kvc_seq_swap_out_async(e, id);
        /* With faults a swap-out that fails leaves the sequence resident and unchanged. */
        EXPECT(rc == KVC_OK || (faulty && rc == KVC_ERR_IO), "swap out %" PRIu64 ": status %d", id, rc);
        m[id].swapped = rc == KVC_OK;
        TRACE("swap out %" PRIu64 ": status %d", id, rc);
        if (rc != KVC_OK) verify(id);
        return;
    }
    kvc_status rc = kvc_seq_swap_in(e, id);
    if (rc == KVC_ERR_OUT_OF_MEMORY) return;
    /* KVC_ERR_IO: its asynchronous swap-out failed after returning; it is resident, unchanged. */
    EXPECT(rc == KVC_OK || (faulty && rc == KVC_ERR_IO), "swap in %" PRIu64 ": status %d", id, rc);
    if (rc != KVC_OK && rc != KVC_ERR_IO) return;
    m[id].swapped = 0;
    m[id].reading = rc == KVC_OK;
    TRACE("swap in %" PRIu64 ": status %d", id, rc);
    verify(id);
}

/* One call that must fail with its documented status; then nothing may have changed. */
static void op_bad(void) {
    uint64_t live = pick(1, 0), dead = pick(0, 1), swapped = 0, broken = 0;
    for (uint64_t id = 1; id <= IDS; id++) {
        if (m[id].live && m[id].swapped) swapped = id;
        if (m[id].live && m[id].broken) broken = id;
    }
    int32_t tokens[MAX_TOKENS + 1];
    for (int i = 0; i <= MAX_TOKENS; i++) tokens[i] = i;
    float scores[HEADS * (MAX_TOKENS + 1)];
    for (int i = 0; i < HEADS * (MAX_TOKENS + 1); i++) scores[i] = 0.01f;
    size_t n = 0;
    kvc_status want = KVC_ERR_INVALID_ARGUMENT, got;
    const char *what;
    float embedding[4] = {1, 0, 0, 0};
    uint32_t episode = 0;
    switch (below(18)) {
    case 0: if (!live) return; what = "create of a live id"; want = KVC_ERR_EXISTS; got = kvc_seq_create(e, live, tokens, 4, &n); break;
    case 1: if (!dead) return; what = "append to a freed id"; want = KVC_ERR_NOT_FOUND; got = kvc_seq_append(e, dead, tokens, 1); break;
    case 2: {
        uint64_t other = pick(1, 1);
        if (!live || !other) return;
        what = "fork onto a live id"; want = KVC_ERR_EXISTS; got = kvc_seq_fork(e, live, other);
        break;
    }
    case 3: if (!live) return; what = "compact to 0"; got = kvc_seq_compact(e, live, 0); break;
    case 4: if (!live) return; what = "observe with 3 heads"; got = kvc_seq_observe(e, live, 0, scores, HEADS + 1, 1); break;
    case 5:
        if (!live) return;
        what = "observe a NaN";
        scores[0] = NAN;
        got = kvc_seq_observe(e, live, 0, scores, HEADS, 1);
        break;
    case 6: if (!live) return; what = "observe past the layer"; got = kvc_seq_observe(e, live, 0, scores, HEADS, m[live].layer_len[0] + 1); break;
    case 7: if (!dead) return; what = "create past max_seq_tokens"; got = kvc_seq_create(e, dead, tokens, MAX_TOKENS + 1, &n); break;
    case 8: if (!swapped || faulty) return; what = "append to a swapped-out sequence"; got = kvc_seq_append(e, swapped, tokens, 1); break;
    case 9: if (!live) return; what = "swap in a resident sequence"; got = kvc_seq_swap_in(e, live); break;
    case 10: if (!live) return; what = "positions of a layer past num_layers"; got = kvc_seq_positions(e, live, LAYERS, NULL, 0, &n); break;
    case 11:
        if (!live) return;
        /* Past what the sequence holds; on a policy other than episodic any segment is refused first. */
        what = m[live].episodic ? "a segment past what the sequence holds" : "a segment of a sequence that is not episodic";
        if (!m[live].episodic) want = KVC_ERR_UNSUPPORTED;
        got = kvc_seq_add_segment(e, live, 0, m[live].next + 1, embedding, 4);
        break;
    case 12: if (!swapped || faulty) return; what = "compact a swapped-out sequence"; got = kvc_seq_compact(e, swapped, 1); break;
    case 13:
        if (!live || !m[live].episodic) return;
        what = "focus with an embedding of the wrong dimension";
        got = kvc_seq_focus(e, live, embedding, 3, &episode);
        break;
    case 14: if (!live) return; what = "schedule past the length"; got = kvc_seq_schedule(e, live, MAX_TOKENS + 1); break;
    case 15: if (!dead) return; what = "schedule a freed id"; want = KVC_ERR_NOT_FOUND; got = kvc_seq_schedule(e, dead, 1); break;
    case 16: {
        /* kvcache.h, kvc_seq_ready: a sequence a failed read spoiled refuses every call that
         * reaches or changes its K/V, and keeps its length. */
        if (!broken) return;
        want = KVC_ERR_IO;
        void *k = NULL, *v = NULL;
        int32_t table[MAX_TOKENS / BLOCK + 1];
        switch (below(4)) {
        case 0: what = "append to a broken sequence"; got = kvc_seq_append(e, broken, tokens, 1); break;
        case 1: what = "truncate a broken sequence"; got = kvc_seq_truncate(e, broken, 1); break;
        case 2:
            if (!dead) return;
            what = "fork a broken sequence";
            got = kvc_seq_fork(e, broken, dead);
            break;
        default:
            what = "reach a broken sequence's K/V";
            got = paged ? kvc_seq_block_table(e, broken, table, MAX_TOKENS / BLOCK + 1, &n)
                          : kvc_seq_kv(e, broken, 0, &k, &v);
            break;
        }
        size_t length = 0;
        EXPECT(kvc_seq_length(e, broken, &length) == KVC_OK && length == model_length(broken),
               "%s: length %zu, model %zu", what, length, model_length(broken));
        covered.broken_refused++;
        break;
    }
    default: if (!dead) return; what = "free a freed id"; want = KVC_ERR_NOT_FOUND; got = kvc_seq_free(e, dead); break;
    }
    EXPECT(got == want, "%s: status %d, want %d", what, got, want);
    EXPECT(strlen(kvc_last_error()) > 0, "%s: no message", what);
    verify_all();
}

/* Creates the engine; with faults, its disk dies after 50-300 requests (each engine anew). */
static void create_engine(const kvc_config *cfg) {
    if (faulty) {
        char fault[4200];
        snprintf(fault, sizeof fault, "all:%u@%s", 50 + below(250), cfg->offload_dir);
        setenv("KVCACHE_OFFLOAD_FAULT", fault, 1);
    }
    kvc_status rc = kvc_engine_create(cfg, &e);
    unsetenv("KVCACHE_OFFLOAD_FAULT");
    if (rc != KVC_OK) {
        fprintf(stderr, "abi_model: kvc_engine_create: %s\n", kvc_last_error());
        exit(1);
    }
}

/* Adds the engine's counters to what the runs reached; returns the run's disk errors so far
 * (over restarts). */
static uint64_t run_errors, run_restarts;
static uint64_t account(void) {
    kvc_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    kvc_engine_stats(e, &st);
    EXPECT(st.disk_spills_failed <= st.blocks_spilled && st.disk_spills_failed <= st.disk_errors,
           "disk_spills_failed %" PRIu64 " is part of blocks_spilled %" PRIu64 " and of disk_errors %" PRIu64, st.disk_spills_failed,
           st.blocks_spilled, st.disk_errors);
    covered.spilled += st.blocks_spilled;
    covered.written_ahead += st.disk_blocks_written_ahead;
    covered.spills_failed += st.disk_spills_failed;
    covered.loaded += st.blocks_loaded;
    covered.swaps += st.swap_outs + st.swap_outs_cancelled;
    covered.offloaded += st.tokens_offloaded;
    covered.restored += st.tokens_restored;
    covered.disk_errors += st.disk_errors;
    covered.peer_hits += st.peer_hits;
    covered.declined += st.disk_declined_hit_tokens;
    return run_errors += st.disk_errors;
}

/* The run's tier directories: dirs[0] first, the current instance's last. */
static char dirs[MAX_DIRS][64];
static int ndirs;
static char peer_list[MAX_DIRS * 64];

/* The server restarts: every sequence ends, and a new engine on the same directory finds the
 * spilled prefix blocks again through the journal; creates then check their bytes as ever.
 * Or (`new_instance`) a new instance starts on a fresh directory, reading every earlier
 * directory as a peer; the router keeps what it knew those tiers held (PEERS).
 * (With faults, the new engine's disk dies again after a while.) */
static void op_restart(kvc_config *cfg, int new_instance) {
    kvc_status rc = kvc_engine_sync(e);
    EXPECT(rc == KVC_OK || (faulty && rc == KVC_ERR_IO), "sync before the restart: status %d", rc);
    /* The router hears what the engine wrote up to its end (spills that completed in the
     * sync): a later instance reads them as a peer's. */
    drain();
    account();
    kvc_engine_destroy(e);
    memset(m, 0, sizeof m);
    new_instance = new_instance && ndirs < MAX_DIRS; /* else a restart on the same directory */
    if (new_instance) {
        /* What the old instance's tier holds, as its events said; and what its memory held:
         * the writeback thread may write a cold cached block ahead after the sync, its write
         * completing (journaled, so a peer reads it) in the destroy, whose events no one can
         * drain (seen under AddressSpaceSanitizer's timing: seed 4, step 579). */
        for (size_t i = 0; i < VIEW_SLOTS; i++) {
            if (view[1][i] > 1) view[PEERS][view_find(PEERS, view[1][i])] = view[1][i];
            if (view[UNJOURNALED][i] > 1) view[PEERS][view_find(PEERS, view[UNJOURNALED][i])] = view[UNJOURNALED][i];
            if (cfg->offload_writeback && view[0][i] > 1) view[PEERS][view_find(PEERS, view[0][i])] = view[0][i];
        }
        size_t used = 0;
        for (int d = 0; d < ndirs; d++) used += (size_t)snprintf(peer_list + used, sizeof peer_list - used, "%s%s", d ? ":" : "", dirs[d]);
        snprintf(dirs[ndirs], sizeof dirs[ndirs], "/tmp/kvcache-abi-model-XXXXXX");
        if (!mkdtemp(dirs[ndirs])) {
            perror("abi_model: mkdtemp");
            exit(1);
        }
        cfg->offload_dir = dirs[ndirs++];
        cfg->peer_offload_dirs = peer_list;
        covered.instances++;
        TRACE("new instance on %s, peers %s", cfg->offload_dir, peer_list);
    }
    /* Restarted on its own directory, the router keeps its view of the instance (it need not
     * notice the restart): the new engine's events must reset it. A new instance starts with
     * an empty view, as a router adding it does. */
    if (new_instance) memset(view, 0, 2 * sizeof view[0]);
    /* Restarted on its own directory, the engine finds the unjournaled blocks in its journal
     * and announces them with the rest of its tier. */
    memset(view[UNJOURNALED], 0, sizeof view[UNJOURNALED]);
    create_engine(cfg);
    drain_creation();
    kvc_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    kvc_engine_stats(e, &st);
    covered.restarts++;
    run_restarts++;
    covered.found_on_restart += st.disk_stored_bytes;
    TRACE("restart: %" PRIu64 " bytes of blocks found on disk", st.disk_stored_bytes);
}

static void run(uint32_t layout, uint64_t s, int steps) {
    paged = layout == KVC_LAYOUT_PAGED;
    layout_name = paged ? "paged" : "contiguous";
    seed = rng = s;
    run_errors = run_restarts = 0;
    memset(view, 0, sizeof view);
    adaptive = s % 2 == 0; /* even seeds: per-layer budgets from the observed entropy, so layers differ */
    memset(m, 0, sizeof m);
    snprintf(dirs[0], sizeof dirs[0], "/tmp/kvcache-abi-model-XXXXXX");
    if (!mkdtemp(dirs[0])) {
        perror("abi_model: mkdtemp");
        exit(1);
    }
    ndirs = 1;
    kvc_config cfg;
    kvc_config_init(&cfg);
    cfg.num_layers = LAYERS;
    cfg.num_kv_heads = HEADS;
    cfg.head_dim = 8;
    cfg.dtype_bytes = 2;
    cfg.block_tokens = BLOCK;
    cfg.layout = layout;
    cfg.max_seqs = IDS;
    cfg.max_seq_tokens = MAX_TOKENS;
    cfg.page_bytes = 4096;
    cfg.memory_bytes = 256u << 10; /* about 2,000 tokens: creates run out of memory */
    cfg.eviction_policy = KVC_EVICTION_HEAVY_HITTER;
    cfg.embedding_dim = 4;
    cfg.adaptive_budgets = (uint32_t)adaptive;
    cfg.offload_dir = dirs[0];
    cfg.offload_bytes = 16u << 20;
    cfg.model_tag = 0xAB; /* peers need a model named */
    /* Seeds 1, 4, 7...: prompts are indexed as scheduled (kvc_seq_schedule after the create
     * wrote them, in one or two steps, or not at all until an append). */
    scheduling = s % 3 == 1;
    cfg.index_on_schedule = (uint32_t)scheduling;
    /* Seeds 3, 7, 11...: the disk dies after 50-300 requests (every later read and write
     * fails): the engine must keep serving what is in memory and never serve a failed read. */
    faulty = s % 4 == 3;
    /* Seeds 2, 7, 12...: creates choose between reading a prefix back and the prefill. */
    const double speeds[] = {1e4, 1e5, 1e6, 1e7};
    cfg.prefill_tokens_per_s = s % 5 == 2 ? speeds[(s / 5 + 3) % 4] : 0.0; /* seed 2: 10^7 */
    /* Even seeds: the writeback thread writes cold blocks ahead of their eviction. */
    cfg.offload_writeback = s % 2 == 0;
    create_engine(&cfg);
    drain_creation();
    for (step = 0; step < steps && failures == 0; step++) {
        if (below(500) == 0) {
            op_restart(&cfg, (int)below(2));
            continue;
        }
        uint32_t r = below(100);
        if (r < 22) op_create();
        else if (r < 44) op_append();
        else if (r < 52) op_fork();
        else if (r < 64) op_free();
        else if (r < 72) op_compact();
        else if (r < 76) op_focus();
        else if (r < 82) op_swap();
        else if (r < 84) {
            kvc_status rc = kvc_engine_trim(e);
            EXPECT(rc == KVC_OK || (faulty && rc == KVC_ERR_IO), "trim: status %d", rc);
        }
        else if (r < 88) op_truncate();
        else op_bad();
    }
    if (failures == 0) verify_all();
    uint64_t errors = account();
    /* (A restart gives the new engine a new count of requests before its disk dies.) */
    EXPECT(failures > 0 || !faulty || steps < 3000 || run_restarts > 0 || errors > 0, "the disk died (%" PRIu64 " disk errors)", errors);
    EXPECT(faulty || errors == 0, "no disk errors without faults (%" PRIu64 ")", errors);
    kvc_engine_destroy(e);
    for (int d = 0; d < ndirs; d++) remove_tier_dir(dirs[d]);
}

int main(int argc, char **argv) {
    int seeds = argc > 1 ? atoi(argv[1]) : 4, steps = argc > 2 ? atoi(argv[2]) : 3000, first = argc > 3 ? atoi(argv[3]) : 1;
    tracing = getenv("ABI_MODEL_TRACE") != NULL;
    for (int s = first; s < first + seeds && failures == 0; s++) {
        run(KVC_LAYOUT_PAGED, (uint64_t)s, steps);
        run(KVC_LAYOUT_CONTIGUOUS, (uint64_t)s, steps);
    }
    printf("abi_model: %d seeds x %d steps per layout, %s; reached: %" PRIu64 " blocks spilled (%" PRIu64
           " written ahead by the writeback thread, %" PRIu64 " of all failed), %" PRIu64 " loaded, %" PRIu64 " swap-outs, %" PRIu64 " tokens offloaded, %" PRIu64 " restored, %" PRIu64
           " compactions leaving layers of different lengths, %" PRIu64 " disk errors (injected), %" PRIu64
           " sequences broken by a failed read (%" PRIu64 " calls on them refused), %" PRIu64 " restarts finding %" PRIu64 " KiB on disk (%" PRIu64
           " as new instances reading the earlier ones' tiers, %" PRIu64 " peer blocks served), %" PRIu64
           " prefills scheduled in steps, %" PRIu64 " truncations, %" PRIu64 " prompt tokens found on disk left to the prefill, %" PRIu64
           " events checked\n",
           seeds, steps, failures ? "FAILED" : "every check held", covered.spilled, covered.written_ahead, covered.spills_failed, covered.loaded, covered.swaps,
           covered.offloaded, covered.restored, covered.uneven, covered.disk_errors, covered.broken, covered.broken_refused, covered.restarts,
           covered.found_on_restart >> 10, covered.instances, covered.peer_hits, covered.schedules, covered.truncations,
           covered.declined, events_seen);
    printf("abi_model: %d passed, %d failed\n", failures == 0, failures != 0);
    return failures == 0 ? 0 : 1;
}
