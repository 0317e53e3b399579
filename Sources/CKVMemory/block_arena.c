/* Paged K/V blocks in pool groups: free lists per group, fullest-known groups filled first. */
#include "kvm_arena.h"
#include "kvm_error.h"
#include "mman_compat.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { NOT_HELD = 0, PARTIAL = 1, FULL = 2, EMPTY = 3 };

struct kvm_arena {
    kvm_pool *pool;
    uint8_t *base;          /* the whole memfd, mapped once */
    uint64_t map_bytes;
    uint64_t block_bytes;
    uint64_t group_bytes;   /* per tensor */
    uint64_t tensor_bytes;  /* groups * group_bytes: from a block in one tensor to it in the next */
    uint64_t stride;        /* from block b to b + 1 when the blocks are evenly spaced (one per
                             * group, or filling their groups exactly), else 0 (kvm_arena_block) */
    uint32_t per_group;     /* blocks per group */
    uint32_t blocks, used, groups;
    int32_t *next_free;     /* per block: next free block of its group, or -1; -2 when allocated */
    int32_t *head;          /* per group: first free block or -1 */
    uint32_t *group_used;
    int32_t *prev, *next;   /* per group: links of the PARTIAL or EMPTY list it is on */
    uint8_t *state;
    int32_t partial, empty; /* list heads */
    uint32_t *fresh;        /* groups taken and not yet handed out to pre-fault (kvm_arena_take_fresh) */
    uint32_t fresh_count;
    uint8_t *listed;        /* per group: on `fresh` (a group trimmed and taken again is listed once) */
    uint32_t *faulting;     /* per group: pre-faults in progress (kvm_arena_trim keeps such a group) */
};

uint64_t kvm_arena_blocks_per_group(uint64_t block_bytes, uint64_t page_bytes) {
    return block_bytes >= page_bytes ? 1 : page_bytes / block_bytes;
}

uint64_t kvm_arena_group_bytes(uint64_t block_bytes, uint64_t page_bytes) {
    uint64_t per = kvm_arena_blocks_per_group(block_bytes, page_bytes);
    return (per * block_bytes + page_bytes - 1) / page_bytes * page_bytes;
}

static void push(kvm_arena *a, int32_t *list, int32_t g) {
    a->prev[g] = -1;
    a->next[g] = *list;
    if (*list >= 0) a->prev[*list] = g;
    *list = g;
}

static void unlink_group(kvm_arena *a, int32_t *list, int32_t g) {
    if (a->prev[g] >= 0) a->next[a->prev[g]] = a->next[g];
    else *list = a->next[g];
    if (a->next[g] >= 0) a->prev[a->next[g]] = a->prev[g];
}

