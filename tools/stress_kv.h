/* stress_kv.h — what the multi-threaded stress clients (abi_stress, abi_churn) share: the
 * engine shape they configure, their check counters, the K/V bytes every token must hold and
 * their writing and checking through the pointers the ABI returns, waiting for a sequence's
 * disk reads, and retrying calls the budget refuses while other threads hold it.
 *
 * Include after defining STRESS_NAME (the client's name, prefixing its messages), with
 * _DEFAULT_SOURCE defined (usleep). */
#ifndef KVC_TOOLS_STRESS_KV_H
#define KVC_TOOLS_STRESS_KV_H

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kvcache.h"

enum {
    BLOCK = 16,
    MAX_TOKENS = 1024,
    TOKEN_BYTES = 64, /* 2 KV heads x 16 dims x 2 bytes */
    HEADS = 2,
    HEAD_DIM = 16,
    HEAD_BYTES = TOKEN_BYTES / HEADS,
    LAYERS = 4,
    MAX_BLOCKS = MAX_TOKENS / BLOCK,
};

static atomic_uint_fast64_t passed, failed;

#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        if (cond) {                                                                          \
            atomic_fetch_add(&passed, 1);                                                    \
        } else {                                                                             \
            atomic_fetch_add(&failed, 1);                                                    \
            fprintf(stderr, STRESS_NAME ": FAILED: " __VA_ARGS__);                           \
            fprintf(stderr, " (%s:%d; last error: %s)\n", __FILE__, __LINE__, kvc_last_error()); \
        }                                                                                    \
    } while (0)

/* Sets the shape above (and `layout`) on a kvc_config_init'ed config. */
static inline void stress_shape(kvc_config *cfg, uint32_t layout) {
    cfg->num_layers = LAYERS;
    cfg->num_kv_heads = HEADS;
    cfg->head_dim = HEAD_DIM;
    cfg->dtype_bytes = TOKEN_BYTES / (HEADS * HEAD_DIM);
    cfg->block_tokens = BLOCK;
    cfg->layout = layout;
    cfg->max_seq_tokens = MAX_TOKENS;
    cfg->page_bytes = 4096;
}

/* The K/V byte of (token, position, layer, tensor, byte) under cache salt `salt`: the same
 * wherever it is cached, and different under another salt (another adapter's K/V). */
static inline uint8_t pattern(uint64_t salt, int32_t token, size_t pos, uint32_t layer, uint32_t tensor, size_t b) {
    uint64_t x = (uint64_t)(uint32_t)token * 0x9E3779B97F4A7C15ull ^ (uint64_t)pos * 0xC2B2AE3D27D4EB4Full ^
                 ((uint64_t)layer << 40) ^ ((uint64_t)tensor << 48) ^ b ^ salt * 0xD6E8FEB86659FD93ull;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    return (uint8_t)(x >> 56);
}

/* Address of (layer, tensor) of slot `t` of `seq`; `table` is its block table when `paged`. */
static inline uint8_t *token_address(kvc_engine *e, int paged, uint64_t seq, const int32_t *table, uint32_t layer,
                                     uint32_t tensor, size_t t) {
    void *k = NULL, *v = NULL;
    kvc_status rc = paged ? kvc_block_kv(e, table[t / BLOCK], layer, &k, &v) : kvc_seq_kv(e, seq, layer, &k, &v);
    if (rc != KVC_OK) return NULL;
    return (uint8_t *)(tensor == 0 ? k : v) + (paged ? t % BLOCK : t) * TOKEN_BYTES;
}

/* Writes (check = 0) or compares (check = 1) the bytes of tokens [from, to) of `seq` under
 * `salt`; 1 when all match. */
static inline int kv(kvc_engine *e, int paged, uint64_t salt, uint64_t seq, const int32_t *tokens, size_t from, size_t to,
                     int check) {
    int32_t table[MAX_BLOCKS];
    size_t n = 0;
    if (paged && kvc_seq_block_table(e, seq, table, MAX_BLOCKS, &n) != KVC_OK) return 0;
    uint8_t buf[TOKEN_BYTES];
    for (uint32_t layer = 0; layer < LAYERS; layer++)
        for (uint32_t tensor = 0; tensor < 2; tensor++)
            for (size_t t = from; t < to; t++) {
                uint8_t *p = token_address(e, paged, seq, table, layer, tensor, t);
                if (!p) return 0;
                for (size_t b = 0; b < TOKEN_BYTES; b++) buf[b] = pattern(salt, tokens[t], t, layer, tensor, b);
                /* Byte by byte, not memcpy / memcmp: ThreadSanitizer checks each of these
                 * accesses, while this toolchain's memcpy and memset interceptors report no
                 * race (helper-175), so a race between these writes and the engine's copies
                 * would pass unseen (tools/tsan_control.c checks that one is seen). */
                for (size_t b = 0; b < TOKEN_BYTES; b++) {
                    if (!check) p[b] = buf[b];
                    else if (p[b] != buf[b]) return 0;
                }
            }
    return 1;
}

/* Polls until `seq` is ready; 1 when it is, 0 after 20 s or on an error. */
static inline int wait_ready(kvc_engine *e, uint64_t seq) {
    for (int i = 0; i < 20000; i++) {
        int ready = 0;
        if (kvc_seq_ready(e, seq, &ready) != KVC_OK) return 0;
        if (ready) return 1;
        kvc_engine_poll(e, 1000);
    }
    return 0;
}

/* Runs `op` until it is not out of memory (other threads free theirs), at most ~10 s,
 * counting each retry in `retries`. */
#define RETRY_OOM(retries, rc, op)                                             \
    do {                                                                       \
        for (int attempt = 0; attempt < 2000; attempt++) {                     \
            (rc) = (op);                                                       \
            if ((rc) != KVC_ERR_OUT_OF_MEMORY) break;                          \
            (retries)++;                                                       \
            usleep(5000);                                                      \
        }                                                                      \
    } while (0)

/* Prints the checks made and the client's one test line ("NAME: 1 passed, 0 failed", one test
 * in tools/test.sh's count); returns the exit status. */
static inline int stress_report(void) {
    uint_fast64_t bad = atomic_load(&failed);
    printf(STRESS_NAME ": %" PRIuFAST64 " checks made, %" PRIuFAST64 " failed\n", atomic_load(&passed) + bad, bad);
    printf(STRESS_NAME ": %d passed, %d failed\n", bad == 0, bad != 0);
    return bad == 0 ? 0 : 1;
}

#endif
