/* hot.c: nanoseconds per kvc_router_route (and, for overlap cost, per route + the request's
 * kvc_router_finish, as a server drives it) on a router holding a large exact view.
 *
 * Figures: docs/routing.md "Overlap cost as a server drives it" and docs/benchmarks.md's
 * HashCounts section (route + finish 10.9-12.3 -> 4.6-5.3 us; DualMap's route 0.44-0.78 us;
 * measured with 300000 routes, session 50's reviewer's driver, trimmed to its route mode).
 *
 * Set-up: 64 instances, exact view, each holding 64 chains of 32 blocks (stored events); then
 * N routes of a prompt of 40 blocks, 32 of them a held chain's and 8 new; every 1024 routes
 * each instance reports its load.
 *
 * Build (release library, as tools/run_abi_client.sh links its clients; tools/repro/build.sh
 * builds every driver here):
 *   swift build -c release --product kvcache && BIN=$(swift build -c release --show-bin-path)
 *   gcc -std=c11 -O2 -I include tools/repro/hot.c -L$BIN -lkvcache -Wl,-rpath,$BIN -o hot
 * Run:  ./hot N dualmap|overlap-cost      (the docs: N = 300000; prints ns per call)
 */
#define _GNU_SOURCE
#include "kvcache.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* splitmix64's finaliser: distinct, well-spread block hashes. */
static uint64_t mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

#define CHK(x) do { kvc_status s_ = (x); if (s_) { fprintf(stderr, "%s: %s\n", #x, kvc_last_error()); exit(1); } } while (0)

int main(int argc, char **argv) {
    if (argc != 3 || atol(argv[1]) <= 0 || (strcmp(argv[2], "dualmap") && strcmp(argv[2], "overlap-cost"))) {
        fprintf(stderr, "usage: hot N dualmap|overlap-cost\n");
        return 2;
    }
    long n = atol(argv[1]);
    int finish = !strcmp(argv[2], "overlap-cost");
    kvc_router_config c;
    kvc_router_config_init(&c);
    c.view = KVC_ROUTER_VIEW_EXACT;
    c.policy = finish ? KVC_ROUTER_OVERLAP_COST : KVC_ROUTER_DUALMAP;
    kvc_router *r;
    CHK(kvc_router_create(&c, &r));
    for (uint32_t i = 0; i < 64; i++) CHK(kvc_router_add_instance(r, i, 1.0));
    kvc_event ev[32];
    for (uint64_t i = 0; i < 64; i++) for (uint64_t ch = 0; ch < 64; ch++) {
        for (uint64_t k = 0; k < 32; k++)
            ev[k] = (kvc_event){KVC_EVENT_BLOCK_STORED, KVC_TIER_MEMORY, mix((i * 64 + ch) * 64 + k) | 1,
                                k ? mix((i * 64 + ch) * 64 + k - 1) | 1 : 0};
        CHK(kvc_router_observe_events(r, (uint32_t)i, ev, 32));
    }
    uint64_t h[40];
    uint32_t inst;
    uint64_t t0 = now();
    for (long q = 0; q < n; q++) {
        uint64_t chain = mix((uint64_t)q) % (64 * 64);
        for (int k = 0; k < 32; k++) h[k] = mix(chain * 64 + (uint64_t)k) | 1;
        for (int k = 32; k < 40; k++) h[k] = mix(~(uint64_t)q * 64 + (uint64_t)k) | 1;
        CHK(kvc_router_route(r, h, 40, 640, &inst));
        if (finish) CHK(kvc_router_finish(r, inst, h, 40));
        if ((q & 1023) == 1023) for (uint32_t i = 0; i < 64; i++) {
            kvc_instance_load l;
            memset(&l, 0, sizeof l);
            l.struct_size = sizeof l;
            CHK(kvc_router_report(r, i, &l));
        }
    }
    printf("route (%s%s): %.1f ns per call\n", argv[2], finish ? ", + finish" : "", (double)(now() - t0) / (double)n);
    kvc_router_destroy(r);
    return 0;
}
