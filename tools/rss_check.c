/* rss_check: whole-process resident memory of an engine, as a server embedding libkvcache sees it.
 *
 * For each layout: VmRSS right after creating an engine with an 8 GiB budget grows by less than
 * 64 MiB; with N live tokens written through the ABI's pointers it stays within
 * N x token bytes (all layers, K and V) + two pages per tensor per sequence + 64 MiB, and grows by
 * at least 95% of the bytes written (so the measurement is real, with room for the allocator
 * returning unrelated heap to the OS meanwhile); after freeing everything and
 * kvc_engine_trim it is back within 64 MiB of the start. Single-threaded, so VmRSS is this
 * program's own. Prints "rss_check: N passed, M failed"; exits non-zero on any failure. */
#include "kvcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024ull * 1024ull)

static int passed, failed;

static void check(int ok, const char *what, unsigned long long got, unsigned long long limit) {
    if (ok) passed++;
    else failed++;
    printf("%-4s %-58s %8llu MiB (limit %llu MiB)\n", ok ? "ok" : "FAIL", what, got / MIB, limit / MIB);
}

static unsigned long long rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024;
}

static int must(kvc_status s, const char *call) {
    if (s == KVC_OK) return 0;
    fprintf(stderr, "rss_check: %s failed: %s: %s\n", call, kvc_status_name(s), kvc_last_error());
    exit(2);
}

/* Writes every K and V byte of tokens [from, from + n) of `seq`. */
static void fill(kvc_engine *e, const kvc_config *c, uint64_t seq, size_t from, size_t n) {
    size_t tb = (size_t)c->num_kv_heads * c->head_dim * c->dtype_bytes;
    static int32_t table[65536];
    size_t blocks = 0;
    if (c->layout == KVC_LAYOUT_PAGED) must(kvc_seq_block_table(e, seq, table, 65536, &blocks), "kvc_seq_block_table");
    for (uint32_t layer = 0; layer < c->num_layers; layer++) {
        void *k, *v;
        if (c->layout == KVC_LAYOUT_CONTIGUOUS) {
            must(kvc_seq_kv(e, seq, layer, &k, &v), "kvc_seq_kv");
            memset((char *)k + from * tb, 0x5a, n * tb);
            memset((char *)v + from * tb, 0xa5, n * tb);
            continue;
        }
        for (size_t pos = from; pos < from + n; pos++) {
            must(kvc_block_kv(e, table[pos / c->block_tokens], layer, &k, &v), "kvc_block_kv");
            size_t off = (pos % c->block_tokens) * tb;
            memset((char *)k + off, 0x5a, tb);
            memset((char *)v + off, 0xa5, tb);
        }
    }
}

static void run(uint32_t layout) {
    const char *name = layout == KVC_LAYOUT_PAGED ? "paged" : "contiguous";
    kvc_config c;
    kvc_config_init(&c);
    c.layout = layout;
    c.num_layers = 32;
    c.num_kv_heads = 8;
    c.head_dim = 128;
    c.dtype_bytes = 2;
    c.block_tokens = 16;
    c.memory_bytes = 8ull << 30;
    c.page_bytes = 64 << 10;
    c.max_seqs = 16;
    c.max_seq_tokens = 8192;
    unsigned long long start = rss_bytes();
    kvc_engine *e = NULL;
    must(kvc_engine_create(&c, &e), "kvc_engine_create");
    char what[128];
    snprintf(what, sizeof what, "%s: growth after creating an 8 GiB engine", name);
    check(rss_bytes() - start < 64 * MIB, what, rss_bytes() - start, 64 * MIB);

    const size_t lengths[4] = {1200, 1500, 999, 1301};
    static int32_t tokens[8192];
    unsigned long long live = 0;
    for (uint64_t s = 0; s < 4; s++) {
        for (size_t i = 0; i < lengths[s] + 37; i++) tokens[i] = (int32_t)(s * 100000 + i);
        size_t cached = 0;
        must(kvc_seq_create(e, s, tokens, lengths[s], &cached), "kvc_seq_create");
        fill(e, &c, s, 0, lengths[s]);
        must(kvc_seq_append(e, s, tokens + lengths[s], 37), "kvc_seq_append");
        fill(e, &c, s, lengths[s], 37);
        live += lengths[s] + 37;
    }
    unsigned long long per_token = 2ull * c.num_layers * c.num_kv_heads * c.head_dim * c.dtype_bytes;
    unsigned long long written = live * per_token;
    unsigned long long slack = 2ull * c.page_bytes * 2 * c.num_layers * 4;
    unsigned long long grown = rss_bytes() - start;
    snprintf(what, sizeof what, "%s: %llu live tokens written, at most", name, live);
    check(grown <= written + slack + 64 * MIB, what, grown, written + slack + 64 * MIB);
    snprintf(what, sizeof what, "%s: %llu live tokens written, at least", name, live);
    check(grown >= written / 20 * 19, what, grown, written / 20 * 19);

    for (uint64_t s = 0; s < 4; s++) must(kvc_seq_free(e, s), "kvc_seq_free");
    must(kvc_engine_trim(e), "kvc_engine_trim");
    grown = rss_bytes() > start ? rss_bytes() - start : 0;
    snprintf(what, sizeof what, "%s: growth after freeing all and trimming", name);
    check(grown < 64 * MIB, what, grown, 64 * MIB);
    kvc_engine_destroy(e);
}

int main(void) {
    run(KVC_LAYOUT_PAGED);
    run(KVC_LAYOUT_CONTIGUOUS);
    printf("rss_check: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
