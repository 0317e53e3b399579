/* Contiguous per-sequence virtual ranges backed by pool groups on demand. */
#include "kvm_ranges.h"
#include "kvm_error.h"
#include "aligned_map.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Pages [first, end) of a slot. */
typedef struct {
    uint32_t first, end;
} page_span;

struct kvm_ranges {
    kvm_pool *pool;
    uint8_t *base;
    uint64_t range_bytes;
    uint64_t page_bytes;
    uint32_t slots, tensors, pages;
    int32_t *table;      /* [slot * pages + page]: group + 1, 0 for none (calloc: entries never set cost no memory) */
    uint32_t *mapped;    /* per slot: highest mapped page + 1 */
    uint64_t count;      /* the table's VMAs of the reservation (starts_near) plus `slack`: never fewer than the kernel's */
    page_span *kept;     /* per slot: pages some tensor may still map though the table lists none there (first == end: none) */
    uint32_t slots_kept; /* slots whose `kept` is not empty */
    uint64_t kept_pages; /* the sum over slots with kept pages of end - first + 1: the page boundaries they touch per tensor */
    uint64_t slack;      /* VMAs the kernel may hold near kept pages beyond the table's (bounded_slack); 0 when none are kept */
    bool slack_read;     /* slack was taken from /proc/self/maps and no change near kept pages followed (measure_slack) */
    uint32_t calls;      /* mmaps since the count was last updated: each adds at most 2 VMAs to the kernel's */
    uint64_t cap;        /* this range's own cap (kvm_ranges_set_mapping_limit), UINT64_MAX unless lowered */
    uint32_t passing_mmaps, failing_mmaps; /* tests: mmaps to pass, then to fail with ENOMEM */
    uint64_t rereads;    /* tests: reads of /proc/self/maps for this range's count (kvm_ranges_rereads) */
};

/* Every range of the process counts against one limit, since the kernel's vm.max_map_count is
 * the process's: `counted` is the sum of every live range's kvm_ranges_mappings plus the
 * reservations of maps under way (kvm_ranges_map reserves before its mmaps, so concurrent maps
 * of different ranges never pass `limit` together); `limit` is taken by a range created while
 * none is `live`, lowered by later ones, and taken again before a map is refused (at most once
 * a second: `retaken_ns`, when it was last taken so); 0 before the first range.
 * Atomics: ranges are used from different threads. */
static _Atomic uint64_t process_counted;
static _Atomic uint64_t process_limit;
static _Atomic uint64_t process_live;
static _Atomic uint64_t process_reserved; /* bytes of address space the live ranges reserve */
static _Atomic uint64_t process_retaken_ns;

/* Adds `delta` (two's complement: negative to remove) to the process's count. */
static void count_process(uint64_t delta) { atomic_fetch_add_explicit(&process_counted, delta, memory_order_relaxed); }

/* Reserves `n` mappings of the process's limit: false, reserving nothing, when they would pass it. */
static bool reserve_process(uint64_t n) {
    uint64_t limit = atomic_load_explicit(&process_limit, memory_order_relaxed);
    uint64_t now = atomic_load_explicit(&process_counted, memory_order_relaxed);
    do {
        if (now + n > limit) return false;
    } while (!atomic_compare_exchange_weak_explicit(&process_counted, &now, now + n, memory_order_relaxed, memory_order_relaxed));
    return true;
}

/* The limit a range's count is kept under: the process's, or its own cap where lower. */
static uint64_t limit_of(const kvm_ranges *r) {
    uint64_t limit = atomic_load_explicit(&process_limit, memory_order_relaxed);
    return r->cap < limit ? r->cap : limit;
}

/* The group page `page` of a slot's table row `t` maps, -1 for none (stored plus one). */
static inline int32_t group_at(const int32_t *t, uint32_t page) { return t[page] - 1; }

/* The table row of `slot`. */
static inline int32_t *row_of(const kvm_ranges *r, uint32_t slot) { return r->table + (uint64_t)slot * r->pages; }

/* Whether a page mapping group b (-1: reserved) of tensor tb, right after a page mapping group
 * a of tensor ta, lies in the same VMA: the kernel merges adjacent reserved stretches (the same
 * anonymous PROT_NONE mapping) and adjacent mappings of file-contiguous pool pages (the last
 * group of a tensor and the first of the next are, so a range's end can merge with the next
 * range's start). */
