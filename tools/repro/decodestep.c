/* One decode step of a server for R running sequences: append one token to each and re-read
 * each block table (what kvcache.h asks after kvc_seq_append), with single calls
 * (kvc_seq_append + kvc_seq_block_table per sequence) and with the batched calls
 * (kvc_seq_append_batch + kvc_seq_block_tables, KVC_1.3, one of each per step). Prints the
 * median step time of each over STEPS steps, alternating. The model of the figures in
 * kvcache.h (BATCHES) and README: 8 layers, 2 KV heads x 64 dims fp16, 16-token blocks,
 * prompts of 1024 tokens (64 blocks; ~65-90 blocks while decoding), R = 256, STEPS = 200.
 * tools/repro/decode_step.py measures the same from Python ctypes.
 *
 *   decodestep [R [STEPS]]
 */
#define _POSIX_C_SOURCE 200809L
#include "kvcache.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { PROMPT = 1024, ROW = 512 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void must(kvc_status st, const char *what) {
    if (st != KVC_OK) {
        fprintf(stderr, "decodestep: %s: %s %s\n", what, kvc_status_name(st), kvc_last_error());
        exit(1);
    }
}

int main(int argc, char **argv) {
    size_t r = argc > 1 ? strtoul(argv[1], NULL, 10) : 256, steps = argc > 2 ? strtoul(argv[2], NULL, 10) : 200;
    if (r == 0 || r > 4096 || steps == 0 || steps > 100000) {
        fprintf(stderr, "usage: decodestep [R (1-4096) [STEPS (1-100000)]]\n");
        return 2;
    }
    kvc_config c;
    kvc_config_init(&c);
    c.num_layers = 8;
    c.num_kv_heads = 2;
    c.head_dim = 64;
    c.block_tokens = 16;
    c.max_seqs = (uint32_t)r;
    c.max_seq_tokens = 8192;
    c.memory_bytes = (uint64_t)r * (PROMPT + steps * 2 + 64) * 8 * 2 * 256;
    kvc_engine *e;
    must(kvc_engine_create(&c, &e), "kvc_engine_create");
    uint64_t *seqs = malloc(r * sizeof *seqs);
    int32_t *tokens = malloc(r * sizeof *tokens), *tables = malloc(r * ROW * sizeof *tables), prompt[PROMPT];
    size_t *counts = malloc(r * sizeof *counts), cached;
    kvc_status *statuses = malloc(r * sizeof *statuses);
    double *single = malloc(steps * sizeof *single), *batched = malloc(steps * sizeof *batched);
    if (!seqs || !tokens || !tables || !counts || !statuses || !single || !batched) return 1;
    for (size_t s = 0; s < r; s++) {
        seqs[s] = s;
        tokens[s] = 7;
        for (int i = 0; i < PROMPT; i++) prompt[i] = (int32_t)(s * 100003 + (size_t)i);
        must(kvc_seq_create(e, s, prompt, PROMPT, &cached), "kvc_seq_create");
    }
    for (size_t i = 0; i < steps; i++) {
        double t0 = now();
        for (size_t s = 0; s < r; s++) {
            must(kvc_seq_append(e, seqs[s], &tokens[s], 1), "kvc_seq_append");
            must(kvc_seq_block_table(e, seqs[s], &tables[s * ROW], ROW, &counts[s]), "kvc_seq_block_table");
        }
        double t1 = now();
        must(kvc_seq_append_batch(e, seqs, tokens, r, statuses), "kvc_seq_append_batch");
        must(kvc_seq_block_tables(e, seqs, r, tables, ROW, counts, statuses), "kvc_seq_block_tables");
        double t2 = now();
        single[i] = t1 - t0;
        batched[i] = t2 - t1;
    }
    qsort(single, steps, sizeof *single, cmp);
    qsort(batched, steps, sizeof *batched, cmp);
    printf("decodestep: %zu sequences (%zu blocks each at the end), median of %zu steps: single calls %.1f us "
           "(%.0f ns per call), batched %.1f us (%.0f ns per sequence)\n",
           r, counts[0], steps, single[steps / 2] * 1e6, single[steps / 2] * 1e9 / (double)(2 * r),
           batched[steps / 2] * 1e6, batched[steps / 2] * 1e9 / (double)r);
    kvc_engine_destroy(e);
    return 0;
}
