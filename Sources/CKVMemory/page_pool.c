/* Physical page groups in one memfd: exact budget, batched commit, punch-hole release. */
#include "kvm_pool.h"
#include "kvm_error.h"
#include "kvm_fork_close.h"
#include "mman_compat.h"
#include "kvm_io.h"
#include "numa_bind.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

struct kvm_pool {
    int fd;
    unsigned fork_generation; /* kvm_fork_watch() at create: the pool is inherited where it differs */
    uint32_t tensors;
    uint32_t groups;
    uint32_t words;          /* 64-bit words of each bitmap */
    uint32_t free_count;
    uint32_t committed_count;
    uint32_t idle_count;     /* free AND committed: what a trim may give back (0: it returns at once) */
    uint64_t trim_words;     /* bitmap words trims have read (kvm_pool_trim_words) */
    uint32_t commit_batch;
    int hugepages;
    uint8_t *view;           /* huge pages: the whole file, MADV_HUGEPAGE, commits fault through it; else NULL */
    uint64_t view_bytes;
    uint64_t group_bytes;
    uint64_t page_bytes;
    uint64_t *free_bits;      /* 1: free (refs == 0) */
    uint64_t *committed_bits; /* 1: physical pages allocated */
    uint32_t *refs;
    int64_t commits_before_fault; /* tests (kvm_pool_fail_commits): commits left before one fails; < 0: never */
};

static inline int bit(const uint64_t *bits, uint32_t i) { return (bits[i >> 6] >> (i & 63)) & 1; }
static inline void set_bit(uint64_t *bits, uint32_t i) { bits[i >> 6] |= 1ull << (i & 63); }
static inline void clear_bit(uint64_t *bits, uint32_t i) { bits[i >> 6] &= ~(1ull << (i & 63)); }

/* The lowest i with bit set in a (and in b when b != NULL), or -1. */
static int64_t first_set(const kvm_pool *p, const uint64_t *a, const uint64_t *b) {
    for (uint32_t w = 0; w < p->words; w++) {
        uint64_t x = a[w] & (b ? b[w] : ~0ull);
        if (x) return (int64_t)w * 64 + __builtin_ctzll(x);
    }
    return -1;
}

static int logged_small_pages;

const char *kvm_shmem_hugepages_refusal(const char *top, const char *per_size, int thp_disabled) {
    if (thp_disabled) return "prctl(PR_SET_THP_DISABLE) is set on this process (a container runtime or service manager may set it)";
    if (!top) return "/sys/kernel/mm/transparent_hugepage/shmem_enabled is unreadable";
    if (strcmp(top, "deny") == 0) return "shmem_enabled is deny";
    if (per_size && strcmp(per_size, "never") == 0) return "hugepages-2048kB/shmem_enabled is never";
    if (per_size && strcmp(per_size, "inherit") != 0) return NULL; /* always, within_size, advise */
    if (strcmp(top, "never") == 0) return per_size ? "shmem_enabled is never and hugepages-2048kB/shmem_enabled inherits it"
                                                   : "shmem_enabled is never";
    return NULL;
}

/* The bracketed word of a THP setting file into `word` (at most `size` bytes with the NUL);
 * NULL when the file is missing, unreadable or has no bracketed word. */
static const char *thp_setting(const char *path, char *word, size_t size) {
    char line[256] = {0};
    FILE *f = fopen(path, "re"); /* close-on-exec: a program another thread spawns keeps none */
    if (!f) return NULL;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    const char *open = strchr(line, '['), *close = open ? strchr(open, ']') : NULL;
    if (!close || (size_t)(close - open) > size) return NULL;
    memcpy(word, open + 1, (size_t)(close - open - 1));
    word[close - open - 1] = 0;
    return word;
}

/* 1 when a memfd's shmem can get 2 MiB transparent huge pages in this process; else logs once
 * why not (kvm_shmem_hugepages_refusal). Reads two sysfs files and one prctl. */