static bool joins(const kvm_ranges *r, uint32_t ta, int32_t a, uint32_t tb, int32_t b) {
    if (a < 0 || b < 0) return a < 0 && b < 0;
    return kvm_pool_offset(r->pool, ta, (uint32_t)a) + r->page_bytes == kvm_pool_offset(r->pool, tb, (uint32_t)b);
}

/* A slot's row as it is (first == end), or as it would be with pages [first, end) mapping
 * groups first_group on (-1: none). */
typedef struct {
    const int32_t *row;
    uint32_t first, end;
    int32_t first_group;
} row_view;

static row_view as_is(const int32_t *row) { return (row_view){row, 0, 0, -1}; }

/* The group `page` maps in `v`, -1 for none. */
static int32_t seen(row_view v, uint32_t page) {
    if (page < v.first || page >= v.end) return group_at(v.row, page);
    return v.first_group < 0 ? -1 : v.first_group + (int32_t)(page - v.first);
}

/* VMAs that start at the first page of one of slot's tensors, whose row is `v`: tensor t's
 * first page follows tensor t - 1's last, tensor 0's the last page of the slot before, whose
 * group is `before` (the reservation's own start counts one at slot 0). */
static uint32_t starts_at_slot(const kvm_ranges *r, uint32_t slot, int32_t before, row_view v) {
    int32_t first = seen(v, 0), last = seen(v, r->pages - 1);
    uint32_t n = slot == 0 || !joins(r, r->tensors - 1, before, 0, first);
    for (uint32_t t = 1; t < r->tensors; t++) n += !joins(r, t - 1, last, t, first);
    return n;
}

/* VMAs that start at the pages a change of pages [first, end) of `slot` can affect, its row
 * read as `v`: pages first..end of each tensor (a page starts one where it does not join the
 * page before it, alike in every tensor), and where the change reaches a tensor's first or
 * last page, the first pages of this slot's tensors and of the next slot's. `count` is their
 * sum over every page of the reservation. Cost: O(end - first + tensors). */
static uint64_t starts_near(const kvm_ranges *r, uint32_t slot, uint32_t first, uint32_t end, row_view v) {
    uint64_t inner = 0;
    for (uint32_t p = first > 0 ? first : 1; p <= end && p < r->pages; p++) inner += !joins(r, 0, seen(v, p - 1), 0, seen(v, p));
    uint64_t n = inner * r->tensors;
    if (first == 0 || end == r->pages) {
        n += starts_at_slot(r, slot, slot == 0 ? -1 : group_at(row_of(r, slot - 1), r->pages - 1), v);
        if (slot + 1 < r->slots) n += starts_at_slot(r, slot + 1, seen(v, r->pages - 1), as_is(row_of(r, slot + 1)));
    }
    return n;
}

/* The most VMAs a map can add: in each tensor, one at its first page and one after its last
 * (the pages between join). */
static uint64_t most_added(const kvm_ranges *r) { return 2ull * r->tensors; }

