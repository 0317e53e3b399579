/* routerscale.c: the cost of kvc_router_remove_instance while an exact-view router scales
 * down from 64 instances to 4, whether the view's memory is given back afterwards, and the
 * cost of forgetting an instance that held 16 blocks.
 *
 * Figures: docs/routing.md, the router view's shrink ("scaling 64 -> 4 (`routerscale.c`)").
 *
 * Set-up: 64 instances of BLOCKS distinct blocks each (stored events in batches of 4096, no
 * parents); then instances 63 .. 4 are removed one at a time, ROUTES routes of 40-block
 * prompts (instance 0's first blocks, then new ones) between two removals; then AFTER more
 * routes, with the process's RSS printed every AFTER / 8 of them; then 2,000 times an
 * instance is added, sent 16 stored blocks and removed, and 2,000 times sent 16 stored
 * blocks and an ALL_CLEARED.
 *
 * Build: tools/repro/build.sh BIN (or as tools/repro/routerview.c says).
 * Run:  ./routerscale [BLOCKS [ROUTES [AFTER]]]   (the docs: 60000 100 400000)
 */
#define _GNU_SOURCE
#include "kvcache.h"
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define CK(x) do { kvc_status s_ = (x); if (s_) { fprintf(stderr, "%d %s: %s\n", __LINE__, kvc_status_name(s_), kvc_last_error()); exit(1); } } while (0)

enum { BATCH = 4096, INSTANCES = 64, LEFT = 4, PROMPT = 40, SMALL = 2000 };

static long rssMB(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2) exit(1);
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE) / (1024 * 1024);
}

static uint64_t hashOf(long instance, long i) { return (uint64_t)(instance * 100000000L + i + 1) * 0x9E3779B97F4A7C15ull; }

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double routeOnce(kvc_router *r, long k) {
    uint64_t h[PROMPT];
    for (int i = 0; i < PROMPT; i++) h[i] = i < 20 ? hashOf(0, i) : hashOf(999, k * PROMPT + i);
    uint32_t to;
    double a = now();
    CK(kvc_router_route(r, h, PROMPT, PROMPT * 16, &to));
    return now() - a;
}

static void store(kvc_router *r, uint32_t instance, long first, long n) {
    static kvc_event ev[BATCH];
    for (long done = 0; done < n; done += BATCH) {
        long m = n - done < BATCH ? n - done : BATCH;
        for (long i = 0; i < m; i++)
            ev[i] = (kvc_event){KVC_EVENT_BLOCK_STORED, KVC_TIER_MEMORY, hashOf(instance, first + done + i), 0};
        CK(kvc_router_observe_events(r, instance, ev, (size_t)m));
    }
}

int main(int argc, char **argv) {
    long blocks = argc > 1 ? atol(argv[1]) : 60000;
    long routes = argc > 2 ? atol(argv[2]) : 100;
    long after = argc > 3 ? atol(argv[3]) : 400000;
    if (argc > 4 || blocks <= 0 || routes < 0 || after < 8) {
        fprintf(stderr, "usage: routerscale [BLOCKS [ROUTES [AFTER]]]\n");
        return 2;
    }
    kvc_router_config c;
    kvc_router_config_init(&c);
    c.view = KVC_ROUTER_VIEW_EXACT;
    kvc_router *r;
    CK(kvc_router_create(&c, &r));
    for (uint32_t i = 0; i < INSTANCES; i++) {
        CK(kvc_router_add_instance(r, i, 1.0));
        store(r, i, 0, blocks);
    }
    printf("64 instances of %ld blocks: RSS %ld MB\n", blocks, rssMB());
    double removal[INSTANCES - LEFT], total = 0;
    long k = 0;
    for (int i = 0; i < INSTANCES - LEFT; i++) {
        double a = now();
        CK(kvc_router_remove_instance(r, (uint32_t)(INSTANCES - 1 - i)));
        removal[i] = now() - a;
        total += removal[i];
        for (long j = 0; j < routes; j++) routeOnce(r, k++);
    }
    qsort(removal, INSTANCES - LEFT, sizeof(double), cmp);
    printf("remove_instance 64 -> 4: mean %.2f ms, p50 %.2f ms, max %.2f ms; RSS %ld MB\n",
           total / (INSTANCES - LEFT) * 1e3, removal[(INSTANCES - LEFT) / 2] * 1e3, removal[INSTANCES - LEFT - 1] * 1e3, rssMB());
    double worst = 0, sum = 0;
    for (long j = 1; j <= after; j++) {
        double t = routeOnce(r, k++);
        sum += t;
        if (t > worst) worst = t;
        if (j % (after / 8) == 0) printf("  after %ld routes: RSS %ld MB\n", j, rssMB());
    }
    printf("routes with 4 instances: mean %.3f us, max %.3f ms\n", sum / (double)after * 1e6, worst * 1e3);
    double rm = 0, rmMax = 0, cl = 0, clMax = 0;
    static const kvc_event clear = {KVC_EVENT_ALL_CLEARED, KVC_TIER_MEMORY, 0, 0};
    for (int i = 0; i < SMALL; i++) {
        CK(kvc_router_add_instance(r, 100, 1.0));
        store(r, 100, (long)i * 16, 16);
        double a = now();
        CK(kvc_router_remove_instance(r, 100));
        double t = now() - a;
        rm += t;
        if (t > rmMax) rmMax = t;
    }
    CK(kvc_router_add_instance(r, 100, 1.0));
    for (int i = 0; i < SMALL; i++) {
        store(r, 100, (long)i * 16, 16);
        double a = now();
        CK(kvc_router_observe_events(r, 100, &clear, 1));
        double t = now() - a;
        cl += t;
        if (t > clMax) clMax = t;
    }
    printf("16-block instance: remove_instance mean %.4f ms (max %.3f), all-cleared mean %.4f ms (max %.3f)\n",
           rm / SMALL * 1e3, rmMax * 1e3, cl / SMALL * 1e3, clMax * 1e3);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("max RSS %ld MB\n", ru.ru_maxrss / 1024);
    kvc_router_destroy(r);
    return 0;
}