static int shmem_hugepages_possible(void) {
    char top[32], per_size[32];
    const char *why = kvm_shmem_hugepages_refusal(
        thp_setting("/sys/kernel/mm/transparent_hugepage/shmem_enabled", top, sizeof top),
        thp_setting("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled", per_size, sizeof per_size),
        prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1);
    if (!why) return 1;
    kvm_log_once(&logged_small_pages, "page_bytes 2 MiB asks for huge pages, but %s: using small pages, in page groups "
                                      "still sized by 2 MiB pages (page_bytes 65536 commits and frees memory in finer steps)",
                 why);
    return 0;
}

/* Sets the memfd's shared NUMA policy through a throwaway view: shmem keeps a shared policy
 * per file, and every later allocation in any mapping or fallocate follows it. */
static int bind_node(int fd, uint64_t size, int32_t node) {
    void *view = mmap(NULL, size, PROT_NONE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (view == MAP_FAILED) return kvm_fail(errno, "mmap for NUMA binding failed: %s", strerror(errno));
    int rc = kvm_bind_node(view, size, node);
    munmap(view, size);
    return rc;
}

int kvm_pool_create(const kvm_pool_config *cfg, kvm_pool **out) {
    *out = NULL;
    if (cfg->page_bytes < 4096 || cfg->page_bytes > (2u << 20) || (cfg->page_bytes & (cfg->page_bytes - 1)))
        return kvm_fail(EINVAL, "page_bytes %llu is not a power of two from 4096 to 2097152", (unsigned long long)cfg->page_bytes);
    if (cfg->tensors == 0 || cfg->group_bytes == 0 || cfg->group_bytes % cfg->page_bytes)
        return kvm_fail(EINVAL, "group of %llu bytes is not a multiple of page_bytes %llu",
                        (unsigned long long)cfg->group_bytes, (unsigned long long)cfg->page_bytes);
    if (cfg->group_bytes > UINT64_MAX / cfg->tensors)
        return kvm_fail(EINVAL, "%u tensors x groups of %llu bytes overflow 64 bits", cfg->tensors, (unsigned long long)cfg->group_bytes);
    uint64_t unit = (uint64_t)cfg->tensors * cfg->group_bytes;
    uint64_t groups = cfg->budget_bytes / unit;
    if (groups == 0)
        return kvm_fail(EINVAL, "memory_bytes %llu holds no page group of %llu bytes (%u tensors x %llu)",
                        (unsigned long long)cfg->budget_bytes, (unsigned long long)unit, cfg->tensors,
                        (unsigned long long)cfg->group_bytes);
    if (groups > KVM_POOL_MAX_GROUPS) /* refused, not capped: the budget would over-report what the pool holds */
        return kvm_fail(EINVAL, "memory_bytes %llu holds %llu page groups of %llu bytes (%u tensors x %llu), more than the %u a pool "
                                "indexes: lower memory_bytes or raise page_bytes",
                        (unsigned long long)cfg->budget_bytes, (unsigned long long)groups, (unsigned long long)unit, cfg->tensors,
                        (unsigned long long)cfg->group_bytes, KVM_POOL_MAX_GROUPS);
    if (groups * unit > (uint64_t)INT64_MAX) /* past off_t: ftruncate's EINVAL named no setting */
        return kvm_fail(ENOMEM, "memory_bytes %llu is more than a memory file holds (2^63 - 1 bytes): lower memory_bytes",
                        (unsigned long long)cfg->budget_bytes);

    kvm_pool *p = calloc(1, sizeof *p);
    if (!p) return kvm_fail(ENOMEM, "out of memory for the page pool");
    p->tensors = cfg->tensors;
    p->groups = (uint32_t)groups;
    p->words = (p->groups + 63) / 64;
    p->free_count = p->groups;
    uint64_t batch = KVM_POOL_BATCH_BYTES / unit; /* by bytes: 2 MiB groups of 64 tensors are 128 MiB each */
    p->commit_batch = cfg->commit_batch ? cfg->commit_batch : batch > 8 ? 8 : batch < 1 ? 1 : (uint32_t)batch;
    p->group_bytes = cfg->group_bytes;
    p->page_bytes = cfg->page_bytes;
    p->hugepages = cfg->page_bytes == (2u << 20) && shmem_hugepages_possible();
    p->free_bits = calloc(p->words, sizeof(uint64_t));
    p->committed_bits = calloc(p->words, sizeof(uint64_t));
    p->refs = calloc(p->groups, sizeof(uint32_t));
    p->fork_generation = kvm_fork_watch();
    p->fd = memfd_create("kvcache-kv", MFD_CLOEXEC);
    int rc = 0;
    uint64_t file_limit = kvm_file_size_limit();
    if (!p->free_bits || !p->committed_bits || !p->refs) rc = kvm_fail(ENOMEM, "out of memory for page pool metadata");
    else if (groups * unit > file_limit) /* a memfd too: the ftruncate would raise SIGXFSZ, which ends the process */
        rc = kvm_fail(EFBIG, "the page pool's memory file of %llu bytes would pass the process's file-size limit (RLIMIT_FSIZE, %llu bytes), "
                             "which memfd files obey too: raise the limit (ulimit -f) or lower memory_bytes",
                      (unsigned long long)(groups * unit), (unsigned long long)file_limit);
    else if (p->fd < 0) rc = kvm_fail(errno, "memfd_create failed: %s", strerror(errno));
    else if (ftruncate(p->fd, (off_t)(groups * unit)) != 0) rc = kvm_fail(errno, "ftruncate of the page pool to %llu bytes failed: %s",
                                                                         (unsigned long long)(groups * unit), strerror(errno));
    else if (cfg->numa_node >= 0) rc = bind_node(p->fd, groups * unit, cfg->numa_node);
    if (rc != 0) {
        kvm_pool_destroy(p);
        return rc;
    }
    if (p->hugepages) {
        /* fallocate allocates shmem pages without a mapping, so with shmem_enabled=advise it
         * gets small pages, and the layouts' MADV_HUGEPAGE mappings then find them in place. A
         * commit instead faults the pages in through this huge-page-advised view (and unmaps
         * them from it again, so RSS counts each page once). */
        void *view = mmap(NULL, groups * unit, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, p->fd, 0);
        const char *step = view == MAP_FAILED                                     ? "mapping a view of the pool"
                           : madvise(view, groups * unit, MADV_HUGEPAGE) != 0     ? "advising huge pages on the view"
                           : madvise(view, 0, MADV_POPULATE_WRITE) != 0 /* probe */ ? "MADV_POPULATE_WRITE (Linux 5.14 and later)"
                                                                                    : NULL;
        if (step) {
            int err = errno;
            if (view != MAP_FAILED) munmap(view, groups * unit);
            p->hugepages = 0; /* small pages: still exact, only slower to map */
            kvm_log_once(&logged_small_pages, "page_bytes 2 MiB asks for huge pages, but %s failed (%s): using small pages", step,
                         strerror(err));
        } else {
            p->view = view;
            p->view_bytes = groups * unit;
        }
    }
    for (uint32_t g = 0; g < p->groups; g++) set_bit(p->free_bits, g);
    p->commits_before_fault = -1;
    *out = p;
    return 0;
}

void kvm_pool_fail_commits(kvm_pool *p, int64_t after) { p->commits_before_fault = after; }

void kvm_pool_destroy(kvm_pool *p) {
    if (!p) return;
    if (p->view) munmap(p->view, p->view_bytes);
    if (p->fd >= 0) {
        /* A forked child's copies of the descriptor and mappings would keep every page
         * allocated for as long as it lives; the truncation frees them in every process.
         * Not in such a child itself: there the pages are its parent's, still in use. */
        if (p->fork_generation == kvm_fork_generation()) (void)ftruncate(p->fd, 0);
        close(p->fd);
    }
    free(p->free_bits);
    free(p->committed_bits);
    free(p->refs);
    free(p);
}

/* Allocates physical pages for `len` bytes at file offset `offset`: fallocate, or with huge
 * pages a write fault through the view (MADV_POPULATE_WRITE, which fails rather than raising
 * SIGBUS when memory runs out) and then an unmap of the view's page tables (the file keeps the
 * pages). 0 or -1 with errno set. */
static int allocate_pages(const kvm_pool *p, uint64_t offset, uint64_t len) {
    if (!p->view) {
        /* A signal can interrupt it (older kernels' shmem fallocate stops on any pending
         * signal, SA_RESTART or not): that is no refusal of memory, so it is tried again. */
        int rc;
        do rc = fallocate(p->fd, 0, (off_t)offset, (off_t)len);
        while (rc != 0 && errno == EINTR);
        return rc;
    }
    if (madvise(p->view + offset, len, MADV_POPULATE_WRITE) != 0) return -1;
    return madvise(p->view + offset, len, MADV_DONTNEED);
}

/* Allocates physical pages for the free uncommitted run starting at `first` (at most
 * `limit` groups), one allocation per tensor. */
static int commit_run(kvm_pool *p, uint32_t first, uint32_t limit) {
    uint32_t n = 0;
    while (n < limit && first + n < p->groups && bit(p->free_bits, first + n) && !bit(p->committed_bits, first + n)) n++;
    if (p->commits_before_fault == 0) return kvm_fail(EIO, "committing %u page groups failed: injected fault (kvm_pool_fail_commits)", n);
    if (p->commits_before_fault > 0) p->commits_before_fault--;
    for (uint32_t t = 0; t < p->tensors; t++) {
        if (allocate_pages(p, kvm_pool_offset(p, t, first), n * p->group_bytes) != 0) {
            int err = errno;
            /* A populate that failed part-way may have allocated some pages of this tensor too. */
            fallocate(p->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)kvm_pool_offset(p, t, first), (off_t)(n * p->group_bytes));
            /* Undo the tensors already committed so the group's state stays exact. */
            for (uint32_t u = 0; u < t; u++)
                fallocate(p->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)kvm_pool_offset(p, u, first), (off_t)(n * p->group_bytes));
            return kvm_fail(err, "committing %u page groups failed: %s", n, strerror(err));
        }
    }
    for (uint32_t i = 0; i < n; i++) set_bit(p->committed_bits, first + i);
    p->committed_count += n;
    p->idle_count += n; /* commit_run commits free groups only */
    return 0;
}

