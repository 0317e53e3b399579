/*
 * disk_restart — restart time and memory of a disk tier at millions of slots
 * (docs/disk-tier.md, "Restart at millions of slots"). Tiny blocks (1 layer, 1 head,
 * head_dim 16, fp16, block_tokens 16: 1 KiB of K/V in an 8 KiB slot); prompts of 256 blocks,
 * each distinct.
 *
 *   disk_restart fill DIR SLOTS CHURN_PERCENT destroy|kill
 *       fills a SLOTS-slot tier with (100 + CHURN_PERCENT)% of its slots' worth of prompts
 *       (the churn frees and stores slots again), trims, syncs, prints the journal's size,
 *       then destroys the engine or SIGKILLs itself.
 *   disk_restart open DIR SLOTS [PROMPTS]
 *       times kvc_engine_create on DIR, prints VmRSS before and VmHWM after it, the blocks
 *       recovered and the compacted journal's size; with PROMPTS (the fill's count) looks 64
 *       of the newest prompts up and prints how many tokens hit.
 *
 * Build against the release library (tools/run_abi_client.sh's way), e.g.
 *   gcc -O2 -I include tools/repro/disk_restart.c -L$BIN -lkvcache -Wl,-rpath,$BIN -o disk_restart
 * (tools/repro/build.sh builds it and runs it small).
 * A SLOTS-slot tier takes SLOTS x 8 KiB of disk.
 */
#define _GNU_SOURCE
#include "kvcache.h"
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BT 16
#define PROMPT_BLOCKS 256
#define PROMPT (BT * PROMPT_BLOCKS)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static long status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, strlen(key)) == 0) v = atol(line + strlen(key) + 1);
    fclose(f);
    return v;
}

static void must(kvc_status s, const char *what) {
    if (s != KVC_OK) {
        fprintf(stderr, "%s: %s: %s\n", what, kvc_status_name(s), kvc_last_error());
        exit(1);
    }
}

static void config(kvc_config *c, const char *dir, uint64_t slots) {
    kvc_config_init(c);
    c->num_layers = 1;
    c->num_kv_heads = 1;
    c->head_dim = 16;
    c->dtype_bytes = 2;
    c->block_tokens = BT;
    c->max_seqs = 4;
    c->max_seq_tokens = PROMPT;
    c->memory_bytes = 32u << 20;
    c->page_bytes = 4096;
    c->offload_dir = dir;
    c->offload_bytes = slots * 8192;
}

static void prompt(int32_t *t, uint64_t n) {
    for (int i = 0; i < PROMPT; i++) t[i] = (int32_t)((n * 2654435761u + i * 40503u) % 100000);
    t[0] = (int32_t)n;
    t[1] = (int32_t)(n >> 31);
}

