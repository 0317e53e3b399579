/* pss.c: after sequences are freed, an engine's committed_bytes against what the process's
 * RSS and Pss show and against the memory file's allocated blocks (the physical memory).
 *
 * Figure: docs/memory.md, "RSS of shared prefixes (contiguous layout)": contiguous committed
 * 256 MiB, memory file allocated 256 MiB, RssShmem and Pss_Shmem 8 MiB; paged, all four
 * 256 MiB. Session 48's accounting reviewer's driver (helper-204).
 *
 * Set-up: 4 layers x 2 KV heads x 64 dims fp16, 64 KiB pages, a 256 MiB budget; 32 sequences
 * of 4,000 tokens created, every byte of their K/V written, freed; then 300 more distinct
 * prompts created, written and freed (past the budget: cached blocks are evicted); then
 * kvc_engine_trim. Prints a line after each step.
 *
 * Build (release library, as tools/run_abi_client.sh links its clients; tools/repro/build.sh
 * builds every driver here):
 *   swift build -c release --product kvcache && BIN=$(swift build -c release --show-bin-path)
 *   gcc -std=c11 -O2 -I include tools/repro/pss.c -L$BIN -lkvcache -Wl,-rpath,$BIN -o pss
 * Run:  ./pss contiguous   and   ./pss paged
 */
#define _GNU_SOURCE
#include "kvcache.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CK(x) do { kvc_status s_ = (x); if (s_) { fprintf(stderr, "%s: %s\n", #x, kvc_last_error()); exit(1); } } while (0)

/* The kB value of the line starting with `name` in `path` (/proc/self/...), 0 if none. */
static long proc_kb(const char *path, const char *name) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    long v = 0;
    size_t k = strlen(name);
    while (fgets(line, sizeof line, f)) if (!strncmp(line, name, k)) v = atol(line + k);
    fclose(f);
    return v;
}

/* Allocated kB of every memfd this process holds (the engine's memory file). */
static long memfd_kb(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 0;
    struct dirent *de;
    long kb = 0;
    while ((de = readdir(d))) {
        char p[300], t[300];
        snprintf(p, sizeof p, "/proc/self/fd/%s", de->d_name);
        ssize_t n = readlink(p, t, sizeof t - 1);
        if (n <= 0) continue;
        t[n] = 0;
        struct stat s;
        if (strstr(t, "memfd:") && !stat(p, &s)) kb += (long)s.st_blocks / 2;
    }
    closedir(d);
    return kb;
}

static void show(const char *when, kvc_engine *e) {
    kvc_stats s = {.struct_size = sizeof s};
    CK(kvc_engine_stats(e, &s));
    printf("%-22s committed %7llu kB | memfd allocated %7ld kB | RssShmem %7ld kB | Pss_Shmem %7ld kB | used %llu cached %llu\n",
           when, (unsigned long long)s.committed_bytes / 1024, memfd_kb(), proc_kb("/proc/self/status", "RssShmem:"),
           proc_kb("/proc/self/smaps_rollup", "Pss_Shmem:"), (unsigned long long)s.blocks_used,
           (unsigned long long)s.blocks_cached);
}

/* Creates sequence `q` of 4,000 tokens of its own and writes every byte of its K and V. */
static void create_written(kvc_engine *e, const kvc_config *c, int32_t q) {
    static int32_t t[4000];
    size_t cached;
    for (int i = 0; i < 4000; i++) t[i] = q * 100000 + i;
    CK(kvc_seq_create(e, (uint64_t)q, t, 4000, &cached));
    for (uint32_t l = 0; l < c->num_layers; l++) {
        void *k, *v;
        if (c->layout == KVC_LAYOUT_CONTIGUOUS) {
            CK(kvc_seq_kv(e, (uint64_t)q, l, &k, &v));
            memset(k, 1, 4000 * 256);
            memset(v, 1, 4000 * 256);
        } else {
            int32_t b[300];
            size_t nb;
            CK(kvc_seq_block_table(e, (uint64_t)q, b, 300, &nb));
            for (size_t j = 0; j < nb; j++) {
                CK(kvc_block_kv(e, b[j], l, &k, &v));
                memset(k, 1, 16 * 256);
                memset(v, 1, 16 * 256);
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 2 || (strcmp(argv[1], "paged") && strcmp(argv[1], "contiguous"))) {
        fprintf(stderr, "usage: pss paged|contiguous\n");
        return 2;
    }
    kvc_config c;
    kvc_config_init(&c);
    c.num_layers = 4; c.num_kv_heads = 2; c.head_dim = 64; c.max_seqs = 64;
    c.max_seq_tokens = 8192; c.memory_bytes = 256ull << 20; c.page_bytes = 65536;
    c.layout = strcmp(argv[1], "paged") ? KVC_LAYOUT_CONTIGUOUS : KVC_LAYOUT_PAGED;
    kvc_engine *e;
    CK(kvc_engine_create(&c, &e));
    show("created", e);
    for (int32_t q = 1; q <= 32; q++) create_written(e, &c, q);
    show("32 x 4000 live", e);
    for (int32_t q = 1; q <= 32; q++) CK(kvc_seq_free(e, (uint64_t)q));
    show("all freed", e);
    for (int32_t q = 100; q < 400; q++) {
        create_written(e, &c, q);
        CK(kvc_seq_free(e, (uint64_t)q));
    }
    show("churn 300 (evicting)", e);
    CK(kvc_engine_trim(e));
    show("trim", e);
    kvc_engine_destroy(e);
    return 0;
}