int64_t kvm_pool_alloc(kvm_pool *p, uint32_t hint) {
    int64_t g;
    if (hint < p->groups && bit(p->free_bits, hint)) g = hint;
    else if ((g = first_set(p, p->free_bits, p->committed_bits)) < 0 && (g = first_set(p, p->free_bits, NULL)) < 0)
        return kvm_fail(ENOSPC, "all %u page groups are in use (budget reached)", p->groups);
    if (!bit(p->committed_bits, (uint32_t)g)) {
        int rc = commit_run(p, (uint32_t)g, p->commit_batch);
        if (rc != 0) return rc;
    }
    clear_bit(p->free_bits, (uint32_t)g);
    p->free_count--;
    p->idle_count--; /* committed above if it was not */
    p->refs[g] = 1;
    return g;
}

int64_t kvm_pool_precommit(kvm_pool *p, uint32_t groups) {
    uint32_t before = p->committed_count;
    uint32_t w = 0;
    while (p->committed_count - before < groups) {
        uint64_t x = 0;
        for (; w < p->words; w++)
            if ((x = p->free_bits[w] & ~p->committed_bits[w]) != 0) break;
        if (w == p->words) break; /* every free group has its pages */
        uint32_t left = groups - (p->committed_count - before);
        int rc = commit_run(p, w * 64 + (uint32_t)__builtin_ctzll(x), left < p->commit_batch ? left : p->commit_batch);
        if (rc != 0) return p->committed_count > before ? (int64_t)(p->committed_count - before) : rc;
    }
    return p->committed_count - before;
}