int main(int argc, char **argv) {
    if (argc < 4 || (strcmp(argv[1], "fill") == 0 && argc != 6)) {
        fprintf(stderr, "usage: disk_restart fill DIR SLOTS CHURN_PERCENT destroy|kill | open DIR SLOTS [PROMPTS]\n");
        return 2;
    }
    const char *mode = argv[1], *dir = argv[2];
    uint64_t slots = strtoull(argv[3], 0, 10);
    kvc_config c;
    config(&c, dir, slots);
    static int32_t toks[PROMPT];
    kvc_engine *e = NULL;
    if (strcmp(mode, "fill") == 0) {
        uint64_t churn = strtoull(argv[4], 0, 10);
        const char *end = argv[5];
        must(kvc_engine_create(&c, &e), "create");
        uint64_t prompts = slots * (100 + churn) / 100 / PROMPT_BLOCKS + 1;
        double t0 = now();
        kvc_event ev[4096];
        for (uint64_t p = 0; p < prompts; p++) {
            prompt(toks, p);
            size_t cached;
            must(kvc_seq_create(e, 1, toks, PROMPT, &cached), "seq_create");
            must(kvc_seq_free(e, 1), "seq_free");
            size_t n;
            do must(kvc_drain_events(e, ev, 4096, &n), "drain"); while (n == 4096);
            if (p % 4096 == 0) {
                kvc_stats s;
        memset(&s, 0, sizeof s);
        s.struct_size = sizeof s;
                must(kvc_engine_stats(e, &s), "stats");
                fprintf(stderr, "fill %" PRIu64 "/%" PRIu64 " spilled %" PRIu64 " stored %" PRIu64 " MiB %.1fs\n", p, prompts,
                        s.blocks_spilled, s.disk_stored_bytes >> 20, now() - t0);
            }
        }
        must(kvc_engine_trim(e), "trim");
        must(kvc_engine_poll(e, 0), "poll");
        must(kvc_engine_sync(e), "sync");
        kvc_stats s;
        memset(&s, 0, sizeof s);
        s.struct_size = sizeof s;
        must(kvc_engine_stats(e, &s), "stats");
        char jp[4200];
        snprintf(jp, sizeof jp, "%s/kvcache.journal", dir);
        struct stat st;
        stat(jp, &st);
        printf("fill slots=%" PRIu64 " prompts=%" PRIu64 " spilled=%" PRIu64 " stored_slots=%" PRIu64 " journal_bytes=%lld "
               "(%.1f B/slot) fill_s=%.1f\n",
               slots, prompts, s.blocks_spilled, s.disk_stored_bytes / 8192, (long long)st.st_size, (double)st.st_size / slots,
               now() - t0);
        fflush(stdout);
        if (strcmp(end, "kill") == 0) raise(SIGKILL);
        kvc_engine_destroy(e);
        return 0;
    }
    /* open */
    uint64_t prompts = argc > 4 ? strtoull(argv[4], 0, 10) : 0;
    long rss0 = status_kb("VmRSS:"), hwm0 = status_kb("VmHWM:");
    double t0 = now();
    must(kvc_engine_create(&c, &e), "create");
    double dt = now() - t0;
    long hwm1 = status_kb("VmHWM:"), rss1 = status_kb("VmRSS:");
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    kvc_stats s;
        memset(&s, 0, sizeof s);
        s.struct_size = sizeof s;
    must(kvc_engine_stats(e, &s), "stats");
    char jp[4200];
    snprintf(jp, sizeof jp, "%s/kvcache.journal", dir);
    struct stat st;
    stat(jp, &st);
    printf("open slots=%" PRIu64 " create_s=%.3f recovered=%" PRIu64 " dropped=%" PRIu64 " hwm_before_kb=%ld hwm_after_kb=%ld "
           "rss_before_kb=%ld rss_after_kb=%ld peak_delta_MiB=%.1f steady_delta_MiB=%.1f journal_after=%lld user=%.2f sys=%.2f\n",
           slots, dt, s.disk_recovered_blocks, s.disk_journal_dropped, hwm0, hwm1, rss0, rss1, (hwm1 - rss0) / 1024.0,
           (rss1 - rss0) / 1024.0, (long long)st.st_size, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    /* Lookups: the last prompts filled must hit on disk (the LRU kept the newest). */
    if (prompts > 0) {
        uint64_t sample = 64, hit = 0, full = 0;
        for (uint64_t k = 0; k < sample; k++) {
            uint64_t p = prompts - 2 - k * ((s.disk_recovered_blocks / PROMPT_BLOCKS - 2) / sample);
            prompt(toks, p);
            size_t cached;
            must(kvc_seq_create(e, 1, toks, PROMPT, &cached), "seq_create");
            hit += cached;
            full += cached == PROMPT;
            int ready = 0;
            while (!ready) {
                kvc_status r = kvc_seq_ready(e, 1, &ready);
                if (r != KVC_OK) { fprintf(stderr, "ready: %s\n", kvc_last_error()); break; }
                if (!ready) kvc_engine_poll(e, 1000);
            }
            must(kvc_seq_free(e, 1), "free");
            must(kvc_engine_trim(e), "trim");
        }
        must(kvc_engine_stats(e, &s), "stats");
        printf("lookup sample=%" PRIu64 " full_hits=%" PRIu64 " hit_tokens=%" PRIu64 " blocks_loaded=%" PRIu64 "\n", sample, full, hit,
               s.blocks_loaded);
    }
    kvc_engine_destroy(e);
    return 0;
}
