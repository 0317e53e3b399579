/* Cost of maps next to kept pages in the contiguous layout (docs/memory.md, "kept span";
 * note52 item 11b). Built against the C module's sources, not libkvcache.so (it injects mmap
 * failures with kvm_ranges_fail_mmaps, which the ABI does not expose), so tools/repro/build.sh
 * skips it:
 *
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -I Sources/CKVMemory/include -I Sources/CKVMemory \
 *       tools/repro/ckvmemory/keptmaps.c Sources/CKVMemory/{virtual_ranges,page_pool,aligned_map,\
 *       error,fork_close,numa_bind,io_file,io_ring,io_threads}.c -luring -lnuma -lpthread -o keptmaps
 *   ./keptmaps OTHER_MAPPINGS
 *
 * 16 tensors of 4 KiB pages, 5 slots. With OTHER_MAPPINGS more VMAs in the process (a
 * reservation with every other page read-only), prints the mean of: a map whose mmap fails
 * (refused; it leaves kept pages in slot 1), appends to slot 1 past its kept pages, one-page
 * maps in slot 0 (a neighbour), and one-page maps in slot 3 (no kept pages near: the baseline);
 * and how many times the count was read from /proc/self/maps. */
#include "kvm_pool.h"
#include "kvm_ranges.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    long others = argc > 1 ? atol(argv[1]) : 1000;
    enum { TENSORS = 16, PAGES = 512, ROUNDS = 100, REFUSED = 20 };
    uint8_t *filler = mmap(NULL, (size_t)others * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (filler == MAP_FAILED) return perror("filler"), 1;
    for (long i = 0; i < others / 2; i++) mprotect(filler + (2 * i + 1) * 4096, 4096, PROT_READ);
    kvm_pool_config cfg = {.tensors = TENSORS, .group_bytes = 4096, .page_bytes = 4096, .budget_bytes = 4096ull * TENSORS * 2048, .numa_node = -1};
    kvm_pool *pool;
    kvm_ranges *r;
    if (kvm_pool_create(&cfg, &pool) != 0 || kvm_ranges_create(pool, 5, PAGES * 4096, &r) != 0) return fprintf(stderr, "setup failed\n"), 1;
    for (uint32_t g = 0; g < 2048; g++) kvm_pool_alloc(pool, g);
    uint32_t group = 0;
    double t = now_us();
    for (uint32_t i = 0; i < REFUSED; i++) {
        kvm_ranges_fail_mmaps(r, TENSORS / 2, 1 + TENSORS / 2); /* half the tensors map, one fails, half their unmaps fail */
        if (kvm_ranges_map(r, 1, i, group, 1) == 0) return fprintf(stderr, "the map did not fail\n"), 1;
        group += 2;
    }
    double refused = (now_us() - t) / REFUSED;
    double mean[3];
    uint32_t slots[3] = {1, 0, 3}, first[3] = {REFUSED, 0, 0};
    for (int k = 0; k < 3; k++) {
        t = now_us();
        for (uint32_t i = 0; i < ROUNDS; i++, group += 2)
            if (kvm_ranges_map(r, slots[k], first[k] + i, group, 1) != 0) return fprintf(stderr, "map failed\n"), 1;
        mean[k] = (now_us() - t) / ROUNDS;
    }
    printf("%ld other mappings: refused map %.1f us, later appends to its slot %.2f us, a neighbour's %.2f us, "
           "a slot with no kept pages near %.2f us; /proc/self/maps read %llu times; counted %llu\n",
           others, refused, mean[0], mean[1], mean[2], (unsigned long long)kvm_ranges_rereads(r), (unsigned long long)kvm_ranges_mappings(r));
    kvm_ranges_destroy(r);
    kvm_pool_destroy(pool);
    return 0;
}