/* Length of the free run starting at `g` (at most `limit`). */
static uint32_t free_run(const kvm_pool *p, uint32_t g, uint32_t limit) {
    uint32_t n = 0;
    while (n < limit && g + n < p->groups && bit(p->free_bits, g + n)) n++;
    return n;
}

/* The first free run of at least `want` groups, else the longest; its start and length. */
static void find_run(const kvm_pool *p, uint32_t want, uint32_t *start, uint32_t *len) {
    uint32_t best = 0, best_len = 0, g = 0;
    while (g < p->groups) {
        uint64_t word = p->free_bits[g >> 6] >> (g & 63);
        if (word == 0) { g = (g | 63) + 1; continue; }  /* nothing free in the rest of this word */
        g += (uint32_t)__builtin_ctzll(word);
        uint32_t n = free_run(p, g, p->groups);
        if (n > best_len) { best = g; best_len = n; }
        if (n >= want) break;
        g += n;
    }
    *start = best;
    *len = best_len;
}

/* The lowest free group whose neighbours are both in use, or -1. */
static int64_t isolated_free(const kvm_pool *p) {
    for (uint32_t w = 0; w < p->words; w++) {
        uint64_t x = p->free_bits[w];
        if (!x) continue;
        uint64_t prev = (x << 1) | (w > 0 ? p->free_bits[w - 1] >> 63 : 0);             /* bit i: i - 1 free */
        uint64_t next = (x >> 1) | (w + 1 < p->words ? p->free_bits[w + 1] << 63 : 0); /* bit i: i + 1 free */
        uint64_t alone = x & ~prev & ~next;
        if (alone) return (int64_t)w * 64 + __builtin_ctzll(alone);
    }
    return -1;
}