/* mmap, or MAP_FAILED with ENOMEM where a test asks for failures (kvm_ranges_fail_mmaps). */
static void *map_at(kvm_ranges *r, void *addr, uint64_t len, int prot, int flags, int fd, off_t offset) {
    r->calls++;
    if (r->passing_mmaps > 0) {
        r->passing_mmaps--;
    } else if (r->failing_mmaps > 0) {
        r->failing_mmaps--;
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return mmap(addr, len, prot, flags, fd, offset);
}

/* Replaces [addr, addr + len) with reserved address space (PROT_NONE, no memory). */
static int reserve_at(kvm_ranges *r, void *addr, uint64_t len) {
    return map_at(r, addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED ? -errno : 0;
}

static uint64_t max_map_count(void) {
    unsigned long long v = 65530;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "re"); /* close-on-exec, as every file here */
    if (f) {
        if (fscanf(f, "%llu", &v) != 1) v = 65530;
        fclose(f);
    }
    return v;
}

/* The lines of /proc/self/maps (VMAs) overlapping [lo, hi), 0 when it cannot be read. Reads
 * with a stack buffer (no allocation: the process may be out of mappings). O(the process's
 * mappings). */
static uint64_t maps_overlapping(uintptr_t lo, uintptr_t hi) {
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    uintptr_t start = 0, end = 0;
    int field = 0; /* 0: a line's start address, 1: its end address, 2: the rest of the line */
    uint64_t n = 0;
    char buf[4096];
    for (ssize_t got; (got = read(fd, buf, sizeof buf)) > 0;)
        for (ssize_t i = 0; i < got; i++) {
            char c = buf[i];
            if (c == '\n') {
                field = 0;
                start = end = 0;
            } else if (field < 2) {
                int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
                if (digit >= 0 && field == 0) start = start << 4 | (uintptr_t)digit;
                else if (digit >= 0) end = end << 4 | (uintptr_t)digit;
                else if (c == '-' && field == 0) field = 1;
                else {
                    n += field == 1 && start < hi && end > lo;
                    field = 2;
                }
            }
        }
    close(fd);
    return n;
}

/* Mappings the process holds now: every line of /proc/self/maps (0 when it cannot be read). */
static uint64_t process_mappings(void) { return maps_overlapping(0, UINTPTR_MAX); }

/* The room the process leaves its ranges now: vm.max_map_count (`system_limit`) less the
 * mappings the process holds apart from its ranges' (a server's libraries and allocator:
 * thousands in a Python process) and 4096 more for what it maps later. The ranges' counts are
 * their VMAs (one fewer where a reservation's end merges with a neighbour outside it; more
 * after a failed mmap), so `held - counted` is the rest to within two per range; 0 when that
 * leaves no room. Cost: reads /proc/self/maps, O(the process's mappings). */
static uint64_t room_now(uint64_t system_limit) {
    uint64_t held = process_mappings(), counted = atomic_load(&process_counted);
    uint64_t others = (held > counted ? held - counted : 0) + 4096;
    return system_limit > others ? system_limit - others : 0;
}

/* room_now, or half of vm.max_map_count when the process leaves no room (a range is created
 * anyway; its maps meet this limit or the kernel's refusal). */
static uint64_t limit_now(uint64_t system_limit) {
    uint64_t room = room_now(system_limit);
    return room > 0 ? room : system_limit / 2;
}

/* Takes the process's limit again before a map is refused, unless it was taken so within the
 * last second (a server refused at every step pays the read of /proc/self/maps once a
 * second) or another thread is taking it: the rest of the process may have let go of the
 * mappings it held when the limit was last taken (a burst of other mappings while a range was
 * created). Whether the limit rose. */
static bool retake_limit(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    uint64_t last = atomic_load(&process_retaken_ns);
    if ((last != 0 && now - last < 1000000000u) || !atomic_compare_exchange_strong(&process_retaken_ns, &last, now)) return false;
    /* Never the creation's fallback of half of vm.max_map_count: where the rest of the process
     * leaves no room, the limit stays (it would have let the ranges map into the 4096 kept for
     * the host, until the kernel refused: 32,765 in a crowded process, revdiff's crowded.c). */
    uint64_t limit = room_now(max_map_count());
    return limit > 0 && atomic_exchange(&process_limit, limit) < limit;
}

int kvm_ranges_create(kvm_pool *pool, uint32_t slots, uint64_t range_bytes, kvm_ranges **out) {
    *out = NULL;
    uint64_t pb = kvm_pool_page_bytes(pool);
    if (kvm_pool_group_bytes(pool) != pb) return kvm_fail(EINVAL, "contiguous ranges need one page per pool group");
    range_bytes = (range_bytes + pb - 1) / pb * pb;
    uint32_t tensors = kvm_pool_tensors(pool);
    uint64_t pages = range_bytes / pb;
    if (slots == 0 || pages == 0) return kvm_fail(EINVAL, "bad range shape: %u slots of %llu pages", slots, (unsigned long long)pages);
    /* The address space first: a range past 2^30 pages is also past it unless slots and
     * tensors are few, and then its message names what to lower. */
    uint64_t total;
    if (__builtin_mul_overflow((uint64_t)slots * tensors, range_bytes, &total) || total > (1ull << 46))
        /* In GiB as a double: the product can pass 2^64, where the integer wraps (to 0 GiB). */
        return kvm_fail(ENOMEM, "contiguous layout needs %.0f GiB of address space (max_seqs x 2 x num_layers x max_seq_tokens x token bytes); "
                                "the limit is 65536 GiB: lower max_seqs or max_seq_tokens",
                        (double)slots * tensors * (double)range_bytes / (double)(1ull << 30));
    if (pages > (1u << 30))
        return kvm_fail(EINVAL, "a sequence's range of %llu bytes per tensor (max_seq_tokens x token bytes) is more than 2^30 pages of %llu bytes: "
                                "raise page_bytes or lower max_seq_tokens",
                        (unsigned long long)range_bytes, (unsigned long long)pb);
    kvm_ranges *r = calloc(1, sizeof *r);
    if (!r) return kvm_fail(ENOMEM, "out of memory for ranges");
    r->pool = pool;
    r->range_bytes = range_bytes;
    r->page_bytes = pb;
    r->slots = slots;
    r->tensors = tensors;
    r->pages = (uint32_t)pages;
    r->cap = UINT64_MAX;
    /* The process's limit (limit_now): taken afresh by a range created while none is live (the
     * last one's may date from a burst of other mappings since let go); lowered by a later one
     * when the process has mapped more since, so that a later engine meets this limit rather
     * than the kernel's refusal (never raised here: a range's refused map takes it again). */
    uint64_t system_limit = max_map_count();
    uint64_t wanted = limit_now(system_limit);
    if (atomic_load(&process_live) == 0) {
        atomic_store(&process_limit, wanted);
    } else {
        uint64_t current = atomic_load(&process_limit);
        while (wanted < current && !atomic_compare_exchange_weak(&process_limit, &current, wanted)) {
        }
    }
    if (most_added(r) + 1 > limit_of(r)) {
        uint64_t needed = most_added(r) + 1;
        free(r);
        return kvm_fail(ENOMEM, "one sequence needs %llu mappings (2 x num_layers tensors) but vm.max_map_count allows %llu",
                        (unsigned long long)needed, (unsigned long long)system_limit);
    }
    r->table = calloc((uint64_t)slots * pages, sizeof(int32_t));
    r->mapped = calloc(slots, sizeof(uint32_t));
    r->kept = calloc(slots, sizeof(page_span));
    /* Every range starts at a multiple of page_bytes from the base, so an aligned base lets each
     * 2 MiB page map as one huge-page entry. */
    void *base = kvm_map_aligned(total, pb, PROT_NONE, MAP_NORESERVE);
    if (!r->table || !r->mapped || !r->kept || base == MAP_FAILED) {
        int err = base == MAP_FAILED ? errno : ENOMEM;
        if (base != MAP_FAILED) munmap(base, total);
        free(r->table);
        free(r->mapped);
        free(r->kept);
        free(r);
        return kvm_fail(err, "reserving %llu GiB of address space for the contiguous layout failed: %s (a process has 128 TiB of "
                             "user address space, 47 bits, shared by every engine's reservation, %llu GiB of contiguous ranges now, and "
                             "everything else it maps: lower max_seqs or max_seq_tokens, or use the paged layout)",
                        (unsigned long long)(total >> 30), strerror(err), (unsigned long long)(atomic_load(&process_reserved) >> 30));
    }
    r->base = base;
    r->count = 1;
    count_process(r->count);
    atomic_fetch_add(&process_live, 1);
    atomic_fetch_add(&process_reserved, total);
    *out = r;
    return 0;
}

void kvm_ranges_destroy(kvm_ranges *r) {
    if (!r) return;
    for (uint32_t s = 0; s < r->slots; s++)
        for (uint32_t p = 0; p < r->mapped[s]; p++) {
            int32_t g = group_at(row_of(r, s), p);
            if (g >= 0) kvm_pool_unref(r->pool, (uint32_t)g);
        }
    munmap(r->base, (uint64_t)r->slots * r->tensors * r->range_bytes);
    count_process(-r->count);
    atomic_fetch_sub(&process_live, 1);
    atomic_fetch_sub(&process_reserved, kvm_ranges_reserved_bytes(r));
    free(r->table);
    free(r->mapped);
    free(r->kept);
    free(r);
}

uint8_t *kvm_ranges_tensor(const kvm_ranges *r, uint32_t slot, uint32_t tensor) {
    return r->base + ((uint64_t)slot * r->tensors + tensor) * r->range_bytes;
}

int64_t kvm_ranges_group(const kvm_ranges *r, uint32_t slot, uint32_t page) {
    return page < r->mapped[slot] ? group_at(row_of(r, slot), page) : -1;
}

uint32_t kvm_ranges_pages(const kvm_ranges *r) { return r->pages; }
const uint8_t *kvm_ranges_base(const kvm_ranges *r) { return r->base; }
uint64_t kvm_ranges_reserved_bytes(const kvm_ranges *r) { return (uint64_t)r->slots * r->tensors * r->range_bytes; }
uint32_t kvm_ranges_mapped(const kvm_ranges *r, uint32_t slot) { return r->mapped[slot]; }
uint64_t kvm_ranges_mappings(const kvm_ranges *r) { return r->count; }
uint64_t kvm_ranges_mapping_limit(const kvm_ranges *r) { return limit_of(r); }
uint64_t kvm_ranges_process_mappings(void) { return atomic_load_explicit(&process_counted, memory_order_relaxed); }
uint64_t kvm_ranges_process_mapping_limit(void) { return atomic_load_explicit(&process_limit, memory_order_relaxed); }

bool kvm_ranges_process_near_limit(void) {
    uint64_t limit = kvm_ranges_process_mapping_limit();
    return kvm_ranges_process_mappings() > limit - limit / 8;
}

void kvm_ranges_set_mapping_limit(kvm_ranges *r, uint64_t limit) {
    if (limit < r->cap) r->cap = limit;
}

/* The VMAs /proc/self/maps lists overlapping the reservation, 0 when it cannot be read.
 * O(the process's mappings): only for a map the count would refuse (measure_slack). */
static uint64_t kernel_mappings(kvm_ranges *r) {
    r->rereads++;
    uintptr_t lo = (uintptr_t)r->base;
    return maps_overlapping(lo, lo + kvm_ranges_reserved_bytes(r));
}

/* Whether slot `slot` or a slot next to it (whose first or last pages border its own) has kept
 * pages. */
static bool kept_near(const kvm_ranges *r, uint32_t slot) {
    for (uint32_t s = slot > 0 ? slot - 1 : 0; s <= slot + 1 && s < r->slots; s++)
        if (r->kept[s].first < r->kept[s].end) return true;
    return false;
}

/* Records a change of pages [first, end) of `slot` whose mmaps failed in `failed` tensors,
 * which keep their old mappings there: the slot's kept span grows to cover the pages (one span
 * per slot: it may cover pages since replaced), or, with none failed, loses the pages where
 * they cover one of its ends. Returns whether the change's count needs slack (bounded_slack):
 * it failed, or slot or a neighbour had kept pages, whose VMAs the page table does not
 * describe. Costs a branch while no slot has kept pages. */
static bool track_kept(kvm_ranges *r, uint32_t slot, uint32_t first, uint32_t end, uint32_t failed) {
    if (r->slots_kept == 0 && failed == 0) return false;
    bool near = kept_near(r, slot);
    page_span *k = &r->kept[slot];
    if (k->first < k->end) r->kept_pages -= k->end - k->first + 1;
    if (failed > 0 && k->first == k->end) {
        *k = (page_span){first, end};
        r->slots_kept++;
    } else if (failed > 0) {
        if (first < k->first) k->first = first;
        if (end > k->end) k->end = end;
    } else if (k->first < k->end) {
        if (first <= k->first && end > k->first) k->first = end;
        if (end >= k->end && first < k->end) k->end = first;
        if (k->first >= k->end) {
            *k = (page_span){0, 0};
            r->slots_kept--;
        }
    }
    if (k->first < k->end) r->kept_pages += k->end - k->first + 1;
    return near || failed > 0;
}

/* The slack after a change near kept pages, whose table count went from `before` to `after`
 * with r->calls mmaps: the VMAs the kernel may hold beyond the table's, by the smaller of two
 * bounds, each never below the kernel's. (1) The slack before plus 2 per mmap less the
 * table's change: an mmap adds at most 2 VMAs (the one it maps, and a split where it lands
 * inside one; a failed one at most a split), so the kernel's count rose by at most 2 x calls
 * while the table's changed by after - before. (2) One per tensor and page boundary a kept
 * span touches (end - first + 1 per span): outside kept spans the kernel maps what the table
 * lists, so only those boundaries can start a VMA the table does not count, one each. No
 * read of /proc/self/maps: measure_slack does that, only for a map the count would refuse. */
static uint64_t bounded_slack(const kvm_ranges *r, uint64_t before, uint64_t after) {
    uint64_t grown = r->slack + 2ull * r->calls + before, most = (uint64_t)r->tensors * r->kept_pages;
    uint64_t slack = grown > after ? grown - after : 0;
    return slack < most ? slack : most;
}

/* Before a map is refused: takes the slack from the kernel's count of the reservation (the
 * VMAs /proc/self/maps lists overlapping it, less the table's), where that is lower. At most
 * once per change near kept pages (slack_read), so a server refused at every step does not
 * read the file at each; none while no slot keeps pages. O(the process's mappings). */
static void measure_slack(kvm_ranges *r) {
    if (r->slack == 0 || r->slack_read) return;
    r->slack_read = true;
    uint64_t held = kernel_mappings(r), table = r->count - r->slack;
    uint64_t slack = held > table ? held - table : 0;
    if (held == 0 || slack >= r->slack) return;
    count_process(slack - r->slack);
    r->count = table + slack;
    r->slack = slack;
}

/* Sets pages [first, end) of `slot` to groups first_group on (-1: none), updating the range's
 * counts (the change's, from the page table; `near` kept pages, the slack too: bounded_slack),
 * and returns how its counted mappings changed (two's complement), for the caller to add to
 * the process's count together with what it reserved. */
static uint64_t set_pages(kvm_ranges *r, uint32_t slot, uint32_t first, uint32_t end, int32_t first_group, bool near) {
    int32_t *t = row_of(r, slot);
    uint64_t before = starts_near(r, slot, first, end, as_is(t));
    for (uint32_t p = first; p < end; p++) {
        if (group_at(t, p) >= 0) kvm_pool_unref(r->pool, (uint32_t)group_at(t, p));
        int32_t g = first_group < 0 ? -1 : first_group + (int32_t)(p - first);
        t[p] = g + 1;
        if (g >= 0) kvm_pool_ref(r->pool, (uint32_t)g);
    }
    uint64_t after = starts_near(r, slot, first, end, as_is(t)), was = r->count;
    r->count = r->count - before + after;
    if (near) {
        uint64_t slack = bounded_slack(r, before, after);
        r->count = r->count - r->slack + slack;
        r->slack = slack;
        r->slack_read = false;
    }
    r->calls = 0;
    if (first_group >= 0 && end > r->mapped[slot]) r->mapped[slot] = end;
    while (r->mapped[slot] > 0 && group_at(t, r->mapped[slot] - 1) < 0) r->mapped[slot]--;
    return r->count - was;
}

/* Replaces pages [first, end) of every tensor of `slot` with reserved address space and drops
 * them from the table, even where a tensor's mmap fails (vm.max_map_count reached: replacing
 * the middle of a mapping splits it). The table then never lists a page that some tensor does
 * not map: a tensor that keeps its old mapping there holds a page the engine no longer uses
 * (a later map replaces it; its group may go to another slot, reached through this address
 * only by a stray access past the sequence's length). Returns the tensors that kept theirs. */
static uint32_t unmap_span(kvm_ranges *r, uint32_t slot, uint32_t first, uint32_t end) {
    uint64_t len = (uint64_t)(end - first) * r->page_bytes;
    uint32_t kept = 0;
    for (uint32_t t = 0; t < r->tensors; t++)
        kept += reserve_at(r, kvm_ranges_tensor(r, slot, t) + (uint64_t)first * r->page_bytes, len) != 0;
    count_process(set_pages(r, slot, first, end, -1, track_kept(r, slot, first, end, kept)));
    return kept;
}

int kvm_ranges_map(kvm_ranges *r, uint32_t slot, uint32_t page, uint32_t first_group, uint32_t n) {
    if (slot >= r->slots || n == 0 || n > r->pages || page > r->pages - n)
        return kvm_fail(EINVAL, "map of pages %u+%u outside a range of %u pages", page, n, r->pages);
    /* Reserve the most a map adds of the process's limit, else, near a limit, count what this
     * one adds and reserve that. */
    uint64_t reserved = most_added(r);
    if (r->count + reserved > limit_of(r) || !reserve_process(reserved)) {
        measure_slack(r);
        /* Next to kept pages the slack may grow by what the map adds to the kernel's count. */
        const int32_t *t = row_of(r, slot);
        uint64_t count = kept_near(r, slot) ? r->count + most_added(r)
                                            : r->count - starts_near(r, slot, page, page + n, as_is(t))
                                                  + starts_near(r, slot, page, page + n, (row_view){t, page, page + n, (int32_t)first_group});
        reserved = count > r->count ? count - r->count : 0;
        /* Before refusing, the limit is taken again (retake_limit): it may have risen since. */
        bool fits = reserved == 0 || (count <= limit_of(r) && reserve_process(reserved));
        if (!fits && retake_limit()) fits = count <= limit_of(r) && reserve_process(reserved);
        if (!fits && count > limit_of(r))
            return kvm_fail(ENOMEM, "mapping limit reached: %llu mappings in use of the %llu allowed (vm.max_map_count less headroom); "
                                    "use larger page_bytes or fewer max_seqs",
                            (unsigned long long)kvm_ranges_mappings(r), (unsigned long long)limit_of(r));
        if (!fits)
            return kvm_fail(ENOMEM, "mapping limit reached: this process's engines hold %llu mappings (counted; this engine %llu) of the %llu "
                                    "allowed them: vm.max_map_count (%llu) less what the rest of the process held when last measured and 4096; "
                                    "free or trim sequences of its engines, use larger page_bytes or fewer max_seqs, or raise vm.max_map_count",
                            (unsigned long long)kvm_ranges_process_mappings(), (unsigned long long)kvm_ranges_mappings(r),
                            (unsigned long long)kvm_ranges_process_mapping_limit(), (unsigned long long)max_map_count());
    }
    uint64_t len = (uint64_t)n * r->page_bytes;
    int fd = kvm_pool_fd(r->pool);
    for (uint32_t t = 0; t < r->tensors; t++) {
        uint8_t *addr = kvm_ranges_tensor(r, slot, t) + (uint64_t)page * r->page_bytes;
        void *m = map_at(r, addr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
                         (off_t)kvm_pool_offset(r->pool, t, first_group));
        if (m == MAP_FAILED) {
            int err = errno;
            /* Leave the span holding nothing, as far as the table says. */
            unmap_span(r, slot, page, page + n);
            count_process(-reserved);
            if (err == ENOMEM)
                return kvm_fail(err, "mapping %u pages failed: %s (likely vm.max_map_count, %llu: this process's engines hold %llu mappings "
                                     "(counted), the rest of the process more since its first engine)",
                                n, strerror(err), (unsigned long long)max_map_count(), (unsigned long long)kvm_ranges_process_mappings());
            return kvm_fail(err, "mapping %u pages failed: %s", n, strerror(err));
        }
        if (kvm_pool_hugepages(r->pool)) madvise(addr, len, MADV_HUGEPAGE);
    }
    count_process(set_pages(r, slot, page, page + n, (int32_t)first_group, track_kept(r, slot, page, page + n, 0)) - reserved);
    return 0;
}

int kvm_ranges_unmap(kvm_ranges *r, uint32_t slot, uint32_t first, uint32_t end) {
    if (slot >= r->slots || first > end || end > r->pages) return kvm_fail(EINVAL, "unmap of pages %u..%u outside a range of %u pages", first, end, r->pages);
    if (end > r->mapped[slot]) end = r->mapped[slot];
    if (first >= end) return 0;
    uint32_t kept = unmap_span(r, slot, first, end);
    if (kept > 0)
        return kvm_fail(ENOMEM, "unmapping %u pages left %u of %u tensors mapping them (vm.max_map_count reached?); "
                                "the pages count as unmapped", end - first, kept, r->tensors);
    return 0;
}

uint64_t kvm_ranges_rereads(const kvm_ranges *r) { return r->rereads; }

void kvm_ranges_fail_mmaps(kvm_ranges *r, uint32_t after, uint32_t n) {
    r->passing_mmaps = after;
    r->failing_mmaps = n;
}
