/* routerview.c: the cost of kvc_router_observe_events as an exact cache view grows to N blocks:
 * mean per stored event, the worst batch of 4096 and the process's peak RSS.
 *
 * Figures: docs/routing.md, the router view's growth ("one instance (`routerview.c`)": worst
 * batch 86 / 45 -> 35 / 24 ms at 1,000,000 blocks ...; "With 3 instances in turn": worst batch
 * 1,725 -> 195 ms). Session 49's reviewers' routerview.c and routerview3.c, one driver here.
 *
 * Set-up: an exact-view router with INSTANCES instances (default 1); batches of 4096 stored
 * events of distinct blocks (no parents), the batches going to the instances in turn, until N
 * blocks are held.
 *
 * Build (release library, as tools/run_abi_client.sh links its clients; tools/repro/build.sh
 * builds every driver here):
 *   swift build -c release --product kvcache && BIN=$(swift build -c release --show-bin-path)
 *   gcc -std=c11 -O2 -I include tools/repro/routerview.c -L$BIN -lkvcache -Wl,-rpath,$BIN -o routerview
 * Run:  ./routerview N [INSTANCES]     (the docs: N = 1000000, 4000000, 8000000; INSTANCES 1 or 3)
 */
#define _GNU_SOURCE
#include "kvcache.h"
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define CK(x) do { kvc_status s_ = (x); if (s_) { fprintf(stderr, "%d %s: %s\n", __LINE__, kvc_status_name(s_), kvc_last_error()); exit(1); } } while (0)

enum { BATCH = 4096 };

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    long instances = argc > 2 ? atol(argv[2]) : 1;
    if (argc < 2 || argc > 3 || n <= 0 || instances < 1 || instances > 1024) {
        fprintf(stderr, "usage: routerview N [INSTANCES]\n");
        return 2;
    }
    kvc_router_config c;
    kvc_router_config_init(&c);
    c.view = KVC_ROUTER_VIEW_EXACT;
    kvc_router *r;
    CK(kvc_router_create(&c, &r));
    for (long i = 0; i < instances; i++) CK(kvc_router_add_instance(r, (uint32_t)i, 1.0));
    static kvc_event ev[BATCH];
    long done = 0, worstAt = 0, batches = 0;
    double worst = 0, total = 0;
    while (done < n) {
        for (int i = 0; i < BATCH; i++)
            ev[i] = (kvc_event){KVC_EVENT_BLOCK_STORED, KVC_TIER_MEMORY, (uint64_t)(done + i + 1) * 0x9E3779B97F4A7C15ull, 0};
        double a = now();
        CK(kvc_router_observe_events(r, (uint32_t)(batches++ % instances), ev, BATCH));
        double b = now();
        total += b - a;
        if (b - a > worst) { worst = b - a; worstAt = done; }
        done += BATCH;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("view N=%ld, %ld instances: mean per event %.1f ns, worst batch of %d events %.1f ms (at %ld blocks), max RSS %ld MB\n",
           n, instances, total / (double)done * 1e9, BATCH, worst * 1e3, worstAt, ru.ru_maxrss / 1024);
    kvc_router_destroy(r);
    return 0;
}
