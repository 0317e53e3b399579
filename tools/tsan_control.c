/* tsan_control.c — the positive control of tools/run_sanitized.sh's ThreadSanitizer runs:
 * a client that breaks the ABI's contract on purpose must be reported, or those runs could
 * not see a race on K/V bytes at all (helper-175 found that this toolchain's memcpy and
 * memset interceptors report none, so the stress clients write K/V byte by byte). A thread
 * writes a block's K/V with nothing ordering its stores before the main thread's
 * kvc_seq_swap_out, whose copy into a staging buffer (kvm_slot_gather) reads those bytes: a
 * data race whatever the timing (ThreadSanitizer orders by synchronisation, not by time; the
 * sleep is none). Exits 0 when it ran to the end, which under ThreadSanitizer
 * (halt_on_error=1) means the race went unreported.
 *
 *   tsan_control OFFLOAD_DIR */
#define _DEFAULT_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "kvcache.h"

static uint8_t *volatile block_k;

static void *writer(void *arg) {
    (void)arg;
    for (int i = 0; i < 1024; i++) block_k[i] = (uint8_t)i;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: tsan_control OFFLOAD_DIR\n");
        return 2;
    }
    kvc_config c;
    kvc_config_init(&c);
    c.num_layers = 2, c.num_kv_heads = 2, c.head_dim = 16, c.dtype_bytes = 2, c.block_tokens = 16;
    c.max_seqs = 4, c.max_seq_tokens = 256, c.memory_bytes = 1 << 20;
    c.offload_dir = argv[1], c.offload_bytes = 4 << 20;
    kvc_engine *e;
    if (kvc_engine_create(&c, &e) != KVC_OK) {
        fprintf(stderr, "tsan_control: create: %s\n", kvc_last_error());
        return 2;
    }
    int32_t tokens[32];
    for (int i = 0; i < 32; i++) tokens[i] = i + 7;
    int32_t table[2];
    size_t cached, n;
    void *k, *v;
    if (kvc_seq_create(e, 1, tokens, 32, &cached) != KVC_OK || kvc_seq_block_table(e, 1, table, 2, &n) != KVC_OK ||
        kvc_block_kv(e, table[0], 0, &k, &v) != KVC_OK) {
        fprintf(stderr, "tsan_control: %s\n", kvc_last_error());
        return 2;
    }
    block_k = k;
    pthread_t t;
    pthread_create(&t, NULL, writer, NULL);
    usleep(100 * 1000);
    kvc_status rc = kvc_seq_swap_out(e, 1);
    pthread_join(t, NULL);
    kvc_engine_destroy(e);
    printf("tsan_control: swap_out %s; no race reported\n", kvc_status_name(rc));
    return 0;
}