/* Commits what is uncommitted in groups [start, start + n) and takes them (refs = 1). */
static int64_t take_run(kvm_pool *p, uint32_t start, uint32_t n, uint32_t *got) {
    for (uint32_t g = start; g < start + n; g++) {
        if (bit(p->committed_bits, g)) continue;
        int rc = commit_run(p, g, p->commit_batch);
        if (rc != 0) return rc;
    }
    for (uint32_t g = start; g < start + n; g++) {
        clear_bit(p->free_bits, g);
        p->refs[g] = 1;
    }
    p->free_count -= n;
    p->idle_count -= n; /* every one committed above */
    *got = n;
    return start;
}

int64_t kvm_pool_alloc_run(kvm_pool *p, uint32_t hint, uint32_t want, uint32_t *got) {
    *got = 0;
    if (want == 0) return kvm_fail(EINVAL, "a run of 0 groups");
    uint32_t start = hint, n = hint < p->groups ? free_run(p, hint, want) : 0;
    if (n == 0) find_run(p, want, &start, &n);
    if (n == 0) return kvm_fail(ENOSPC, "all %u page groups are in use (budget reached)", p->groups);
    return take_run(p, start, n > want ? want : n, got);
}

int64_t kvm_pool_alloc_run_fit(kvm_pool *p, uint32_t hint, uint32_t want, uint32_t min_len, uint32_t *got) {
    *got = 0;
    if (want == 0) return kvm_fail(EINVAL, "a run of 0 groups");
    uint32_t shortest = min_len == 0 ? 1 : min_len < want ? min_len : want;
    uint32_t start = hint, n = hint < p->groups ? free_run(p, hint, want) : 0;
    if (n < shortest) {
        n = 0;
        int64_t alone = want == 1 ? isolated_free(p) : -1;
        if (alone >= 0) {
            start = (uint32_t)alone;
            n = 1;
        } else {
            find_run(p, want, &start, &n);
        }
        if (n == 0) return kvm_fail(ENOSPC, "all %u page groups are in use (budget reached)", p->groups);
        if (n > want) n = want;
        if (n < shortest) return -EAGAIN;
    }
    return take_run(p, start, n > want ? want : n, got);
}

void kvm_pool_ref(kvm_pool *p, uint32_t group) { p->refs[group]++; }

uint32_t kvm_pool_unref(kvm_pool *p, uint32_t group) {
    uint32_t left = --p->refs[group];
    if (left == 0) {
        set_bit(p->free_bits, group);
        p->free_count++;
        p->idle_count += bit(p->committed_bits, group);
    }
    return left;
}