int kvm_arena_create(kvm_pool *pool, uint64_t block_bytes, kvm_arena **out) {
    *out = NULL;
    uint64_t pb = kvm_pool_page_bytes(pool);
    if (block_bytes == 0 || kvm_pool_group_bytes(pool) != kvm_arena_group_bytes(block_bytes, pb))
        return kvm_fail(EINVAL, "pool groups of %llu bytes do not fit blocks of %llu bytes",
                        (unsigned long long)kvm_pool_group_bytes(pool), (unsigned long long)block_bytes);
    kvm_arena *a = calloc(1, sizeof *a);
    if (!a) return kvm_fail(ENOMEM, "out of memory for the arena");
    a->pool = pool;
    a->block_bytes = block_bytes;
    a->per_group = (uint32_t)kvm_arena_blocks_per_group(block_bytes, pb);
    a->groups = kvm_pool_groups(pool);
    a->group_bytes = kvm_pool_group_bytes(pool);
    a->tensor_bytes = (uint64_t)a->groups * a->group_bytes;
    if (a->per_group == 1) a->stride = a->group_bytes;
    else if (a->per_group * block_bytes == a->group_bytes) a->stride = block_bytes;
    if ((uint64_t)a->groups * a->per_group > KVM_ARENA_MAX_BLOCKS) {
        uint64_t blocks = (uint64_t)a->groups * a->per_group;
        free(a);
        return kvm_fail(EINVAL, "memory_bytes holds %llu blocks of %llu bytes, more than the %u an engine indexes; "
                                "raise block_tokens or lower memory_bytes",
                        (unsigned long long)blocks, (unsigned long long)block_bytes, KVM_ARENA_MAX_BLOCKS);
    }
    a->blocks = a->groups * a->per_group;
    a->partial = a->empty = -1;
    a->map_bytes = kvm_pool_tensors(pool) * a->tensor_bytes;
    a->next_free = malloc(a->blocks * sizeof(int32_t));
    a->head = malloc(a->groups * sizeof(int32_t));
    a->group_used = calloc(a->groups, sizeof(uint32_t));
    a->prev = malloc(a->groups * sizeof(int32_t));
    a->next = malloc(a->groups * sizeof(int32_t));
    a->state = calloc(a->groups, 1);
    a->fresh = malloc(a->groups * sizeof(uint32_t));
    a->listed = calloc(a->groups, 1);
    a->faulting = calloc(a->groups, sizeof(uint32_t));
    void *base = mmap(NULL, a->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, kvm_pool_fd(pool), 0);
    if (!a->next_free || !a->head || !a->group_used || !a->prev || !a->next || !a->state || !a->fresh || !a->listed || !a->faulting ||
        base == MAP_FAILED) {
        int err = base == MAP_FAILED ? errno : ENOMEM;
        uint64_t map_bytes = a->map_bytes;
        uint32_t blocks = a->blocks;
        if (base != MAP_FAILED) munmap(base, a->map_bytes);
        a->base = NULL;
        kvm_arena_destroy(a);
        // Name what could not be had and the field that sized it (kvcache.h's promise).
        if (base == MAP_FAILED)
            return kvm_fail(err, "reserving %llu bytes of address space for the paged layout's blocks (memory_bytes, "
                                 "every layer's K and V) failed: %s; lower memory_bytes or raise RLIMIT_AS",
                            (unsigned long long)map_bytes, strerror(err));
        return kvm_fail(err, "allocating the block arena's state for %u blocks (memory_bytes / block bytes) failed: %s",
                        blocks, strerror(err));
    }
    a->base = base;
    if (kvm_pool_hugepages(pool)) madvise(base, a->map_bytes, MADV_HUGEPAGE);
    for (uint32_t b = 0; b < a->blocks; b++) a->next_free[b] = -2;
    *out = a;
    return 0;
}

void kvm_arena_destroy(kvm_arena *a) {
    if (!a) return;
    for (uint32_t g = 0; a->state && g < a->groups; g++) /* state is NULL when create's calloc failed */
        if (a->state[g] != NOT_HELD) kvm_pool_unref(a->pool, g);
    if (a->base) munmap(a->base, a->map_bytes);
    free(a->next_free);
    free(a->head);
    free(a->group_used);
    free(a->prev);
    free(a->next);
    free(a->state);
    free(a->fresh);
    free(a->listed);
    free(a->faulting);
    free(a);
}

/* Takes a group from the pool, lists it as fresh (to be pre-faulted by the caller, outside its
 * lock), and threads its free list. */
static int take_group(kvm_arena *a) {
    int64_t g = kvm_pool_alloc(a->pool, UINT32_MAX);
    if (g < 0) return (int)g;
    /* A group trimmed (given back while still listed) and taken again stays listed once, so
     * fresh_count <= groups however often a caller takes and trims between drains. */
    if (!a->listed[g]) {
        a->listed[g] = 1;
        a->fresh[a->fresh_count++] = (uint32_t)g;
    }
    uint32_t first = (uint32_t)g * a->per_group;
    for (uint32_t i = 0; i < a->per_group; i++) a->next_free[first + i] = i + 1 < a->per_group ? (int32_t)(first + i + 1) : -1;
    a->head[g] = (int32_t)first;
    a->group_used[g] = 0;
    a->state[g] = EMPTY;
    push(a, &a->empty, (int32_t)g);
    return 0;
}

int64_t kvm_arena_alloc(kvm_arena *a) {
    int32_t g = a->partial;
    if (g < 0) {
        if (a->empty < 0) {
            int rc = take_group(a);
            if (rc < 0) return rc;
        }
        g = a->empty;
        unlink_group(a, &a->empty, g);
        a->state[g] = PARTIAL;
        push(a, &a->partial, g);
    }
    int32_t b = a->head[g];
    a->head[g] = a->next_free[b];
    a->next_free[b] = -2;
    a->used++;
    if (++a->group_used[g] == a->per_group) {
        unlink_group(a, &a->partial, g);
        a->state[g] = FULL;
    }
    return b;
}

