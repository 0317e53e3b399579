/* chainwalk.c: with a disk tier, the cost of an append that evicts cached blocks when the
 * cached blocks are one long freed chain of L blocks (each eviction spills the chain's
 * missing ancestors first).
 *
 * Figure: docs/disk-tier.md, "With a single long chain it did not stay small" (a mean of
 * 348 / 1,093 / 4,480 us in each of the first 100 evicting appends at L = 4,096 / 16,384 /
 * 65,536 before the fix). Session 49's scale reviewer's driver.
 *
 * Set-up: a paged engine of 1-byte tokens (1 layer, 1 head, head_dim 1), 16-token blocks, a
 * memory budget of L + 256 blocks; one sequence of L blocks created and freed (its blocks
 * cached); a filler sequence takes the free blocks; then a sequence appends 16 tokens at a
 * time, each append evicting cached blocks, until fewer than 16 are cached.
 *
 * Build (release library, as tools/run_abi_client.sh links its clients; tools/repro/build.sh
 * builds every driver here):
 *   swift build -c release --product kvcache && BIN=$(swift build -c release --show-bin-path)
 *   gcc -std=c11 -O2 -I include tools/repro/chainwalk.c -L$BIN -lkvcache -Wl,-rpath,$BIN -o chainwalk
 * Run:  ./chainwalk L DIR [WRITEBACK]   (DIR an empty directory for the tier; WRITEBACK 1 sets
 *       offload_writeback; L from 256: the filler must fit one sequence; the docs: L = 4096, 16384,
 *       65536)
 */
#define _GNU_SOURCE
#include "kvcache.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define CK(x) do { kvc_status s_ = (x); if (s_) { fprintf(stderr, "%s:%d %s -> %s: %s\n", __FILE__, __LINE__, #x, kvc_status_name(s_), kvc_last_error()); exit(1); } } while (0)

static void drain(kvc_engine *e) {
    static kvc_event ev[8192];
    size_t n;
    do CK(kvc_drain_events(e, ev, 8192, &n)); while (n);
}

int main(int argc, char **argv) {
    long chain = argc > 2 ? atol(argv[1]) : 0;
    if (argc < 3 || argc > 4 || chain < 256 || chain > (1 << 20)) {
        fprintf(stderr, "usage: chainwalk L DIR [WRITEBACK]  (L: 256 to 1048576 blocks)\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    kvc_config c;
    kvc_config_init(&c);
    c.num_layers = 1; c.num_kv_heads = 1; c.head_dim = 1; c.dtype_bytes = 1; c.block_tokens = 16;
    c.max_seqs = 16; c.max_seq_tokens = (uint32_t)(chain * 16 + 32); c.page_bytes = 4096;
    c.memory_bytes = (uint64_t)(chain + 256) * 32;
    c.offload_dir = argv[2];
    c.offload_bytes = (uint64_t)(chain + 4096) * 8192;
    if (argc > 3) c.offload_writeback = (uint32_t)atoi(argv[3]);
    kvc_engine *e;
    CK(kvc_engine_create(&c, &e));
    size_t cached;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(chain * 16 + 1));
    if (!tok) return 1;
    for (long i = 0; i < chain * 16 + 1; i++) tok[i] = (int32_t)(i * 7919 + 13);
    CK(kvc_seq_create(e, 1, tok, (size_t)(chain * 16 + 1), &cached));
    CK(kvc_seq_free(e, 1));
    free(tok);
    drain(e);
    kvc_stats st = {.struct_size = sizeof st};
    CK(kvc_engine_stats(e, &st));
    printf("L=%ld cached=%llu total=%llu\n", chain, (unsigned long long)st.blocks_cached, (unsigned long long)st.blocks_total);
    /* The filler takes every free block, so that each later append evicts cached ones. */
    uint64_t free_blocks = st.blocks_total - st.blocks_used - st.blocks_cached;
    int32_t *filler = malloc(sizeof(int32_t) * (size_t)(free_blocks * 16 + 1));
    if (!filler) return 1;
    for (uint64_t i = 0; i < free_blocks * 16; i++) filler[i] = (int32_t)(2000000000 - (int64_t)i);
    CK(kvc_seq_create(e, 3, filler, (size_t)(free_blocks * 16), &cached));
    free(filler);
    CK(kvc_engine_stats(e, &st));
    uint64_t evicted0 = st.blocks_evicted;
    int32_t p[16];
    for (int i = 0; i < 16; i++) p[i] = 1000000000 + i;
    CK(kvc_seq_create(e, 2, p, 16, &cached));
    long k = 0, evicting = 0, first = 0;
    double total = 0, firstTotal = 0, worst = 0;
    for (;;) {
        CK(kvc_engine_stats(e, &st));
        if (st.blocks_cached < 16) break;
        for (int i = 0; i < 16; i++) p[i] = (int32_t)(1100000000 + k * 16 + i);
        double a = now();
        CK(kvc_seq_append(e, 2, p, 16));
        double b = now();
        total += b - a;
        evicting++;
        if (evicting <= 100) { firstTotal += b - a; first++; }
        if (b - a > worst) worst = b - a;
        CK(kvc_engine_poll(e, 1000));
        drain(e);
        k++;
    }
    CK(kvc_engine_sync(e));
    CK(kvc_engine_stats(e, &st));
    printf("L=%ld evicting appends (16 tokens) %ld: first 100 mean %.1f us, all mean %.1f us, worst %.1f ms, total %.3f s; "
           "blocks_spilled %llu spills_skipped %llu evicted %llu\n",
           chain, evicting, first ? firstTotal / (double)first * 1e6 : 0, evicting ? total / (double)evicting * 1e6 : 0,
           worst * 1e3, total, (unsigned long long)st.blocks_spilled, (unsigned long long)st.spills_skipped,
           (unsigned long long)(st.blocks_evicted - evicted0));
    kvc_engine_destroy(e);
    return 0;
}