uint32_t kvm_pool_refs(const kvm_pool *p, uint32_t group) { return p->refs[group]; }

/* The lowest group >= `from` that is free and committed, or -1; counts the words it reads. */
static int64_t next_idle(kvm_pool *p, uint32_t from) {
    for (uint32_t w = from >> 6; w < p->words; w++) {
        uint64_t x = p->free_bits[w] & p->committed_bits[w];
        if (w == from >> 6) x &= ~0ull << (from & 63);
        p->trim_words++;
        if (x) return (int64_t)w * 64 + __builtin_ctzll(x);
    }
    return -1;
}

uint64_t kvm_pool_trim(kvm_pool *p, uint64_t keep_bytes, uint32_t spare) {
    uint64_t released = 0, unit = (uint64_t)p->tensors * p->group_bytes, committed = kvm_pool_committed_bytes(p);
    uint64_t over = committed > keep_bytes ? (committed - keep_bytes) / unit : 0; /* groups that may go */
    uint32_t kept = 0; /* idle groups met and kept: the spares (the lowest), and runs whose hole could not be punched */
    int64_t next = 0;
    while (over > 0 && p->idle_count > spare && kept < p->idle_count && (next = next_idle(p, (uint32_t)next)) >= 0) {
        if (kept < spare) { /* before any punch fails, kept counts only spares */
            kept++;
            next++;
            continue;
        }
        uint32_t first = (uint32_t)next, g = first, go = p->idle_count - spare;
        if (go > over) go = (uint32_t)over;
        while (g < p->groups && g - first < go && bit(p->free_bits, g) && bit(p->committed_bits, g)) g++;
        next = g;
        /* A run stays committed unless every tensor's hole was punched: the count may then
         * overstate what is held (pages of the tensors punched before), never understate it. */
        int punched = 1;
        for (uint32_t t = 0; t < p->tensors && punched; t++)
            punched = fallocate(p->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)kvm_pool_offset(p, t, first),
                                (off_t)((uint64_t)(g - first) * p->group_bytes)) == 0;
        if (!punched) {
            kept += g - first;
            continue;
        }
        for (uint32_t i = first; i < g; i++) clear_bit(p->committed_bits, i);
        p->committed_count -= g - first;
        p->idle_count -= g - first;
        over -= g - first;
        released += (uint64_t)(g - first) * unit;
    }
    return released;
}

uint64_t kvm_pool_trim_words(const kvm_pool *p) { return p->trim_words; }

int kvm_pool_read(const kvm_pool *p, uint32_t tensor, uint32_t group, uint64_t offset, void *dst, uint64_t len) {
    uint64_t pos = kvm_pool_offset(p, tensor, group) + offset;
    char *out = dst;
    while (len > 0) {
        ssize_t n = pread(p->fd, out, len, (off_t)pos);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return kvm_fail(n < 0 ? errno : EIO, "reading page group %u failed: %s", group, n < 0 ? strerror(errno) : "short read");
        out += n;
        pos += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return 0;
}

int kvm_pool_fd(const kvm_pool *p) { return p->fd; }
uint64_t kvm_pool_offset(const kvm_pool *p, uint32_t tensor, uint32_t group) {
    return ((uint64_t)tensor * p->groups + group) * p->group_bytes;
}
uint32_t kvm_pool_groups(const kvm_pool *p) { return p->groups; }
uint32_t kvm_pool_free_groups(const kvm_pool *p) { return p->free_count; }
uint64_t kvm_pool_group_bytes(const kvm_pool *p) { return p->group_bytes; }
uint64_t kvm_pool_page_bytes(const kvm_pool *p) { return p->page_bytes; }
uint32_t kvm_pool_tensors(const kvm_pool *p) { return p->tensors; }
uint64_t kvm_pool_committed_bytes(const kvm_pool *p) { return (uint64_t)p->committed_count * p->tensors * p->group_bytes; }
int kvm_pool_hugepages(const kvm_pool *p) { return p->hugepages; }