void kvm_arena_free(kvm_arena *a, uint32_t block) {
    int32_t g = (int32_t)(block / a->per_group);
    a->next_free[block] = a->head[g];
    a->head[g] = (int32_t)block;
    a->used--;
    uint32_t left = --a->group_used[g];
    if (a->state[g] == FULL) {
        a->state[g] = left ? PARTIAL : EMPTY;
        push(a, left ? &a->partial : &a->empty, g);
    } else if (left == 0) {
        unlink_group(a, &a->partial, g);
        a->state[g] = EMPTY;
        push(a, &a->empty, g);
    }
}

/* Every call's path (kvc_block_kv: twice), so evenly spaced blocks (every power-of-two shape)
 * cost one multiply-add; only blocks padded within their group take the division. */
uint8_t *kvm_arena_block(const kvm_arena *a, uint32_t tensor, uint32_t block) {
    uint8_t *t = a->base + tensor * a->tensor_bytes;
    if (a->stride) return t + block * a->stride;
    return t + (uint64_t)(block / a->per_group) * a->group_bytes + (uint64_t)(block % a->per_group) * a->block_bytes;
}

uint64_t kvm_arena_tensor_bytes(const kvm_arena *a) { return a->tensor_bytes; }

uint64_t kvm_arena_stride(const kvm_arena *a) { return a->stride; }
uint32_t kvm_arena_blocks(const kvm_arena *a) { return a->blocks; }
uint32_t kvm_arena_used(const kvm_arena *a) { return a->used; }
uint32_t kvm_arena_available(const kvm_arena *a) { return a->blocks - a->used; }

const uint8_t *kvm_arena_base(const kvm_arena *a) { return a->base; }
uint64_t kvm_arena_mapped_bytes(const kvm_arena *a) { return a->map_bytes; }

uint64_t kvm_arena_trim(kvm_arena *a, uint64_t keep_bytes, uint32_t spare) {
    uint64_t unit = (uint64_t)kvm_pool_tensors(a->pool) * kvm_pool_group_bytes(a->pool), committed = kvm_pool_committed_bytes(a->pool);
    uint64_t over = committed > keep_bytes ? (committed - keep_bytes) / unit : 0; /* groups that may go */
    int32_t g = a->empty;
    while (g >= 0 && over > 0) {
        int32_t next = a->next[g];
        if (a->faulting[g] == 0) {
            unlink_group(a, &a->empty, g);
            a->state[g] = NOT_HELD;
            kvm_pool_unref(a->pool, (uint32_t)g);
            over--;
        }
        g = next;
    }
    return kvm_pool_trim(a->pool, keep_bytes, spare);
}

uint32_t kvm_arena_fresh_count(const kvm_arena *a) { return a->fresh_count; }

int64_t kvm_arena_reserve(kvm_arena *a, uint32_t groups) {
    uint32_t n = 0;
    while (n < groups) {
        int rc = take_group(a);
        if (rc == -ENOSPC) break;
        if (rc < 0) return n > 0 ? (int64_t)n : rc;
        n++;
    }
    return n;
}

uint32_t kvm_arena_take_fresh(kvm_arena *a, uint32_t *out, uint32_t capacity) {
    uint32_t n = 0;
    while (a->fresh_count > 0 && n < capacity) {
        uint32_t g = a->fresh[--a->fresh_count];
        a->listed[g] = 0;
        if (a->state[g] == NOT_HELD) continue; /* given back since: its pages are not ours to fault */
        a->faulting[g]++;
        out[n++] = g;
    }
    return n;
}

void kvm_arena_prefault(const kvm_arena *a, uint32_t group) {
    uint64_t gb = kvm_pool_group_bytes(a->pool);
    for (uint32_t t = 0; t < kvm_pool_tensors(a->pool); t++)
        madvise(a->base + kvm_pool_offset(a->pool, t, group), gb, MADV_POPULATE_WRITE); /* a failure only defers faults */
}

void kvm_arena_prefault_done(kvm_arena *a, uint32_t group) { a->faulting[group]--; }
