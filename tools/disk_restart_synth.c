/*
 * disk_restart_synth — a worst-case journal for disk_restart's tier shape (8 KiB slots,
 * 1 KiB payloads) without writing the slab, for tiers larger than the disk at hand
 * (docs/disk-tier.md, "Restart at millions of slots"): SLOTS STORED records (chains of 256
 * blocks), then CHURN_PERCENT% of the slots freed and stored again (a FREED and a STORED
 * record each), sealed by kvm_slab_journal_append; the slab is left sparse at its full size
 * (truncate: a restart reads only the journal). Copy kvcache.identity from a directory an
 * engine of that shape claimed first, then time the restart with `disk_restart open`.
 *
 *   disk_restart_synth DIR SLOTS CHURN_PERCENT
 *
 * Links the C module's objects, e.g. O=$(swift build -c release --show-bin-path)/CKVMemory.build
 *   gcc -O2 -I Sources/CKVMemory/include tools/disk_restart_synth.c $O/[a-z]*.o -luring -lnuma \
 *       -lpthread -o disk_restart_synth
 */
#include "kvm_slab.h"
#include "kvm_error.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t mix(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return x | 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: disk_restart_synth DIR SLOTS CHURN_PERCENT\n");
        return 2;
    }
    const char *dir = argv[1];
    uint32_t slots = (uint32_t)strtoul(argv[2], 0, 10);
    uint64_t churn = (uint64_t)slots * strtoul(argv[3], 0, 10) / 100;
    kvm_slab_config cfg = {.dir = dir, .slot_bytes = 8192, .max_bytes = (uint64_t)slots * 8192, .extent_slots = 64};
    kvm_slab *s;
    if (kvm_slab_open(&cfg, &s) < 0) { fprintf(stderr, "open: %s\n", kvm_error()); return 1; }
    enum { B = 4096 };
    static kvm_journal_record batch[B];
    uint32_t n = 0;
    uint64_t gen = 0, records = 0;
    uint64_t *slot_gen = calloc(slots, 8);
#define PUT(slot_, kind_, hash_, parent_, gen_) do { \
        kvm_journal_record *r = &batch[n++]; memset(r, 0, sizeof *r); \
        r->slot = (slot_); r->kind = (kind_); r->payload_bytes = 1024; r->block_hash = (hash_); \
        r->parent_hash = (parent_); r->generation = (gen_); r->checksum = mix(gen_); \
        if (n == B) { if (kvm_slab_journal_append(s, batch, n) != 0) { fprintf(stderr, "append: %s\n", kvm_error()); return 1; } records += n; n = 0; } \
    } while (0)
    for (uint32_t i = 0; i < slots; i++) {
        slot_gen[i] = ++gen;
        PUT(i, KVM_JOURNAL_STORED, mix(gen), i % 256 ? mix(gen - 1) : 0, gen);
    }
    for (uint64_t k = 0; k < churn; k++) {
        uint32_t i = (uint32_t)(k % slots);
        PUT(i, KVM_JOURNAL_FREED, 0, 0, slot_gen[i]);
        slot_gen[i] = ++gen;
        PUT(i, KVM_JOURNAL_STORED, mix(gen), k % 256 ? mix(gen - 1) : 0, gen);
    }
    if (n && kvm_slab_journal_append(s, batch, n) != 0) return 1;
    records += n;
    printf("synth slots=%u records=%" PRIu64 " journal_bytes=%" PRIu64 "\n", slots, records, kvm_slab_journal_bytes(s));
    kvm_slab_close(s);
    char p[4200];
    snprintf(p, sizeof p, "%s/kvcache.slab", dir);
    return truncate(p, (off_t)slots * 8192) == 0 ? 0 : 1;
}
